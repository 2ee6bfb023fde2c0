"""CloudStack request signing, exactly as the Java server (ApiServer.verifyRequest) checks it.

The server builds one string and accepts one signature: every parameter but ``signature``
(names as sent, sorted case-sensitively), joined as ``name=value`` with values encoded like
``java.net.URLEncoder`` (space as %20, ``~`` as %7E, only ``A-Za-z0-9.-*_`` literal), the
whole string lower-cased, HMAC-SHA1'd with the secret key and Base64'd.

Clients that sign differently at the edges fail on a real cloud, and fail here the same way:
`cs` leaves ``~`` unencoded and libcloud also ``[``, ``]`` and sorts lower-cased names, so a
value holding one of those characters is a 401 for them. Everything else they send signs
the same string as Java.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from urllib.parse import quote

_JAVA_SAFE = "*"  # quote() already keeps A-Za-z0-9 . - _ ~ ; Java also keeps *, not ~


def java_urlencode(value: str) -> str:
    """Encode like ``URLEncoder.encode(value, "UTF-8").replace("+", "%20")``."""
    return quote(value, safe=_JAVA_SAFE).replace("~", "%7E")


def canonical_string(params: Iterable[tuple[str, str]]) -> str:
    """The string that is signed, before lower-casing: names as sent, sorted case-sensitively."""
    pairs = sorted((k, v) for k, v in params if k.lower() != "signature")
    return "&".join(f"{k}={java_urlencode(v)}" for k, v in pairs)


def sign(params: Mapping[str, str] | Iterable[tuple[str, str]], secret: str) -> str:
    """The signature CloudStack expects for ``params`` (one value per name) and ``secret``."""
    items = list(params.items()) if isinstance(params, Mapping) else list(params)
    digest = hmac.new(secret.encode(), canonical_string(items).lower().encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def verify(params: Mapping[str, str], signature: str, secret: str) -> bool:
    """True when ``signature`` is CloudStack's for ``params`` (compared in constant time).

    A value that cannot be encoded (a lone surrogate from broken percent-escapes) cannot have
    been signed by anyone: refused, never an exception.
    """
    try:
        expected = sign(params, secret)
    except UnicodeError:
        return False
    return hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace"))


EXPIRES_FORMATS = ("%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S.%f%z")


def parse_expires(value: str) -> datetime | None:
    """Parse CloudStack's ``expires`` (``2026-01-01T10:00:00+0000``); None when malformed."""
    for fmt in EXPIRES_FORMATS:
        try:
            parsed = datetime.strptime(value, fmt)
        except ValueError:
            continue
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None
