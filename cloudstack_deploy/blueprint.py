"""Turn a blueprint file into a `Blueprint`, or into every problem it has, with file:line.

A user fixing a blueprint wants the whole list at once and wants to jump to each line, so
validation never stops at the first problem: each one becomes a `Problem(file, line, field,
message)` and `BlueprintError` carries them all. Lines come from PyYAML node marks, read by
the bounded reader in `blueprint_yaml.py`. `--set` overrides are applied to the parsed tree
before validation, and their problems name the file and the override instead of a line.
The records, their defaults and the per-value rules live in `blueprint_schema.py` and
`blueprint_rules.py`.
"""

from __future__ import annotations

import copy
import difflib
import functools
import re
import zoneinfo
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from . import images
from .accessories import kind_of
from .blueprint_container import (
    BACKUP_KINDS,
    CONTAINER_SPEC,
    PROXY_EXTRA_SPEC,
    check_backups,
    check_readiness,
    check_role_volume,
    check_schedule,
    container_settings,
)
from .blueprint_dns import check_dns
from .blueprint_file import read_bounded
from .blueprint_hosts import check_hosts_section
from .blueprint_overlay import apply_destination, split_destination
from .blueprint_rules import (
    BAD,
    Checker,
    Ctx,
    Loc,
    Problem,
    TreePath,
    check_bool,
    check_cidrs,
    check_clear_env,
    check_cmd,
    check_count,
    check_hosts,
    check_http_path,
    check_http_status,
    check_max_failures,
    check_mount,
    check_password,
    check_port,
    check_registry_server,
    check_retain,
    check_root_disk_gb,
    check_seconds,
    check_secret_name,
    check_section,
    check_shell_cmd,
    check_size_gb,
    check_str,
    check_ttl,
    check_unix_user,
    check_volume,
    choice_checker,
    describe,
    dotted,
    image_checker,
    int_checker,
    list_checker,
    name_checker,
    pattern_checker,
    show_key,
)
from .blueprint_schema import (
    DEFAULT_HEALTH_PATH,
    DEFAULT_SNAPSHOT_TIMEZONE,
    DOCKER_INSTALL_METHODS,
    LB_ALGORITHMS,
    MAX_KEEP_SNAPSHOTS,
    PLACEMENTS,
    PLATFORM_RE,
    PUBLIC_ACCESS_MODES,
    ROLE_NAME_MAX,
    SERVICE_NAME_MAX,
    SNAPSHOT_INTERVALS,
    VAULT_ADAPTERS,
    WEEKDAYS,
    Accessory,
    AccessoryVM,
    Blueprint,
    Build,
    Certificate,
    Cloud,
    Disk,
    EnvSpec,
    Healthcheck,
    Hooks,
    HostsSpec,
    PathCheck,
    Proxy,
    Registry,
    Role,
    RolloutSettings,
    SecretsSource,
    SnapshotSchedule,
    SSHAccess,
    Watch,
    format_duration,
    parse_duration,
)
from .blueprint_yaml import MAX_DEPTH, MAX_VALUES, compose
from .errors import InvalidInput

__all__ = [
    "MAX_DEPTH", "MAX_VALUES", "Accessory", "AccessoryVM", "Blueprint", "BlueprintError", "Build", "Cloud", "Disk",
    "EnvSpec",
    "Healthcheck", "Problem", "Proxy", "Registry", "Role", "SSHAccess", "apply_overrides",
    "format_duration", "load_blueprint", "loads_blueprint", "parse_duration",
]


class BlueprintError(InvalidInput):
    """The blueprint cannot be used; `problems` lists everything wrong, one per line in str()."""

    located = True  # each line already names its file:line: printed as is

    def __init__(self, problems: Sequence[Problem], *, hint: str | None = None) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems), hint=hint)


#: A blueprint is a few kilobytes; reading more than this is a mistake or an attack.
MAX_FILE_BYTES = 256 * 1024
#: A `--set` path longer than this names nothing a blueprint has.
MAX_PATH_CHARS = 200


def load_blueprint(path: str | Path, overrides: Sequence[str] = ()) -> Blueprint:
    """Read, override (`PATH=VALUE` strings, as from `--set`) and validate a blueprint file.

    A leading `--destination=NAME` among the overrides (`blueprint_overlay.destination_override`)
    merges the overlay file NAME of the blueprint (`app.NAME.yml` beside `app.yml`) first."""
    name = str(path)
    text = read_bounded(path, MAX_FILE_BYTES, what="a blueprint file",
                        too_big=f"the file is larger than {MAX_FILE_BYTES >> 10} KiB, the most a blueprint may be")
    if isinstance(text, Problem):
        raise BlueprintError([text])
    return loads_blueprint(text, filename=name, overrides=overrides, source=Path(path))


