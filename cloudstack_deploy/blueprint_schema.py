"""What a loaded blueprint is: typed, frozen records with every default filled in.

Everything downstream (plan, provision, rollout) reads these records and never the YAML, so
a default lives in exactly one place (here) and a typo in the file can never reach the cloud.
Loading and validation live in `blueprint.py`; this module has no I/O.

The vocabulary is Kamal's (service, image, roles, accessories, registry, env clear/secret,
proxy) plus CloudStack's own names for what it provisions (zone, template, service and
disk offerings, network offering).
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field, fields, is_dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

#: Names that end up in CloudStack VM names `<env>-<role>-<n>` and container names: a DNS
#: label's rules, lower case only (CloudStack lower-cases host names anyway).
NAME_RE = re.compile(r"^[a-z](?:[a-z0-9-]*[a-z0-9])?$")
SERVICE_NAME_MAX = 30
ROLE_NAME_MAX = 20
#: Secret names are environment variable names in UPPER_SNAKE_CASE. Requiring the case is
#: what lets validation tell a secret *name* from a pasted secret *value*.
SECRET_NAME_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

DEFAULT_NETWORK_OFFERING = "DefaultIsolatedNetworkOfferingWithSourceNatService"
DEFAULT_DISK_OFFERING = "Custom"
PUBLIC_ACCESS_MODES = ("static_nat", "port_forwarding")

_DURATION_PART = re.compile(r"(\d+)([wdhm])")
_DURATION_UNITS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60}


def parse_duration(text: str) -> timedelta:
    """Parse a TTL such as `30m`, `12h`, `2d` or `1d12h` (units w, d, h, m).

    Shared by the blueprint's `ttl` and the `--ttl` flag so both accept the same words.
    Raises ValueError for anything else, including a zero duration.
    """
    compact = text.strip().lower()
    parts = _DURATION_PART.findall(compact)
    if not parts or "".join(n + u for n, u in parts) != compact:
        raise ValueError(f"expected a duration like 30m, 12h or 2d, got {text!r}")
    seconds = sum(int(n) * _DURATION_UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"a duration must be longer than zero, got {text!r}")
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """The compact form `parse_duration` reads back, e.g. 36 hours -> `1d12h`."""
    remaining = int(delta.total_seconds()) // 60 * 60
    out = []
    for unit, size in _DURATION_UNITS.items():
        if unit != "w" and remaining >= size:
            out.append(f"{remaining // size}{unit}")
            remaining %= size
    return "".join(out) or "0m"


@dataclass(frozen=True, kw_only=True)
class Healthcheck:
    """How to tell a new container is ready.

    Proxy roles use `path` (kamal-proxy GETs it until 2xx); other roles use `cmd` (a shell
    command run inside the container) or, without one, "still running after readiness_delay".
    Times are seconds.
    """

    path: str | None = None
    cmd: str | None = None
    interval: float = 1
    timeout: float = 5
    readiness_delay: float = 7


def _proxy_healthcheck() -> Healthcheck:
    return Healthcheck(path="/up")


@dataclass(frozen=True, kw_only=True)
class Proxy:
    """kamal-proxy settings for a role that serves HTTP; the defaults are Kamal's."""

    app_port: int = 80
    hosts: tuple[str, ...] = ()
    ssl: bool = False
    healthcheck: Healthcheck = field(default_factory=_proxy_healthcheck)
    deploy_timeout: float = 30
    drain_timeout: float = 30
    response_timeout: float = 30


@dataclass(frozen=True, kw_only=True)
class Disk:
    """A CloudStack data volume attached to the VM and mounted at `mount`; size in GB."""

    size: int
    mount: str
    disk_offering: str = DEFAULT_DISK_OFFERING


@dataclass(frozen=True, kw_only=True)
class EnvSpec:
    """Container environment: `clear` values are written as-is, `secret` lists secret names
    whose values are only ever put in 0600 env files on the host."""

    clear: dict[str, str] = field(default_factory=dict)
    secret: tuple[str, ...] = ()

    def merged_over(self, base: EnvSpec) -> EnvSpec:
        """This env layered on `base` (the blueprint-wide env): our values win."""
        secret = base.secret + tuple(s for s in self.secret if s not in base.secret)
        return EnvSpec(clear={**base.clear, **self.clear}, secret=secret)


