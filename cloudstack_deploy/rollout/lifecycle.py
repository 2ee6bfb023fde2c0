"""Day-2 life cycle: `app stop|start|remove|details`, `accessory start|stop|restart|remove|upgrade`,
`prune`. Each changing one holds the deploy lock (a deploy meanwhile would decide from a state
that is changing under it); `details` only reads. With a dry run the scripts are recorded, not run.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from .. import accessories
from ..errors import InvalidInput
from ..inventory import Host
from . import history
from . import plan as planning
from .apps import converge
from .commands import host as host_cmds
from .commands import jobs
from .commands import lifecycle as lc
from .commands.script import Script
from .contract import (
    accessory_container,
    accessory_env,
    container_name,
    image_repository,
    labels,
    proxy_service,
)
from .deploy import Rollout
from .hosts import Connection, DryRun, Hosts, PlannedScript
from .stages import prepare_script, tls_files

APP_ACTIONS = ("stop", "start", "remove", "details")
ACCESSORY_ACTIONS = ("start", "stop", "restart", "remove", "upgrade")


@dataclass
class LifecycleResult:
    action: str
    hosts: dict[str, dict[str, str]] = field(default_factory=dict)   # host -> container/route -> outcome
    details: dict[str, str] = field(default_factory=dict)            # host -> `details` text
    planned: list[PlannedScript] = field(default_factory=list)       # a dry run: what each host would run
    seconds: float = 0.0


def current_version(records: list[history.DeployRecord]) -> str | None:
    """The version the whole environment last deployed successfully (None: no such deploy)."""
    ok = [rec for rec in records if rec.status == history.OK and not rec.hosts]
    return ok[-1].version if ok else None


async def _locked(r: Rollout, what: str, hosts: list[Host], break_lock: bool,
                  body: Callable[[Hosts], Awaitable[None]], result: LifecycleResult) -> LifecycleResult:
    """Run ``body`` with the deploy lock held on the primary host (released afterwards)."""
    started = time.monotonic()
    async with r.pool() as pool:
        await r.read_facts(pool, hosts, None, lock=r.lock_script(what, break_lock, canary=host_cmds.CANARY_IGNORE))
        try:
            await body(pool)
        finally:
            await r.unlock_quietly(pool, None)
        if isinstance(pool, DryRun):
            result.planned = list(pool.planned)
    result.seconds = time.monotonic() - started
    return result


# ---- app roles -------------------------------------------------------------------------------

def app_hosts(r: Rollout, roles: tuple[str, ...], hosts: tuple[str, ...]) -> list[Host]:
    """The selected hosts that run an app role (an accessory's own VM has none)."""
    chosen = [h for h in r.select(roles, hosts) if r.host_roles(h)]
    if not chosen:
        raise InvalidInput("no app role runs on the selected hosts", hint="accessories: `csdeploy accessory ...`")
    return chosen


def app_script(r: Rollout, action: str, host: Host, current: str | None) -> Script:
    """``action`` for every selected app role on ``host`` (its own, and those placed on it)."""
    out = Script()
    for name in r.host_roles(host):
        out.extend(_role_script(r, action, host, name, current))
    return out


def _role_script(r: Rollout, action: str, host: Host, name: str, current: str | None) -> Script:
    role = r.bp.roles[name]
    role_labels = labels(r.bp.service, r.env, role.name)
    service = proxy_service(r.bp.service, role.name) if host.proxy and role.proxy is not None else None
    if action == "stop":
        return lc.app_stop(role_labels)
    if action == "start":
        return lc.app_start(role_labels, container_name(r.bp.service, role.name, current) if current else None,
                            role=role.name, service=service, proxy=role.proxy if service else None,
                            tls=tls_files(r.bp, role))
    if action == "remove":
        first = r.inv.role_hosts(role.name)[:1] == [host]
        unschedule = jobs.install(r.bp.service, role.name, {}, r.inv.ssh.user) if role.schedules and first else None
        return lc.app_remove(role_labels, service=service, jobs=unschedule)
    if action == "details":
        return lc.details(role_labels)
    raise InvalidInput(f"unknown app action {action!r}", hint="one of " + ", ".join(APP_ACTIONS))


async def app(r: Rollout, action: str, *, roles: tuple[str, ...] = (), hosts: tuple[str, ...] = (),
              break_lock: bool = False) -> LifecycleResult:
    """``action`` on the role's current containers of each selected host."""
    if action not in APP_ACTIONS:
        raise InvalidInput(f"unknown app action {action!r}", hint="one of " + ", ".join(APP_ACTIONS))
    targets = app_hosts(r, roles, hosts)
    result = LifecycleResult(action)
    if action == "details":
        async with r.pool() as pool:
            async def read(conn: Connection) -> None:
                res = await conn.run(app_script(r, action, conn.host, None), what="app details", read_only=True)
                result.details[conn.host.name] = res.stdout.rstrip("\n")
            await pool.each(read, targets)
        return result

    async def body(pool: Hosts) -> None:
        current = current_version(await r.history(pool)) if action == "start" else None

        async def one(conn: Connection) -> None:
            res = await conn.run(app_script(r, action, conn.host, current),
                                 what=f"app {action} {', '.join(r.host_roles(conn.host))}")
            result.hosts[conn.host.name] = lc.parse(res.stdout)
        await pool.each(one, targets)

    return await _locked(r, f"app-{action}", targets, break_lock, body, result)


# ---- accessories ---------------------------------------------------------------------------------

def accessory_host(r: Rollout, name: str) -> Host:
    host = r.inv.accessory_host(name) if name in r.bp.accessories else None
    if host is None:
        raise InvalidInput(f"no accessory named {name!r}", hint="known: " + (", ".join(r.bp.accessories) or "none"))
    return host


def data_sources(volumes: tuple[str, ...]) -> list[str]:
    """Where an accessory keeps its files: each volume's source (a host directory or a named volume)."""
    return [v.split(":", 1)[0] for v in volumes if v.split(":", 1)[0]]


async def accessory(r: Rollout, name: str, action: str, *, delete_data: bool = False,
                    break_lock: bool = False, load_secrets: Callable[[], dict[str, str]] | None = None,
                    ) -> LifecycleResult:
    """``action`` on accessory ``name``: start, stop, restart (the same container), remove (its
    data kept unless ``delete_data``), upgrade (pull the blueprint's image, re-create the container).
    ``load_secrets``: asked only when a `start` finds no container and boots it (its env file
    was removed with it), so a plain start needs no secret."""
    if action not in ACCESSORY_ACTIONS:
        raise InvalidInput(f"unknown accessory action {action!r}", hint="one of " + ", ".join(ACCESSORY_ACTIONS))
    if delete_data and action != "remove":
        raise InvalidInput("--delete-data goes with `accessory remove`")
    host = accessory_host(r, name)
    acc = r.bp.accessories[name]
    container = accessory_container(r.bp.service, name)
    result = LifecycleResult(action)
    lost = accessories.unkept_data(acc.image, acc.volumes)
    if lost is not None and action in ("upgrade", "remove", "start"):
        r.progress.note(f"accessory {name}: {lost} is on no volume: a container created again starts "
                        "without the data it held (give the accessory a volume for it)", level="warning")

    async def body(pool: Hosts) -> None:
        conn = await pool.connect(host)
        if action == "start" and not await _exists(conn, container):
            if load_secrets is not None:
                r.secrets.update(load_secrets())
            await _upgrade(r, pool, conn, host, name, result, boot=True)
        elif action in ("start", "stop", "restart"):
            res = await conn.run(lc.accessory_simple(container, action), what=f"accessory {action} {name}")
            result.hosts[host.name] = lc.parse(res.stdout)
        elif action == "remove":
            script = lc.accessory_remove(container, env_file=host_cmds.env_file(r.bp.service, name),
                                         data=data_sources(acc.volumes) if delete_data else ())
            res = await conn.run(script, what=f"accessory remove {name}")
            result.hosts[host.name] = lc.parse(res.stdout)
        else:
            await _upgrade(r, pool, conn, host, name, result)

    return await _locked(r, f"accessory-{action}-{name}", [host], break_lock, body, result)


async def _exists(conn: Connection, container: str) -> bool:
    """Whether the host has the accessory's container at all (``accessory remove`` deletes it)."""
    res = await conn.run(lc.image_id(container), what="read the accessory's image", read_only=True)
    return lc.parse(res.stdout).get(container, "").removeprefix("image").strip() != ""


async def _upgrade(r: Rollout, pool: Hosts, conn: Connection, host: Host, name: str, result: LifecycleResult,
                   *, boot: bool = False) -> None:
    """Pull the blueprint's image for the accessory (even when a copy with its tag is there: a
    moved tag is what an upgrade is for), then re-create the container with it; data stays.
    ``boot``: `accessory start` of a removed accessory (Kamal's `accessory boot`): the container
    is created again from the blueprint, its image pulled only when the host lacks it."""
    acc = r.bp.accessories[name]
    container = accessory_container(r.bp.service, name)
    before = lc.parse((await conn.run(lc.image_id(container), what="read the accessory's image",
                                      read_only=True)).stdout).get(container, "")
    pulls = [acc.image]
    if boot:
        known = await r.read_facts(pool, [host], None, lock=None)
        pulls = [] if known[host.name].has_image(acc.image) else pulls
    password = r.secrets.get(r.bp.registry.password) if r.bp.registry and pulls else None
    pull = prepare_script(r.bp, host, user=r.inv.ssh.user, install=None, network=False, registry_password=password,
                          pulls=pulls, check_images=[],
                          accessory_envs={name: accessory_env(acc, r.secrets)}, proxy=False)
    await conn.run(pull, what=f"pull {acc.image}" if pulls else f"accessory env {name}", timeout=900)
    facts = await r.read_facts(pool, [host], None, lock=None)
    outcome = await converge(r, pool, planning.build(r.context(), facts, [host], reboot=(name,), user=r.inv.ssh.user))
    if boot:
        result.hosts[host.name] = {container: f"booted with {acc.image} (its data kept)"}
        return
    after = lc.parse((await conn.run(lc.image_id(container), what="read the accessory's image",
                                     read_only=True)).stdout).get(container, "")
    changed = before != after or isinstance(pool, DryRun)
    result.hosts[host.name] = {container: f"{outcome.get(name, 'rebooted')} with {acc.image}"
                                          + ("" if changed else " (the same image as before)")}


# ---- prune ---------------------------------------------------------------------------------------

async def prune(r: Rollout, *, break_lock: bool = False) -> LifecycleResult:
    """On each app host: the role's stopped containers beyond ``retain_versions`` and the images no
    container uses any more (what a deploy prunes after its verdict)."""
    targets = [h for h in r.hosts if r.host_roles(h)]
    if not targets:
        raise InvalidInput(f"environment {r.env} has no app host")
    result = LifecycleResult("prune")

    async def body(pool: Hosts) -> None:
        current = current_version(await r.history(pool))

        async def one(conn: Connection) -> None:
            roles = [r.bp.roles[name] for name in r.host_roles(conn.host)]
            script = lc.prune([(labels(r.bp.service, r.env, role.name),
                                container_name(r.bp.service, role.name, current) if current else "-",
                                image_repository(role.image)) for role in roles],
                              r.bp.retain_versions, {"service": r.bp.service})
            res = await conn.run(script, what="prune")
            result.hosts[conn.host.name] = lc.parse(res.stdout)
        await pool.each(one, targets)

    return await _locked(r, "prune", targets, break_lock, body, result)