def loads_blueprint(
    text: str, *, filename: str = "<blueprint>", overrides: Sequence[str] = (),
    source: Path | None = None,
) -> Blueprint:
    """`load_blueprint` for text already in memory; `filename` is what messages show."""
    if len(text) > MAX_FILE_BYTES:
        raise BlueprintError([Problem(filename, None, "", f"the text is larger than {MAX_FILE_BYTES >> 10} KiB, "
                                                          "the most a blueprint may be")])
    destination, overrides = split_destination(overrides)
    tree, locs, problems = compose(text, filename)
    if tree is None and problems:  # a syntax error: nothing to validate
        raise BlueprintError(problems)
    if tree is None:
        raise BlueprintError([Problem(filename, None, "", "the file is empty; a blueprint needs "
                                      "at least service, image, cloud and roles")])
    if not isinstance(tree, dict):
        raise BlueprintError([Problem(filename, 1, "", f"expected a mapping of keys (service, "
                                      f"image, cloud, roles, ...), got {describe(tree)}")])
    if destination is not None:  # the overlay file beside the blueprint, merged before --set
        overlay_problems = apply_destination(source if source is not None else filename, destination,
                                             tree, locs, MAX_FILE_BYTES)
        if overlay_problems:
            raise BlueprintError(overlay_problems)
    ctx = Ctx(filename, locs, problems)  # duplicate keys and bad tags do not stop the check
    _apply(ctx, tree, overrides, filename)
    blueprint = _blueprint(ctx, tree, source)
    if ctx.problems:
        ordered = sorted(ctx.problems, key=lambda p: (p.file != filename, p.line or 0))
        raise BlueprintError(ordered)
    return blueprint


