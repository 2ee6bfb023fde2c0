"""The apps step of a rollout, carrying out the plan (`plan.py`: the batches and each host's
scripts are decided there): proxy roles switch in batches, a watch judges, workers start, and
one verdict covers them all; only what depends on run time is decided here.

1. Each proxy role switches its hosts batch by batch (`strategy.batch_size`); a host's switch
   starts its new container and points kamal-proxy at it once healthy. Meanwhile each worker
   role starts its new containers beside the old ones, batch by batch, each ready before the
   next. Nothing old is stopped before the whole rollout is judged.
2. When every batch of every proxy role switched, the watch (`watch.py`, if the blueprint or
   a canary asks for one) probes the new version through the roles' entry points.
3. The verdict is one for every role. Good: each host is handed the stopping of its old
   containers (`commit_all`) and finishes it after the command returned; the next command's
   facts (or `status`) wait for, or finish, what is left.
   Bad (a refused switch, a failed watch, a worker that never became ready, a host that
   stopped answering): every host that switched goes back to the container it served before,
   at once (it is still running, so that is one more kamal-proxy deploy, health-checked and
   drained like any switch), and the new workers are removed. ``continue_on_error`` keeps the
   hosts that switched before a refused switch.

A percentage canary "switches" by splitting instead (kamal-proxy's rollout target) and goes
back by ending the split. Progress shows each host's switch in order; `AppOutcome` keeps them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import replace
from typing import Any

from ..blueprint_schema import Role
from ..errors import OperationFailed
from ..inventory import Host
from . import plan as planning
from . import watch as watching
from .commands import docker as d
from .contract import container_name
from .deploy import Rollout
from .hosts import Connection, HostError, Hosts
from .plan import COMMIT, REMOVE, SPLIT, START, SWITCH, SWITCH_BACK, UNSPLIT, AppPlan, RolloutPlan
from .records import AppOutcome, SwitchRecord


class Apps:
    def __init__(self, r: Rollout, pool: Hosts, rp: RolloutPlan, ready: dict[str, asyncio.Future[None]],
                 accessories_ready: asyncio.Future[None], outcome: AppOutcome) -> None:
        assert rp.apps is not None
        self.r = r
        self.pool = pool
        self.rp = rp
        self.plan: AppPlan = rp.apps
        self.ready = ready
        self.accessories_ready = accessories_ready
        self.outcome = outcome
        self.verdict: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.done: list[tuple[Role, Host]] = []       # proxy hosts on the new version (this run)
        self.workers_started: list[tuple[Role, Host]] = []
        self.switching = asyncio.Event()              # set when every batch switched (or stopped)
        self.stop_watch = asyncio.Event()             # the rollout failed otherwise: the watch ends unjudged
        self.halted = False                           # the watch failed while batches were still to come
        self.fresh_switching: set[str] = set()        # proxy roles whose hosts that served nothing are switching
        self.workers_starting: list[tuple[Role, Host]] = []   # new worker containers this run started
        self.switched_back = False                    # the proxy hosts went back already
        self.kept = False                             # --continue-on-error kept the switched hosts

    @property
    def version(self) -> str:
        return self.plan.version

    async def host_ready(self, host: Host) -> Connection:
        await self.ready[host.name]
        await self.accessories_ready
        return await self.pool.connect(host)

    # ---- 1. switches ---------------------------------------------------------------------------
    async def switch(self, role: Role, host: Host, n: int, total: int) -> None:
        conn = await self.host_ready(host)
        res = f"{role.name} {host.name}"
        step = self.rp.host(host.name).step(SPLIT if self.plan.split is not None else SWITCH, role.name)
        if self.plan.split is not None:
            what, status = f"split {self.plan.split[0]}%", "split"
        else:
            if (role.name, host.name) in self.plan.reboot_proxy:
                self.r.progress.note(f"{host.name}: kamal-proxy was booted without the certificates' directory; "
                                     "replacing it (a second without a proxy on this host, once)", level="warning")
            what, status = "switch", "switched"
        detail = f"{self.version}{' ' + what if self.plan.split else ''} (batch {n}/{total})"
        self.r.emit(res, "switch", "running", detail)
        started = time.monotonic()
        try:
            await conn.run(step.script, what=step.what, timeout=900)
        except HostError as exc:
            self.outcome.switches.append(SwitchRecord(host.name, role.name, n, total, "failed",
                                                      time.monotonic() - started, str(exc).splitlines()[0]))
            self.r.emit(res, "switch", "failed", str(exc).splitlines()[0])
            raise
        self.done.append((role, host))
        self.outcome.switches.append(SwitchRecord(host.name, role.name, n, total, status, time.monotonic() - started))
        self.r.emit(res, "switch", "done", detail)

    async def proxy_role(self, role: Role) -> None:
        groups = self.plan.groups.get(role.name, [])
        fresh = role.name in self.plan.fresh   # hosts serving nothing yet, all at once first: the watch waits
        for n, group in enumerate(groups, start=1):
            if self.halted:  # the watch failed, or a worker: no more hosts take the new version
                for h in group:
                    self.r.emit(f"{role.name} {h.name}", "switch", "skipped", "the rollout failed")
                return
            if n == 1 and fresh:
                self.fresh_switching.add(role.name)
            try:
                await _gather_all([self.switch(role, h, n, len(groups)) for h in group])
            finally:
                self.fresh_switching.discard(role.name)

    # ---- 2. the watch ---------------------------------------------------------------------------
    def _judged(self) -> list[tuple[Role, Host]]:
        """Every proxy host on the new version: this run's and an earlier canary's."""
        out = list(self.done)
        for role_name, hosts in self.plan.already.items():
            out += [(self.r.bp.roles[role_name], h) for h in hosts]
        return out

    async def _container_states(self) -> dict[str, dict[str, watching.State | None]]:
        by_host: dict[str, tuple[Host, list[str]]] = {}
        for role, host in [*self._judged(), *self.workers_started]:
            by_host.setdefault(host.name, (host, []))[1].append(container_name(self.r.bp.service, role.name,
                                                                               self.version))

        async def one(host: Host, names: list[str]) -> tuple[str, dict[str, watching.State | None]]:
            conn = await self.pool.connect(host)
            res = await conn.run(d.restart_states(names), check=False, what="watch containers", read_only=True)
            return host.name, watching.parse_states(res.stdout)

        return dict(await asyncio.gather(*(one(h, names) for h, names in by_host.values())))

    def targets(self) -> list[watching.Target]:
        return planning.watch_targets(self.r.context(), self.plan, [(r.name, h) for r, h in self._judged()],
                                      skip=self.fresh_switching)

    async def watch(self) -> watching.WatchResult:
        spec = self.plan.watch
        assert spec is not None
        self.r.emit("watch", "watch", "running", f"{self.version}: from the first switch to {spec.duration:g}s "
                                                 "after the last")
        result = await watching.run(spec, self.targets, self._container_states,
                                    report=lambda text: self.r.emit("watch", "watch", "running", text),
                                    switching=self.switching, stop=self.stop_watch)
        self.halted = not result.ok
        if self.stop_watch.is_set():
            self.r.emit("watch", "watch", "skipped", "the rollout failed elsewhere")
            return result
        self.r.emit("watch", "watch", "done" if result.ok else "failed",
                    f"{result.seconds:.0f}s, {result.probes} probes, {len(result.failed)} failed"
                    + (f": {result.reason}" if result.reason else ""))
        return result

    # ---- 3. judged: commit or switch back -----------------------------------------------------------
    async def switch_back(self) -> list[BaseException]:
        async def one(role: Role, host: Host) -> None:
            conn = await self.pool.connect(host)
            res = f"{role.name} {host.name}"
            previous = self.plan.previous.get((role.name, host.name))
            step = self.rp.host(host.name).step(UNSPLIT if self.plan.split is not None else SWITCH_BACK, role.name)
            self.r.emit(res, "revert", "running", f"back to {previous or 'nothing'}")
            try:
                await conn.run(step.script, what=step.what, timeout=300)
            except HostError as exc:
                self.r.emit(res, "revert", "failed", str(exc).splitlines()[0])
                raise
            self.outcome.reverted.append(host.name)
            self.r.emit(res, "revert", "done", f"back to {previous or 'nothing'}")

        results = await asyncio.gather(*(one(role, host) for role, host in self._judged()), return_exceptions=True)
        return [r for r in results if isinstance(r, BaseException)]

    async def proxies(self) -> None:
        """Switch every proxy role (batch by batch) and watch; on a refused switch or a failed
        watch, switch the switched hosts back (unless --continue-on-error keeps them) and raise.
        Nothing old is stopped here: that waits for the whole rollout's verdict (`run`)."""
        failure: BaseException | None = None
        watch = asyncio.ensure_future(self.watch()) if self.plan.watch is not None else None
        try:
            try:
                await _gather_all([self.proxy_role(self.r.bp.roles[name]) for name in self.plan.switch])
            except Exception as exc:
                failure = exc
            self.switching.set()
            if watch is not None and (failure is not None or not self._judged() or self.stop_watch.is_set()):
                self.stop_watch.set()  # judged already (a refused switch, a failed worker), or nothing to watch
                await asyncio.gather(watch, return_exceptions=True)
            elif watch is not None:
                self.outcome.watch = await watch
                if not self.outcome.watch.ok and not self.stop_watch.is_set():
                    self.outcome.rolled_back = self.outcome.watch.reason
                    failure = OperationFailed(f"{self.outcome.watch.reason}; switched back to what each host "
                                              "served before", hint="see the failed probes above; the new "
                                              "version's logs: csdeploy logs --env ENV --role ROLE")
            if failure is not None:
                self.kept = self.plan.continue_on_error and self.outcome.rolled_back is None
                if self.kept:
                    self.r.progress.note(f"--continue-on-error: {', '.join(self.outcome.switched) or 'no host'} "
                                         f"stay on {self.version}", level="warning")
                else:
                    failure = await self._switch_back_all(failure)
                raise failure
        except BaseException:
            if watch is not None and not watch.done():
                self.stop_watch.set()
                await asyncio.gather(watch, return_exceptions=True)
            raise

    async def _switch_back_all(self, failure: BaseException) -> BaseException:
        """Every switched proxy host back to what it served; ``failure`` with what could not."""
        self.switched_back = True
        problems = await self.switch_back()
        if not problems:
            return failure
        return OperationFailed("\n".join([str(failure), *(f"switching back: {p}" for p in problems)]),
                               hint="those hosts still serve the new version")

    # ---- workers -----------------------------------------------------------------------------------
    async def worker_role(self, role: Role) -> None:
        """Start the role's new containers beside the old ones, batch by batch, each batch ready
        before the next starts. The old ones keep running until the whole rollout is judged."""
        for group in self.plan.worker_groups.get(role.name, []):
            if self.halted:
                return

            async def start(host: Host) -> None:
                step = self.rp.host(host.name).step(START, role.name)
                await self.ready[host.name]
                if step.parts is None or self.accessories_ready.done():
                    conn = await self.host_ready(host)
                    self.workers_starting.append((role, host))
                    out = await self.r.app_step(conn, role, self.version, step)
                else:
                    # accessories are still starting elsewhere (a first deploy's database): the
                    # worker starts now and its readiness_delay runs meanwhile; it is judged once
                    # they are ready (started again if it stopped for want of them)
                    conn = await self.pool.connect(host)
                    self.workers_starting.append((role, host))
                    launch, ready = step.parts
                    out = await self.r.app_step(conn, role, self.version, replace(step, script=launch))
                    await self.accessories_ready
                    if "kept" not in out.split():
                        await self.r.app_step(conn, role, self.version,
                                              replace(step, what=f"wait until ready {role.name} {self.version}",
                                                      script=ready))
                self.workers_started.append((role, host))
                if "kept" in out.split():  # it ran before this deploy: not ours to remove on failure
                    self.workers_starting.remove((role, host))

            await _gather_all([start(h) for h in group])

    async def _remove_new_workers(self) -> list[str]:
        """The rollout failed: remove the worker containers it started (a host that does not
        answer keeps its new one until the next deploy or rollback stops it: said so)."""
        async def one(role: Role, host: Host) -> str | None:
            try:
                conn = await self.pool.connect(host)
                step = self.rp.host(host.name).step(REMOVE, role.name)
                res = await conn.run(step.script, check=False, what=step.what, timeout=60)
                return None if res.exit_status == 0 else f"{host.name}: exit {res.exit_status}"
            except Exception as exc:  # unreachable: reported, the other hosts still cleaned
                return str(exc).splitlines()[0]

        results = await asyncio.gather(*(one(role, host) for role, host in self.workers_starting))
        left = [r for r in results if r]
        for text in left:
            self.r.progress.note(f"could not remove the new worker container ({text}); the next deploy or "
                                 "rollback stops it", level="warning")
        return left

    async def commit_all(self) -> None:
        """The rollout was judged good: hand every host the stopping of its old containers
        (proxies and workers; `stages.proxy_commit_script`): one short exec per host, the host
        stops them after the command returned (the result does not wait for the old version's
        drain and stop). The new version serves everywhere by now, so a host that cannot take
        the job (it stopped answering) is a warning, not a failed deploy: the old one is left
        over until `status`, the next deploy or a rollback ends it."""
        async def one(role: Role, host: Host) -> None:
            try:
                await self.r.app_step(await self.pool.connect(host), role, self.version,
                                      self.rp.host(host.name).step(COMMIT, role.name))
            except Exception as exc:
                text = str(exc).splitlines()[0]
                self.outcome.warnings.append(f"{host.name}: {role.name}'s old container was not stopped ({text})")
                self.r.progress.note(f"{text}: {role.name}'s old container still runs on {host.name}; "
                                     "`csdeploy status` or the next deploy stops it", level="warning")

        await asyncio.gather(*(one(role, h) for role, h in [*self._judged(), *self.workers_started]))

    async def run(self) -> None:
        """Proxy roles switch and are watched while the workers start; the verdict is one for
        every role: any failure (a refused switch, a failed watch, a worker that never became
        ready or whose host stopped answering) switches every proxy host back and removes the
        new workers; only a rollout judged good stops old containers."""
        workers = [self.r.bp.roles[name] for name in self.plan.worker_groups]

        async def workers_of(role: Role) -> None:
            try:
                await self.worker_role(role)
            except BaseException:
                self.halted = True          # no more proxy batches
                self.stop_watch.set()       # and no more watching: the rollout is judged
                raise

        proxies = any(self.plan.switch.values()) or bool(self.plan.already)
        jobs = ([self.proxies()] if proxies else []) + [workers_of(r) for r in workers]
        results = await asyncio.gather(*jobs, return_exceptions=True)
        errors = list(dict.fromkeys(r for r in results if isinstance(r, BaseException)))
        if errors:
            if self._judged() and not self.switched_back and not self.kept:
                errors[0] = await self._switch_back_all(errors[0])
            await self._remove_new_workers()
            if not self.verdict.done():
                self.verdict.set_result(False)
            if len(errors) == 1:
                raise errors[0]
            hint = next((e.hint for e in errors if getattr(e, "hint", None)), None)
            raise OperationFailed("\n".join(str(e) for e in errors), hint=hint)
        self.verdict.set_result(True)
        if self.plan.commit:
            await self.commit_all()


