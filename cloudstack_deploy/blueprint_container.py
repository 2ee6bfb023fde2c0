"""The rules of how a container runs: volumes, resources, allow-listed options, restart policy,
logging, scheduled jobs and kamal-proxy's options.

Split from `blueprint_rules.py` (the value rules every section uses); each checker records a
`Problem` with file:line and returns `BAD`, or returns the value normalised into the records
of `blueprint_schema.py`. Every value that reaches a host is checked against a strict form
here, and is still quoted by the command builders.
"""

from __future__ import annotations

import math
import posixpath
import re
from typing import Any

from . import cron
from .blueprint_rules import (
    BAD,
    Checker,
    Ctx,
    TreePath,
    check_bool,
    check_cmd,
    check_seconds,
    check_section,
    check_str,
    choice_checker,
    describe,
    int_checker,
    show_key,
)
from .blueprint_schema import (
    NAME_RE,
    BackupPolicy,
    Buffering,
    ContainerSettings,
    Logging,
    Readiness,
    Resources,
    Schedule,
    Volume,
)

_VOLUME_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_CONTAINER_PATH_RE = re.compile(r"^(/[A-Za-z0-9._@+-]+)+$")
#: Paths in a container that a volume must not cover.
_CONTAINER_FORBIDDEN = ("/proc", "/sys", "/dev")
_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([bkmgt]?)b?$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def _bytes(ctx: Ctx, path: TreePath, value: Any, *, low: int = 1) -> Any:
    """A size: bytes as an integer, or `512m`, `1.5g`, `64k` (powers of 1024, as Docker reads them)."""
    if isinstance(value, bool):
        return ctx.type_error(path, "a size such as 512m or 1g", value)
    if isinstance(value, int):
        number, unit = float(value), ""
    elif isinstance(value, str) and (m := _SIZE_RE.fullmatch(value.strip())):
        number, unit = float(m.group(1)), m.group(2).lower()
    else:
        return ctx.type_error(path, "a size such as 512m or 1g", value)
    size = int(number * _SIZE_UNITS[unit])
    if size < low or size > (1 << 50):
        ctx.add(path, f"must be between {low} byte(s) and 1 PiB, got {describe(value)}")
        return BAD
    return size


def check_size(ctx: Ctx, path: TreePath, value: Any) -> Any:
    return _bytes(ctx, path, value)


def check_size_or_zero(ctx: Ctx, path: TreePath, value: Any) -> Any:
    """A size where 0 means no limit."""
    return _bytes(ctx, path, value, low=0)


