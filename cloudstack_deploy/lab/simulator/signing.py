"""CloudStack request signing, computed the way the Java server (ApiServer.verifyRequest) does.

Parameters (all but ``signature``) are sorted by name, joined as ``name=value`` with values
encoded like ``java.net.URLEncoder`` (space as %20), lower-cased, HMAC-SHA1'd with the secret
key and Base64'd. Python clients differ at the edges (``cs`` leaves ``~`` unencoded; libcloud
lower-cases names before sorting and leaves ``[]`` unencoded), so the server also accepts
those variants deliberately: each is still an HMAC over every parameter, so none weakens the
check.
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


def _cs_encode(value: str) -> str:
    # The cs client: quote(s, safe="*"), which leaves "~" literal.
    return quote(value, safe="*")


def _libcloud_encode(value: str) -> str:
    return quote(value, safe="[]*")


def canonical_string(
    params: Iterable[tuple[str, str]], *, encode=java_urlencode, lower_names: bool = False
) -> str:
    """The string that is signed, before lower-casing."""
    pairs = [(k.lower() if lower_names else k, v) for k, v in params if k != "signature"]
    pairs.sort(key=lambda kv: kv[0])
    return "&".join(f"{k}={encode(v)}" for k, v in pairs)


def sign(params: Mapping[str, str] | Iterable[tuple[str, str]], secret: str) -> str:
    """The Java-exact signature of ``params`` (names as sent) with ``secret``."""
    items = list(params.items()) if isinstance(params, Mapping) else list(params)
    return _hmac(canonical_string(items), secret)


def _hmac(text: str, secret: str) -> str:
    digest = hmac.new(secret.encode(), text.lower().encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def candidate_signatures(items: list[tuple[str, str]], secret: str) -> set[str]:
    """Every signature the server accepts for these parameters: Java-exact plus client variants."""
    texts = {
        canonical_string(items),
        canonical_string(items, encode=_cs_encode),
        canonical_string(items, encode=_libcloud_encode, lower_names=True),
        canonical_string(items, lower_names=True),
    }
    return {_hmac(t, secret) for t in texts}


def verify(items: list[tuple[str, str]], signature: str, secret: str) -> bool:
    """True when ``signature`` matches one accepted variant (compared in constant time)."""
    ok = False
    for candidate in candidate_signatures(items, secret):
        ok |= hmac.compare_digest(candidate.encode(), signature.encode())
    return ok


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
