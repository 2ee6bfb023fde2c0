"""The value rules of a blueprint: one checker per kind of value, and how problems are kept.

Each checker validates one value and either returns it normalised or records a `Problem`
(with the file and line it came from) and returns `BAD`; `blueprint.py` walks the sections
and applies them from tables. Split from `blueprint_schema.py`, which keeps the records.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import images
from .blueprint_schema import (
    ENV_NAME_RE,
    MAX_DISK_GB,
    MAX_ROLE_COUNT,
    MAX_SECONDS,
    MIN_ROOT_DISK_GB,
    NAME_RE,
    SECRET_NAME_RE,
    mount_point_problem,
    parse_duration,
)

# --- Value rules ----------------------------------------------------------------------------
# The checkers below each validate one value and either return it normalised or record a
# Problem and return BAD. They are table-driven by `blueprint.py`, which walks the sections.

#: A position in the parsed tree, e.g. ("roles", "web", "count") or ("secrets", 0).
TreePath = tuple[str | int, ...]
#: Where a tree position came from: (file or `--set PATH`, 1-based line or None).
Loc = tuple[str, int | None]
#: Checks one value at a path: returns it normalised, or records a Problem and returns BAD.
Checker = Callable[["Ctx", TreePath, Any], Any]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a blueprint, rendered as `demo.yml:12: roles.web.count: ...`."""

    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        # Everything here may echo the blueprint's text: escaped, so a key cannot carry a
        # terminal escape sequence or a newline that fakes another `file:line:` problem.
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        text = f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        return printable(text)


def printable(text: str) -> str:
    """`text` with every non-printable character (control characters, escape sequences,
    line breaks, bidi overrides) written as a Python escape such as `\\x1b` or `\\n`."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


#: How much of a key from the blueprint messages repeat; a 1 MB key must not make a 1 MB line.
KEY_SHOWN = 60


def show_key(key: str) -> str:
    """A key from the blueprint as messages show it: escaped and cut to KEY_SHOWN characters."""
    key = printable(key)
    return key if len(key) <= KEY_SHOWN else key[: KEY_SHOWN - 3] + "..."


class _Bad:
    def __repr__(self) -> str:
        return "BAD"


#: Returned by a checker that recorded a problem; callers then fall back to a placeholder.
BAD: Any = _Bad()


def dotted(path: TreePath) -> str:
    """`("roles", "web", "count")` -> `roles.web.count`; list indexes as `[0]`."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{show_key(part)}" if out else show_key(part))
    return out


def describe(value: Any) -> str:
    """A short, quoted rendering of a bad value for messages (`'two'`, `a list`, `null`)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:37] + "...")
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


@dataclass
class Ctx:
    """Collects problems; knows where each tree position came from."""

    file: str
    locs: dict[TreePath, Loc]
    problems: list[Problem] = field(default_factory=list)
    #: Secret names used by env sections, with where; checked against `secrets` at the end.
    secret_refs: list[tuple[TreePath, str]] = field(default_factory=list)

    def where(self, path: TreePath) -> Loc:
        """The nearest recorded origin: a missing key is reported at its parent's line."""
        while path not in self.locs and path:
            path = path[:-1]
        return self.locs.get(path, (self.file, None))

    def add(self, path: TreePath, message: str) -> None:
        file, line = self.where(path)
        self.problems.append(Problem(file, line, dotted(path), message))

    def type_error(self, path: TreePath, expected: str, value: Any) -> Any:
        self.add(path, f"expected {expected}, got {describe(value)}")
        return BAD


