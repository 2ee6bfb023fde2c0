"""csdeploy's own signed CloudStack requests (cloud/api.py), which replaced `cs`'s AIOCloudStack.

The signature is checked against CloudStack's rule as ApiServer.verifyRequest applies it
(apache/cloudstack server/src/main/java/com/cloud/api/ApiServer.java: parameters but
``signature`` sorted by name, ``name=URLEncoder.encode(value).replaceAll("+", "%20")`` joined
by ``&``, lower-cased, HMAC-SHA1, Base64), against a vector computed with openssl, against
`cs`'s own signature for the same request (where `cs` signs like Java), and against the
simulator, which checks signatures the Java way. The parameters' wire form is `cs`'s
(`cs.client.transform`), so every call csdeploy made before goes out the same.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from cs import CloudStack
from cs.client import transform

from cloudstack_deploy.cloud import Cloud, CloudConfig, CloudError, CloudUnavailable
from cloudstack_deploy.cloud.api import answer, flatten, java_urlencode, signature, signed
from cloudstack_deploy.lab.simulator.server import ThreadedSimulator

from .conftest import KEY, SECRET, CloudView

#: Values whose encoding differs between encoders: space, ~, /, +, =, &, *, non-ASCII.
TRICKY = ["two words", "a~tilde", "/etc/path", "1+1", "a=b", "x&y", "café", "日本", "", "*.-_",
          "mixed ~/+=& é 日本 *"]


def config(endpoint: str, secret: str = SECRET) -> CloudConfig:
    return CloudConfig(endpoint=endpoint, key=KEY, secret=secret, source="test", poll_interval=0.02, timeout=5)


def test_a_fixed_vector() -> None:
    """Computed outside Python: ``printf %s 'apikey=...&response=json' | openssl dgst -sha1
    -hmac test-secret-key -binary | base64`` over the lower-cased, Java-encoded string."""
    params = {"apiKey": "test-api-key", "command": "listZones", "name": "café ~/+=&*", "response": "json"}
    assert signature(params, SECRET) == "1jcegRy5uC3pXUkk/U01aT6fv94="


def test_values_are_encoded_as_javas_url_encoder_does() -> None:
    # Java keeps only A-Za-z0-9 . - * _ literal; CloudStack turns its '+' for a space into %20
    assert java_urlencode("a b~c/d+e=f&g*h.i-j_k") == "a%20b%7Ec%2Fd%2Be%3Df%26g*h.i-j_k"
    assert java_urlencode("é日本") == "%C3%A9%E6%97%A5%E6%9C%AC"


@pytest.mark.parametrize("value", [v for v in TRICKY if "~" not in v])
def test_the_signature_is_the_one_cs_computes_for_the_same_request(value: str) -> None:
    """Where `cs` signs like CloudStack (everything but '~', which it leaves bare), both agree."""
    now = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
    ours = signed("listZones", {"name": value, "available": True, "page": 2}, KEY, SECRET, now=now)
    theirs = {k: v for k, v in ours.items() if k != "signature"}
    CloudStack(endpoint="http://127.0.0.1:9/client/api", key=KEY, secret=SECRET)._sign(theirs)
    assert ours["signature"] == theirs["signature"]


def test_the_wire_form_of_values_is_what_cs_sent() -> None:
    params: dict[str, Any] = {
        "name": "web", "flag": True, "off": False, "size": 20, "ratio": 1.5, "ids": ["a", "b"],
        "cidrlist": ("10.0.0.0/8", "127.0.0.0/8"), "set": {"z", "a"}, "empty": [], "none": None,
        "tags": [{"key": "csdeploy:env", "value": "demo"}, {"key": "csdeploy:role", "value": "web"}],
        "details": {"cpuNumber": 2},
    }
    expected = dict(params)
    transform(expected)
    assert flatten(params) == expected
    assert flatten(params)["tags[1].value"] == "web"


async def test_tricky_values_are_accepted_and_arrive_as_sent(sim: ThreadedSimulator, cloud_view: CloudView) -> None:
    """The simulator verifies signatures the Java way: a value with '~' (which `cs` signed
    wrongly) goes through by GET and by POST, and what the cloud stores is what was sent."""
    async with Cloud(config(sim.endpoint)) as cloud:
        for value in TRICKY:  # reads go by GET; an empty name filters nothing
            assert len(await cloud.list("listZones", name=value)) == (0 if value else 1)
        zone = (await cloud.list("listZones"))[0]
        offering = next(o for o in await cloud.list("listNetworkOfferings", zoneid=zone["id"])
                        if o["name"] == "DefaultIsolatedNetworkOfferingWithSourceNatService")
        text = "mixed ~/+=& é 日本 *"
        await cloud.request("createNetwork", name="net-tricky", displaytext=text, zoneid=zone["id"],
                            networkofferingid=offering["id"])  # a create goes by POST
    assert [(n["name"], n["displaytext"]) for n in cloud_view.networks()] == [("net-tricky", text)]


async def test_a_wrong_secret_is_cloudstacks_401_with_its_hint(sim: ThreadedSimulator) -> None:
    async with Cloud(config(sim.endpoint, secret="not-the-secret")) as cloud:
        with pytest.raises(CloudError) as err:
            await cloud.request("listZones")
    assert err.value.code == 401 and not isinstance(err.value, CloudUnavailable)
    assert "unable to verify user credentials" in str(err.value)
    assert "CLOUDSTACK_SECRET" in (err.value.hint or "")


async def test_an_endpoint_that_is_not_the_api_says_so(sim: ThreadedSimulator) -> None:
    """The simulator's server answers 404 in plain text off its API path, as a web server in
    front of CloudStack would."""
    wrong = sim.endpoint.replace("/client/api", "/client/nothing")
    async with Cloud(config(wrong), retries=0) as cloud:
        with pytest.raises(CloudUnavailable) as err:
            await cloud.request("listZones")
    assert err.value.code == 404
    assert f"unexpected answer from {wrong}: HTTP 404 response, not JSON" in str(err.value)
    assert "CLOUDSTACK_ENDPOINT" in (err.value.hint or "")


@pytest.mark.parametrize(("status", "body", "problem"), [
    (200, b"", "HTTP 200 response, empty"),
    (502, b"<html>Bad gateway</html>", "HTTP 502 response, not JSON"),
    (200, b'{"a": {}, "b": {}}', "HTTP 200 response, JSON but not CloudStack's answer"),
    (200, b'["listzonesresponse"]', "HTTP 200 response, JSON but not CloudStack's answer"),
])
def test_what_is_not_cloudstacks_json_is_named(status: int, body: bytes, problem: str) -> None:
    assert answer(status, body).problem == problem


def test_an_error_answer_keeps_cloudstacks_error_object() -> None:
    got = answer(431, b'{"createnetworkresponse": {"errorcode": 431, "cserrorcode": 4350, "errortext": "bad"}}')
    assert (got.status, got.problem, got.inner["errortext"], got.inner["cserrorcode"]) == (431, None, "bad", 4350)
