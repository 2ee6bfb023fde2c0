"""The provisioning commands end to end: plan, create-env (converge), the SSH wait, inventory."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from ..blueprint import Blueprint
from ..cloud import Cloud
from ..cloud.client import DEFAULT_IN_FLIGHT
from ..errors import CsdeployError
from ..inventory import Host, HostDisk, Inventory, LoadBalancer, Network, SSHAccess
from ..progress import Event, Progress
from ..state import EnvState
from . import actions_lb
from .actions import SETTLING_STATES
from .actual import Actual, read_actual, read_vm_userdata
from .apply import ProvisionError, RunContext, apply_plan, run_action
from .catalog import Catalog, resolve_catalog
from .cloudlock import lock_value, release_cloud_lock, take_cloud_lock
from .desired import TAG_EXPIRES, Desired, desired_state, format_time, parse_time
from .hostkeys import key_fingerprint
from .plan import NO_LOCAL_KEY, Plan, make_plan
from .steps import Action
from .userdata import host_public_key_from_userdata

if TYPE_CHECKING:  # SSH (asyncssh) loads when VMs are waited for: `plan` never waits
    from .ssh_wait import SSHTarget


@dataclass
class CreateOptions:
    ttl: timedelta | None = None
    max_api: int = DEFAULT_IN_FLIGHT
    max_ssh: int = 20
    ssh_timeout: float = 300.0
    break_lock: bool = False
    #: VMs joining a load balancer that already serves are left out (CreateResult.deferred)
    #: until `join_deferred`: create-env calls it once the rollout on them is done.
    defer_joins: bool = False
    #: `recover`: a data disk (new volume name) to make from a snapshot (its id) when it is
    #: created; a volume that exists is kept as it is.
    restore: dict[str, str] = field(default_factory=dict)


@dataclass
class CreateResult:
    plan: Plan
    inventory: Inventory
    seconds: float
    api_calls: int
    ssh_seconds: dict[str, float] = field(default_factory=dict)
    #: VMs not yet in their role's load balancer (CreateOptions.defer_joins), by role.
    deferred: dict[str, list[str]] = field(default_factory=dict)


def _needed_names(desired: Desired) -> tuple[set[str], set[str]]:
    return {v.offering for v in desired.vms}, {d.offering for v in desired.vms for d in v.disks}


def _keep_expiry(desired: Desired, actual: Actual, explicit: bool) -> Desired:
    """Without --ttl a re-run keeps the environment's expiry (the network's tag is authoritative)."""
    if explicit or actual.network is None:
        return desired
    have = parse_time(actual.tag(actual.network["id"], TAG_EXPIRES) or "")
    return dataclasses.replace(desired, expires=have)


@dataclass
class _Planned:
    desired: Desired
    actual: Actual
    catalog: Catalog
    plan: Plan


def _vms_with_disks(desired: Desired, actual: Actual) -> list[str]:
    """Existing, usable VMs the blueprint gives data disks: their user data says what they mount."""
    return [v.name for v in desired.vms if v.disks and v.name in actual.vms
            and actual.vms[v.name]["state"] not in ("Error", "Destroyed")]


def _local_key(state: EnvState, bp: Blueprint) -> tuple[Path, str | None]:
    """The key create-env logs in with and its public line; None for the line when it is the
    environment's own key and does not exist yet (create-env would make it). Reads only."""
    given = bp.ssh_key_path()
    if given is not None:
        return state.ensure_keypair(given)  # a given key is only read, never made
    if state.key_path.exists():
        return state.key_path, state.public_key()
    return state.key_path, None


def with_restore(desired: Desired, restore: dict[str, str]) -> Desired:
    """``desired`` with the disks named in ``restore`` made from those snapshots."""
    if not restore:
        return desired
    vms = tuple(dataclasses.replace(v, disks=tuple(dataclasses.replace(d, from_snapshot=restore.get(d.name))
                                                   for d in v.disks)) for v in desired.vms)
    return dataclasses.replace(desired, vms=vms)


