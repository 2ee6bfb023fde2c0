"""Rollout over the inventory: read what is there, do only what is missing, switch, record.

1. Facts (every host at once, one exec each; the primary also takes the deploy lock): Docker,
   network, which images are present, accessories' configuration, the proxy, mounts, the
   app roles' running containers (what a switch back returns to).
2. The plan (`plan.py`, pure, from the facts), then prepare (only hosts that lack something):
   install Docker, log in and pull only the missing images, boot kamal-proxy, (re)start
   accessories whose configuration changed. A rollback to a version still on the hosts
   needs no registry at all.
3. Apps (`apps.py`), each host as soon as its own preparation and the accessories are done:
   proxy roles switch batch by batch, a watch judges the new version, then the old
   containers stop; or every switched host goes back. Workers start meanwhile and follow
   the verdict.
4. Unlock, with the deploy record appended to the primary host's history.

The order of a whole run (checks, hooks, lock, canary, promote, abort) is in `runs.py`.
"""

from __future__ import annotations

import asyncio
import json
import time

from ..blueprint_schema import Accessory, Blueprint, Role
from ..errors import InvalidInput, Locked
from ..inventory import Host, Inventory
from ..progress import Event, Progress
from ..store import Journal
from . import canary, history, lease
from . import plan as planning
from .commands import facts as facts_cmds
from .commands import host as host_cmds
from .commands import hostdump as hostdump_cmds
from .commands import proxy as proxy_cmds
from .commands.script import Script
from .contract import (
    ContainerEnv,
    accessory_container,
    accessory_env,
    container_name,
    image_ref,
    labels,
    role_env,
)
from .history import DeployRecord
from .hosts import Connection, DryRun, HostError, Hosts, Result
from .plan import HostWork
from .records import AppOutcome, RolloutOptions, RolloutResult
from .stages import (
    ACCESSORY_MARK,
)

