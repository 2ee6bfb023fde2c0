"""Where the history store lives: ``CSDEPLOY_STATE_URL``, else SQLite in ``$CSDEPLOY_HOME``.

    CSDEPLOY_STATE_URL=postgresql://user:password@db.example:5432/csdeploy   # shared (CI + people)
    CSDEPLOY_STATE_URL=sqlite:////var/lib/csdeploy/history.db                # another SQLite file
    CSDEPLOY_STATE_URL=none                                                  # record nothing

The URL comes from the environment only, never from a flag, so its password is not in any
command line (``ps``); it is registered for redaction and shown everywhere as ``display``
(``postgresql://user:***@db.example:5432/csdeploy``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from ..errors import InvalidInput
from ..log import register_secret
from ..state import state_root

ENV_VAR = "CSDEPLOY_STATE_URL"
DEFAULT_FILE = "history.db"
CONNECT_TIMEOUT = 5  # seconds: an unreachable server is a warning, and must be one quickly
_POSTGRES = ("postgresql", "postgres", "postgresql+psycopg")


@dataclass(frozen=True)
class StoreURL:
    kind: str                 # sqlite | postgresql
    url: str                  # what the driver gets (may hold a password: never print it)
    display: str              # what a user sees: the password masked
    path: Path | None = None  # SQLite only

    def __str__(self) -> str:
        return self.display

    def __repr__(self) -> str:
        return f"StoreURL({self.display!r})"

    @property
    def yoyo_uri(self) -> str:
        """The same database in yoyo-migrations' scheme (``postgresql+psycopg``: psycopg 3)."""
        if self.kind == "sqlite":
            return f"sqlite:///{self.path}"
        parts = urlsplit(self.url)
        query = dict(parse_qsl(parts.query))
        query.setdefault("connect_timeout", str(CONNECT_TIMEOUT))
        return urlunsplit(("postgresql+psycopg", parts.netloc, parts.path, urlencode(query), ""))


def _mask(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def parse_store_url(text: str) -> StoreURL | None:
    """A store URL, or None for ``none``/``off``; InvalidInput (password masked) otherwise."""
    text = text.strip()
    if text.lower() in ("none", "off", ""):
        return None
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018  (raises ValueError for a port that is not a number)
    except ValueError as exc:
        raise InvalidInput(f"{ENV_VAR} is not a URL: {exc}", hint=_HINT) from None
    if parts.password:
        register_secret(unquote(parts.password))
        register_secret(parts.password)
    display = _mask(text)
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        raw = unquote(parts.path)[1:]  # sqlite:///relative.db, sqlite:////absolute/path.db
        if parts.netloc or not raw.strip("/") or parts.query:
            raise InvalidInput(f"{ENV_VAR}={display}: expected sqlite:////absolute/path.db", hint=_HINT)
        path = Path(raw).absolute()
        return StoreURL("sqlite", f"sqlite:///{path}", f"sqlite:///{path}", path)
    if scheme in _POSTGRES:
        if not parts.hostname and "host=" not in parts.query:
            raise InvalidInput(f"{ENV_VAR}={display}: no server in the URL", hint=_HINT)
        url = urlunsplit(("postgresql", parts.netloc, parts.path, parts.query, parts.fragment))
        return StoreURL("postgresql", url, _mask(url))
    raise InvalidInput(f"{ENV_VAR}={display}: csdeploy's history store speaks sqlite and postgresql, "
                       f"not {scheme or 'a URL without a scheme'}", hint=_HINT)


_HINT = ("set CSDEPLOY_STATE_URL=postgresql://USER:PASSWORD@HOST:5432/DB (shared), "
         "sqlite:////path/history.db, or none; unset it for $CSDEPLOY_HOME/history.db")


def store_url(environ: dict[str, str] | None = None) -> StoreURL | None:
    """The store this process writes to: ``CSDEPLOY_STATE_URL`` or the default SQLite file."""
    env = os.environ if environ is None else environ
    text = env.get(ENV_VAR)
    if text is None:
        path = state_root() / DEFAULT_FILE
        return StoreURL("sqlite", f"sqlite:///{path}", f"sqlite:///{path}", path)
    return parse_store_url(text)
