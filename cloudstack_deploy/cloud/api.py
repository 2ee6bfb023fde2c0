"""One CloudStack API request over an aiohttp session: the parameters, their signature, the answer.

This is what `cs`'s AIOCloudStack did for csdeploy, minus what csdeploy never used (its own
retries, job waits, paging, tracing) and minus its import of `requests`, which cost a quarter
of a second before every command's first API call although the calls go through aiohttp.

Signing, as CloudStack's ApiServer.verifyRequest checks it (server/src/main/java/com/cloud/
api/ApiServer.java): every parameter but ``signature``, names as sent and sorted, each joined
as ``name=value`` with the value encoded like ``java.net.URLEncoder`` with ``+`` then replaced
by ``%20`` (so only ``A-Za-z0-9.-*_`` stay literal; ``~`` is ``%7E``, where `cs` left it as is
and was refused), the whole string lower-cased, HMAC-SHA1 with the secret key, Base64.
Requests carry ``signatureVersion=3`` and an ``expires`` 10 minutes ahead, as `cs` sent them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    import aiohttp

EXPIRES_AFTER = timedelta(minutes=10)
EXPIRES_FORMAT = "%Y-%m-%dT%H:%M:%S%z"


@dataclass(frozen=True)
class Answer:
    """What came back: the HTTP status and CloudStack's inner object (its error object when
    the status is not 200), or ``problem`` when the body is not CloudStack's JSON at all."""

    status: int
    inner: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None


def java_urlencode(value: str) -> str:
    """``URLEncoder.encode(value, "UTF-8")`` with ``+`` replaced by ``%20``, as ApiServer does."""
    return quote(value, safe="*").replace("~", "%7E")


def signature(params: Mapping[str, str], secret: str) -> str:
    """The ``signature`` CloudStack expects for ``params`` (one value per name) and ``secret``."""
    text = "&".join(f"{k}={java_urlencode(v)}" for k, v in sorted(params.items()) if k != "signature")
    digest = hmac.new(secret.encode(), text.lower().encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def flatten(params: Mapping[str, Any]) -> dict[str, str]:
    """CloudStack's wire form of Python values, as `cs` sent them: booleans ``true``/``false``,
    numbers as text, a list (or a set, sorted) joined by commas, a dict or a list of dicts as
    ``name[i].key``; None and empty lists are left out."""
    out: dict[str, str] = {}
    for name, value in params.items():
        if value is None:
            continue
        if isinstance(value, str):
            out[name] = value
        elif isinstance(value, bool):
            out[name] = "true" if value else "false"
        elif isinstance(value, int | float):
            out[name] = str(value)
        elif isinstance(value, list | tuple | set | dict):
            items: list[Any] = [value] if isinstance(value, dict) else (
                sorted(value, key=str) if isinstance(value, set) else list(value))
            if not items:
                continue
            if isinstance(items[0], dict):
                for index, item in enumerate(items):
                    for key, sub in item.items():
                        out[f"{name}[{index}].{key}"] = str(sub)
            else:
                out[name] = ",".join(map(str, items))
        else:
            raise TypeError(f"{name}: CloudStack takes no {type(value).__name__} values")
    return out


def signed(command: str, params: Mapping[str, Any], key: str, secret: str, *,
           now: datetime | None = None) -> dict[str, str]:
    """The parameters of one request: ``params``, the command, the key, JSON, an expiry, the signature."""
    out = flatten(params)
    out.update(command=command, apiKey=key, response="json")
    if "expires" not in out:
        out["signatureVersion"] = "3"
        out["expires"] = ((now or datetime.now(UTC)) + EXPIRES_AFTER).strftime(EXPIRES_FORMAT)
    out["signature"] = signature(out, secret)
    return out


def answer(status: int, body: bytes) -> Answer:
    """Read CloudStack's answer ``{"<command>response": {...}}``."""
    if not body.strip():
        return Answer(status, problem=f"HTTP {status} response, empty")
    try:
        data = json.loads(body)
    except ValueError:  # includes a body that is not UTF-8
        return Answer(status, problem=f"HTTP {status} response, not JSON")
    inner = next(iter(data.values())) if isinstance(data, dict) and len(data) == 1 else None
    if not isinstance(inner, dict):
        return Answer(status, problem=f"HTTP {status} response, JSON but not CloudStack's answer")
    return Answer(status, inner)


async def call(session: aiohttp.ClientSession, endpoint: str, params: dict[str, str], *,
               post: bool) -> Answer:
    """Send signed ``params``: a POST as a form (a create must never be resent, and aiohttp
    resends a GET whose connection dropped), otherwise a GET."""
    if post:
        request = session.post(endpoint, data=params)
    else:
        request = session.get(endpoint, params=params)
    async with request as response:
        return answer(response.status, await response.read())
