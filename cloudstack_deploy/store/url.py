"""Where the history store lives: ``CSDEPLOY_STATE_URL``, else SQLite in ``$CSDEPLOY_HOME``.

    CSDEPLOY_STATE_URL=postgresql://user:password@db.example:5432/csdeploy   # shared (CI + people)
    CSDEPLOY_STATE_URL=sqlite:////var/lib/csdeploy/history.db                # another SQLite file
    CSDEPLOY_STATE_URL=none                                                  # record nothing

    CSDEPLOY_STATE_URL=postgresql://user@/csdeploy?host=/var/run/postgresql   # a Unix socket

The URL comes from the environment only, never from a flag, so its password is not in any
command line (``ps``); it (and a ``?password=``) is registered for redaction and shown
everywhere as ``display`` (``postgresql://user:***@db.example:5432/csdeploy``). The driver
gets the user and password re-encoded, so no character of them can end the userinfo early;
a URL where an unencoded ``/``, ``?`` or ``#`` already did is refused, showing none of it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from ..errors import InvalidInput
from ..log import register_secrets
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
        parts = _split(self.url)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        query.setdefault("connect_timeout", str(CONNECT_TIMEOUT))
        return parts.text("postgresql+psycopg", masked=False, query=urlencode(query))


_SECRET_PARAMS = ("password", "sslpassword")  # query parameters whose values are never shown
_SECRET_PARAM = re.compile(r"(?i)(^|&)((?:ssl)?password)=([^&]*)")


@dataclass(frozen=True)
class _Parts:
    scheme: str
    userinfo: str | None  # as written (percent-encoded), None without '@'
    hostport: str
    path: str
    query: str

    @property
    def user(self) -> str:
        return unquote((self.userinfo or "").partition(":")[0])

    @property
    def password(self) -> str | None:
        if self.userinfo is None or ":" not in self.userinfo:
            return None
        return unquote(self.userinfo.partition(":")[2])

    def netloc(self, *, masked: bool) -> str:
        """user:password@host:port, re-encoded so no character of either can end the
        userinfo early (what libpq and yoyo get), or with the password as ``***``."""
        if self.userinfo is None:
            return self.hostport
        if masked:
            user = self.userinfo.partition(":")[0]
            return f"{user}{':***' if self.password is not None else ''}@{self.hostport}"
        user = quote(self.user, safe="")
        password = "" if self.password is None else ":" + quote(self.password, safe="")
        return f"{user}{password}@{self.hostport}"

    def text(self, scheme: str, *, masked: bool, query: str | None = None) -> str:
        query = self.query if query is None else query
        if masked:
            query = _SECRET_PARAM.sub(lambda m: f"{m.group(1)}{m.group(2)}=***", query)
        return f"{scheme}://{self.netloc(masked=masked)}{self.path}" + (f"?{query}" if query else "")


def _split(text: str) -> _Parts:
    """A URL's parts, its secrets registered for redaction; InvalidInput (showing no part of
    a password) for a URL whose userinfo cannot be told apart from what follows it."""
    scheme, sep, rest = text.partition("://")
    if not sep:  # nothing of it is shown: it may be a password pasted in the wrong place
        what = "a URL without a scheme" if ":" not in text else "a URL without '://'"
        raise InvalidInput(f"{ENV_VAR} is not a URL: csdeploy's history store speaks sqlite:// and "
                           f"postgresql://, not {what}", hint=_HINT)
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    if "@" in tail and scheme.lower() != "sqlite":  # a SQLite path may hold an '@'; it has no userinfo
        # `u:pa/ss#w?rd@host/db`: the password holds a character that ends the server part;
        # no reading of such a URL is safe (libpq would take `pa` for a port), so refuse it
        userinfo = rest.rpartition("@")[0]
        found = [m.group(3) for m in _SECRET_PARAM.finditer(rest.partition("?")[2])]
        register_secrets([userinfo, unquote(userinfo), userinfo.partition(":")[2],
                          unquote(userinfo.partition(":")[2]), *found, *map(unquote, found)])
        # nothing after the scheme is shown: any of it may be a piece of a password
        raise InvalidInput(f"{ENV_VAR}={scheme}://***: cannot tell the user name and password from the server: "
                           "they hold an unencoded '/', '?' or '#' (or an '@' follows the server)",
                           hint="percent-encode them in CSDEPLOY_STATE_URL: '/' as %2F, '?' as %3F, '#' as %23, "
                                "'@' as %40 (and '%' as %25)")
    userinfo: str | None
    userinfo, at, hostport = authority.rpartition("@")
    if not at:
        userinfo = None
    path, _, query = tail.partition("#")[0].partition("?")
    parts = _Parts(scheme, userinfo, hostport, path, query)
    secrets = [parts.password, (userinfo or "").partition(":")[2] or None]
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key.lower() in _SECRET_PARAMS:
            secrets.append(value)
    for m in _SECRET_PARAM.finditer(query):
        secrets.append(m.group(3))
    register_secrets(secrets)
    try:
        urlsplit(f"x://{hostport}").port  # noqa: B018  (raises ValueError for a port that is not a number)
    except ValueError:
        raise InvalidInput(f"{ENV_VAR}={parts.text(scheme, masked=True)} is not a URL: its server part "
                           f"{hostport!r} is not HOST, HOST:PORT or [IPv6]:PORT", hint=_HINT) from None
    return parts


def parse_store_url(text: str) -> StoreURL | None:
    """A store URL, or None for ``none``/``off``; InvalidInput (password masked) otherwise."""
    text = text.strip()
    if text.lower() in ("none", "off", ""):
        return None
    parts = _split(text)
    display = parts.text(parts.scheme, masked=True)
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        raw = unquote(parts.path)[1:]  # sqlite:///relative.db, sqlite:////absolute/path.db
        if parts.userinfo is not None or parts.hostport or not raw.strip("/") or parts.query:
            raise InvalidInput(f"{ENV_VAR}={display}: expected sqlite:////absolute/path.db", hint=_HINT)
        path = Path(raw).absolute()
        return StoreURL("sqlite", f"sqlite:///{path}", f"sqlite:///{path}", path)
    if scheme in _POSTGRES:
        host = urlsplit(f"x://{parts.hostport}").hostname
        if not host and "host" not in {k.lower() for k, _ in parse_qsl(parts.query)}:
            raise InvalidInput(f"{ENV_VAR}={display}: no server in the URL (a Unix socket is "
                               "postgresql://USER@/DB?host=/var/run/postgresql)", hint=_HINT)
        return StoreURL("postgresql", parts.text("postgresql", masked=False), parts.text("postgresql", masked=True))
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
