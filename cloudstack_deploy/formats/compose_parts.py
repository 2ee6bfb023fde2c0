"""The pieces of a Compose service, read into blueprint terms: environment (split into clear
values and secret names), ports, volumes, health checks, depends_on order.

Values are never copied into notes or into the blueprint's secret side: a secret keeps only
its NAME, and its value stays where the user keeps it (the environment, a secrets file).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..blueprint import Problem
from ..blueprint_rules import TreePath
from ..blueprint_schema import ENV_NAME_RE
from .source import Doc, Notes
from .writer import SECRET_NAME, looks_secret

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPS = (":-", ":?", ":+", "-", "?", "+")
_DOTENV = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.-]*)\s*=\s*(.*)$")


@dataclass(frozen=True)
class Ref:
    name: str
    op: str | None
    default: str | None
    """The text after `-`/`:-` (may hold references of its own: `${A:-${B}}`)."""
    arg: str = ""
    text: str = ""
    """The reference as written (`${A:-x}`)."""


def _scan(text: str) -> list[str | Ref]:
    """Compose's interpolation syntax as literal pieces and references: `$$` is a `$`; `$VAR`,
    `${VAR}`, `${VAR<op>ARG}` with op `:-`, `-`, `:?`, `?`, `:+`, `+`; ARG may hold references
    (`${A:-${B:-x}}`). A `$` that starts none of these is literal, as in Compose."""
    out: list[str | Ref] = []
    i, n = 0, len(text)
    lit = []
    while i < n:
        c = text[i]
        if c != "$":
            lit.append(c)
            i += 1
            continue
        if text.startswith("$$", i):
            lit.append("$")
            i += 2
            continue
        if text.startswith("${", i):
            m = _NAME.match(text, i + 2)
            if m is None:
                lit.append(c)
                i += 1
                continue
            j = m.end()
            op = next((o for o in _OPS if text.startswith(o, j)), None)
            if op is None and not text.startswith("}", j):
                lit.append(c)
                i += 1
                continue
            k = j + (len(op) if op else 0)
            depth, end = 1, None
            while k < n:
                if text.startswith("$$", k):
                    k += 2
                    continue
                if text.startswith("${", k):
                    depth += 1
                    k += 2
                    continue
                if text[k] == "}":
                    depth -= 1
                    if depth == 0:
                        end = k
                        break
                k += 1
            if end is None:
                lit.append(c)
                i += 1
                continue
            arg = text[j + (len(op) if op else 0):end]
            if lit:
                out.append("".join(lit))
                lit = []
            out.append(Ref(m[0], op, arg if op in ("-", ":-") else None, arg, text[i:end + 1]))
            i = end + 1
            continue
        m = _NAME.match(text, i + 1)
        if m is None:
            lit.append(c)
            i += 1
            continue
        if lit:
            out.append("".join(lit))
            lit = []
        out.append(Ref(m[0], None, None, "", text[i:m.end()]))
        i = m.end()
    if lit:
        out.append("".join(lit))
    return out


def refs(text: str) -> list[Ref]:
    """The references of a value, nested ones too (`${A:-${B}}` refers to A and B)."""
    out = []
    for piece in _scan(text):
        if isinstance(piece, Ref):
            out.append(piece)
            out += refs(piece.arg)
    return out


def interpolate(value: str, variables: Mapping[str, str] | None = None) -> str | None:
    """Compose's interpolation: `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`,
    `${VAR:+other}`, `${VAR+other}`, `$$` for a `$`, nested in defaults (`${A:-${B:-x}}`).
    ``variables`` are the project's (the shell's over the env file's). None when a variable
    without a default is unset, since its value is unknown here; `${VAR:?err}` is checked
    beforehand by `required`."""
    found = variables or {}
    out = []
    for piece in _scan(value):
        if isinstance(piece, str):
            out.append(piece)
            continue
        got = found.get(piece.name)
        empty = got is None or (got == "" and piece.op is not None and piece.op.startswith(":"))
        if piece.op in ("-", ":-", "+", ":+"):
            use_arg = empty if piece.op in ("-", ":-") else not empty
            if not use_arg:
                out.append("" if piece.op in ("+", ":+") else str(got))
                continue
            inner = interpolate(piece.arg, found)
            if inner is None:
                return None
            out.append(inner)
            continue
        if got is None:
            return None
        out.append(got)
    return "".join(out)


def required(value: str, variables: Mapping[str, str]) -> list[str]:
    """The messages of `${VAR:?err}` / `${VAR?err}` that fail with ``variables`` (Compose
    stops there: `:?` when unset or empty, `?` when unset), nested ones in a default that is
    used too."""
    out = []
    for piece in _scan(value):
        if not isinstance(piece, Ref):
            continue
        got = variables.get(piece.name)
        if piece.op in (":?", "?"):
            if got is None or (piece.op == ":?" and got == ""):
                why = interpolate(piece.arg, variables) or piece.arg or (
                    "unset or empty" if piece.op == ":?" else "unset")
                out.append(f"required variable {piece.name} is not set: {why}")
        elif piece.op in ("-", ":-"):
            if got is None or (piece.op == ":-" and got == ""):
                out += required(piece.arg, variables)
        elif piece.op in ("+", ":+") and not (got is None or (piece.op == ":+" and got == "")):
            out += required(piece.arg, variables)
    return out


def dotenv(text: str) -> dict[str, str]:
    """Names and values of a Compose `.env` file (`NAME=value`, `export`, quotes, `#` comments)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        m = _DOTENV.match(line)
        if not m:
            continue
        raw = m[2].strip()
        quoted = re.match(r"'([^']*)'|\"((?:[^\"\\]|\\.)*)\"", raw)
        if quoted and quoted[1] is not None:
            value = quoted[1]
        elif quoted:
            value = re.sub(r"\\(.)", lambda e: "\n" if e[1] == "n" else e[1], quoted[2])
        else:
            value = re.split(r"\s+#", raw, maxsplit=1)[0].strip()
        out[m[1]] = value
    return out