@dataclass(frozen=True, kw_only=True)
class Role:
    """A group of identical VMs running the same app container (`web`, `worker`, ...).

    `image` and `service_offering` are already resolved from the blueprint-wide defaults;
    `env` already includes the blueprint-wide env. `healthcheck` is set for non-proxy roles
    only (proxy roles are checked by kamal-proxy through `proxy.healthcheck`).
    """

    name: str
    count: int = 1
    image: str
    service_offering: str
    cmd: tuple[str, ...] | None = None
    env: EnvSpec = field(default_factory=EnvSpec)
    proxy: Proxy | None = None
    disk: Disk | None = None
    healthcheck: Healthcheck | None = None


@dataclass(frozen=True, kw_only=True)
class AccessoryVM:
    """An accessory's own VM (as opposed to sharing a role's first VM)."""

    service_offering: str


@dataclass(frozen=True, kw_only=True)
class Accessory:
    """A long-lived companion container (database, cache) that deploys do not replace.

    Exactly one of `role` (run on that role's first VM) and `vm` (its own VM) is set.
    """

    name: str
    image: str
    role: str | None = None
    vm: AccessoryVM | None = None
    port: int | None = None
    env: EnvSpec = field(default_factory=EnvSpec)
    disk: Disk | None = None
    cmd: tuple[str, ...] | None = None
    volumes: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class SSHAccess:
    """How csdeploy reaches the VMs, and who else may: `allow_from` becomes firewall rules."""

    user: str = "root"
    port: int = 22
    allow_from: tuple[str, ...]
    key: str | None = None


@dataclass(frozen=True, kw_only=True)
class Cloud:
    """Where and from what the VMs are made, in CloudStack's own names."""

    zone: str
    template: str
    service_offering: str
    network_offering: str = DEFAULT_NETWORK_OFFERING
    public_access: str = "static_nat"
    ssh: SSHAccess

    def matches_template(self, name: str) -> bool:
        """True if a template called `name` satisfies `template` (exact name or glob)."""
        return fnmatch.fnmatchcase(name, self.template)


@dataclass(frozen=True, kw_only=True)
class Registry:
    """The image registry; `password` is the NAME of a secret, never the value."""

    server: str
    username: str
    password: str


@dataclass(frozen=True, kw_only=True)
class RolloutSettings:
    """How the rollout treats hosts: Docker's install method, the proxy image, batches, lock."""

    docker_install: str = "apt"      # apt (the distribution's docker.io) | script (get.docker.com) | none
    proxy_image: str = "basecamp/kamal-proxy:v0.9.2"
    batch: int = 1                   # hosts of a non-proxy role replaced at once
    lock_ttl: timedelta = timedelta(minutes=30)


DOCKER_INSTALL_METHODS = ("apt", "script", "none")


@dataclass(frozen=True, kw_only=True)
class Blueprint:
    """A validated blueprint. Build one with `blueprint.load_blueprint`."""

    service: str
    image: str
    cloud: Cloud
    roles: dict[str, Role]
    accessories: dict[str, Accessory] = field(default_factory=dict)
    registry: Registry | None = None
    env: EnvSpec = field(default_factory=EnvSpec)
    secrets: tuple[str, ...] = ()
    secrets_file: str | None = None
    ttl: timedelta | None = None
    retain_versions: int = 5
    rollout: RolloutSettings = field(default_factory=RolloutSettings)
    #: Where the blueprint was read from; not part of `to_dict` (moving a file must not
    #: change a plan's fingerprint).
    source: Path | None = field(default=None, compare=False)

    def summary(self) -> str:
        """One line for humans, e.g. `service demo: roles web×1, worker×1; accessories db`."""
        roles = ", ".join(f"{r.name}×{r.count}" for r in self.roles.values())
        text = f"service {self.service}: roles {roles}"
        if self.accessories:
            text += "; accessories " + ", ".join(self.accessories)
        return text

    def to_dict(self) -> dict[str, Any]:
        """Plain data (dicts, lists, str, int, float, bool, None) for JSON, plans and hashing."""
        plain = _plain(self)
        assert isinstance(plain, dict)
        return plain

    def resolve_path(self, value: str) -> Path:
        """A path from the blueprint, relative to the blueprint's directory (`~` expanded)."""
        path = Path(value).expanduser()
        if path.is_absolute() or self.source is None:
            return path
        return self.source.parent / path

    def secrets_file_path(self) -> Path | None:
        """The dotenv file to read secrets from, if the blueprint names one."""
        return self.resolve_path(self.secrets_file) if self.secrets_file else None

    def ssh_key_path(self) -> Path | None:
        """The existing private key to use, if the blueprint names one."""
        return self.resolve_path(self.cloud.ssh.key) if self.cloud.ssh.key else None


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value) if f.name != "source"}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, Path):
        return str(value)
    return value


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
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class _Bad:
    def __repr__(self) -> str:
        return "BAD"