def apply_overrides(tree: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of `tree` with `a.b.c=value` overrides applied (value parsed as YAML).

    Intermediate mappings are created as needed. Raises BlueprintError naming every
    malformed override.
    """
    new = copy.deepcopy(tree)
    ctx = Ctx("<overrides>", {})
    _apply(ctx, new, overrides, None)
    if ctx.problems:
        raise BlueprintError(ctx.problems)
    return new


# --- Overrides ------------------------------------------------------------------------------


def _origin(filename: str | None, path: str) -> str:
    """Where an override's problems are reported: the blueprint file and the `--set`."""
    return f"{filename} (--set {path})" if filename else f"--set {path}"


def _apply(ctx: Ctx, tree: dict[str, Any], overrides: Sequence[str], filename: str | None) -> None:
    """Apply `--set` overrides in order; later ones win. Problems go to ctx.

    Values are read with the same bounded YAML reader as the file, so an override can be
    no bigger (and no stranger) than what the file itself may hold.
    """
    for raw in overrides:
        path_text, eq, value_text = raw.partition("=")
        keys = tuple(path_text.strip().split("."))
        if not eq:
            ctx.problems.append(Problem(_origin(filename, show_key(raw)), None, "",
                                        "expected PATH=VALUE, e.g. roles.web.count=2"))
            continue
        if len(path_text.strip()) > MAX_PATH_CHARS or len(keys) > MAX_DEPTH:
            ctx.problems.append(Problem(_origin(filename, show_key(path_text.strip())), None, "",
                                        f"the path before '=' is {len(path_text.strip())} characters in "
                                        f"{len(keys)} parts; at most {MAX_PATH_CHARS} characters and "
                                        f"{MAX_DEPTH} parts"))
            continue
        if not all(keys):
            where = _origin(filename, path_text.strip() or "(empty path)")  # not raw: the value may be secret
            ctx.problems.append(Problem(where, None, "", "the path before '=' is empty or has an empty part"))
            continue
        origin: Loc = (_origin(filename, ".".join(keys)), None)
        if value_text.strip():
            value, _, value_problems = compose(value_text, origin[0], "value")
            if value_problems:
                for p in value_problems:
                    message = p.message.replace("YAML syntax error", "value is not valid YAML", 1)
                    inner = p.field if not p.field or p.field.startswith("[") else "." + p.field
                    ctx.problems.append(Problem(origin[0], None, dotted(keys) + inner, message))
                continue
        else:
            value = None
        node: dict[str, Any] = tree
        for depth in range(1, len(keys)):
            child = node.get(keys[depth - 1])
            if child is None:
                child = node[keys[depth - 1]] = {}
                ctx.locs[keys[:depth]] = origin
            elif not isinstance(child, dict):
                ctx.problems.append(Problem(origin[0], None, dotted(keys[:depth]),
                                            f"is {describe(child)}, not a mapping, so {dotted(keys)} cannot be set"))
                break
            node = child
        else:
            node[keys[-1]] = value
            for stale in [p for p in ctx.locs if p[: len(keys)] == keys]:
                del ctx.locs[stale]
            ctx.locs[keys] = origin


# --- Sections -------------------------------------------------------------------------------

#: Extra words for "missing required field", where the fix is not obvious.
_REQUIRED_HELP = {
    "cloud.ssh.allow_from": "list the CIDRs allowed to reach SSH, e.g. [203.0.113.0/24] "
                            "(0.0.0.0/0 opens SSH to everyone and must be written explicitly)",
    "roles": "add at least one role, e.g. roles: {web: {proxy: {app_port: 8000}}}",
}


def _section(ctx: Ctx, path: TreePath, value: Any, spec: dict[str, Checker],
             required: Sequence[str] = (), hint: str = "") -> dict[str, Any] | None:
    """`check_section` with this module's help for missing required fields."""
    return check_section(ctx, path, value, spec, required, hint, required_help=_REQUIRED_HELP)


def _sub(spec: dict[str, Checker], build: Callable[[dict[str, Any]], Any],
         required: Sequence[str] = (), hint: str = "") -> Checker:
    """A checker for a nested section, turned into a record by `build`."""

    def check(ctx: Ctx, path: TreePath, value: Any) -> Any:
        out = _section(ctx, path, value, spec, required, hint)
        return BAD if out is None else build(out)

    return check


def _check_secret_ref(ctx: Ctx, path: TreePath, value: Any) -> Any:
    """A secret name used by an env; remembered so it can be checked against `secrets`."""
    name = check_secret_name(ctx, path, value)
    if name is not BAD:
        ctx.secret_refs.append((path, name))
    return name


def _check_env(ctx: Ctx, path: TreePath, value: Any) -> Any:
    spec = {"clear": check_clear_env, "secret": list_checker(_check_secret_ref)}
    hint = " (put plain variables under `clear:` and secret names under `secret:`)"
    out = _section(ctx, path, value, spec, hint=hint)
    if out is None:
        return BAD
    for i, name in enumerate(out.get("secret", ())):
        if name in out.get("clear", {}):
            ctx.add(path + ("secret", i), f"'{name}' is also set under env.clear; keep one")
    return EnvSpec(**out)


_PROXY_HEALTHCHECK = _sub({"path": check_http_path, "interval": check_seconds, "timeout": check_seconds},
                          lambda out: Healthcheck(**{"path": DEFAULT_HEALTH_PATH, **out}))
_ROLE_HEALTHCHECK = _sub({"cmd": check_shell_cmd, "interval": check_seconds,
                          "timeout": check_seconds, "readiness_delay": check_seconds},
                         lambda out: Healthcheck(**out))
_CERTIFICATE = _sub({"certificate_pem": _check_secret_ref, "private_key_pem": _check_secret_ref},
                    lambda out: Certificate(**{"certificate_pem": "", "private_key_pem": "", **out}),
                    required=["certificate_pem", "private_key_pem"])


def _check_ssl(ctx: Ctx, path: TreePath, value: Any) -> Any:
    """`ssl: true` (Let's Encrypt) or `ssl: {certificate_pem: NAME, private_key_pem: NAME}`
    (a certificate and key from secrets, served as they are)."""
    if isinstance(value, dict):
        return _CERTIFICATE(ctx, path, value)
    return check_bool(ctx, path, value)


_PROXY_SPEC: dict[str, Checker] = {
    "app_port": check_port, "host": check_hosts, "ssl": _check_ssl, "healthcheck": _PROXY_HEALTHCHECK,
    "deploy_timeout": check_seconds, "drain_timeout": check_seconds, "response_timeout": check_seconds,
    "load_balancer": check_bool, "lb_algorithm": choice_checker(*LB_ALGORITHMS), **PROXY_EXTRA_SPEC,
}


def _check_proxy(ctx: Ctx, path: TreePath, value: Any) -> Any:
    """`proxy: false` (no proxy), `proxy: true` (Kamal's defaults) or a mapping of settings."""
    if isinstance(value, bool):
        return Proxy() if value else False
    out = _section(ctx, path, value, _PROXY_SPEC)
    if out is None:
        return BAD
    if value.get("load_balancer") is False and "lb_algorithm" in value:
        ctx.add(path + ("lb_algorithm",), "load_balancer is false: drop lb_algorithm, or the load_balancer line")
    if "host" in out:
        out["hosts"] = out.pop("host")
    if isinstance(out.get("ssl"), Certificate):
        out["certificate"] = out["ssl"]
        out["ssl"] = True
    if (out.get("ssl") or isinstance(value.get("ssl"), dict)) and value.get("host") is None:
        ctx.add(path + ("ssl",), "ssl needs a host: set proxy.host to the name the certificate is for")
    return Proxy(**out)


_AT_RE = re.compile(r"^([01]?[0-9]|2[0-3]):([0-5][0-9])$")


def _check_at(ctx: Ctx, path: TreePath, value: Any) -> Any:
    """A time of day, "HH:MM" (24 hours)."""
    m = _AT_RE.fullmatch(value) if isinstance(value, str) else None
    if m is None:
        ctx.add(path, f'expected a time of day "HH:MM" (e.g. "03:00"), got {describe(value)}')
        return BAD
    return int(m.group(1)), int(m.group(2))


def _check_timezone(ctx: Ctx, path: TreePath, value: Any) -> Any:
    """An IANA zone name: CloudStack silently takes an unknown one as GMT, so refuse it here."""
    if check_str(ctx, path, value) is BAD:
        return BAD
    if value not in _timezones():
        close = difflib.get_close_matches(value, sorted(_timezones()), n=1)
        ctx.add(path, f"unknown time zone {describe(value)}" + (f" (did you mean '{close[0]}'?)" if close else
                                                               " (use an IANA name such as Etc/UTC, Europe/Paris)"))
        return BAD
    return value


@functools.cache
def _timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones()) | {"UTC", "GMT"}


