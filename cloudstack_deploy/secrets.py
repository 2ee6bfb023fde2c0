"""Secret values: loaded once, by the names the blueprint declares, and never shown.

A blueprint only names its secrets; the values come from the environment first (what CI
systems inject) and otherwise from a dotenv file (what a developer keeps next to the
blueprint, out of version control). Everything that can end up in a terminal or a log
(`repr`, `str`, error messages) shows names only; `values_for_redaction()` hands the values
to the log redactor so they are scrubbed even if something else prints them.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import stat
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, quote_plus, unquote, unquote_plus, urlsplit

from .errors import InvalidInput
from .log import register_secrets

if TYPE_CHECKING:  # the cloud's configuration registers its secret through this module: no blueprint rules
    from .blueprint_schema import Blueprint

_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}


class SecretsError(InvalidInput):
    """Secrets are missing or the secrets file cannot be read; names only, never values."""

    def __init__(self, message: str, *, missing: tuple[str, ...] = (), hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.missing = missing


class Secrets(Mapping[str, str]):
    """Secret values by name. Reads like a dict; prints like a list of names."""

    def __init__(self, values: Mapping[str, str], sources: Mapping[str, str] | None = None, *,
                 registry: tuple[str, str] | None = None) -> None:
        self._values = dict(values)
        self._sources = dict(sources or {})
        #: (username, secret name) of the registry login, whose base64 `user:password` Docker
        #: keeps in ~/.docker/config.json on every host.
        self._registry = registry

    def __getitem__(self, name: str) -> str:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Secrets(names={sorted(self._values)!r})"

    __str__ = __repr__

    def source_of(self, name: str) -> str:
        """Where a value came from (`environment`, the dotenv path, or the vault adapter and
        the secret's reference there), for diagnostics and `csdeploy secrets print`."""
        return self._sources.get(name, "unknown")

    def values_for_redaction(self) -> frozenset[str]:
        """Every value and every form derived from one (see `derived_forms`), for redaction."""
        forms: set[str] = set()
        for value in self._values.values():
            if value:
                forms |= derived_forms(value)
        if self._registry is not None and self._values.get(self._registry[1]):
            auth = f"{self._registry[0]}:{self._values[self._registry[1]]}"
            forms |= _base64_forms(auth)
        return frozenset(forms)


def derived_forms(value: str) -> set[str]:
    """`value` and the forms it takes on its way to a host and back in an echo.

    URL-encoded both ways (a password inside DATABASE_URL is percent-encoded; a secret that
    is itself a URL is echoed decoded, and its password alone), with upper- and lower-case hex; base64 (standard and
    URL-safe, with and without padding); JSON-escaped; shell-quoted. A line of a Docker env
    file is `NAME=value` with the value as it is, so the plain value covers it.
    """
    forms = {value, unquote(value), unquote_plus(value)}
    try:  # a secret that is a URL (DATABASE_URL=postgres://u:pw@h/db): its password alone too
        password = urlsplit(value).password if "://" in value else None
    except ValueError:
        password = None
    if password:
        forms |= {password, unquote(password)}
    for encoded in (quote(value, safe=""), quote(value), quote_plus(value), quote_plus(value, safe=":/@")):
        forms |= {encoded, re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), encoded)}
    forms |= _base64_forms(value)
    forms |= {json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}
    forms |= {shlex.quote(value), value.replace("'", "'\"'\"'")}
    return {f for f in forms if f}


def _base64_forms(text: str) -> set[str]:
    raw = text.encode()
    forms = {base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()}
    return forms | {f.rstrip("=") for f in forms}


def register_derived(values: Iterable[str]) -> None:
    """Register `values` and everything derived from them (`derived_forms`) for redaction."""
    forms: set[str] = set()
    for value in values:
        if value:
            forms |= derived_forms(value)
    register_secrets(forms)


