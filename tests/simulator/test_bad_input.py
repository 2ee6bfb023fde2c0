"""Bad input gets CloudStack's answers and never takes the simulator down.

Sources: ParamProcessWorker (types, lengths), ParamGenericValidationWorker (unknown
parameters are only logged), ApiServer.checkCharacterInkParams (control characters),
ServerDaemon (Jetty's form limits: request.content.size 1 MiB, request.max.form.keys 5000).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from urllib.parse import urlencode

import aiohttp
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from cloudstack_deploy.lab.simulator.server import ThreadedSimulator

from .conftest import KEY, SECRET, make_config
from .rawclient import call, signed_params


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadedSimulator]:
    with ThreadedSimulator(make_config(ssh=False)) as sim:
        yield sim


def raw(server: ThreadedSimulator, command: str, **params: object):
    return call(server.endpoint, command, KEY, SECRET, **params)


def still_serving(server: ThreadedSimulator) -> bool:
    return raw(server, "listZones").body("listZones")["count"] == 1


def test_unknown_parameters_are_ignored(server: ThreadedSimulator) -> None:
    """ParamGenericValidationWorker only logs "Received unknown parameters": the call works."""
    r = raw(server, "listZones", frobnicate="yes", **{"x-y": "1"})
    assert r.status == 200 and r.body("listZones")["count"] == 1


@pytest.mark.parametrize(("params", "text"), [
    ({"page": "one", "pagesize": "10"}, "due to invalid value one for parameter page"),
    ({"page": "1", "pagesize": " 10"}, "due to invalid value  10 for parameter pagesize"),
    ({"page": "1", "pagesize": "1_0"}, "due to invalid value 1_0 for parameter pagesize"),
    ({"page": "1", "pagesize": "2147483648"}, "due to invalid value 2147483648 for parameter pagesize"),
    ({"page": "99999999999999999999999", "pagesize": "1"}, "for parameter page"),
])
def test_values_their_type_cannot_hold_are_431(server: ThreadedSimulator, params: dict, text: str) -> None:
    """ParamProcessWorker: Integer.valueOf fails (no blanks, no '_', 32-bit range) and the
    IllegalArgumentException becomes "Unable to execute API command ... due to invalid value
    V for parameter P" (431, a bare ServerApiException: cserrorcode 9999)."""
    r = raw(server, "listZones", **params)
    assert r.status == 431
    body = r.body("listZones")
    assert body["errortext"].startswith("Unable to execute API command listzones due to invalid value")
    assert text in body["errortext"] and body["cserrorcode"] == 9999
    assert still_serving(server)


def test_a_string_longer_than_its_parameter_allows_is_431(server: ThreadedSimulator) -> None:
    """ParamProcessWorker: a STRING over its @Parameter length (255 unless declared) is "Value
    greater than max allowed length 255 for param: ..." (431)."""
    assert raw(server, "listZones", name="z" * 255).status == 200
    r = raw(server, "listZones", name="z" * 256)
    assert r.status == 431
    assert r.body("listZones")["errortext"] == ("Unable to execute API command listzones due to invalid value. "
                                                "Value greater than max allowed length 255 for param: name")
    huge = raw(server, "listZones", method="POST", name="z" * 600_000)
    assert huge.status == 431 and "max allowed length 255" in huge.body("listZones")["errortext"]
    assert still_serving(server)


@pytest.mark.parametrize("char", ["\x00", "\x07", "\x1b", "\x7f"])
def test_control_characters_are_431(server: ThreadedSimulator, char: str) -> None:
    """ApiServer.checkCharacterInkParams: any value with an ASCII control character other than
    tab, LF and CR is "Received value containing illegal ASCII non-printable characters for
    parameter <name>" (431)."""
    r = raw(server, "listZones", name=f"a{char}b")
    assert r.status == 431
    assert r.body("listZones")["errortext"] == \
        "Received value containing illegal ASCII non-printable characters for parameter name"
    assert raw(server, "listZones", name="tab\there\nnewline").status == 200


def test_a_10_mb_body_is_jettys_400_and_nothing_breaks(server: ThreadedSimulator) -> None:
    """ServerDaemon gives Jetty request.content.size = 1 MiB: a larger form is refused before
    the servlet runs (400 "Unable to parse form content", Jetty's HTML page, not JSON)."""
    data = signed_params("listZones", KEY, SECRET)
    data["name"] = "x" * (10 * 1024 * 1024)
    resp = requests.post(server.endpoint, data=data, timeout=60)
    assert resp.status_code == 400
    assert "Unable to parse form content" in resp.text
    assert not resp.headers["Content-Type"].startswith("application/json")
    assert still_serving(server)


def test_too_many_form_keys_is_jettys_400(server: ThreadedSimulator) -> None:
    """request.max.form.keys = 5000 (ServerDaemon): more keys is Jetty's 400."""
    data = signed_params("listZones", KEY, SECRET)
    body = urlencode(data) + "&" + "&".join(f"k{i}=v" for i in range(5001))
    resp = requests.post(server.endpoint, data=body, timeout=30,
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status_code == 400
    assert still_serving(server)


@pytest.mark.parametrize("query", ["%FF%FE", "command=listZones&name=%C3", "command=listZones&%zz=1", "&&&=&="])
def test_broken_escapes_are_refused_not_fatal(server: ThreadedSimulator, query: str) -> None:
    """Nobody can sign what the server cannot decode: 401 (or 400), and it keeps serving."""
    resp = requests.get(f"{server.endpoint}?{query}", timeout=10)
    assert resp.status_code in (400, 401)
    assert still_serving(server)


def _public_key(i: int) -> str:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode() + f" k{i}"


async def _burst(endpoint: str, requests_: list[dict[str, str]]) -> list[tuple[int, dict]]:
    connector = aiohttp.TCPConnector(limit=0)  # every request on its own connection, all at once
    async with aiohttp.ClientSession(connector=connector) as session:
        async def one(data: dict[str, str]) -> tuple[int, dict]:
            async with session.post(endpoint, data=data, timeout=aiohttp.ClientTimeout(total=120)) as resp:
                return resp.status, await resp.json()

        return await asyncio.gather(*(one(d) for d in requests_))


def test_a_thousand_concurrent_requests_are_all_answered(server: ThreadedSimulator) -> None:
    """CloudStack serves concurrent callers (API throttling is off by default): every one of a
    thousand simultaneous requests, reads and writes mixed, gets its answer."""
    reads = [signed_params("listZones", KEY, SECRET) for _ in range(700)]
    writes = [signed_params("registerSSHKeyPair", KEY, SECRET, name=f"burst-{i}", publickey=_public_key(i))
              for i in range(300)]
    answers = asyncio.run(_burst(server.endpoint, reads + writes))
    assert [status for status, _ in answers] == [200] * 1000
    assert all(body["listzonesresponse"]["count"] == 1 for _, body in answers[:700])
    assert {body["registersshkeypairresponse"]["keypair"]["name"] for _, body in answers[700:]} == \
        {f"burst-{i}" for i in range(300)}
    listed = raw(server, "listSSHKeyPairs", keyword="burst-").body("listSSHKeyPairs")
    assert listed["count"] == 300
    assert still_serving(server)