async def _read_and_plan(cloud: Cloud, bp: Blueprint, env: str, ttl: timedelta | None,
                         key: tuple[Path, str | None] | None, restore: dict[str, str] | None = None) -> _Planned:
    """Read the cloud and make the plan: the one path `plan` and `create-env` share, so a
    plan shows exactly what create-env then does (or refuses)."""
    desired = with_restore(desired_state(bp, env, ttl=ttl), restore or {})
    actual = await read_actual(cloud, env)
    desired = _keep_expiry(desired, actual, ttl is not None)
    offerings, disks = _needed_names(desired)
    catalog, _ = await asyncio.gather(resolve_catalog(cloud, desired, offerings, disks),
                                      read_vm_userdata(cloud, actual, _vms_with_disks(desired, actual)))
    fp = None if key is None else key_fingerprint(key[1]) if key[1] else NO_LOCAL_KEY
    plan = make_plan(desired, actual, key_fingerprint=fp, key_path=str(key[0]) if key else None)
    return _Planned(desired, actual, catalog, plan)


async def plan_env(cloud: Cloud, bp: Blueprint, env: str, *, ttl: timedelta | None = None,
                   state: EnvState | None = None, restore: dict[str, str] | None = None) -> Plan:
    """What create-env would do now, or the InvalidInput error it would stop with. Reads the cloud (and
    the local key), changes nothing."""
    key = _local_key(state, bp) if state is not None else None
    return (await _read_and_plan(cloud, bp, env, ttl, key, restore)).plan


async def create_env(cloud: Cloud, bp: Blueprint, env: str, state: EnvState, progress: Progress,
                     opts: CreateOptions | None = None) -> CreateResult:
    """Converge the environment to the blueprint, wait for SSH on every VM, write the inventory."""
    opts = opts or CreateOptions()
    started = time.monotonic()
    calls_before = cloud.total_calls
    with state.lock():
        # Under the lock: a second run must not read the key while the first is still writing it.
        key_path, public_key = _local_key(state, bp)
        planned = await _read_and_plan(cloud, bp, env, opts.ttl, (key_path, public_key), opts.restore)
        desired, actual, catalog, plan = planned.desired, planned.actual, planned.catalog, planned.plan
        if public_key is None:  # only once the plan stands: a refused plan leaves no new key behind
            key_path, public_key = state.ensure_keypair(None)
        for warning in plan.warnings:
            progress.note(warning, level="warning")
        lock = lock_value()
        ctx = RunContext(cloud=cloud, desired=desired, catalog=catalog, progress=progress, public_key=public_key,
                         lock_value=lock, defer_joins=opts.defer_joins)
        _prefill(ctx, actual)

        def on_ssh(name: str, status: str, detail: str) -> None:
            progress.emit(Event(resource=f"ssh {name}", action="wait", status=status, detail=detail, env=env))

        early = _EarlySSH(ctx, key_path, opts, on_ssh)
        ctx.on_vm_done = early.start
        if actual.network is not None:
            dead = await take_cloud_lock(cloud, actual, lock, opts.break_lock)
            if dead:
                progress.note(f"took over the environment's lock from {dead}", level="warning")
        try:
            try:
                await apply_plan(ctx, plan)
            finally:
                await release_cloud_lock(cloud, ctx.network_id, lock)
            before, actual = actual, await read_actual(cloud, env)
            actual.userdata = before.userdata  # VMs made this run are not in it: they follow the blueprint
            waiting = {(a.kind, a.name) for a in ctx.deferred}
            leftover = make_plan(desired, actual)
            leftover.actions = [a for a in leftover.actions if (a.kind, a.name) not in waiting or a.op != "assign"]
            if not leftover.empty:
                raise CsdeployError("the environment did not converge; still to do: " + ", ".join(
                    f"{a.op} {a.kind} {a.name}" for a in leftover.actions), hint="re-run create-env")
            inventory = await _inventory(cloud, desired, actual, catalog, ctx, state, str(key_path))
            _pin(state, inventory)
            ssh_seconds = await early.finish(_ssh_targets(inventory))
        finally:
            await early.cancel()
    deferred: dict[str, list[str]] = {}
    for a in ctx.deferred:
        deferred.setdefault(a.data["role"], []).append(a.name)
    return CreateResult(plan=plan, inventory=inventory, seconds=time.monotonic() - started,
                        api_calls=cloud.total_calls - calls_before, ssh_seconds=ssh_seconds, deferred=deferred)