def load_secrets(
    blueprint: Blueprint, environ: Mapping[str, str] = os.environ, dotenv_path: str | Path | None = None,
) -> Secrets:
    """Values for every secret the blueprint declares: environment first, then the dotenv file,
    then the blueprint's `secrets_source` (a vault's CLI, run once for everything still missing).

    `dotenv_path` replaces the blueprint's `secrets_file`. An empty value counts as missing
    (an empty password is a mistake far more often than a choice). Raises SecretsError
    naming every missing secret and every place looked in.
    """
    path = Path(dotenv_path) if dotenv_path is not None else blueprint.secrets_file_path()
    base = None  # a relative secrets_file is read from inside the blueprint's directory
    if (dotenv_path is None and blueprint.secrets_file and blueprint.source is not None
            and not Path(blueprint.secrets_file).expanduser().is_absolute()):
        base = blueprint.source.parent
    needed = [name for name in blueprint.secrets if not environ.get(name)]
    real = secrets_file_real_path(path, base) if path is not None and needed else None
    found = real is not None
    from_file = read_dotenv(path, real=real) if path is not None and real is not None else {}
    values: dict[str, str] = {}
    sources: dict[str, str] = {}
    for name in blueprint.secrets:
        if environ.get(name):
            values[name], sources[name] = environ[name], "environment"
        elif from_file.get(name):
            values[name], sources[name] = from_file[name], str(path)
    missing = tuple(name for name in blueprint.secrets if name not in values)
    source = blueprint.secrets_source
    if missing and source is not None:  # the vault last: only for what is set nowhere else
        from . import vaults

        fetched = vaults.fetch(source, missing, environ=environ, hide=blueprint.secrets,
                               dotenv=lambda lines, where: parse_dotenv(lines, where=where))
        register_derived(fetched.values())
        for name in missing:
            values[name], sources[name] = fetched[name], vaults.describe(source, name)
        missing = ()
    if missing:
        looked = ["the environment"]
        if path is not None:
            looked.append(str(path) + ("" if found else " (not found)"))
        raise SecretsError(
            f"missing secret{'s' if len(missing) > 1 else ''}: {', '.join(missing)} "
            f"(looked in {' and '.join(looked)})",
            missing=missing,
            hint=f"export {missing[0]}=... or add {missing[0]}=... to "
                 f"{path if path is not None else 'a file named by secrets_file in the blueprint'}",
        )
    registry = (blueprint.registry.username, blueprint.registry.password) if blueprint.registry else None
    secrets = Secrets(values, sources, registry=registry)
    # From here on no log line, error or progress line can show a value, in any form.
    register_secrets(secrets.values_for_redaction())
    return secrets