def env_items(doc: Doc, path: TreePath, value: Any, problems: list[Problem]) -> list[tuple[str, str | None, TreePath]]:
    """`environment:` as (name, value or None, path), from the mapping or the `K=V` list form."""
    if value is None:
        return []
    if isinstance(value, dict):
        out = []
        for k, v in value.items():
            text = None if v is None else ("true" if v is True else "false" if v is False else str(v))
            out.append((str(k), text, path + (k,)))
        return out
    if isinstance(value, list):
        out = []
        for i, item in enumerate(value):
            if not isinstance(item, str):
                problems.append(doc.problem(path + (i,), "expected NAME=value"))
                continue
            k, eq, v = item.partition("=")
            out.append((k.strip(), v if eq else None, path + (i,)))
        return out
    problems.append(doc.problem(path, "expected a mapping or a list of NAME=value"))
    return []


@dataclass
class EnvSplit:
    clear: dict[str, str]
    secret: list[str]
    where: dict[str, TreePath] = field(default_factory=dict)
    """Where each clear variable was in the source."""

    def tree(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.clear:
            out["clear"] = self.clear
        if self.secret:
            out["secret"] = self.secret
        return out


def split_env(doc: Doc, notes: Notes, items: list[tuple[str, str | None, TreePath]], *,
              provided: dict[str, str], service_hosts: set[str],
              variables: Mapping[str, str] | None = None) -> EnvSplit:
    """Clear values and secret names. ``provided``: variables csdeploy gives apps (name ->
    accessory), dropped with a note; ``service_hosts``: compose service names, which are
    host names in Compose but not on csdeploy's VMs; ``variables``: the project's (the
    shell's and the env file's), with which `${VAR}` values are interpolated: a value that is
    then known and not secret is clear."""
    out = EnvSplit({}, [])
    for key, raw, path in items:
        if key in provided:
            notes.add(doc, path, f"csdeploy gives apps {key} for accessory {provided[key]} "
                                 "(private address, URL-encoded): the compose value is not used")
            continue
        secret = False
        found = refs(raw) if raw is not None else []
        if raw is None:
            secret = True
            notes.add(doc, path, f"{key} has no value here (Compose passes it from the shell): a secret")
        elif found and variables is not None and (known := interpolate(raw, variables)) is not None \
                and not looks_secret(key, known) and not any(looks_secret(r.name) for r in found):
            # a value known from the env file/shell/defaults, no secret by its name, its
            # variables' names or its form (a URL with a password): written as it is
            out.clear[key] = known
            out.where[key] = path
            names = ", ".join(sorted({r.name for r in found}))
            notes.add(doc, path, f"interpolated from ${{{names}}} (the env file, the shell or the default): {key} "
                                 "is written as its value")
            continue
        elif found:
            pieces = _scan(raw.strip())
            whole = len(pieces) == 1 and isinstance(pieces[0], Ref)
            ref = found[0]
            if whole and ref.default is not None and not refs(ref.default) and not looks_secret(key, ref.default):
                out.clear[key] = ref.default
                out.where[key] = path
                notes.add(doc, path, f"${{{ref.name}}} with a default: the default was taken as {key}'s value")
                continue
            secret = True
            if whole and ref.name != key:
                notes.add(doc, path, f"Compose reads it from ${{{ref.name}}}; csdeploy's secret is named {key}: "
                                     f"give {key} that value")
            elif not whole:
                names = ", ".join(sorted({r.name for r in found}))
                notes.add(doc, path, f"built from ${{{names}}} in Compose: secret {key} must hold the whole value")
        elif looks_secret(key, raw):
            secret = True
            notes.add(doc, path, f"{key} looks secret: its value was not copied; set it in the environment "
                                 "or the secrets file")
        if secret:
            if SECRET_NAME.match(key):
                if key not in out.secret:
                    out.secret.append(key)
            else:
                notes.add(doc, path, f"'{key}' is no UPPER_SNAKE_CASE name, which csdeploy's secrets need: "
                                     "not carried over")
            continue
        if not ENV_NAME_RE.fullmatch(key):
            notes.add(doc, path, f"'{key}' is not an environment variable name csdeploy accepts")
            continue
        out.clear[key] = raw or ""
        out.where[key] = path
        host = _service_host(key, raw or "", service_hosts)
        if host:
            notes.add(doc, path, f"refers to Compose service '{host}' by host name, which csdeploy's VMs do "
                                 "not resolve: point it at the accessory (see its private address)")
    return out


_HOST_KEY = re.compile(r"(HOST|ADDR|SERVER|URL|URI|ENDPOINT|DSN|BROKER|NODES?|SEEDS?)", re.I)


def _service_host(key: str, value: str, hosts: set[str]) -> str | None:
    """The Compose service a value names as a host: `db:5432`, `redis://redis/0`, or the bare
    name under a key that holds a host (POSTGRES_DB=gitea names a database, not service gitea)."""
    for host in sorted(hosts):
        if value == host and _HOST_KEY.search(key):
            return host
        if re.search(rf"(?:^|[/@]){re.escape(host)}(?::\d+|/)", value) or re.fullmatch(
                rf"[a-z][a-z0-9+.-]*://(?:[^/@]*@)?{re.escape(host)}", value):
            return host
    return None


@dataclass(frozen=True)
class Port:
    container: int
    published: bool
    protocol: str
    path: TreePath


def ports(doc: Doc, notes: Notes, path: TreePath, value: Any,
          variables: Mapping[str, str] | None = None) -> list[Port]:
    out = []
    for i, item in enumerate(value if isinstance(value, list) else []):
        sub = path + (i,)
        if isinstance(item, dict):
            target, proto = item.get("target"), str(item.get("protocol", "tcp"))
            published = item.get("published") is not None or item.get("mode") != "host"
        else:
            text = interpolate(str(item), variables) if isinstance(item, (str, int)) else None
            if text is None:
                notes.add(doc, sub, "a port with an unset variable: not read")
                continue
            text, _, proto = text.partition("/")
            proto = proto or "tcp"
            target = text.rsplit(":", 1)[-1]
            published = True
        if not str(target).isdigit():
            notes.add(doc, sub, f"port {item!r}: ranges and names are not mapped")
            continue
        out.append(Port(int(target), published, proto, sub))
    return out


@dataclass(frozen=True)
class Volume:
    source: str | None
    target: str
    kind: str  # volume | bind | tmpfs | anonymous
    path: TreePath


def volumes(doc: Doc, notes: Notes, path: TreePath, value: Any,
            variables: Mapping[str, str] | None = None) -> list[Volume]:
    out = []
    for i, item in enumerate(value if isinstance(value, list) else []):
        sub = path + (i,)
        if isinstance(item, dict):
            kind, source, target = str(item.get("type", "volume")), item.get("source"), item.get("target")
        elif isinstance(item, str):
            parts = (interpolate(item, variables) or item).split(":")
            if len(parts) == 1:
                kind, source, target = "anonymous", None, parts[0]
            else:
                source, target = parts[0], parts[1]
                kind = "bind" if source.startswith((".", "/", "~", "$")) else "volume"
        else:
            notes.add(doc, sub, "not a volume: not read")
            continue
        if not isinstance(target, str) or not target.startswith("/"):
            notes.add(doc, sub, "no absolute container path: not read")
            continue
        out.append(Volume(source if isinstance(source, str) else None, target, kind, sub))
    return out


def health_command(test: Any) -> str | None:
    """A Compose healthcheck `test` as one shell command (None: disabled or absent)."""
    if isinstance(test, str):
        return test
    if isinstance(test, list) and test and all(isinstance(t, str) for t in test):
        if test[0] == "CMD-SHELL" and len(test) > 1:
            return " ".join(test[1:])
        if test[0] == "CMD" and len(test) > 1:
            return shlex.join(test[1:])
    return None


def depends(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    if isinstance(value, dict):
        return [str(k) for k in value]
    return []


def ordered(doc: Doc, names: list[str], needs: dict[str, list[str]], problems: list[Problem]) -> list[str]:
    """``names`` with every service after what it depends on (file order otherwise)."""
    done: list[str] = []
    state: dict[str, int] = {}

    def visit(name: str, chain: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = " -> ".join([*chain[chain.index(name):], name])
            problems.append(doc.problem(("services", name, "depends_on"), f"depends_on cycle: {cycle}"))
            return
        state[name] = 1
        for dep in needs.get(name, []):
            if dep not in names:
                problems.append(doc.problem(("services", name, "depends_on"), f"no service named '{dep}'"))
                continue
            visit(dep, [*chain, name])
        state[name] = 2
        done.append(name)

    for name in names:
        visit(name, [])
    return done