async def converge(r: Rollout, pool: Hosts, rp: RolloutPlan) -> dict[str, str]:
    """Carry out ``rp``: each host's preparation and, with app steps, the apps: each host's
    app step starts as soon as that host and every accessory host are prepared."""
    for text in rp.notes:
        r.note(text)
    targets = [hp.work.host for hp in rp.hosts]
    work = {hp.name: hp.work for hp in rp.hosts}
    outcome = {a: "unchanged" for h in targets for a in h.accessories}
    loop = asyncio.get_running_loop()
    ready = {h.name: loop.create_future() for h in targets}
    acc_hosts = [h for h in targets if work[h.name].accessories]
    accessories_ready: asyncio.Future[None] = loop.create_future()

    async def prepare(host: Host) -> None:
        try:
            if work[host.name].needed:
                await r.prepare(await pool.connect(host), rp.host(host.name), outcome)
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
    if rp.apps is not None:
        jobs.append(Apps(r, pool, rp, ready, accessories_ready, r.outcome).run())
    try:
        await _gather_all(jobs)
    finally:
        for fut in [*ready.values(), accessories_ready]:
            if fut.done() and not fut.cancelled():
                fut.exception()  # retrieved: reported through _gather_all, not as "never retrieved"
    return outcome



async def _gather_all(aws: list[Awaitable[Any]]) -> list[Any]:
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