#: Returned by a checker that recorded a problem; callers then fall back to a placeholder.
BAD: Any = _Bad()


def dotted(path: TreePath) -> str:
    """`("roles", "web", "count")` -> `roles.web.count`; list indexes as `[0]`."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
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
    """A positive number of seconds; fractions allowed so lab runs can use short timings."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return ctx.type_error(path, "a number of seconds", value)
    if value <= 0:
        ctx.add(path, f"must be more than 0 seconds, got {value}")
        return BAD
    return value


def name_checker(max_len: int) -> Checker:
    """A name usable inside CloudStack VM names `<env>-<role>-<n>`."""

    def check(ctx: Ctx, path: TreePath, value: Any) -> Any:
        if not isinstance(value, str):
            return ctx.type_error(path, "a name", value)
        if not NAME_RE.match(value):
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
check_count = int_checker(0)
check_size_gb = int_checker(1, None, "must be a positive number of GB")
check_retain = int_checker(1)
_APP_IMAGE_RE = re.compile(r"^(?:[A-Za-z0-9.-]+(?::\d+)?/)?[a-z0-9]+(?:[._/-][a-z0-9]+)*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_HOST_RE = re.compile(r"^(?:\*\.)?[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*(?::\d+)?$")
_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]*$")


def image_checker(tag_allowed: bool) -> Checker:
    """App images get `:<version>` appended at deploy time, so they must not carry a tag."""

    def check(ctx: Ctx, path: TreePath, value: Any) -> Any:
        if check_str(ctx, path, value) is BAD:
            return BAD
        repo, _, tag = value.rpartition(":") if ":" in value.rsplit("/", 1)[-1] else (value, "", "")
        if not _APP_IMAGE_RE.match(repo) or (tag and not _TAG_RE.match(tag)):
            ctx.add(path, f"not a valid image reference: {describe(value)}")
            return BAD
        if tag and not tag_allowed:
            ctx.add(path, f"remove the tag ':{tag}': the deployed version is appended as the tag")
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
        if isinstance(value, str) and SECRET_NAME_RE.match(value):
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
            if not _HOST_RE.match(host):
                ctx.add(path + (i,) if isinstance(value, list) else path, f"not a host name: {describe(host)}")
                return BAD
    return hosts


def pattern_checker(regex: re.Pattern[str], what: str) -> Checker:
    """A string matching `regex`; `what` describes the expected form in the message."""

    def check(ctx: Ctx, path: TreePath, value: Any) -> Any:
        if check_str(ctx, path, value) is BAD:
            return BAD
        if not regex.match(value):
            ctx.add(path, f"expected {what}, got {describe(value)}")
            return BAD
        return value

    return check


_abs_path = pattern_checker(re.compile(r"^/[^\s:]*[^\s:/]/?$"), "an absolute path other than / (e.g. /data)")


def check_abs_path(ctx: Ctx, path: TreePath, value: Any) -> Any:
    """A mount point; `/data/` and `/data` are the same place, so compare them as one."""
    checked = _abs_path(ctx, path, value)
    return checked if checked is BAD else checked.rstrip("/")


check_http_path = pattern_checker(re.compile(r"^/\S*$"), "a URL path starting with / (e.g. /up)")
check_volume = pattern_checker(re.compile(r"^[^\s:]+:/[^\s:]*(?::(?:ro|rw))?$"),
                               "HOST_PATH_OR_VOLUME:/container/path[:ro]")


def check_ttl(ctx: Ctx, path: TreePath, value: Any) -> Any:
    """A duration string (see `parse_duration`), returned as a timedelta."""
    try:
        return parse_duration(value) if isinstance(value, str) else parse_duration("?")
    except ValueError:
        return ctx.type_error(path, "a duration like 30m, 12h or 2d", value)


def check_clear_env(ctx: Ctx, path: TreePath, value: Any) -> Any:
    """NAME: value pairs; numbers and booleans become the strings a container would see."""
    if not isinstance(value, dict):
        return ctx.type_error(path, "a mapping of NAME: value", value)
    out: dict[str, str] = {}
    for key, item in value.items():
        if not ENV_NAME_RE.match(key):
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