class _EarlySSH:
    """SSH logins begun as soon as each new VM's pipeline is done, beside the rest of the run
    (the other VMs' rules, the load balancers, the proof listing), instead of after it all.

    Only for a VM made this run with its own static-NAT address: its address and host key are
    known then (ctx.ips, ctx.host_keys). `finish` takes the inventory's targets: a login made
    to the same address, port, user and key counts; one still trying goes on; the others
    (another address, a failed attempt, VMs this run did not make) are waited for as before.
    All share one bound: at most ``max_ssh`` connection attempts at a time.
    """

    def __init__(self, ctx: RunContext, key_path: Path, opts: CreateOptions,
                 on_progress: Callable[[str, str, str], None]) -> None:
        self.ctx, self.key_path, self.opts, self.on_progress = ctx, key_path, opts, on_progress
        self.started: dict[str, tuple[SSHTarget, asyncio.Task[dict[str, float]]]] = {}
        self.slots = asyncio.Semaphore(max(1, opts.max_ssh))

    def start(self, name: str) -> None:
        ctx = self.ctx
        if ctx.desired.public_access != "static_nat" or name not in ctx.host_keys or name not in ctx.ips:
            return
        from .ssh_wait import SSHTarget

        target = SSHTarget(name=name, host=ctx.ips[name]["ipaddress"], port=ctx.desired.ssh_port,
                           user=ctx.desired.ssh_user, host_key=ctx.host_keys[name].public_line)
        self.started[name] = (target, asyncio.create_task(self._wait([target])))

    async def _wait(self, targets: list[SSHTarget]) -> dict[str, float]:
        from .ssh_wait import wait_for_ssh

        return await wait_for_ssh(targets, client_key=self.key_path, timeout=self.opts.ssh_timeout,
                                  on_progress=self.on_progress, semaphore=self.slots)

    async def finish(self, targets: list[SSHTarget]) -> dict[str, float]:
        """Seconds to each target's login: the early ones that hold, then the rest. Fails as
        one wait over every target would: a foreign host key at once, else naming every host
        that did not answer."""
        from .ssh_wait import SSHWaitError, combined_error

        tasks: list[asyncio.Future[dict[str, float]]] = []
        rest = []
        for target in targets:
            early = self.started.get(target.name)
            if early is None or early[0] != target or (early[1].done() and (early[1].cancelled()
                                                                             or early[1].exception() is not None)):
                rest.append(target)
            else:
                tasks.append(early[1])
        if rest:
            tasks.append(asyncio.ensure_future(self._wait(rest)))

        def failed(task: asyncio.Future[dict[str, float]]) -> BaseException | None:
            return None if not task.done() or task.cancelled() else task.exception()

        try:
            pending = set(tasks)
            while pending:
                _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
                if any(isinstance(e, SSHWaitError) and e.mismatched for e in map(failed, tasks)):
                    break  # a foreign host key stops the run whatever the others do
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        errors = [e for e in map(failed, tasks) if e is not None]
        if any(not isinstance(e, SSHWaitError) for e in errors):
            raise next(e for e in errors if not isinstance(e, SSHWaitError))
        if errors:
            raise combined_error(targets, [e for e in errors if isinstance(e, SSHWaitError)], self.opts.ssh_timeout)
        seconds: dict[str, float] = {}
        for task in tasks:
            seconds.update(task.result())
        return {t.name: seconds[t.name] for t in targets}

    async def cancel(self) -> None:
        """Stop the logins still trying (the run failed, or they were not needed)."""
        tasks = [task for _, task in self.started.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _prefill(ctx: RunContext, actual: Actual) -> None:
    ctx.network_id = actual.network["id"] if actual.network else None
    ctx.source_nat = actual.source_nat
    ctx.affinity_groups = {name: group["id"] for name, group in actual.affinity_groups.items()}
    for name, vm in actual.vms.items():
        if vm["state"] not in ("Error", "Destroyed"):
            ctx.vm_ids[name] = vm["id"]
            if vm["state"] in SETTLING_STATES:
                ctx.settling[name] = vm["id"]
            ip = actual.ip_of_vm(vm["id"]) or actual.ip_tagged_for(name)
            if ip is not None:
                ctx.ips[name] = ip
    for name in {v.name for v in ctx.desired.vms} - set(ctx.ips):
        ip = actual.ip_tagged_for(name)
        if ip is not None:
            ctx.ips[name] = ip
    for spec in ctx.desired.load_balancers:
        address = actual.lb_ip(spec.role) if ctx.desired.public_access == "static_nat" else actual.source_nat
        if address is None:
            continue
        if ctx.desired.public_access == "static_nat":
            ctx.lb_ips[spec.role] = address
        for rule in actual.lb_rules_on(address["id"]):
            port = int(rule["publicport"])
            if port in spec.ports and int(rule["privateport"]) == port:
                ctx.lb_rules[(spec.role, port)] = rule["id"]


def _known_host(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


async def _host_key(cloud: Cloud, ctx: RunContext, name: str, vm_id: str, cached: dict[str, str],
                    userdata: dict[str, str | None]) -> str:
    """The VM's pinned host key: made this run, else the last inventory's (same VM id), else
    read back from its user data through CloudStack's API (a channel csdeploy trusts)."""
    if name in ctx.host_keys:
        return ctx.host_keys[name].public_line
    if vm_id in cached:
        return cached[vm_id]
    if vm_id not in userdata:
        data = await cloud.request("getVirtualMachineUserData", virtualmachineid=vm_id)
        userdata[vm_id] = (data.get("virtualmachineuserdata") or {}).get("userdata")
    key = host_public_key_from_userdata(userdata[vm_id])
    if key is None:
        raise CsdeployError(f"VM {name} has no host key in its user data: csdeploy cannot verify it",
                            hint=f"it was not created by csdeploy; destroy it and re-run, or teardown {ctx.desired.env}")
    return key


async def _inventory(cloud: Cloud, desired: Desired, actual: Actual, catalog: Catalog, ctx: RunContext,
                     state: EnvState, key_path: str) -> Inventory:
    cached_inv = state.read_inventory()
    cached = {h.vm_id: h.host_key for h in cached_inv.hosts} if cached_inv else {}
    keys = await asyncio.gather(*(_host_key(cloud, ctx, s.name, actual.vms[s.name]["id"], cached, actual.userdata)
                                  for s in desired.vms))
    hosts = []
    for spec, host_key in zip(desired.vms, keys, strict=True):
        vm = actual.vms[spec.name]
        if desired.public_access == "static_nat":
            ip = actual.ip_of_vm(vm["id"])
            assert ip is not None
            address, port = ip["ipaddress"], desired.ssh_port
        else:
            assert actual.source_nat is not None
            pf = next(r for r in actual.port_forwards if r["virtualmachineid"] == vm["id"]
                      and int(r["privateport"]) == desired.ssh_port)
            address, port = actual.source_nat["ipaddress"], int(pf["publicport"])
        hosts.append(Host(
            name=spec.name, role=spec.group, index=spec.index, vm_id=vm["id"], public_ip=address, ssh_port=port,
            private_ip=vm["nic"][0]["ipaddress"], host_key=host_key, offering=spec.offering,
            accessories=tuple(spec.accessories), proxy=spec.proxy, also=spec.also,
            disks=tuple(HostDisk(name=d.name, label=d.label, mount=d.mount, size_gb=d.size_gb) for d in spec.disks),
        ))
    return Inventory(
        load_balancers=_load_balancers(desired, actual),
        env=desired.env, service=desired.service, endpoint=cloud.config.shown_endpoint,
        written=format_time(datetime.now(UTC)),
        expires=format_time(desired.expires) if desired.expires else None,
        network=Network(id=actual.network["id"] if actual.network else None, name=desired.network,
                        cidr=(actual.network or {}).get("cidr")),
        template=catalog.template_name, public_access=desired.public_access,
        ssh=SSHAccess(user=desired.ssh_user, key=Path(key_path), known_hosts=state.known_hosts_path),
        hosts=tuple(hosts),
    )


def _load_balancers(desired: Desired, actual: Actual) -> tuple[LoadBalancer, ...]:
    """Each balanced role's address and the VMs that are members of all its rules."""
    out = []
    for spec in desired.load_balancers:
        address = actual.lb_ip(spec.role) if desired.public_access == "static_nat" else actual.source_nat
        if address is None:
            continue
        rules = [r for r in actual.lb_rules_on(address["id"]) if int(r["publicport"]) in spec.ports]
        joined = set.intersection(*(set(actual.lb_members.get(r["id"], [])) for r in rules)) if rules else set()
        members = tuple(n for n in spec.members if actual.vms.get(n, {}).get("id") in joined)
        out.append(LoadBalancer(role=spec.role, public_ip=address["ipaddress"], ports=spec.ports, members=members))
    return tuple(out)


async def join_deferred(cloud: Cloud, bp: Blueprint, env: str, state: EnvState, progress: Progress,
                        deferred: dict[str, list[str]]) -> Inventory | None:
    """Add the VMs create-env left out of their load balancers (``CreateResult.deferred``), now
    that the rollout on them is done; rewrite the inventory with the members. One assign call
    per rule; a VM that joined meanwhile is not added twice."""
    if not deferred:
        return None
    with state.lock():
        desired = desired_state(bp, env)
        actual = await read_actual(cloud, env)
        desired = _keep_expiry(desired, actual, False)
        # it makes no VM: none of the catalog's names are needed
        catalog = Catalog(zone_id="", zone_name="", template_id="", template_name="", network_offering_id="")
        ctx = RunContext(cloud=cloud, desired=desired, catalog=catalog, progress=progress, public_key="")
        _prefill(ctx, actual)
        joining = [a for a in make_plan(desired, actual).actions if a.kind == "lb-member" and a.op == "assign"
                   and a.name in deferred.get(a.data["role"], ())]
        failures: list[tuple[Action, BaseException]] = []
        await actions_lb.join(ctx, joining, lambda a, fn: run_action(ctx, a, fn, failures))
        if failures:
            raise ProvisionError(failures)
        inventory = state.read_inventory()
        if inventory is None:
            return None
        actual = await read_actual(cloud, env)
        inventory = dataclasses.replace(inventory, load_balancers=_load_balancers(desired, actual))
        state.write_inventory(inventory)
        return inventory


def _ssh_targets(inventory: Inventory) -> list[SSHTarget]:
    from .ssh_wait import SSHTarget

    return [SSHTarget(name=h.name, host=h.public_ip, port=h.ssh_port, user=inventory.ssh.user, host_key=h.host_key)
            for h in inventory.hosts]


def _pin(state: EnvState, inventory: Inventory) -> None:
    """Write known_hosts (the pinned keys) and the inventory cache."""
    state.write_known_hosts({_known_host(h.public_ip, h.ssh_port): h.host_key for h in inventory.hosts})
    state.write_inventory(inventory)


async def refresh_inventory(cloud: Cloud, bp: Blueprint, env: str, state: EnvState) -> Inventory:
    """Rebuild the inventory and known_hosts from the cloud (the local copy is only a cache)."""
    desired = desired_state(bp, env)
    actual = await read_actual(cloud, env)
    missing = [v.name for v in desired.vms if v.name not in actual.vms]
    if missing:
        raise CsdeployError(f"environment '{env}' lacks VMs the blueprint wants: {', '.join(missing)}",
                            hint=f"run `csdeploy create-env ... --env {env}` to converge it first")
    desired = _keep_expiry(desired, actual, False)
    offerings, disks = _needed_names(desired)
    catalog = await resolve_catalog(cloud, desired, offerings, disks)
    key_path, public_key = state.ensure_keypair(bp.ssh_key_path())
    ctx = RunContext(cloud=cloud, desired=desired, catalog=catalog, progress=_Silent(), public_key=public_key)
    inventory = await _inventory(cloud, desired, actual, catalog, ctx, state, str(key_path))
    _pin(state, inventory)
    return inventory


class _Silent:
    def emit(self, event: Event) -> None:
        pass

    def note(self, text: str, *, level: str = "info") -> None:
        pass

    def close(self) -> None:
        pass