#: A dotenv file is a few lines; anything bigger is not one.
MAX_SECRETS_FILE_BYTES = 1024 * 1024
_KINDS = {stat.S_IFDIR: "a directory", stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFSOCK: "a socket",
          stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device"}


def check_secrets_file(path: Path, base: Path | None = None) -> bool:
    """True if ``path`` is a secrets file csdeploy may read, False if there is none there
    (see `secrets_file_real_path`, which raises SecretsError for what may not be read)."""
    return secrets_file_real_path(path, base) is not None


def secrets_file_real_path(path: Path, base: Path | None = None) -> Path | None:
    """Where ``path`` really is, if it is a secrets file csdeploy may read; None if there is
    none there.

    Raises SecretsError for anything else: a directory, FIFO or device (reported as such:
    reading a FIFO would hang, a device never end), a file owned by another user, one
    larger than MAX_SECRETS_FILE_BYTES, or a path that a symlink leads out of the place it
    names (`.env -> /etc/shadow`, or `etclink/shadow` with `etclink -> /etc`: csdeploy often
    runs as root, so ownership alone would not stop that). Every symlink on the way from
    ``base`` (the blueprint's directory, for a relative secrets_file; else the file's own
    directory) must lead inside the directory that holds it: `.env -> envs/prod.env` and
    `envs -> shared/envs` are fine. The directories of an absolute secrets_file are taken as
    written.
    """
    if base is None:
        base = path.parent
    try:
        parts = path.relative_to(base).parts
    except ValueError:
        base, parts = path.parent, (path.name,)
    here = Path(os.path.realpath(base))
    try:
        for i, part in enumerate(parts):
            if part in ("", "."):
                continue
            if part == "..":
                here = here.parent
                continue
            step = here / part
            if step.is_symlink():
                target = Path(os.path.realpath(step))
                last = i == len(parts) - 1
                if last and not target.exists():
                    raise SecretsError(f"secrets file {path} is a symlink to {target}, which does not exist")
                if not target.is_relative_to(here):
                    what = "is a symlink" if last else f"goes through {base.joinpath(*parts[:i + 1])}, a symlink"
                    raise SecretsError(f"secrets file {path} {what} to {target}, outside {here}: refusing to "
                                       "read it", hint=f"set secrets_file to the file itself ({os.path.realpath(path)}) "
                                                        "if that is really where the secrets are")
                step = target
            here = step
        st = os.stat(here)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return None
    except OSError as exc:
        raise SecretsError(f"cannot read secrets file {path}: {exc.strerror or exc}") from None
    kind = _KINDS.get(stat.S_IFMT(st.st_mode))
    if kind is not None or not stat.S_ISREG(st.st_mode):
        raise SecretsError(f"secrets file {path} is {kind or 'not a regular file'}, not a file of KEY=VALUE lines")
    if st.st_uid != os.getuid():
        raise SecretsError(f"secrets file {path} belongs to another user (uid {st.st_uid}): refusing to read it",
                           hint="keep the secrets file in a file of your own, readable only by you (chmod 600)")
    if st.st_size > MAX_SECRETS_FILE_BYTES:
        raise SecretsError(f"secrets file {path} is {st.st_size} bytes; a secrets file is at most "
                           f"{MAX_SECRETS_FILE_BYTES >> 20} MiB of KEY=VALUE lines")
    return here


def read_dotenv(path: str | Path, *, real: Path | None = None) -> dict[str, str]:
    """Parse a dotenv file: `KEY=VALUE` lines, `#` comments, an optional `export ` prefix,
    single quotes (literal), double quotes (backslash escapes). No `$VAR` expansion: a value
    is exactly what is written, so a `$` in a password stays a `$`. ``real``: the checked
    real path to open (without following a symlink put there since); messages name ``path``."""
    try:
        if real is None:
            text = Path(path).read_text(encoding="utf-8")
        else:
            with os.fdopen(os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK), encoding="utf-8") as f:
                text = f.read(MAX_SECRETS_FILE_BYTES + 1)
        lines = text.splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretsError(f"cannot read secrets file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    return parse_dotenv(lines, where=str(path))


def parse_dotenv(lines: Iterable[str], *, where: str) -> dict[str, str]:
    """Dotenv lines (see `read_dotenv`) as a dict; errors name ``where`` and the line number."""
    values: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("export "):
            stripped = stripped[len("export "):].lstrip()
        key, eq, raw = stripped.partition("=")
        key = key.strip()
        if not eq or not _KEY_RE.fullmatch(key):
            raise SecretsError(f"{where}:{number}: expected KEY=VALUE")  # the line may hold a secret
        try:
            values[key] = _dotenv_value(raw.strip())
        except ValueError as exc:
            raise SecretsError(f"{where}:{number}: {key}: {exc}") from None
    return values


def _dotenv_value(raw: str) -> str:
    if raw[:1] == "'":
        end = raw.find("'", 1)
        if end < 0:
            raise ValueError("unterminated single quote")
        _check_tail(raw[end + 1:])
        return raw[1:end]
    if raw[:1] == '"':
        out, i = [], 1
        while i < len(raw):
            ch = raw[i]
            if ch == "\\" and i + 1 < len(raw):
                out.append(_ESCAPES.get(raw[i + 1], "\\" + raw[i + 1]))
                i += 2
            elif ch == '"':
                _check_tail(raw[i + 1:])
                return "".join(out)
            else:
                out.append(ch)
                i += 1
        raise ValueError("unterminated double quote")
    comment = re.search(r"\s#", raw)  # `KEY=value # note`; a '#' inside a value stays
    return (raw[: comment.start()] if comment else raw).strip()


def _check_tail(tail: str) -> None:
    """After a closing quote only a comment may follow."""
    tail = tail.strip()
    if tail and not tail.startswith("#"):
        raise ValueError("unexpected text after the closing quote")