def _check_day(ctx: Ctx, path: TreePath, value: Any) -> Any:
    if isinstance(value, str) and value.lower() in WEEKDAYS:
        return WEEKDAYS.index(value.lower()) + 1
    return int_checker(1, 31)(ctx, path, value)


_SNAPSHOT_SPEC: dict[str, Checker] = {
    "every": choice_checker(*SNAPSHOT_INTERVALS), "at": _check_at, "minute": int_checker(0, 59),
    "day": _check_day, "timezone": _check_timezone,
    "keep": int_checker(1, MAX_KEEP_SNAPSHOTS, f"must be 1-{MAX_KEEP_SNAPSHOTS} (CloudStack's snapshot.max "
                                               "settings keep at most that many per interval)"),
}


def _check_snapshot(ctx: Ctx, path: TreePath, value: Any) -> Any:
    """One schedule: `{every: daily, at: "03:00", keep: 3}`; hourly takes `minute`, weekly and
    monthly a `day` (weekly: a day name or 1-7, Sunday 1; monthly: 1-28)."""
    out = _section(ctx, path, value, _SNAPSHOT_SPEC, required=["every", "keep"])
    if out is None or "every" not in value or "keep" not in out:
        return BAD
    every = out.get("every")
    if every is None:
        return BAD
    if every == "hourly" and "at" in value:
        ctx.add(path + ("at",), "an hourly schedule takes `minute: M` (0-59), not `at`")
        return BAD
    if every != "hourly" and "minute" in value:
        ctx.add(path + ("minute",), f'a {every} schedule takes `at: "HH:MM"`, not `minute`')
        return BAD
    if "day" in value and every in ("hourly", "daily"):
        ctx.add(path + ("day",), f"a {every} schedule has no day: drop it (weekly and monthly ones take one)")
        return BAD
    day = out.get("day", 1)
    if every == "monthly" and day > 28:
        ctx.add(path + ("day",), f"must be 1-28 (CloudStack runs monthly snapshots on days every month has), got {day}")
        return BAD
    if every == "weekly" and isinstance(value.get("day"), int) and day > 7:
        ctx.add(path + ("day",), f"must be a day name or 1-7 (Sunday is 1), got {day}")
        return BAD
    hour, minute = out.get("at", (0, out.get("minute", 0)))
    if len(out) < len([k for k, v in value.items() if v is not None]):
        return BAD  # a field was refused above
    return SnapshotSchedule(every=every, keep=out["keep"], minute=minute, hour=hour, day=day,
                            timezone=out.get("timezone", DEFAULT_SNAPSHOT_TIMEZONE))


def _check_snapshots(ctx: Ctx, path: TreePath, value: Any) -> Any:
    """A list of schedules (or one mapping); CloudStack keeps one policy per disk and interval."""
    if isinstance(value, dict):
        value, single = [value], True
    else:
        single = False
    out = list_checker(_check_snapshot)(ctx, path, value)
    if out is BAD:
        return BAD
    seen: dict[str, int] = {}
    for i, sched in enumerate(out):
        if sched.every in seen:
            ctx.add(path if single else path + (i,), f"a second {sched.every} schedule (the first is "
                    f"[{seen[sched.every]}]): CloudStack keeps one snapshot policy per disk and interval")
            return BAD
        seen[sched.every] = i
    return out


def _disk_checker(default_mount: str) -> Checker:
    return _sub({"size": check_size_gb, "mount": check_mount, "disk_offering": check_str,
                 "snapshots": _check_snapshots},
                lambda out: Disk(**{"size": 0, "mount": default_mount, **out}), required=["size"])


_ROLE_SPEC: dict[str, Checker] = {
    "count": check_count, "service_offering": check_str, "image": image_checker(tag_allowed=True),
    "cmd": check_cmd, "env": _check_env, "proxy": _check_proxy, "disk": _disk_checker("/data"),
    "healthcheck": _ROLE_HEALTHCHECK, "volumes": list_checker(check_role_volume),
    "build": lambda c, p, v: _BUILD(c, p, v), "schedule": check_schedule, "readiness": check_readiness,
    **CONTAINER_SPEC,
    # placement: spread puts a role's VMs on different hosts (a CloudStack host anti-affinity group)
    "placement": choice_checker(*PLACEMENTS), "root_disk_gb": check_root_disk_gb,
    # run_on: no VMs of its own; runs on another role's (and shares its kamal-proxy)
    "run_on": name_checker(ROLE_NAME_MAX),
}
#: What belongs to a role's VMs, so a role placed on another's (`run_on`) cannot set it.
_VM_KEYS = ("count", "service_offering", "disk", "placement", "root_disk_gb")