def _check_cpus(ctx: Ctx, path: TreePath, value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return ctx.type_error(path, "a number of CPUs such as 0.5 or 2", value)
    if not 0.01 <= value <= 512:
        ctx.add(path, f"must be 0.01-512 CPUs, got {value}")
        return BAD
    return float(value)


def _section(ctx: Ctx, path: TreePath, value: Any, spec: dict[str, Checker]) -> dict[str, Any] | None:
    """A sub-mapping of these settings; an unknown key is told the known ones."""
    return check_section(ctx, path, value, spec, hint=f" (known: {', '.join(spec)})")


def check_resources(ctx: Ctx, path: TreePath, value: Any) -> Any:
    out = _section(ctx, path, value, {"cpus": _check_cpus, "memory": check_size, "memory_reservation": check_size})
    if out is None:
        return BAD
    memory, reservation = out.get("memory"), out.get("memory_reservation")
    if memory is not None and memory < 6 << 20:
        ctx.add(path + ("memory",), "Docker needs at least 6m of memory for a container")
        return BAD
    if memory is not None and reservation is not None and reservation > memory:
        ctx.add(path + ("memory_reservation",), "must not be more than memory")
        return BAD
    return Resources(**out)


# ---- docker run options (allow-listed) ---------------------------------------------------------

_WORD = re.compile(r"^[A-Za-z0-9_.:=/@+,-]{1,200}$")
_OPTION_FORMS: dict[str, tuple[str, re.Pattern[str] | None, bool]] = {
    # name: (what it takes, the value's form (None: a flag without a value), may repeat)
    "shm-size": ("a size such as 256m", re.compile(r"^\d+[bkmg]?$", re.I), False),
    "ulimit": ("NAME=SOFT[:HARD], e.g. nofile=1024:2048", re.compile(r"^[a-z]+=-?\d+(?::-?\d+)?$"), True),
    "cap-add": ("a capability such as NET_ADMIN", re.compile(r"^[A-Z_]{2,40}$"), True),
    "cap-drop": ("a capability such as NET_RAW", re.compile(r"^[A-Z_]{2,40}$"), True),
    "init": ("true", None, False),
    "read-only": ("true", None, False),
    "stop-timeout": ("seconds", re.compile(r"^\d{1,5}$"), False),
    "stop-signal": ("a signal such as SIGQUIT", re.compile(r"^(SIG)?[A-Z0-9+-]{2,12}$"), False),
    "user": ("USER[:GROUP] or UID[:GID]", re.compile(r"^[a-z0-9_][a-z0-9_.-]{0,31}(?::[a-z0-9_][a-z0-9_.-]{0,31})?$"),
             False),
    "workdir": ("an absolute path", _CONTAINER_PATH_RE, False),
    "tmpfs": ("PATH[:OPTIONS], e.g. /tmp:size=64m", re.compile(r"^(/[A-Za-z0-9._-]+)+(?::[a-z0-9=,]+)?$"), True),
    "group-add": ("a group name or id", re.compile(r"^[a-z0-9_][a-z0-9_-]{0,31}$"), True),
    "pids-limit": ("a number", re.compile(r"^-?\d{1,7}$"), False),
    "sysctl": ("NAME=VALUE, e.g. net.core.somaxconn=1024", re.compile(r"^[a-z0-9_.]+=[A-Za-z0-9_. -]{1,64}$"),
               True),
    "hostname": ("a host name", re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"), False),
    "add-host": ("HOST:IP", re.compile(r"^[A-Za-z0-9.-]+:[0-9a-fA-F.:]+$"), True),
    "oom-score-adj": ("a number -1000..1000", re.compile(r"^-?\d{1,4}$"), False),
    "security-opt": ("no-new-privileges", re.compile(r"^no-new-privileges(?::true)?$"), True),
}
#: Asked for often, refused with the reason (they would break what csdeploy relies on).
_REFUSED = {
    "privileged": "it gives the container the whole host",
    "network": "csdeploy attaches every container to its own network (kamal)",
    "net": "csdeploy attaches every container to its own network (kamal)",
    "publish": "proxy roles are reached through kamal-proxy; accessories use `port`",
    "p": "proxy roles are reached through kamal-proxy; accessories use `port`",
    "volume": "use the role's `volumes`",
    "v": "use the role's `volumes`",
    "name": "csdeploy names the containers",
    "restart": "use `restart:` beside `options`",
    "env": "use `env:`",
    "e": "use `env:`",
    "label": "csdeploy sets the labels it finds its containers by",
    "memory": "use `resources.memory`",
    "cpus": "use `resources.cpus`",
    "log-driver": "use `logging.driver`",
    "log-opt": "use `logging.options`",
}


def check_options(ctx: Ctx, path: TreePath, value: Any) -> Any:
    """`options: {shm-size: 1g, ulimit: [nofile=1024:2048], init: true, ...}` (Kamal's `options`
    with the flags csdeploy allows), as (flag, value) pairs in the order written."""
    if not isinstance(value, dict):
        return ctx.type_error(path, "a mapping of docker run options, e.g. {shm-size: 1g, init: true}", value)
    out: list[tuple[str, str | None]] = []
    for key, item in value.items():
        sub = path + (key,)
        if not isinstance(key, str):
            ctx.add(sub, "an option name must be a string")
            continue
        name = key.lstrip("-")
        if name in _REFUSED:
            ctx.add(sub, f"'{show_key(key)}' is not allowed here: {_REFUSED[name]}")
            continue
        form = _OPTION_FORMS.get(name)
        if form is None:
            ctx.add(sub, f"unknown option '{show_key(key)}' (allowed: {', '.join(sorted(_OPTION_FORMS))})")
            continue
        what, regex, repeats = form
        if regex is None:
            if item is not True and item is not False:
                ctx.type_error(sub, "true or false", item)
            elif item:
                out.append((name, None))
            continue
        items = item if isinstance(item, list) and repeats else [item]
        for i, one in enumerate(items):
            where = sub + (i,) if isinstance(item, list) else sub
            text = str(one) if isinstance(one, (int, str)) and not isinstance(one, bool) else None
            if text is None or not regex.fullmatch(text):
                ctx.add(where, f"expected {what}, got {describe(one)}")
                continue
            out.append((name, text))
    return tuple(out)


_RESTART_RE = re.compile(r"^(no|always|unless-stopped|on-failure(:\d{1,4})?)$")


def check_restart(ctx: Ctx, path: TreePath, value: Any) -> Any:
    if isinstance(value, bool) and value is False:
        return "no"
    if isinstance(value, str) and _RESTART_RE.fullmatch(value):
        return value
    ctx.add(path, f"expected no, always, unless-stopped, on-failure or on-failure:N, got {describe(value)}")
    return BAD


_LOG_DRIVERS = ("json-file", "local", "journald", "syslog", "none", "fluentd", "gelf", "awslogs", "splunk",
                "gcplogs", "etwlogs")
_LOG_OPT_KEY = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
_LOG_OPT_VALUE = re.compile(r"^[A-Za-z0-9_.:/@{}+,=-]{1,200}$")


def check_logging(ctx: Ctx, path: TreePath, value: Any) -> Any:
    def options(c: Ctx, p: TreePath, v: Any) -> Any:
        if not isinstance(v, dict):
            return c.type_error(p, "a mapping of log options, e.g. {max-size: 10m}", v)
        out: dict[str, str] = {}
        for k, item in v.items():
            text = str(item) if isinstance(item, (str, int)) and not isinstance(item, bool) else ""
            if not isinstance(k, str) or not _LOG_OPT_KEY.fullmatch(k):
                c.add(p + (k,), "not a log option name")
            elif not _LOG_OPT_VALUE.fullmatch(text):
                c.add(p + (k,), f"not a usable log option value: {describe(item)}")
            else:
                out[k] = text
        return out

    out = _section(ctx, path, value, {"driver": choice_checker(*_LOG_DRIVERS), "options": options})
    return BAD if out is None else Logging(**out)


def container_settings(ctx: Ctx, path: TreePath, out: dict[str, Any]) -> ContainerSettings:
    """Take `resources`, `options`, `restart` and `logging` out of a checked role/accessory section."""
    return ContainerSettings(**{k: out.pop(k) for k in ("resources", "options", "restart", "logging") if k in out})


CONTAINER_SPEC: dict[str, Checker] = {
    "resources": check_resources, "options": check_options, "restart": check_restart, "logging": check_logging,
}


# ---- volumes ----------------------------------------------------------------------------------

def _container_path(ctx: Ctx, path: TreePath, value: str) -> str | None:
    normal = value.rstrip("/") or "/"
    if not _CONTAINER_PATH_RE.fullmatch(normal) or posixpath.normpath(normal) != normal:
        ctx.add(path, f"the path in the container must be absolute and normalised, got {describe(value)}")
        return None
    if any(normal == f or normal.startswith(f + "/") for f in _CONTAINER_FORBIDDEN):
        ctx.add(path, f"{normal} is a kernel filesystem in the container; a volume cannot go there")
        return None
    return normal


def check_role_volume(ctx: Ctx, path: TreePath, value: Any) -> Any:
    """`NAME:/path/in/container[:ro]` (a named volume) or `/disk/mount/dir:/path[:ro]` (a
    directory on the role's data disk), or the mapping {name|source, path, readonly, per_host}."""
    if isinstance(value, str):
        parts = value.split(":")
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
            ctx.add(path, f"expected NAME:/path/in/container[:ro], got {describe(value)}")
            return BAD
        value = {"name" if not parts[0].startswith("/") else "source": parts[0], "path": parts[1],
                 "readonly": len(parts) == 3 and parts[2] == "ro"}
    out = _section(ctx, path, value, {"name": check_str, "source": check_str, "path": check_str,
                                      "readonly": check_bool, "per_host": check_bool})
    if out is None:
        return BAD
    if "path" not in out:
        ctx.add(path + ("path",), "missing: where the volume is mounted in the container")
        return BAD
    mount = _container_path(ctx, path + ("path",), out["path"])
    if mount is None:
        return BAD
    source = out.get("source")
    name = out.get("name")
    if (source is None) == (name is None):
        ctx.add(path, "set either name (a named volume) or source (a directory on the role's data disk)")
        return BAD
    if name is not None and not _VOLUME_NAME_RE.fullmatch(name):
        ctx.add(path + ("name",), f"a volume name is lower-case letters, digits, '_', '.', '-' (at most 63), "
                                  f"got {describe(name)}")
        return BAD
    if source is not None:
        source = source.rstrip("/")
        if not _CONTAINER_PATH_RE.fullmatch(source) or posixpath.normpath(source) != source:
            ctx.add(path, f"the host directory must be an absolute, normalised path, got {describe(source)}")
            return BAD
        name = source.rsplit("/", 1)[-1]
    return Volume(name=name, path=mount, readonly=out.get("readonly", False), source=source,
                  per_host=out.get("per_host", False))


# ---- scheduled jobs -------------------------------------------------------------------------------

def check_schedule(ctx: Ctx, path: TreePath, value: Any) -> Any:
    """`schedule: {NAME: {cron: "*/5 * * * *", cmd: ...}}` or `{NAME: "*/5 * * * *"}`."""
    if not isinstance(value, dict) or not value:
        return ctx.type_error(path, "a mapping of job names to a cron line or {cron, cmd}", value)
    jobs = []
    for name, spec in value.items():
        sub = path + (name,)
        if not isinstance(name, str) or not NAME_RE.fullmatch(name) or len(name) > 30:
            ctx.add(sub, "a job name is lower-case letters, digits and '-', starting with a letter (at most 30)")
            continue
        if isinstance(spec, str):
            spec = {"cron": spec}
        out = _section(ctx, sub, spec, {"cron": check_str, "cmd": check_cmd})
        if out is None:
            continue
        if "cron" not in out:
            ctx.add(sub + ("cron",), "missing: when the job runs, e.g. '*/5 * * * *'")
            continue
        try:
            cron.parse(out["cron"])
        except ValueError as exc:
            ctx.add(sub + ("cron",), f"cannot read the cron line {describe(out['cron'])}: {exc}")
            continue
        jobs.append(Schedule(name=name, cron=out["cron"], cmd=out.get("cmd")))
    return tuple(jobs)


# ---- logical backups of an accessory ----------------------------------------------------------------

#: The accessory kinds `csdeploy backup` can dump (dumps.METHODS).
BACKUP_KINDS = ("postgres", "redis", "valkey")


def check_backups(ctx: Ctx, path: TreePath, value: Any) -> Any:
    """`backups: {schedule: "0 3 * * *", keep: 7, to: s3://bucket/prefix}` (each optional)."""
    from .backup_dest import parse_url
    from .errors import InvalidInput

    out = _section(ctx, path, value, {"schedule": check_str, "keep": int_checker(1, 10000), "to": check_str})
    if out is None:
        return BAD
    bad = False
    if "schedule" in out:
        try:
            cron.parse(out["schedule"])
        except ValueError as exc:
            ctx.add(path + ("schedule",), f"cannot read the cron line {describe(out['schedule'])}: {exc}")
            bad = True
    if "to" in out and out["to"] != "host":  # `host`: kept on the accessory's host (hostdumps)
        try:
            parse_url(out["to"])
        except InvalidInput as exc:
            ctx.add(path + ("to",), str(exc).splitlines()[0])
            bad = True
    # A schedule with no `to:` or `to: host` is run on the accessory's host by a timer
    # (hostdumps.py); one sent off the host by `csdeploy serve` (server/schedule.py), from the
    # machine it runs on: any destination `csdeploy backup` takes works there. validate and plan say so.
    return BAD if bad else BackupPolicy(**out)


# ---- readiness --------------------------------------------------------------------------------------

def check_readiness(ctx: Ctx, path: TreePath, value: Any) -> Any:
    """`readiness: {cmd: "test -f /tmp/ready", timeout: 30}`: a non-proxy role's new container
    is ready when ``cmd``, run inside it, exits 0 (the command is words, never a shell line of
    csdeploy's: wrap it in `sh -c` to use one)."""
    out = _section(ctx, path, value, {"cmd": check_cmd, "timeout": check_seconds})
    if out is None:
        return BAD
    if isinstance(value, dict) and value.get("cmd") is None:
        ctx.add(path + ("cmd",), "missing: the command that exits 0 once the container is ready, "
                                 "e.g. [test, -f, /tmp/ready]")
    if "cmd" not in out or len(out) < sum(1 for k in ("cmd", "timeout") if (value or {}).get(k) is not None):
        return BAD  # said above
    return Readiness(**out)


# ---- kamal-proxy's options ------------------------------------------------------------------------

_PREFIX_RE = re.compile(r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$")


def check_path_prefix(ctx: Ctx, path: TreePath, value: Any) -> Any:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        return ctx.type_error(path, "a path such as /api, or a list of them", value)
    out = []
    for i, item in enumerate(items):
        sub = path + (i,) if isinstance(value, list) else path
        if not isinstance(item, str) or not _PREFIX_RE.fullmatch(item) or "//" in item or len(item) > 200:
            ctx.add(sub, f"expected a URL path starting with / (e.g. /api), got {describe(item)}")
            continue
        out.append(item.rstrip("/") or "/")
    return tuple(out) if len(out) == len(items) else BAD


def check_buffering(ctx: Ctx, path: TreePath, value: Any) -> Any:
    out = _section(ctx, path, value, {"requests": check_bool, "responses": check_bool,
                                      "max_request_body": check_size_or_zero,
                                      "max_response_body": check_size_or_zero, "memory": check_size})
    if out is None:
        return BAD
    for kind in ("request", "response"):
        if out.get(f"max_{kind}_body") and out.get(f"{kind}s") is False:
            ctx.add(path + (f"max_{kind}_body",), f"a {kind} body limit needs {kind}s buffered: "
                                                  f"drop {kind}s: false, or the limit")
            return BAD
    return Buffering(**out)


PROXY_EXTRA_SPEC: dict[str, Checker] = {
    "path_prefix": check_path_prefix, "strip_path_prefix": check_bool, "forward_headers": check_bool,
    "ssl_redirect": check_bool, "buffering": check_buffering,
}
