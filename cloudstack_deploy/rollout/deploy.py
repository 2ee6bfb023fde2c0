"""Rollout over the inventory: lock, prepare (Docker, login, pull, env files, proxy),
accessories, app roles (zero-downtime switch through kamal-proxy; workers in batches),
prune, history, unlock.

SSH exec calls per host for a redeploy: prepare 1 + app 1, plus 1 where accessories run,
plus lock and unlock on the primary host: 2 on most hosts, up to 5 on the primary (the
demo's web host, which also runs Redis), against Kamal's ~30.
"""

from __future__ import annotations

import getpass
import json
import socket
import time
from dataclasses import dataclass, field

from ..blueprint_schema import Blueprint
from ..errors import Locked
from ..inventory import Host, Inventory
from ..progress import Event, Progress
from ..store import Journal
from . import history
from .commands import host as host_cmds
from .contract import ContainerEnv, accessory_env, check_version, role_env
from .history import DeployRecord
from .hosts import Connection, DryRun, HostError, Hosts, PlannedScript
from .stages import accessory_script, app_script, prepare_script


@dataclass
class RolloutOptions:
    version: str
    break_lock: bool = False
    concurrency: int = 20
    reboot_accessories: tuple[str, ...] = ()
    kind: str = "deploy"            # deploy | rollback (recorded in the history)


@dataclass
class RolloutResult:
    version: str
    seconds: float
    exec_calls: dict[str, int] = field(default_factory=dict)
    accessories: dict[str, str] = field(default_factory=dict)   # name -> started|unchanged|rebooted
    planned: list[PlannedScript] = field(default_factory=list)  # --dry-run: what each host would run