def _role(ctx: Ctx, name: str, value: Any, image: str, offering: str, env: EnvSpec) -> Role:
    """One role. Like Kamal, a role called `web` is proxied unless it says `proxy: false`."""
    path: TreePath = ("roles", name)
    out = _section(ctx, path, value, _ROLE_SPEC) or {}
    if out.get("run_on"):
        for key in _VM_KEYS:
            if key in out:
                ctx.add(path + (key,), f"{key} belongs to the VMs this role runs on: set it on role "
                                       f"{out['run_on']} (run_on: {out['run_on']})")
                out.pop(key)
    proxy = out.pop("proxy", Proxy() if name == "web" else None) or None
    if proxy is not None and "healthcheck" in out:
        ctx.add(path + ("healthcheck",), "kamal-proxy health-checks a proxy role: set "
                                         "proxy.healthcheck instead (or proxy: false)")
    if proxy is not None and "readiness" in out:
        ctx.add(path + ("readiness",), "kamal-proxy judges a proxy role by proxy.healthcheck.path: "
                                       "readiness is for roles without a proxy")
        out.pop("readiness")
    healthcheck = None if proxy is not None else out.pop("healthcheck", Healthcheck())
    out.pop("healthcheck", None)
    container = container_settings(ctx, path, out)
    schedules = out.pop("schedule", ())
    role = Role(**{"image": image, "service_offering": offering, **out, "name": name,
                   "env": out.get("env", EnvSpec()).merged_over(env), "proxy": proxy,
                   "healthcheck": healthcheck, "container": container, "schedules": schedules})
    if role.run_on is None:  # else once placed (_place_run_on): on the VMs' disk
        _check_role_volumes(ctx, path, role, role.disk)
    if role.build is not None and "image" in out and images.parse(role.image).pinned:
        ctx.add(path + ("image",), "csdeploy builds this role's image (build:), so each deploy tags it with "
                                   "its version: remove the tag or digest")
    elif role.build is not None and "image" not in out:
        ctx.add(path + ("build",), "a role's own build needs its own image: set roles.NAME.image "
                                   "(the blueprint's build: makes the blueprint's image)")
    return role


def _check_role_volumes(ctx: Ctx, path: TreePath, role: Role, disk: Disk | None) -> None:
    """Kept files must stay where the role's containers find them, and agree across its VMs
    (``disk``: the data disk of the VMs it runs on)."""
    seen: dict[str, int] = {}
    for i, vol in enumerate(role.volumes):
        where = path + ("volumes", i)
        if vol.path in seen:
            ctx.add(where, f"{vol.path} is already the mount point of volumes[{seen[vol.path]}]")
        seen.setdefault(vol.path, i)
        if vol.source is not None:
            root = disk.mount if disk else None
            if root is None or not vol.source.startswith(root + "/"):
                allowed = f"a directory below {root} (this role's data disk)" if root else \
                    "a named volume (this role has no data disk)"
                ctx.add(where, f"{vol.source} is outside the allowed roots: use {allowed}, e.g. "
                               f"{'NAME' if root is None else root + '/' + vol.name}:{vol.path}")
        if role.count > 1 and not vol.per_host:
            ctx.add(where, f"role {role.name} has {role.count} VMs and no shared storage: each would keep its "
                           f"own copy of {vol.name}; write it as {{name: {vol.name}, path: {vol.path}, "
                           "per_host: true} if that is intended")


def _accessory(ctx: Ctx, name: str, value: Any, offering: str) -> Accessory:
    """One accessory: on a role's first VM (`role: web`) or on its own VM (`vm: {...}`)."""
    path: TreePath = ("accessories", name)
    spec: dict[str, Checker] = {
        "image": image_checker(tag_allowed=True), "role": check_str, "port": check_port, "env": _check_env,
        "disk": _disk_checker(f"/data/{name}"), "cmd": check_cmd, "volumes": list_checker(check_volume),
        "vm": _sub({"service_offering": check_str},
                   lambda out: AccessoryVM(**{"service_offering": offering, **out})),
        "backups": check_backups, **CONTAINER_SPEC,
    }
    out = _section(ctx, path, value, spec, required=["image"]) or {}
    out["container"] = container_settings(ctx, path, out)
    if isinstance(value, dict) and "vm" in value and value["vm"] is None:
        out["vm"] = AccessoryVM(service_offering=offering)  # `vm:` alone: own VM, defaults
    written = value if isinstance(value, dict) else {}
    has_role, has_vm = written.get("role") is not None, "vm" in written
    if has_role and has_vm:
        ctx.add(path, "set either role (share that role's first VM) or vm (its own VM), not both")
    elif not has_role and not has_vm and isinstance(value, (dict, type(None))):
        ctx.add(path + ("role",), "missing: set role (share that role's first VM) "
                                  "or vm: {service_offering: ...} (its own VM)")
    if out.get("backups") is not None and isinstance(out.get("image"), str):
        kind = kind_of(out["image"])
        if kind is None or kind.name not in BACKUP_KINDS:
            ctx.add(path + ("backups",), f"{out['image']} has no backup method: csdeploy backs up "
                                         + ", ".join(BACKUP_KINDS) + " accessories (snapshots cover the rest)")
    return Accessory(**{"image": "", **out, "name": name})