__all__ = ["HostWork", "Rollout", "RolloutOptions", "RolloutResult"]


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
        self._said: set[str] = set()   # the plan's notes said in this run
        self._selected = {h.name for h in self.hosts}
        self._roles: frozenset[str] | None = None   # --roles: only these app roles (None: every role)
        self.certificates: dict[str, tuple[str, str]] = {}   # proxy role -> (certificate, key) PEM
        self.images: dict[str, str] = {}   # role -> image, where a rollback returns to what the history recorded
        self.outcome = AppOutcome()
        self._renewal: lease.Renewal | None = None   # the deploy lock's lease, renewed while held
        self.deployment_id: str | None = None   # this run's row in the history store, if any
        self._taken_over: lease.Holder | None = None  # the dead run whose deploy lock this one took

    def emit(self, resource: str, action: str, status: str, detail: str = "") -> None:
        self.progress.emit(Event(resource=resource, action=action, status=status, detail=detail, env=self.env))

    def pool(self, concurrency: int = 20) -> Hosts:
        kind = DryRun if self.dry_run else Hosts
        return kind(self.hosts, user=self.inv.ssh.user, client_key=self.inv.ssh.key,
                    known_hosts=self.inv.ssh.known_hosts, concurrency=concurrency)

    def role_hosts(self, role: str) -> list[Host]:
        """The hosts of app role ``role`` this run works on."""
        if self._roles is not None and role not in self._roles:
            return []
        return [h for h in self.inv.role_hosts(role) if h.name in self._selected]

    def host_roles(self, host: Host) -> list[str]:
        """The app roles this run works on at ``host``: its own and those placed on it (`run_on`)."""
        return self.context().host_roles(host)

    def narrow(self, hosts: list[Host]) -> None:
        """Work on ``hosts`` only (a canary's), within the selection."""
        self._selected &= {h.name for h in hosts}

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
        chosen = [h for h in self.hosts if (not roles or any(r in roles for r in h.app_roles))
                  and (not hosts or h.name in hosts)]
        if not chosen:
            raise InvalidInput("no host matches the selection", hint="check --roles and --hosts together")
        self._selected = {h.name for h in chosen}
        self._roles = frozenset(roles) if roles else None
        return chosen

    # ---- lock and history --------------------------------------------------------------------
    def lock_script(self, version: str, break_lock: bool, canary: str = host_cmds.CANARY_REFUSE,
                    take_over: str | None = None) -> Script:
        """The primary's lock script; remembered, so a dead holder's lock can be taken over."""
        if take_over is None:
            self._owner = lease.owner(version, int(self.bp.rollout.lock_ttl.total_seconds()), now=time.time())
            if self.deployment_id:
                self._owner["deployment"] = self.deployment_id
            self._lock_args = (version, break_lock, canary)
        return host_cmds.lock(self.bp.service, json.dumps(self._owner), break_lock=break_lock, canary=canary,
                              take_over=take_over)

    def _refused(self, stdout: str) -> Locked:
        held = lease.Holder.parse(stdout).data
        since = held.get("since")
        age = time.time() - since if isinstance(since, int) else None
        stale = age is not None and age > held.get("ttl", self.bp.rollout.lock_ttl.total_seconds())
        who = f"{held.get('user', '?')}@{held.get('host', '?')} deploying {held.get('version', '?')}"
        when = f" {age / 60:.0f} min ago" if age is not None else ""
        return Locked(f"environment '{self.env}' is locked for deploys by {who}{when}"
                      + (" — the lock is STALE (older than its TTL)" if stale else ""), holder=who,
                      hint="re-run with --break-lock" + (" (the holder seems dead)" if stale
                                                         else " only if that deploy is no longer running"))

    async def _take_over(self, conn: Connection, stdout: str, facts: Script) -> Result | None:
        """If the lock's holder is dead (`lease.why_dead`), take its lock over (with ``facts``
        read in the same round trip) and record its deploy as interrupted; None if it lives."""
        if not hasattr(self, "_lock_args"):
            return None
        version, break_lock, canary_mode = self._lock_args
        holder = lease.Holder.parse(stdout)
        reason = lease.why_dead(holder)
        probed = False
        for _ in range(4):  # a holder with a lease: is it still renewing? (a minute at most)
            if reason is not None:
                break
            wait = lease.next_look(holder, probed=probed)
            if wait is None:
                return None
            probed = True
            self.progress.note(f"the deploy lock of {holder.who} on {conn.host.name} was last renewed "
                               f"{holder.lease_age} s ago; looking again in {wait:.0f} s", level="warning")
            await asyncio.sleep(wait)
            again = host_cmds.lock(self.bp.service, json.dumps(self._owner), break_lock=False, canary=canary_mode)
            res = await conn.run(again.extend(self._facts_script(conn.host, version)), check=False,
                                 what="take the deploy lock")
            if res.exit_status != host_cmds.LOCK_EXIT:
                return res
            holder = lease.Holder.parse(res.stdout)
            reason = lease.why_dead(holder)
        if reason is None or holder.token is None:
            return None
        script = self.lock_script(version, break_lock, canary_mode, take_over=holder.token)
        res = await conn.run(script.extend(facts), check=False, what="take over the deploy lock of a dead run")
        if res.exit_status == 0:
            self._taken_over = holder
            me = f"{self._owner['user']}@{self._owner['host']}"
            self.progress.note(f"took over the deploy lock of {holder.who} on {conn.host.name}: {reason}",
                               level="warning")
            record = lease.interrupted_record(holder, reason, me)
            try:
                await conn.run(host_cmds.record_interrupted(self.bp.service, record.to_json()),
                               what="record the interrupted deploy")
            except HostError as exc:
                self.progress.note(f"could not record the interrupted deploy: {exc}", level="warning")
            dead_row = holder.data.get("deployment")
            if self.journal is not None and isinstance(dead_row, str):
                await self.journal.deployment_finished(dead_row, ok=False, seconds=None, error=record.error,
                                                       metadata={"interrupted": True, "taken_over_by": me})
        return res

    def _lock_refused(self, code: int, stdout: str) -> Exception | None:
        if code == host_cmds.LOCK_EXIT:
            return self._refused(stdout)
        if code == host_cmds.CANARY_EXIT:
            return canary.refused(self.env, stdout)
        if code == host_cmds.NO_CANARY_EXIT:
            return canary.none_paused(self.env)
        return None

    async def unlock(self, pool: Hosts, record: DeployRecord | None, *, canary_json: str | None = None,
                     canary_done: bool = False) -> None:
        renewal, self._renewal = self._renewal, None
        if renewal is not None:
            await renewal.stop()
        owner = getattr(self, "_owner", None)
        conn = await pool.connect(self.inv.primary)
        await conn.run(host_cmds.unlock(self.bp.service, record.to_json() if record else None,
                                        canary_json=canary_json, canary_done=canary_done,
                                        token=owner["id"] if owner else None),
                       what="release the deploy lock")

    async def unlock_quietly(self, pool: Hosts, record: DeployRecord | None, **canary_args: object) -> None:
        try:
            await self.unlock(pool, record, **canary_args)  # type: ignore[arg-type]
        except Exception as exc:  # the original error matters more; say the lock may remain
            self.progress.note(f"could not release the deploy lock: {exc}", level="warning")

    async def history(self, pool: Hosts) -> list[DeployRecord]:
        conn = await pool.connect(self.inv.primary)
        res = await conn.run(history.read_script(self.bp.service), what="read the deploy history", read_only=True)
        return history.parse(res.stdout)

    async def paused(self, pool: Hosts) -> canary.CanaryState | None:
        """The primary host's paused canary, if any."""
        conn = await pool.connect(self.inv.primary)
        res = await conn.run(host_cmds.read_canary(self.bp.service), what="read the paused canary", read_only=True)
        return canary.CanaryState.parse(res.stdout)

    # ---- 1. facts ----------------------------------------------------------------------------
    def role_image(self, role: str, version: str) -> str:
        """What ``role`` runs at ``version``: its own image or the app's, tagged with the version
        unless pinned; a rollback runs what the role ran at that version (``self.images``)."""
        return self.images.get(role) or image_ref(self.bp.roles[role].image, version)

    def _facts_script(self, host: Host, version: str | None) -> Script:
        roles = [role for role in host.app_roles if role in self.bp.roles] if version else []
        images = list(dict.fromkeys(self.role_image(role, version) for role in roles if version))
        images += [self.bp.accessories[a].image for a in host.accessories]
        if host.proxy:
            images.append(self.bp.rollout.proxy_image)
        # what an earlier command handed the host (old containers stopping) ends first, so the
        # facts show one version per role; a dry run only reads
        finish = Script() if self.dry_run else host_cmds.finish_left(self.bp.service)
        return finish.extend(facts_cmds.script(
            images=images,
            accessories=[accessory_container(self.bp.service, a) for a in host.accessories],
            containers=[container_name(self.bp.service, role, version) for role in roles if version],
            mounts=[disk.mount for disk in host.disks],
            roles={role: labels(self.bp.service, self.env, role) for role in host.app_roles} or None,
            maintenance=proxy_cmds.maintenance_file(self.bp.service) if host.proxy else None,
            hardening=True, machine=bool(host.accessories),
            backups=hostdump_cmds.marker(self.bp.service) if host.accessories else None))

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
            if takes_lock and res.exit_status == host_cmds.LOCK_EXIT:  # a dead holder's lease: take it over
                res = await self._take_over(conn, res.stdout, self._facts_script(conn.host, version)) or res
            if takes_lock:
                refused = self._lock_refused(res.exit_status, res.stdout)
                if refused is not None:
                    raise refused
                locked = res.exit_status == 0
                if locked:
                    self._renewal = lease.Renewal(conn, self.bp.service, self._owner["id"], self.progress).start()
            if res.exit_status != 0:
                raise HostError(conn.host.name, "could not read the host's state", res.stderr or res.stdout)
            out[conn.host.name] = facts_cmds.parse(
                res.stdout, accessories=[accessory_container(self.bp.service, a) for a in conn.host.accessories])

        targets = hosts if lock is None or any(h.name == primary for h in hosts) else [self.inv.primary, *hosts]
        try:
            await pool.each(one, targets)
        except BaseException:
            if locked:
                await self.unlock_quietly(pool, None)
            raise
        finally:
            take_overs = lease.TAKE_OVERS.get()
            if lock is not None and take_overs is not None:  # the cloud lock waits for this
                take_overs.settle(self._taken_over)
        return out

    # ---- 2. what each host needs (`plan.py`) ----------------------------------------------------
    def context(self) -> planning.Context:
        """What this run is given, as the plan function takes it."""
        return planning.Context(self.bp, self.inv, dict(self.secrets), frozenset(self._selected), dict(self.images),
                                dict(self.certificates), self._roles)

    def note(self, text: str) -> None:
        """A plan's note, said once per run."""
        if text not in self._said:
            self._said.add(text)
            self.progress.note(text, level="warning")

    def decide(self, host: Host, f: facts_cmds.HostFacts, version: str | None,
               reboot: tuple[str, ...] = ()) -> HostWork:
        work, note = planning.decide(self.context(), host, f, version, reboot, self.inv.ssh.user)
        if note:
            self.note(note)
        return work

    def tuned_accessory(self, name: str, f: facts_cmds.HostFacts) -> Accessory:
        return planning.tuned_accessory(self.bp, name, f)

    def host_slot(self, host: Host) -> tuple[int, int]:
        return planning.host_slot(self.inv, host)

    def proxy_needs_reboot(self, host: Host, f: facts_cmds.HostFacts) -> bool:
        return planning.proxy_needs_reboot(self.context(), host, f)

    # ---- 2. prepare ------------------------------------------------------------------------------
    async def prepare(self, conn: Connection, hp: planning.HostPlan, outcome: dict[str, str]) -> None:
        """Run ``hp``'s prepare step (the plan's script) and report its accessories."""
        host, work = conn.host, hp.work
        step = hp.step(planning.PREPARE)
        for name in work.accessories:
            self.emit(f"accessory {name}", "boot", "running", host.name)
        detail = work.describe()
        self.emit(f"host {host.name}", "prepare", "running", detail)
        try:
            res = await conn.run(step.script, what=step.what, timeout=900)
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
    def app_env(self, role: str, version: str) -> ContainerEnv:
        return role_env(self.bp, role, self.inv, self.secrets, version)

    async def app_step(self, conn: Connection, role: Role, version: str, step: planning.Step) -> str:
        """Run one of the plan's app steps on ``conn``'s host, with progress."""
        what = step.what.removesuffix(f" {role.name} {version}")
        res_name = f"{role.name} {conn.host.name}"
        self.emit(res_name, "deploy", "running", f"{version}: {what}")
        try:
            res = await conn.run(step.script, what=step.what, timeout=900)
        except HostError as exc:
            self.emit(res_name, "deploy", "failed", str(exc).splitlines()[0])
            raise
        self.emit(res_name, "deploy", "done", f"{version}: {what}")
        return res.stdout

    # ---- whole runs --------------------------------------------------------------------------
    def check_envs(self, version: str) -> None:
        """Every env file can be written (a secret with a newline cannot): refused before the lock."""
        for role in self.bp.roles:
            self.app_env(role, version).env_file()
        for acc in self.bp.accessories.values():
            accessory_env(acc, self.secrets).env_file()