class Rollout:
    def __init__(self, bp: Blueprint, inventory: Inventory, secrets: dict[str, str], progress: Progress,
                 *, dry_run: bool = False, journal: Journal | None = None) -> None:
        self.bp = bp
        self.journal = None if dry_run else journal  # the shared history store (best effort)
        self.inv = inventory
        self.env = inventory.env
        self.secrets = secrets
        self.progress = progress
        self.hosts = list(inventory.hosts)
        self.dry_run = dry_run

    def emit(self, resource: str, action: str, status: str, detail: str = "") -> None:
        self.progress.emit(Event(resource=resource, action=action, status=status, detail=detail, env=self.env))

    def pool(self, concurrency: int = 20) -> Hosts:
        if self.dry_run:
            return DryRun(self.hosts, user=self.inv.ssh.user)
        return Hosts(self.hosts, user=self.inv.ssh.user, client_key=self.inv.ssh.key,
                     known_hosts=self.inv.ssh.known_hosts, concurrency=concurrency)

    def role_hosts(self, role: str) -> list[Host]:
        return self.inv.role_hosts(role)

    # ---- lock and history --------------------------------------------------------------------
    async def lock(self, pool: Hosts, version: str, break_lock: bool) -> None:
        conn = await pool.connect(self.inv.primary)
        owner = {"user": getpass.getuser(), "host": socket.gethostname(), "version": version,
                 "since": int(time.time()), "ttl": int(self.bp.rollout.lock_ttl.total_seconds())}
        res = await conn.run(host_cmds.lock(self.bp.service, json.dumps(owner), break_lock=break_lock),
                             check=False, what="take the deploy lock")
        if res.exit_status == host_cmds.LOCK_EXIT:
            try:
                held = json.loads(res.stdout.strip() or "{}")
            except json.JSONDecodeError:
                held = {}
            since = held.get("since")
            age = time.time() - since if isinstance(since, int) else None
            stale = age is not None and age > held.get("ttl", owner["ttl"])
            who = f"{held.get('user', '?')}@{held.get('host', '?')} deploying {held.get('version', '?')}"
            when = f" {age / 60:.0f} min ago" if age is not None else ""
            raise Locked(
                f"environment '{self.env}' is locked for deploys by {who}{when}"
                + (" — the lock is STALE (older than its TTL)" if stale else ""), holder=who,
                hint="re-run with --break-lock" + (" (the holder seems dead)" if stale
                                                   else " only if that deploy is no longer running"))
        if res.exit_status != 0:
            raise HostError(conn.host.name, "could not take the deploy lock", res.stderr)

    async def unlock(self, pool: Hosts, record: DeployRecord | None) -> None:
        conn = await pool.connect(self.inv.primary)
        await conn.run(host_cmds.unlock(self.bp.service, record.to_json() if record else None),
                       what="release the deploy lock")

    async def history(self, pool: Hosts) -> list[DeployRecord]:
        conn = await pool.connect(self.inv.primary)
        res = await conn.run(history.read_script(self.bp.service), what="read the deploy history")
        return history.parse(res.stdout)

    # ---- the stages --------------------------------------------------------------------------
    def _app_env(self, role: str, version: str) -> ContainerEnv:
        return role_env(self.bp, role, self.inv, self.secrets, version)

    async def prepare(self, pool: Hosts, version: str | None, hosts: list[Host] | None = None) -> None:
        registry_password = (self.secrets.get(self.bp.registry.password) if self.bp.registry else None)

        async def one(conn: Connection) -> None:
            host = conn.host
            role = host.app_role
            self.emit(f"host {host.name}", "prepare", "running", "docker, login, pull")
            app_image = f"{self.bp.image}:{version}" if role and version else None
            app_env = self._app_env(role, version) if role and version else None
            acc_envs = {a: accessory_env(self.bp.accessories[a], self.secrets) for a in host.accessories}
            script = prepare_script(self.bp, host, user=self.inv.ssh.user, registry_password=registry_password,
                                    app_image=app_image, app_env=app_env, accessory_envs=acc_envs,
                                    install=self.bp.rollout.docker_install)
            try:
                await conn.run(script, what="prepare (docker, registry login, pull)", timeout=900)
            except HostError as exc:
                self.emit(f"host {host.name}", "prepare", "failed", str(exc).splitlines()[0])
                raise
            self.emit(f"host {host.name}", "prepare", "done")

        await pool.each(one, hosts)

    async def accessories(self, pool: Hosts, reboot: tuple[str, ...] = ()) -> dict[str, str]:
        outcome: dict[str, str] = {}

        async def one(conn: Connection) -> None:
            for name in conn.host.accessories:
                acc = self.bp.accessories[name]
                self.emit(f"accessory {name}", "boot", "running", conn.host.name)
                script = accessory_script(self.bp, self.env, acc, accessory_env(acc, self.secrets),
                                          conn.host.private_ip, force=name in reboot)
                try:
                    res = await conn.run(script, what=f"accessory {name}", timeout=300)
                except HostError as exc:
                    self.emit(f"accessory {name}", "boot", "failed", str(exc).splitlines()[0])
                    raise
                state = (res.stdout.strip().splitlines() or ["?"])[0]
                outcome[name] = state
                if state == "rebooted":
                    self.progress.note(f"accessory {name} configuration changed: rebooted it on {conn.host.name}",
                                       level="warning")
                self.emit(f"accessory {name}", "boot", "done", f"{state} on {conn.host.name}")

        await pool.each(one, [h for h in self.hosts if h.accessories])
        return outcome

    async def apps(self, pool: Hosts, version: str) -> None:
        # Proxy roles: every host switches through its own kamal-proxy, all at once.
        # Other roles: rolling, `rollout.batch` hosts at a time; old containers stop only after
        # the new ones are ready.
        for role in self.bp.roles.values():
            hosts = self.role_hosts(role.name)
            if not hosts:
                continue
            env_by_host = self._app_env(role.name, version)

            async def one(conn: Connection, role=role, env_by_host=env_by_host) -> None:
                res_name = f"{role.name} {conn.host.name}"
                self.emit(res_name, "deploy", "running", version)
                script = app_script(self.bp, self.env, role, version, env_by_host, retain=self.bp.retain_versions)
                try:
                    await conn.run(script, what=f"deploy {role.name} {version}", timeout=900)
                except HostError as exc:
                    self.emit(res_name, "deploy", "failed", str(exc).splitlines()[0])
                    raise
                self.emit(res_name, "deploy", "done", version)

            batch = len(hosts) if role.proxy is not None else max(1, self.bp.rollout.batch)
            for i in range(0, len(hosts), batch):
                await pool.each(one, hosts[i:i + batch])

    # ---- whole runs --------------------------------------------------------------------------
    async def run(self, opts: RolloutOptions) -> RolloutResult:
        version = check_version(opts.version)
        started = time.monotonic()
        record = history.start(version, opts.kind)
        tracker = history.Tracker(self.journal, self.inv, self.bp.service, record)
        await tracker.pending()
        async with self.pool(opts.concurrency) as pool:
            try:
                await self.lock(pool, version, opts.break_lock)
            except BaseException as exc:
                history.finish(record, time.monotonic() - started, exc)
                await tracker.finished(exc)
                raise
            await tracker.deploying()
            try:
                await self.prepare(pool, version)
                accessories = await self.accessories(pool, opts.reboot_accessories)
                await self.apps(pool, version)
            except BaseException as exc:
                history.finish(record, time.monotonic() - started, exc)
                await self._unlock_quietly(pool, record)
                await tracker.finished(exc)
                raise
            await self.unlock(pool, history.finish(record, time.monotonic() - started))
            await tracker.finished()
            calls = dict(pool.exec_calls)
            planned = pool.planned if isinstance(pool, DryRun) else []
        return RolloutResult(version=version, seconds=time.monotonic() - started, exec_calls=calls,
                             accessories=accessories, planned=planned)

    async def _unlock_quietly(self, pool: Hosts, record: DeployRecord) -> None:
        try:
            await self.unlock(pool, record)
        except Exception as exc:  # the original error matters more; say the lock may remain
            self.progress.note(f"could not release the deploy lock: {exc}", level="warning")