_SSH = _sub({"user": check_unix_user, "port": check_port,
             "allow_from": check_cidrs, "key": check_str},
            lambda out: SSHAccess(**{"allow_from": (), **out}), required=["allow_from"])


def _cloud(ctx: Ctx, value: Any) -> Cloud:
    spec: dict[str, Checker] = {
        "zone": check_str, "template": check_str, "network_offering": check_str,
        "service_offering": check_str, "public_access": choice_checker(*PUBLIC_ACCESS_MODES),
        "ssh": lambda c, p, v: v,  # checked below, so a missing ssh still reports allow_from
    }
    out = _section(ctx, ("cloud",), value, spec, ["zone", "template", "service_offering"]) or {}
    ssh = _SSH(ctx, ("cloud", "ssh"), out.pop("ssh", None)) if isinstance(value, dict) else BAD
    placeholder = SSHAccess(allow_from=())
    return Cloud(**{"zone": "", "template": "", "service_offering": "", **out,
                    "ssh": placeholder if ssh is BAD else ssh})


_REGISTRY = _sub({"server": check_registry_server, "username": check_str,
                  "password": check_password},
                 lambda out: Registry(**{"server": "", "username": "", "password": "", **out}),
                 required=["server", "username", "password"])
def _check_path_check(ctx: Ctx, path: TreePath, value: Any) -> Any:
    """A watched path: `/notes` (expects 200) or `{path: /notes, status: 404}`."""
    if isinstance(value, dict):
        return _PATH_CHECK(ctx, path, value)
    checked = check_http_path(ctx, path, value)
    return BAD if checked is BAD else PathCheck(path=checked)


_PATH_CHECK = _sub({"path": check_http_path, "status": check_http_status},
                   lambda out: PathCheck(**{"path": "/", **out}), required=["path"])
_WATCH = _sub({"duration": check_seconds, "interval": check_seconds, "health": check_bool,
               "containers": check_bool, "paths": list_checker(_check_path_check),
               "max_failures": check_max_failures},
              lambda out: Watch(**out))
_ROLLOUT = _sub({"docker_install": choice_checker(*DOCKER_INSTALL_METHODS),
                 "proxy_image": image_checker(tag_allowed=True), "batch": check_retain,
                 "lock_ttl": check_ttl, "watch": lambda c, p, v: _WATCH(c, p, {} if v is True else v)},
                lambda out: RolloutSettings(**out))
_HOOKS = _sub({"pre_deploy": check_str, "post_deploy": check_str, "timeout": check_seconds},
              lambda out: Hooks(**out))
_BUILD = _sub({"context": check_str, "dockerfile": check_str, "args": check_clear_env,
                "secrets": list_checker(_check_secret_ref), "target": check_str,
                "platform": pattern_checker(PLATFORM_RE, "an OS/ARCH platform such as linux/amd64")},
               lambda out: Build(**out))
def _check_paths(ctx: Ctx, path: TreePath, value: Any) -> Any:
    """`paths: {NAME: vault reference}`: where a secret is in the vault, when not `<from>/<NAME>`."""
    if not isinstance(value, dict):
        return ctx.type_error(path, "a mapping of secret names to vault references", value)
    out: dict[str, str] = {}
    for name, ref in value.items():
        if check_secret_name(ctx, path + (name,), name) is not BAD and check_str(ctx, path + (name,), ref) is not BAD:
            ctx.secret_refs.append((path + (name,), name))
            out[name] = ref
    return out if len(out) == len(value) else BAD


def _build_source(out: dict[str, Any]) -> SecretsSource:
    fields = {"from_" if key == "from" else key: val for key, val in out.items()}
    return SecretsSource(**{"adapter": "", **fields})


_SECRETS_SOURCE = _sub({"adapter": choice_checker(*VAULT_ADAPTERS), "account": check_str, "from": check_str,
                        "paths": _check_paths, "command": check_cmd, "timeout": check_seconds},
                       _build_source, required=["adapter"])


def _check_secrets_source(ctx: Ctx, path: TreePath, value: Any) -> Any:
    source = _SECRETS_SOURCE(ctx, path, value)
    if source is BAD:
        return BAD
    if source.adapter == "command" and not source.command:
        ctx.add(path + ("command",), "the command adapter needs `command:` (it prints dotenv lines or a JSON object)")
        return BAD
    if source.command and source.adapter != "command":
        ctx.add(path + ("command",), f"`command` is for the command adapter; adapter {source.adapter} runs its own CLI")
        return BAD
    return source


def _check_aliases(ctx: Ctx, path: TreePath, value: Any) -> Any:
    """``aliases``: names (like roles') -> a csdeploy command line, e.g. ``exec -i --role web -- sh``."""
    if not isinstance(value, dict):
        return ctx.type_error(path, "a mapping of alias names to csdeploy command lines", value)
    out: dict[str, str] = {}
    for name, line in value.items():
        if name_checker(ROLE_NAME_MAX)(ctx, (*path, name), name) is BAD or check_str(ctx, (*path, name), line) is BAD:
            continue
        if line.split()[0] == "alias":
            ctx.add((*path, name), "an alias cannot call another alias")
            continue
        out[name] = line
    return out


