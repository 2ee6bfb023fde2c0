"""Small value translations shared by the importers (durations, health-check URLs, names).
What csdeploy knows about well-known accessory images is in `cloudstack_deploy.accessories`."""

from __future__ import annotations

import re

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)")
_UNIT = {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def seconds(value: object) -> float | None:
    """A Compose/Go duration (`30s`, `1m30s`, `500ms`) or a number of seconds; None if neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if value > 0 else None
    if not isinstance(value, str):
        return None
    text = value.strip()
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    total = sum(float(n) * _UNIT[u] for n, u in parts)
    return total if total > 0 else None


def compact(number: float) -> int | float:
    """3.0 -> 3, so written blueprints read `interval: 3`."""
    return int(number) if float(number).is_integer() else round(number, 3)


_LOCAL = r"(?:localhost|127\.0\.0\.1|0\.0\.0\.0|\[::1\])"
_HTTP_URL = re.compile(rf"https?://{_LOCAL}(?::(\d+))?(/[^\s'\"|;&]*)?")
# curl and wget take a URL without its scheme (`curl -f localhost:3000/health`): http is assumed
_BARE_URL = re.compile(rf"(?:^|[\s'\"=]){_LOCAL}(?::(\d+))?(/[^\s'\"|;&]*)?(?=$|[\s'\"|;&])")
_HTTP_TOOL = re.compile(r"(?:^|[\s/;&|'\"])(?:curl|wget|http|httpie|xh)(?:$|\s)")


def http_check(command: str) -> tuple[str, int | None] | None:
    """(path, port) of a health check command that GETs a local URL: curl, wget and the like,
    with or without the scheme (None: no local URL in the command)."""
    m = _HTTP_URL.search(command)
    if m is None and _HTTP_TOOL.search(command):
        # a bare host is also an option's value (`--noproxy localhost`): one with a port or path wins
        bare = list(_BARE_URL.finditer(command))
        m = next((b for b in bare if b[1] or b[2]), bare[0] if bare else None)
    if m is None:
        return None
    return (m[2] or "/"), (int(m[1]) if m[1] else None)


NAME_CHARS = 20


def role_name(name: str) -> str:
    """A compose service / Kamal role name as a blueprint role name (a-z, 0-9, '-', at most
    NAME_CHARS characters); `renamed` says why it differs, for the note the importer keeps."""
    text = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    if not text or not text[0].isalpha():
        text = "r-" + text
    return text[:NAME_CHARS].rstrip("-")


def renamed(original: str, name: str, what: str = "role") -> str | None:
    """The note for a name that had to change (None if it did not)."""
    if original == name:
        return None
    clean = re.sub(r"[^a-z0-9-]+", "-", original.lower()).strip("-")
    if len(clean) + (0 if clean[:1].isalpha() else 2) > NAME_CHARS:
        return (f"{what} named '{name}': shortened to {NAME_CHARS} characters ({what} names are at most "
                f"{NAME_CHARS} of a-z, 0-9 and '-')")
    return f"{what} named '{name}' ({what} names are a-z, 0-9 and '-')"