def check_section(ctx: Ctx, path: TreePath, value: Any, spec: dict[str, Checker],
                  required: Sequence[str] = (), hint: str = "",
                  required_help: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """Check a mapping against `spec`; return the checked values of the keys that passed.

    Unknown keys get a "did you mean" suggestion. A null value means "use the default"
    (or "missing" for a required key). Returns None if `value` is not a mapping at all.
    """
    if value is None:
        value = {}
    if not isinstance(value, dict):
        ctx.type_error(path, "a mapping", value)
        return None
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key not in spec:
            close = difflib.get_close_matches(key, list(spec), n=1, cutoff=0.6)
            ctx.add(path + (key,), f"unknown key '{show_key(key)}'"
                    + (f" (did you mean '{close[0]}'?)" if close else hint))
        elif item is not None:
            checked = spec[key](ctx, path + (key,), item)
            if checked is not BAD:
                out[key] = checked
    for key in required:
        if value.get(key) is None:
            extra = (required_help or {}).get(dotted(path + (key,)))
            ctx.add(path + (key,), "missing required field" + (f": {extra}" if extra else ""))
    return out


def check_str(ctx: Ctx, path: TreePath, value: Any) -> Any:
    """A non-empty string; numbers are not silently turned into names."""
    if not isinstance(value, str):
        return ctx.type_error(path, "a string", value)
    if not value.strip():
        return ctx.type_error(path, "a non-empty string", value)
    return value


def check_bool(ctx: Ctx, path: TreePath, value: Any) -> Any:
    """true or false; the string "yes" is refused rather than guessed at."""
    return value if isinstance(value, bool) else ctx.type_error(path, "true or false", value)


def int_checker(low: int, high: int | None = None, rule: str = "") -> Checker:
    """An integer in [low, high]; `rule` replaces the default "must be >= low" wording."""
    rule = rule or (f"must be {low}-{high}" if high is not None else f"must be >= {low}")

    def check(ctx: Ctx, path: TreePath, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int):
            return ctx.type_error(path, "an integer", value)
        if value < low or (high is not None and value > high):
            ctx.add(path, f"{rule}, got {value}")
            return BAD
        return value

    return check


def check_seconds(ctx: Ctx, path: TreePath, value: Any) -> Any:
    """A positive number of seconds; fractions allowed so lab runs can use short timings.

    `.inf` and `.nan` are YAML floats too: refused here, or the rollout would crash on them
    half-way through a deploy.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return ctx.type_error(path, "a number of seconds", value)
    if isinstance(value, float) and not math.isfinite(value):
        ctx.add(path, f"must be a finite number of seconds, got {value}")
        return BAD
    if value <= 0 or value > MAX_SECONDS:
        ctx.add(path, f"must be more than 0 and at most {MAX_SECONDS} seconds (a day), got {value}")
        return BAD
    return value


def name_checker(max_len: int) -> Checker:
    """A name usable inside CloudStack VM names `<env>-<role>-<n>`."""

    def check(ctx: Ctx, path: TreePath, value: Any) -> Any:
        if not isinstance(value, str):
            return ctx.type_error(path, "a name", value)
        if not NAME_RE.fullmatch(value):
            ctx.add(path, f"invalid name {describe(value)}: use a-z, 0-9 and '-', start with a "
                          "letter and do not end with '-' (it becomes part of VM host names)")
            return BAD
        if len(value) > max_len:
            ctx.add(path, f"name {describe(value)} is {len(value)} characters; at most {max_len} fit in VM names")
            return BAD
        return value

    return check


def choice_checker(*options: str) -> Checker:
    """One of a fixed set of words, listed in the message so the fix is a copy away."""

    def check(ctx: Ctx, path: TreePath, value: Any) -> Any:
        if value in options:
            return value
        ctx.add(path, f"expected one of {', '.join(options)}, got {describe(value)}")
        return BAD

    return check


check_port = int_checker(1, 65535, "must be a port number 1-65535")
check_count = int_checker(0, MAX_ROLE_COUNT, f"must be 0-{MAX_ROLE_COUNT} (csdeploy runs at most "
                                            f"{MAX_ROLE_COUNT} VMs per role)")
check_size_gb = int_checker(1, MAX_DISK_GB, f"must be 1-{MAX_DISK_GB} GB")
check_root_disk_gb = int_checker(MIN_ROOT_DISK_GB, MAX_DISK_GB, f"must be {MIN_ROOT_DISK_GB}-{MAX_DISK_GB} GB "
                                 "(the VM's root disk; CloudStack refuses one smaller than the template)")
check_retain = int_checker(1, 1000)
check_http_status = int_checker(100, 599, "must be an HTTP status 100-599")
check_max_failures = int_checker(0, 1000)
_HOST_RE = re.compile(r"^(?:\*\.)?[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*(?::\d+)?$")
_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]*$")


def image_checker(tag_allowed: bool) -> Checker:
    """An image reference (`images.parse`). ``tag_allowed`` False: the blueprint's app image,
    which every deploy tags with its version, so it must carry neither tag nor digest."""

    def check(ctx: Ctx, path: TreePath, value: Any) -> Any:
        if check_str(ctx, path, value) is BAD:
            return BAD
        try:
            ref = images.parse(value)
        except ValueError as exc:
            why = "" if str(exc) == "not a valid image reference" else f" ({exc})"
            ctx.add(path, f"not a valid image reference: {describe(value)}{why}")
            return BAD
        if ref.pinned and not tag_allowed:
            pin = f"the tag ':{ref.tag}'" if ref.tag else f"the digest '@{ref.digest}'"
            ctx.add(path, f"remove {pin}: the deployed version is appended as the tag "
                          "(a role may pin its own image: roles.NAME.image)")
            return BAD
        return value

    return check


def check_cidrs(ctx: Ctx, path: TreePath, value: Any) -> Any:
    """CIDRs for firewall rules; a CIDR with host bits set is refused with the fix, since
    CloudStack would otherwise silently widen or reject the rule."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        return ctx.type_error(path, "a list of CIDRs such as [203.0.113.0/24]", value)
    out = []
    for i, item in enumerate(items):
        sub = path + (i,) if isinstance(value, list) else path
        if not isinstance(item, str):
            ctx.type_error(sub, "a CIDR such as 203.0.113.0/24", item)
            continue
        try:
            out.append(str(ipaddress.ip_network(item, strict=True)))
        except ValueError as exc:
            fix = ""
            if "host bits set" in str(exc):
                fix = f"; did you mean {ipaddress.ip_network(item, strict=False)}?"
            ctx.add(sub, f"not a valid CIDR: {describe(item)}{fix}")
    return tuple(out) if len(out) == len(items) else BAD


def check_cmd(ctx: Ctx, path: TreePath, value: Any) -> Any:
    """A command as argv words: a string is split like a shell would, a list is taken as-is."""
    if isinstance(value, list) and value and all(isinstance(v, (str, int, float)) for v in value):
        return tuple(str(v) for v in value)
    if isinstance(value, str) and value.strip():
        try:
            return tuple(shlex.split(value))
        except ValueError as exc:
            ctx.add(path, f"cannot split the command into words: {exc}")
            return BAD
    return ctx.type_error(path, "a command (string or list of words)", value)


def check_shell_cmd(ctx: Ctx, path: TreePath, value: Any) -> Any:
    """A command for `docker --health-cmd`, which takes one shell string."""
    words = check_cmd(ctx, path, value)
    return BAD if words is BAD else (value if isinstance(value, str) else shlex.join(words))


def secret_name_checker(what: str) -> Checker:
    """Secret names only: the message never repeats the value, which may be a real secret."""

    def check(ctx: Ctx, path: TreePath, value: Any) -> Any:
        if isinstance(value, str) and SECRET_NAME_RE.fullmatch(value):
            return value
        if isinstance(value, str) and value:
            ctx.add(path, f"this looks like a literal {what}, not a secret name: write the NAME of "
                          "a secret in UPPER_SNAKE_CASE (e.g. REGISTRY_PASSWORD), list it under "
                          "`secrets`, and keep the value in the environment or the secrets file")
        else:
            ctx.add(path, "expected a secret name in UPPER_SNAKE_CASE")
        return BAD

    return check


check_secret_name = secret_name_checker("value")
check_password = secret_name_checker("password")


def list_checker(item: Checker) -> Checker:
    """A list whose items each pass `item`; every bad item is reported, not just the first."""

    def check(ctx: Ctx, path: TreePath, value: Any) -> Any:
        if not isinstance(value, list):
            return ctx.type_error(path, "a list", value)
        out = [item(ctx, path + (i,), v) for i, v in enumerate(value)]
        return BAD if any(v is BAD for v in out) else tuple(out)

    return check


def check_hosts(ctx: Ctx, path: TreePath, value: Any) -> Any:
    """Proxy host names: one string or a list (kamal-proxy takes --host repeatedly)."""
    hosts = list_checker(check_str)(ctx, path, [value] if isinstance(value, str) else value)
    if hosts is not BAD:
        for i, host in enumerate(hosts):
            if not _HOST_RE.fullmatch(host):
                ctx.add(path + (i,) if isinstance(value, list) else path, f"not a host name: {describe(host)}")
                return BAD
    return hosts


def pattern_checker(regex: re.Pattern[str], what: str) -> Checker:
    """A string matching `regex`; `what` describes the expected form in the message."""

    def check(ctx: Ctx, path: TreePath, value: Any) -> Any:
        if check_str(ctx, path, value) is BAD:
            return BAD
        if not regex.fullmatch(value):
            ctx.add(path, f"expected {what}, got {describe(value)}")
            return BAD
        return value

    return check


def check_mount(ctx: Ctx, path: TreePath, value: Any) -> Any:
    """A data disk's mount point, by the provisioner's own rule (`mount_point_problem`).

    `/data/` and `/data` are the same place, so one trailing slash is dropped first.
    """
    if check_str(ctx, path, value) is BAD:
        return BAD
    mount = value[:-1] if value.endswith("/") and len(value) > 1 else value
    problem = mount_point_problem(mount)
    if problem:
        ctx.add(path, f"{describe(value)} cannot be a mount point: {problem}")
        return BAD
    return mount


check_http_path = pattern_checker(re.compile(r"^/\S*$"), "a URL path starting with / (e.g. /up)")
check_volume = pattern_checker(re.compile(r"^[^\s:]+:/[^\s:]*(?::(?:ro|rw))?$"),
                               "HOST_PATH_OR_VOLUME:/container/path[:ro]")


def check_ttl(ctx: Ctx, path: TreePath, value: Any) -> Any:
    """A duration string (see `parse_duration`), returned as a timedelta."""
    if not isinstance(value, str):
        return ctx.type_error(path, "a duration like 30m, 12h or 2d", value)
    try:
        return parse_duration(value)
    except ValueError as exc:
        ctx.add(path, str(exc))
        return BAD


def check_clear_env(ctx: Ctx, path: TreePath, value: Any) -> Any:
    """NAME: value pairs; numbers and booleans become the strings a container would see."""
    if not isinstance(value, dict):
        return ctx.type_error(path, "a mapping of NAME: value", value)
    out: dict[str, str] = {}
    for key, item in value.items():
        if not ENV_NAME_RE.fullmatch(key):
            ctx.add(path + (key,), "not a valid environment variable name")
        elif isinstance(item, bool):
            out[key] = "true" if item else "false"
        elif isinstance(item, (str, int, float)) or item is None:
            out[key] = "" if item is None else str(item)
        else:
            ctx.type_error(path + (key,), "a string or number", item)
    return out


check_registry_server = pattern_checker(_HOST_RE, "a registry host[:port]")
check_unix_user = pattern_checker(_USER_RE, "a Unix user name")