_TOP_SPEC: dict[str, Checker] = {
    "service": name_checker(SERVICE_NAME_MAX), "image": image_checker(tag_allowed=False),
    "cloud": lambda c, p, v: v, "roles": lambda c, p, v: v, "accessories": lambda c, p, v: v,
    "registry": _REGISTRY, "env": _check_env, "secrets": list_checker(check_secret_name),
    "secrets_file": check_str, "secrets_source": _check_secrets_source, "ttl": check_ttl,
    "retain_versions": check_retain, "rollout": _ROLLOUT, "build": _BUILD, "hooks": _HOOKS, "dns": check_dns,
    "aliases": _check_aliases, "hosts": check_hosts_section,
}


def _blueprint(ctx: Ctx, tree: dict[str, Any], source: Path | None) -> Blueprint:
    """Check every section, then the references between them; problems go to ctx."""
    top = _section(ctx, (), tree, _TOP_SPEC, ["service", "image", "cloud", "roles"]) or {}
    cloud = _cloud(ctx, tree["cloud"]) if tree.get("cloud") is not None else None
    offering = cloud.service_offering if cloud else ""
    env = top.get("env", EnvSpec())
    roles: dict[str, Role] = {}
    raw_roles = tree.get("roles")
    if isinstance(raw_roles, dict) and not raw_roles:
        ctx.add(("roles",), "no roles: " + _REQUIRED_HELP["roles"])
    elif raw_roles is not None and not isinstance(raw_roles, dict):
        ctx.type_error(("roles",), "a mapping of role names to settings", raw_roles)
    for name, value in (raw_roles if isinstance(raw_roles, dict) else {}).items():
        name_checker(ROLE_NAME_MAX)(ctx, ("roles", name), name)
        roles[name] = _role(ctx, name, value, top.get("image", ""), offering, env)
    _place_run_on(ctx, roles)
    accessories: dict[str, Accessory] = {}
    raw_accessories = tree.get("accessories") or {}
    if not isinstance(raw_accessories, dict):
        ctx.type_error(("accessories",), "a mapping of accessory names to settings", raw_accessories)
        raw_accessories = {}
    for name, value in raw_accessories.items():
        if name_checker(ROLE_NAME_MAX)(ctx, ("accessories", name), name) is not BAD and name in roles:
            ctx.add(("accessories", name), f"'{name}' is also a role name; VM and container "
                                           "names would collide, pick another name")
        accessories[name] = _accessory(ctx, name, value, offering)
    blueprint = Blueprint(
        service=top.get("service", ""), image=top.get("image", ""),
        cloud=cloud or Cloud(zone="", template="", service_offering="", ssh=SSHAccess(allow_from=())),
        roles=roles, accessories=accessories, registry=top.get("registry"), env=env,
        secrets=top.get("secrets", ()), secrets_file=top.get("secrets_file"),
        secrets_source=top.get("secrets_source"), ttl=top.get("ttl"),
        retain_versions=top.get("retain_versions", 5), rollout=top.get("rollout") or RolloutSettings(),
        build=top.get("build"), hooks=top.get("hooks") or Hooks(), dns=top.get("dns"),
        aliases=top.get("aliases") or {}, hosts=top.get("hosts") or HostsSpec(), source=source,
    )
    _check_secret_refs(ctx, blueprint, tree.get("secrets"))
    if roles:  # with no usable roles, "no role named ..." would only repeat that problem
        _check_placement(ctx, blueprint)
        _check_load_balancers(ctx, blueprint)
    return blueprint


def _place_run_on(ctx: Ctx, roles: dict[str, Role]) -> None:
    """A role with `run_on` takes the VMs (count, offering, placement) of the role it names,
    which must be a role with VMs of its own; a proxy role needs kamal-proxy there."""
    for name, role in list(roles.items()):
        if role.run_on is None:
            continue
        path: TreePath = ("roles", name, "run_on")
        host = roles.get(role.run_on)
        if host is None or role.run_on == name:
            close = difflib.get_close_matches(role.run_on, [r for r in roles if r != name], n=1)
            tip = f"did you mean '{close[0]}'?" if close else \
                f"roles: {', '.join(r for r in roles if r != name) or 'none other'}"
            ctx.add(path, f"no other role named '{role.run_on}' to run on ({tip})")
        elif host.run_on is not None:
            ctx.add(path, f"role {host.name} runs on role {host.run_on}'s VMs itself: "
                          f"write run_on: {host.run_on}")
        elif role.proxy is not None and host.proxy is None:
            ctx.add(path, f"role {host.name} has no proxy, so its VMs run no kamal-proxy for this role: "
                          f"run it on a proxy role, or give {host.name} a proxy")
        elif role.proxy is not None and role.proxy.load_balancer is not None:
            ctx.add(("roles", name, "proxy", "load_balancer"), f"role {name} is served through role "
                    f"{host.name}'s entry point: set proxy.load_balancer there")
        else:
            roles[name] = replace(role, count=host.count, service_offering=host.service_offering,
                                  placement=host.placement)
            _check_role_volumes(ctx, ("roles", name), roles[name], host.disk)
            continue
        roles[name] = replace(role, run_on=None)  # reported: checked no further as placed


