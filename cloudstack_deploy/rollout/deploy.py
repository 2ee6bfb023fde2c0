"""Rollout over the inventory: read what is there, do only what is missing, switch, record.

1. Facts (every host at once, one exec each; the primary also takes the deploy lock): Docker,
   network, which images are present, accessories' configuration, the proxy, mounts.
2. Prepare (only hosts that lack something): install Docker, log in and pull only the
   missing images, boot kamal-proxy, (re)start accessories whose configuration changed. A
   rollback to a version still on the hosts needs no registry at all.
3. Apps, every role at once, each host as soon as its own preparation and the accessories
   are done: proxy roles start the new container and switch through kamal-proxy (health
   checked); other roles start theirs and wait for readiness meanwhile, and stop their old
   containers only once every proxy role switched. A refused switch keeps the old version
   everywhere: the workers started for it are removed.
4. Unlock, with the deploy record appended to the primary host's history.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import socket
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field

from ..blueprint_schema import Blueprint, Role
from ..errors import InvalidInput, Locked, OperationFailed
from ..inventory import Host, Inventory
from ..progress import Event, Progress
from ..store import Journal
from . import history
from .commands import facts as facts_cmds
from .commands import host as host_cmds
from .commands.script import Script
from .contract import (
    ContainerEnv,
    accessory_container,
    accessory_env,
    check_version,
    container_name,
    image_ref,
    role_env,
)
from .history import DeployRecord
from .hosts import Connection, DryRun, HostError, Hosts, PlannedScript
from .stages import (
    ACCESSORY_MARK,
    accessory_hash,
    accessory_script,
    prepare_script,
    proxy_role_script,
    worker_abort_script,
    worker_commit_script,
    worker_start_script,
)


@dataclass
class RolloutOptions:
    version: str
    break_lock: bool = False
    concurrency: int = 20
    reboot_accessories: tuple[str, ...] = ()
    kind: str = "deploy"            # deploy | rollback (recorded in the history)
    roles: tuple[str, ...] = ()     # only these roles' hosts (Kamal's -r); accessories elsewhere untouched
    hosts: tuple[str, ...] = ()     # only these hosts (Kamal's -h)


@dataclass
class RolloutResult:
    version: str
    seconds: float
    exec_calls: dict[str, int] = field(default_factory=dict)
    accessories: dict[str, str] = field(default_factory=dict)   # name -> started|unchanged|rebooted
    planned: list[PlannedScript] = field(default_factory=list)  # --dry-run: what each host would run


@dataclass
class HostWork:
    """What one host needs before its app can start (decided from its facts)."""

    host: Host
    install: str | None = None
    network: bool = False
    pulls: list[str] = field(default_factory=list)
    check_image: str | None = None
    accessories: list[str] = field(default_factory=list)
    proxy: bool = False

    @property
    def needed(self) -> bool:
        return bool(self.install or self.network or self.pulls or self.accessories or self.proxy)


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
        self._selected = {h.name for h in self.hosts}

    def emit(self, resource: str, action: str, status: str, detail: str = "") -> None:
        self.progress.emit(Event(resource=resource, action=action, status=status, detail=detail, env=self.env))

    def pool(self, concurrency: int = 20) -> Hosts:
        kind = DryRun if self.dry_run else Hosts
        return kind(self.hosts, user=self.inv.ssh.user, client_key=self.inv.ssh.key,
                    known_hosts=self.inv.ssh.known_hosts, concurrency=concurrency)

    def role_hosts(self, role: str) -> list[Host]:
        """The hosts of app role ``role`` this run works on."""
        return [h for h in self.inv.role_hosts(role) if h.name in self._selected]

    def select(self, roles: tuple[str, ...] = (), hosts: tuple[str, ...] = ()) -> list[Host]:
        """The hosts a run is limited to (all by default); unknown names are invalid input."""
        unknown_roles = [r for r in roles if r not in self.bp.roles]
        if unknown_roles:
            raise InvalidInput(f"no role named {', '.join(unknown_roles)}",
                               hint="roles of this blueprint: " + ", ".join(self.bp.roles))
        known = {h.name for h in self.hosts}
        unknown_hosts = [h for h in hosts if h not in known]
        if unknown_hosts:
            raise InvalidInput(f"environment {self.env} has no host {', '.join(unknown_hosts)}",
                               hint="hosts: " + ", ".join(sorted(known)))
        chosen = [h for h in self.hosts if (not roles or h.app_role in roles) and (not hosts or h.name in hosts)]
        if not chosen:
            raise InvalidInput("no host matches the selection", hint="check --roles and --hosts together")
        self._selected = {h.name for h in chosen}
        return chosen

    # ---- lock and history --------------------------------------------------------------------
    def _lock_script(self, version: str, break_lock: bool) -> Script:
        owner = {"user": getpass.getuser(), "host": socket.gethostname(), "version": version,
                 "since": int(time.time()), "ttl": int(self.bp.rollout.lock_ttl.total_seconds())}
        return host_cmds.lock(self.bp.service, json.dumps(owner), break_lock=break_lock)

    def _refused(self, stdout: str) -> Locked:
        try:
            held = json.loads(stdout.strip().splitlines()[0] if stdout.strip() else "{}")
        except json.JSONDecodeError:
            held = {}
        since = held.get("since")
        age = time.time() - since if isinstance(since, int) else None
        stale = age is not None and age > held.get("ttl", self.bp.rollout.lock_ttl.total_seconds())
        who = f"{held.get('user', '?')}@{held.get('host', '?')} deploying {held.get('version', '?')}"
        when = f" {age / 60:.0f} min ago" if age is not None else ""
        return Locked(f"environment '{self.env}' is locked for deploys by {who}{when}"
                      + (" — the lock is STALE (older than its TTL)" if stale else ""), holder=who,
                      hint="re-run with --break-lock" + (" (the holder seems dead)" if stale
                                                         else " only if that deploy is no longer running"))

    async def lock(self, pool: Hosts, version: str, break_lock: bool) -> None:
        conn = await pool.connect(self.inv.primary)
        res = await conn.run(self._lock_script(version, break_lock), check=False, what="take the deploy lock")
        if res.exit_status == host_cmds.LOCK_EXIT:
            raise self._refused(res.stdout)
        if res.exit_status != 0:
            raise HostError(conn.host.name, "could not take the deploy lock", res.stderr)

    async def unlock(self, pool: Hosts, record: DeployRecord | None) -> None:
        conn = await pool.connect(self.inv.primary)
        await conn.run(host_cmds.unlock(self.bp.service, record.to_json() if record else None),
                       what="release the deploy lock")

    async def _unlock_quietly(self, pool: Hosts, record: DeployRecord | None) -> None:
        try:
            await self.unlock(pool, record)
        except Exception as exc:  # the original error matters more; say the lock may remain
            self.progress.note(f"could not release the deploy lock: {exc}", level="warning")

    async def history(self, pool: Hosts) -> list[DeployRecord]:
        conn = await pool.connect(self.inv.primary)
        res = await conn.run(history.read_script(self.bp.service), what="read the deploy history", read_only=True)
        return history.parse(res.stdout)

    # ---- 1. facts ----------------------------------------------------------------------------
    def _app_image(self, host: Host, version: str | None) -> str | None:
        return image_ref(self.bp.image, version) if host.app_role and version else None

    def _facts_script(self, host: Host, version: str | None) -> Script:
        app_image = self._app_image(host, version)
        images = [app_image] if app_image else []
        images += [self.bp.accessories[a].image for a in host.accessories]
        if host.proxy:
            images.append(self.bp.rollout.proxy_image)
        return facts_cmds.script(
            images=images,
            accessories=[accessory_container(self.bp.service, a) for a in host.accessories],
            containers=[container_name(self.bp.service, host.app_role, version)] if app_image else [],
            mounts=[disk.mount for disk in host.disks])

    async def read_facts(self, pool: Hosts, hosts: list[Host], version: str | None, *, lock: Script | None,
                         ) -> dict[str, facts_cmds.HostFacts]:
        """Every host's facts at once; with ``lock``, the primary takes the deploy lock first
        (and releases it if another host cannot be read)."""
        out: dict[str, facts_cmds.HostFacts] = {}
        primary = self.inv.primary.name
        locked = False

        async def one(conn: Connection) -> None:
            nonlocal locked
            takes_lock = lock is not None and conn.host.name == primary
            script = Script()
            if takes_lock and isinstance(pool, DryRun):  # show the lock; read the facts for real
                await conn.run(lock, what="take the deploy lock")
                takes_lock = False
            elif takes_lock:
                script.extend(lock)
            script.extend(self._facts_script(conn.host, version))
            res = await conn.run(script, check=False, read_only=not takes_lock,
                                 what="read the host's state" + (" (and take the deploy lock)" if takes_lock else ""))
            if takes_lock:
                if res.exit_status == host_cmds.LOCK_EXIT:
                    raise self._refused(res.stdout)
                locked = res.exit_status == 0
            if res.exit_status != 0:
                raise HostError(conn.host.name, "could not read the host's state", res.stderr or res.stdout)
            out[conn.host.name] = facts_cmds.parse(
                res.stdout, accessories=[accessory_container(self.bp.service, a) for a in conn.host.accessories])

        targets = hosts if lock is None or any(h.name == primary for h in hosts) else [self.inv.primary, *hosts]
        try:
            await pool.each(one, targets)
        except BaseException:
            if locked:
                await self._unlock_quietly(pool, None)
            raise
        return out

    # ---- 2. what each host needs ---------------------------------------------------------------
    def decide(self, host: Host, f: facts_cmds.HostFacts, version: str | None,
               reboot: tuple[str, ...] = ()) -> HostWork:
        work = HostWork(host)
        if not f.docker:
            work.install = self.bp.rollout.docker_install
        work.network = not f.network
        app_image = self._app_image(host, version)
        needed = ([app_image] if app_image else []) + [self.bp.accessories[a].image for a in host.accessories]
        if host.proxy:
            needed.append(self.bp.rollout.proxy_image)
        work.pulls = [image for image in dict.fromkeys(needed) if not f.has_image(image)]
        if app_image in work.pulls:
            work.check_image = app_image
        elif app_image and f.service_label.get(app_image) != self.bp.service:
            raise OperationFailed(
                f"{host.name}: image {app_image} has label service={f.service_label.get(app_image) or ''}, "
                f"not {self.bp.service}: refusing to deploy it",
                hint="build the image with LABEL service=" + self.bp.service)
        for name in host.accessories:
            acc = self.bp.accessories[name]
            want = accessory_hash(acc, accessory_env(acc, self.secrets), host.private_ip)
            have, state = f.accessories.get(accessory_container(self.bp.service, name), ("", ""))
            if name in reboot or have != want or state != "running":
                work.accessories.append(name)
        work.proxy = host.proxy and f.proxy != "running"
        return work

    # ---- 2. prepare ------------------------------------------------------------------------------
    async def prepare(self, conn: Connection, work: HostWork, reboot: tuple[str, ...],
                      outcome: dict[str, str]) -> None:
        host = conn.host
        registry_password = self.secrets.get(self.bp.registry.password) if self.bp.registry else None
        acc_envs = {a: accessory_env(self.bp.accessories[a], self.secrets) for a in work.accessories}
        script = prepare_script(self.bp, host, user=self.inv.ssh.user, install=work.install, network=work.network,
                                registry_password=registry_password, pulls=work.pulls,
                                check_image=work.check_image, accessory_envs=acc_envs, proxy=work.proxy)
        for name in work.accessories:
            self.emit(f"accessory {name}", "boot", "running", host.name)
            script.extend(accessory_script(self.bp, self.env, self.bp.accessories[name], acc_envs[name],
                                           host.private_ip, force=name in reboot))
        detail = ", ".join(filter(None, ["install docker" if work.install else "",
                                         f"pull {len(work.pulls)}" if work.pulls else "",
                                         "boot proxy" if work.proxy else "",
                                         ", ".join(work.accessories)]))
        self.emit(f"host {host.name}", "prepare", "running", detail)
        try:
            res = await conn.run(script, what="prepare (" + (detail or "nothing") + ")", timeout=900)
        except HostError as exc:
            self.emit(f"host {host.name}", "prepare", "failed", str(exc).splitlines()[0])
            for name in work.accessories:
                self.emit(f"accessory {name}", "boot", "failed", host.name)
            raise
        for line in res.stdout.splitlines():
            if line.startswith(ACCESSORY_MARK):
                name, _, state = line[len(ACCESSORY_MARK):].partition("|")
                outcome[name] = state
                if state == "rebooted":
                    self.progress.note(f"accessory {name} configuration changed: rebooted it on {host.name}",
                                       level="warning")
                self.emit(f"accessory {name}", "boot", "done", f"{state} on {host.name}")
        self.emit(f"host {host.name}", "prepare", "done", detail)

    # ---- 3. apps ---------------------------------------------------------------------------------
    def _app_env(self, role: str, version: str) -> ContainerEnv:
        return role_env(self.bp, role, self.inv, self.secrets, version)

    async def _app_step(self, conn: Connection, role: Role, version: str, script: Script, what: str) -> str:
        res_name = f"{role.name} {conn.host.name}"
        self.emit(res_name, "deploy", "running", f"{version}: {what}")
        try:
            res = await conn.run(script, what=f"{what} {role.name} {version}", timeout=900)
        except HostError as exc:
            self.emit(res_name, "deploy", "failed", str(exc).splitlines()[0])
            raise
        self.emit(res_name, "deploy", "done", f"{version}: {what}")
        return res.stdout

    async def apps(self, pool: Hosts, version: str, ready: dict[str, asyncio.Future[None]],
                   accessories_ready: asyncio.Future[None]) -> None:
        retain = self.bp.retain_versions
        proxy_roles = [r for r in self.bp.roles.values() if r.proxy is not None and self.role_hosts(r.name)]
        workers = [r for r in self.bp.roles.values() if r.proxy is None and self.role_hosts(r.name)]
        switched: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

        async def host_ready(host: Host) -> Connection:
            await ready[host.name]
            await accessories_ready
            return await pool.connect(host)

        async def proxy_role(role: Role) -> None:
            env = self._app_env(role.name, version)

            async def one(host: Host) -> None:
                conn = await host_ready(host)
                await self._app_step(conn, role, version,
                                     proxy_role_script(self.bp, self.env, role, version, env, retain=retain), "switch")

            await _gather_all([one(h) for h in self.role_hosts(role.name)])

        async def proxies() -> None:
            try:
                await _gather_all([proxy_role(r) for r in proxy_roles])
            except BaseException:
                switched.set_result(False)
                raise
            switched.set_result(True)

        async def worker_role(role: Role) -> None:
            env = self._app_env(role.name, version)
            hosts = self.role_hosts(role.name)
            batch = max(1, self.bp.rollout.batch)
            for i in range(0, len(hosts), batch):
                started: list[Connection] = []

                async def start(host: Host, started: list[Connection] = started) -> None:
                    conn = await host_ready(host)
                    out = await self._app_step(conn, role, version,
                                               worker_start_script(self.bp, self.env, role, version, env), "start")
                    if "fresh" in out.split():
                        started.append(conn)

                try:
                    await _gather_all([start(h) for h in hosts[i:i + batch]])
                finally:
                    ok = await switched  # the old workers stay until every proxy role switched
                    if not ok:
                        await asyncio.gather(*(c.run(worker_abort_script(self.bp, role, version), check=False,
                                                     what=f"remove {role.name} {version}") for c in started))
                if not ok:
                    return
                await _gather_all([self._app_step(await pool.connect(h), role, version,
                                                  worker_commit_script(self.bp, self.env, role, version,
                                                                       retain=retain), "stop old")
                                   for h in hosts[i:i + batch]])

        if not proxy_roles:
            switched.set_result(True)
            await _gather_all([worker_role(r) for r in workers])
        else:
            await _gather_all([proxies(), *(worker_role(r) for r in workers)])

    # ---- whole runs --------------------------------------------------------------------------
    async def converge(self, pool: Hosts, version: str | None, facts: dict[str, facts_cmds.HostFacts],
                       reboot: tuple[str, ...] = (), hosts: list[Host] | None = None) -> dict[str, str]:
        """Prepare what the facts lack and, with a ``version``, roll the apps out: each host's
        app step starts as soon as that host and every accessory host are prepared."""
        targets = hosts if hosts is not None else self.hosts
        work = {h.name: self.decide(h, facts[h.name], version, reboot) for h in targets}
        outcome = {a: "unchanged" for h in targets for a in h.accessories}
        loop = asyncio.get_running_loop()
        ready = {h.name: loop.create_future() for h in targets}
        acc_hosts = [h for h in targets if work[h.name].accessories]
        accessories_ready: asyncio.Future[None] = loop.create_future()

        async def prepare(host: Host) -> None:
            try:
                if work[host.name].needed:
                    await self.prepare(await pool.connect(host), work[host.name], reboot, outcome)
            except BaseException as exc:
                ready[host.name].set_exception(exc)
                raise
            ready[host.name].set_result(None)

        async def accessories_done() -> None:
            try:
                await _gather_all([ready[h.name] for h in acc_hosts])
            except BaseException as exc:
                accessories_ready.set_exception(exc)
                raise
            accessories_ready.set_result(None)

        jobs = [prepare(h) for h in targets] + [accessories_done()]
        if version is not None:
            jobs.append(self.apps(pool, version, ready, accessories_ready))
        try:
            await _gather_all(jobs)
        finally:
            for fut in [*ready.values(), accessories_ready]:
                if fut.done() and not fut.cancelled():
                    fut.exception()  # retrieved: reported through _gather_all, not as "never retrieved"
        return outcome

    def check_envs(self, version: str) -> None:
        """Every env file can be written (a secret with a newline cannot): refused before the lock."""
        for role in self.bp.roles:
            self._app_env(role, version).env_file()
        for acc in self.bp.accessories.values():
            accessory_env(acc, self.secrets).env_file()

    async def run(self, opts: RolloutOptions, *, gate: Awaitable[None] | None = None) -> RolloutResult:
        """The whole rollout; ``gate`` (the cloud lock being taken meanwhile) is awaited after the
        hosts are read and before anything changes."""
        version = check_version(opts.version)
        self.check_envs(version)
        targets = self.select(opts.roles, opts.hosts)
        started = time.monotonic()
        record = history.start(version, opts.kind)
        if len(targets) < len(self.hosts):
            record.hosts = [h.name for h in targets]
        tracker = history.Tracker(self.journal, self.inv, self.bp.service, record)
        await tracker.pending()
        async with self.pool(opts.concurrency) as pool:
            try:
                facts = await self.read_facts(pool, targets, version,
                                              lock=self._lock_script(version, opts.break_lock))
            except BaseException as exc:
                history.finish(record, time.monotonic() - started, exc)
                await tracker.finished(exc)
                raise
            try:
                if gate is not None:
                    await gate
            except BaseException as exc:
                await self._unlock_quietly(pool, None)
                history.finish(record, time.monotonic() - started, exc)
                await tracker.finished(exc)
                raise
            await tracker.deploying()
            try:
                accessories = await self.converge(pool, version, facts, opts.reboot_accessories, targets)
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

    async def reboot_accessory(self, name: str) -> RolloutResult:
        """Restart one accessory deliberately (fresh container, same data), under the deploy lock."""
        host = self.inv.accessory_host(name)
        assert host is not None
        started = time.monotonic()
        async with self.pool() as pool:
            facts = await self.read_facts(pool, [host], None, lock=self._lock_script(f"accessory-{name}", False))
            try:
                outcome = await self.converge(pool, None, facts, (name,), [host])
            finally:
                await self.unlock(pool, None)
        return RolloutResult(version="", seconds=time.monotonic() - started, accessories=outcome)


async def _gather_all(aws: list) -> list:
    """Await everything (nothing is left running); then raise the first failure, or one error
    naming all of them."""
    results = await asyncio.gather(*aws, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if not errors:
        return results
    unique = list(dict.fromkeys(errors))
    if len(unique) == 1:
        raise unique[0]
    hint = next((e.hint for e in unique if getattr(e, "hint", None)), None)
    raise OperationFailed("\n".join(str(e) for e in unique), hint=hint)
