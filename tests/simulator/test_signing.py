"""Request signing and the transport, as CloudStack's ApiServer/ApiServlet do them.

Expected signatures are computed here independently of the simulator, with a byte-level
reimplementation of ``java.net.URLEncoder`` (what ApiServer.verifyRequest encodes values
with), and checked against ``signing.sign`` and against the live server; requests signed by
the real `cs` and libcloud clients, which differ from Java at the edges, must be accepted.
Every authentication failure must be the one 401 CloudStack gives.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlparse

import pytest
import requests
from cs import CloudStack, CloudStackApiException
from libcloud.common.types import InvalidCredsError
from libcloud.compute.providers import get_driver
from libcloud.compute.types import Provider

from cloudstack_deploy.lab.simulator import catalog, signing
from cloudstack_deploy.lab.simulator.server import ThreadedSimulator

try:  # tests/simulator is a package; work either way
    from .conftest import KEY, SECRET, make_config
except ImportError:
    from conftest import KEY, SECRET, make_config  # type: ignore[no-redef]

AUTH_TEXT = "unable to verify user credentials and/or request signature"
#: Seeded templates whose name contains "Debian" (a keyword/name filter must find exactly these).
DEBIAN_TEMPLATES = sum("Debian" in name for name, *_ in catalog.TEMPLATES)
JSON_UTF8 = "application/json; charset=UTF-8"

# ---- an independent Java URLEncoder + CloudStack signature -------------------------------------

_JAVA_LITERAL = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-*_")


def java_url_encode(value: str) -> str:
    """``URLEncoder.encode(value, "UTF-8").replaceAll("\\\\+", "%20")``, byte by byte.

    Java keeps only ``A-Za-z0-9 . - * _``, turns a space into ``+`` and every other UTF-8
    byte into ``%XX`` (upper-case hex); CloudStack then replaces ``+`` by ``%20``.
    """
    out = []
    for byte in value.encode("utf-8"):
        if byte in _JAVA_LITERAL:
            out.append(chr(byte))
        elif byte == 0x20:
            out.append("+")
        else:
            out.append(f"%{byte:02X}")
    return "".join(out).replace("+", "%20")


def expected_signature(params: dict[str, str], secret: str) -> str:
    """ApiServer.verifyRequest: names as sent, sorted case-sensitively, values Java-encoded."""
    text = "&".join(f"{k}={java_url_encode(v)}" for k, v in sorted(params.items()) if k != "signature")
    digest = hmac.new(secret.encode(), text.lower().encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


TRICKY_VALUES = [
    "two words", "a~tilde", "/etc/path", "1+1", "a=b", "x&y", "café", "日本", "", "*.-_",
    "mixed ~/+=& é 日本 *",
]


def test_the_java_encoder_of_this_test_is_right() -> None:
    assert java_url_encode("a b~c/d+e=f&g*h.i-j_k") == "a%20b%7Ec%2Fd%2Be%3Df%26g*h.i-j_k"
    assert java_url_encode("é日本") == "%C3%A9%E6%97%A5%E6%9C%AC"
    assert java_url_encode("") == ""


@pytest.mark.parametrize("value", TRICKY_VALUES)
def test_sign_matches_java(value: str) -> None:
    params = {"command": "listZones", "apiKey": KEY, "response": "json", "name": value}
    assert signing.java_urlencode(value) == java_url_encode(value)
    assert signing.sign(params, SECRET) == expected_signature(params, SECRET)


def test_sign_sorts_names_as_sent_case_sensitively() -> None:
    # ordinal order puts upper-case first: "Zeta" < "apiKey" < "command" < "zoneId"
    params = {"zoneId": "z", "command": "listZones", "apiKey": KEY, "Zeta": "1"}
    assert signing.canonical_string(params.items()) == "Zeta=1&apiKey=test-api-key&command=listZones&zoneId=z"
    assert signing.sign(params, SECRET) == expected_signature(params, SECRET)


def test_a_fixed_vector() -> None:
    """Computed with ``openssl dgst -sha1 -hmac test-secret-key -binary | base64``."""
    params = {"apiKey": "test-api-key", "command": "listZones", "name": "café ~/+=&*", "response": "json"}
    assert signing.canonical_string(params.items()).lower() == \
        "apikey=test-api-key&command=listzones&name=caf%c3%a9%20%7e%2f%2b%3d%26*&response=json"
    assert signing.sign(params, SECRET) == expected_signature(params, SECRET) == "1jcegRy5uC3pXUkk/U01aT6fv94="


# ---- the live server ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server() -> Iterator[ThreadedSimulator]:
    with ThreadedSimulator(make_config(ssh=False)) as sim:
        yield sim


def signed(command: str, secret: str = SECRET, **params: Any) -> dict[str, str]:
    out = {k: str(v) for k, v in params.items()}
    out.setdefault("apiKey", KEY)
    out.update(command=command, response="json")
    out["signature"] = expected_signature(out, secret)
    return out


def get(server: ThreadedSimulator, params: dict[str, str]) -> requests.Response:
    return requests.get(server.endpoint, params=params, timeout=10)


def zone_id(server: ThreadedSimulator) -> str:
    return get(server, signed("listZones")).json()["listzonesresponse"]["zone"][0]["id"]


@pytest.mark.parametrize("value", TRICKY_VALUES)
def test_server_accepts_java_signed_requests(server: ThreadedSimulator, value: str) -> None:
    resp = get(server, signed("listZones", name=value))
    assert resp.status_code == 200, resp.text
    zones = resp.json()["listzonesresponse"]
    # signature fine; no zone has such a name (an empty value is no filter, as in CloudStack)
    assert zones == {} if value else zones["count"] == 1


#: Characters the Python clients leave unencoded where java.net.URLEncoder encodes them: a
#: value holding one is signed over a different string than the server builds.
CS_EDGE, LIBCLOUD_EDGE = "~", "~[]"


@pytest.mark.parametrize("value", TRICKY_VALUES)
def test_the_cs_client_is_accepted_exactly_where_cloudstack_accepts_it(server: ThreadedSimulator,
                                                                       value: str) -> None:
    """ApiServer.verifyRequest encodes values with URLEncoder ("~" -> %7E); `cs` signs "~"
    literally, so on a real cloud its requests with a "~" in a value fail with 401, and every
    other value works (it always adds signatureVersion=3 + expires)."""
    api = CloudStack(endpoint=server.endpoint, key=KEY, secret=SECRET)
    if any(c in value for c in CS_EDGE):
        with pytest.raises(CloudStackApiException) as info:
            api.listTemplates(templatefilter="featured", keyword=value)
        assert info.value.response.status_code == 401
        return
    found = api.listTemplates(templatefilter="featured", keyword=value)
    assert found == {} if value else found["count"] == len(catalog.TEMPLATES)
    assert api.listZones(name="lab")["zone"][0]["name"] == "lab-zone-1"


def test_libcloud_is_accepted_exactly_where_cloudstack_accepts_it(server: ThreadedSimulator) -> None:
    """libcloud sorts lower-cased names, sends camelCase names (zoneId) and leaves "~[]" of
    values unencoded. ApiServer.verifyRequest sorts names as sent and URLEncodes values, so
    the two agree unless a value holds one of those characters (a 401, on a real cloud too)."""
    url = urlparse(server.endpoint)
    drv = get_driver(Provider.CLOUDSTACK)(KEY, SECRET, host=url.hostname, port=url.port, path=url.path,
                                          secure=False)
    zone = zone_id(server)
    found = drv._sync_request("listTemplates", params={"templateFilter": "featured", "zoneId": zone,
                                                       "keyword": "Debian"})
    assert found["count"] == DEBIAN_TEMPLATES
    assert drv._sync_request("listTemplates", params={"templateFilter": "featured", "zoneId": zone,
                                                      "keyword": "Debian 12 /+é"}) == {}
    assert drv._sync_request("listZones", params={"tags[0].key": "k", "tags[0].value": "v é"}) == {}
    for params in ({"keyword": "Debian 12 ~"}, {"tags[0].key": "k[1]", "tags[0].value": "v"}):
        with pytest.raises(InvalidCredsError):
            drv._sync_request("listZones", params=params)


def test_only_the_java_way_of_signing_is_accepted(server: ThreadedSimulator) -> None:
    """ApiServer.verifyRequest computes one string (names as sent, sorted case-sensitively,
    values URLEncoded) and compares one signature: signing lower-cased names, or leaving a
    value unencoded, is a 401 even with the right secret."""
    params = {"command": "listZones", "apiKey": KEY, "response": "json", "Name": "a~b", "available": "true"}
    java = signing.sign(params, SECRET)
    assert get(server, dict(params, signature=java)).status_code == 200
    lowered = sorted((k.lower(), v) for k, v in params.items())  # "available" < "name" < ... lower-cased
    variants = {
        "lower-cased names": "&".join(f"{k}={signing.java_urlencode(v)}" for k, v in lowered),
        "~ left as is": "&".join(f"{k}={quote(v, safe='*')}" for k, v in sorted(params.items())),
    }
    for why, text in variants.items():
        sig = base64.b64encode(hmac.new(SECRET.encode(), text.lower().encode(), hashlib.sha1).digest()).decode()
        assert sig != java, why
        _expect_401(get(server, dict(params, signature=sig)), "listZones")


def test_a_repeated_query_parameter_counts_once_the_last_one(server: ThreadedSimulator) -> None:
    """ApiServlet.utf8Fixup re-reads the query string into the parameter map: of a name given
    twice, the last value is the one signed and used."""
    params = signed("listZones", name="nothing")
    query = "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items()) + "&name=lab"
    resp = requests.get(f"{server.endpoint}?{query}", timeout=10)
    _expect_401(resp, "listZones")  # signed for "nothing", the server reads "lab"
    params = signed("listZones", name="lab")
    query = "name=nothing&" + "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())
    assert requests.get(f"{server.endpoint}?{query}", timeout=10).json()["listzonesresponse"]["count"] == 1


def _expect_401(resp: requests.Response, command: str) -> None:
    assert resp.status_code == 401
    assert resp.headers["Content-Type"] == JSON_UTF8
    assert resp.json() == {f"{command.lower()}response": {
        "uuidList": [], "errorcode": 401, "errortext": AUTH_TEXT}}


def _iso(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).strftime("%Y-%m-%dT%H:%M:%S+0000")


def test_tampered_signature_is_401(server: ThreadedSimulator) -> None:
    params = signed("listZones", name="x")
    params["name"] = "y"  # signed for "x"
    _expect_401(get(server, params), "listZones")
    params = signed("listZones")
    sig = params["signature"]
    params["signature"] = ("A" if sig[0] != "A" else "B") + sig[1:]
    _expect_401(get(server, params), "listZones")


def test_wrong_secret_is_401(server: ThreadedSimulator) -> None:
    _expect_401(get(server, signed("listVirtualMachines", secret="not-the-secret")), "listVirtualMachines")


def test_unknown_api_key_is_401(server: ThreadedSimulator) -> None:
    _expect_401(get(server, signed("listZones", apiKey="someone-else")), "listZones")


def test_missing_signature_is_401(server: ThreadedSimulator) -> None:
    params = signed("listZones")
    del params["signature"]
    _expect_401(get(server, params), "listZones")


def test_expired_v3_request_is_401(server: ThreadedSimulator) -> None:
    params = signed("listZones", signatureVersion="3", expires=_iso(timedelta(minutes=-1)))
    _expect_401(get(server, params), "listZones")
    fresh = signed("listZones", signatureVersion="3", expires=_iso(timedelta(minutes=5)))
    assert get(server, fresh).status_code == 200


def test_v3_without_expires_is_401(server: ThreadedSimulator) -> None:
    _expect_401(get(server, signed("listZones", signatureVersion="3")), "listZones")


def test_expires_is_ignored_without_signature_version(server: ThreadedSimulator) -> None:
    assert get(server, signed("listZones", expires=_iso(timedelta(days=-1)))).status_code == 200


def test_unknown_command_is_401_before_the_signature_is_checked(server: ThreadedSimulator) -> None:
    """ApiServer.verifyRequest refuses a command it does not know (s_apiNameCmdClassMap, names
    case-sensitive) before looking at key or signature; getSerializedApiError then finds no
    command class and names the envelope "errorresponse"."""
    for params in (signed("launchRocket", target="moon"), signed("launchRocket", secret="wrong"),
                   signed("listzones"), signed("LISTZONES")):
        _expect_401(get(server, params), "error")


def test_no_command_is_401_not_432(server: ThreadedSimulator) -> None:
    """ApiServlet sends every request without a session to verifyRequest, which answers false
    when "command" is missing: the 401. The envelope is named after the (missing) command:
    "errorresponse" for a request without parameters, the literal "null" otherwise
    (ApiServer.getSerializedApiError leaves responseName null)."""
    resp = requests.get(server.endpoint, timeout=10)
    assert (resp.status_code, resp.json()) == (401, {"errorresponse": {
        "uuidList": [], "errorcode": 401, "errortext": AUTH_TEXT}})
    params = signed("listZones")
    params["Command"] = params.pop("command")  # "command" is looked up case-sensitively
    resp = get(server, params)
    assert (resp.status_code, resp.json()) == (401, {"null": {
        "uuidList": [], "errorcode": 401, "errortext": AUTH_TEXT}})


def test_post_form_is_handled_like_get(server: ThreadedSimulator) -> None:
    params = signed("listTemplates", templatefilter="featured", name="Debian 12 ~bookworm")
    by_get = get(server, params)
    by_post = requests.post(server.endpoint, data=params, timeout=10)
    assert by_get.status_code == by_post.status_code == 200
    assert by_post.json() == by_get.json() == {"listtemplatesresponse": {}}
    params = signed("listTemplates", templatefilter="featured", name="Debian")
    assert requests.post(server.endpoint, data=params, timeout=10).json() == get(server, params).json()
    assert get(server, params).json()["listtemplatesresponse"]["count"] == DEBIAN_TEMPLATES
    bad = dict(params, signature="bad")
    _expect_401(requests.post(server.endpoint, data=bad, timeout=10), "listTemplates")


def test_parameter_names_are_case_insensitive(server: ThreadedSimulator) -> None:
    zone = zone_id(server)
    found = get(server, signed("listTemplates", templateFilter="featured", zoneId=zone)).json()
    assert found["listtemplatesresponse"]["count"] == len(catalog.TEMPLATES)
    # the camelCase name is really read: an unknown zoneId is a 431, not ignored
    resp = get(server, signed("listTemplates", templateFilter="featured", zoneId="7e8e1c4a-0000-4000-8000-000000000000"))
    assert resp.status_code == 431 and "zoneid" in resp.json()["listtemplatesresponse"]["errortext"]
    # command names are not: a mixed-case one is unknown (see the unknown-command test)
    _expect_401(get(server, signed("LISTZONES")), "error")


def test_content_type_is_json_utf8(server: ThreadedSimulator) -> None:
    ok = get(server, signed("listZones"))
    missing = get(server, signed("listTemplates"))  # templatefilter is required
    assert (ok.status_code, missing.status_code) == (200, 431)
    for resp in (ok, missing):
        assert resp.headers["Content-Type"] == JSON_UTF8
        json.loads(resp.content.decode("utf-8"))
    assert missing.json()["listtemplatesresponse"]["errortext"] == \
        "Unable to execute API command listtemplates due to missing parameter templatefilter"