def _check_load_balancers(ctx: Ctx, bp: Blueprint) -> None:
    """With port forwarding every role shares the network's one address: its ports 80/443 can
    carry one proxy role only (balanced or not). Proxy roles that share a host name must not
    claim the same path."""
    proxied = [role for role in bp.roles.values() if role.proxy is not None]
    entries = [role for role in proxied if role.run_on is None]   # a role on another's VMs: its entry point
    if bp.cloud.public_access == "port_forwarding":
        for role in entries[1:]:
            ctx.add(("roles", role.name, "proxy"), f"public_access port_forwarding has one public address, whose "
                    f"ports 80/443 already serve role {entries[0].name}: use static_nat (an address per VM) "
                    f"for a second HTTP service, or run it on role {entries[0].name}'s VMs "
                    f"(run_on: {entries[0].name}, with its own proxy.host or proxy.path_prefix)")
    claimed: dict[tuple[str, str, str], str] = {}
    for role in proxied:
        assert role.proxy is not None
        # a name is claimed everywhere (one DNS record); no name: any name, on that one kamal-proxy
        for host in role.proxy.hosts or ("",):
            for prefix in role.proxy.path_prefix or ("/",):
                key = (host.lower(), prefix, "" if host else role.vm_role)
                other = claimed.setdefault(key, role.name)
                if other != role.name:
                    where = f"{host}{prefix}" if host else f"{prefix} on role {role.vm_role}'s kamal-proxy"
                    ctx.add(("roles", role.name, "proxy"), f"role {other} already serves {where}: "
                            "give one of them another proxy.host or proxy.path_prefix")


def _check_secret_refs(ctx: Ctx, bp: Blueprint, written: Any) -> None:
    """Every secret used must be declared, so `load_secrets` knows what to require.

    `written` is the raw `secrets` value: if it was bad, that is reported already and the
    references are not blamed for it.
    """
    if not isinstance(written, (list, type(None))):
        return
    declared = [name for name in written or () if isinstance(name, str)]
    for i, name in enumerate(declared):
        if name in declared[:i]:
            ctx.add(("secrets", i), f"'{name}' is listed twice")
    refs = list(ctx.secret_refs)
    if bp.registry and bp.registry.password:  # empty: already reported as not a name
        refs.append((("registry", "password"), bp.registry.password))
    for path, name in refs:
        if name not in declared:
            close = difflib.get_close_matches(name, sorted(declared), n=1)
            tip = f"did you mean '{close[0]}'?" if close else "add it to the `secrets` list"
            ctx.add(path, f"secret '{name}' is not declared in `secrets` ({tip})")


def _check_placement(ctx: Ctx, bp: Blueprint) -> None:
    """Accessories sharing a role's VM need that VM to exist and a free port and mount."""
    used_ports: dict[tuple[str, int], str] = {}
    mounts: dict[tuple[str, str], str] = {}
    for role in bp.roles.values():
        if role.proxy is not None:
            used_ports[(role.vm_role, 80)] = used_ports[(role.vm_role, 443)] = "kamal-proxy"
        if role.disk:
            mounts[(role.name, role.disk.mount)] = f"role {role.name}'s disk"
    for acc in bp.accessories.values():
        path: TreePath = ("accessories", acc.name)
        if acc.role is None:
            continue
        role = bp.roles.get(acc.role)
        if role is None:
            close = difflib.get_close_matches(acc.role, list(bp.roles), n=1)
            tip = f"did you mean '{close[0]}'?" if close else f"roles: {', '.join(bp.roles) or 'none'}"
            ctx.add(path + ("role",), f"no role named '{acc.role}' ({tip})")
            continue
        if role.run_on is not None:
            ctx.add(path + ("role",), f"role '{acc.role}' runs on role {role.run_on}'s VMs: "
                                      f"write role: {role.run_on}")
            continue
        if role.count == 0:
            ctx.add(path + ("role",), f"role '{acc.role}' has count 0, so there is no VM to run "
                                      f"accessory '{acc.name}' on")
        if acc.port is not None:
            other = used_ports.setdefault((acc.role, acc.port), f"accessory {acc.name}")
            if other != f"accessory {acc.name}":
                ctx.add(path + ("port",), f"port {acc.port} on role {acc.role}'s VM is already used by {other}")
        if acc.disk:
            other = mounts.setdefault((acc.role, acc.disk.mount), f"accessory {acc.name}'s disk")
            if other != f"accessory {acc.name}'s disk":
                ctx.add(path + ("disk", "mount"), f"{acc.disk.mount} on role {acc.role}'s VM is already the mount point of {other}")
