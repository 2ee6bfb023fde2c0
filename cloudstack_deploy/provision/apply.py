"""Execute a plan: global actions first, then one pipeline per VM, all VMs at once.

Each VM's pipeline runs its stage A concurrently (deploy the VM, acquire its IP, create its
disks), then stage B (static NAT, firewall or port forwarding, attach/grow disks). Every
create is tagged as soon as CloudStack returns its id, so a run killed at any point leaves
resources the next run finds and adopts instead of duplicating.

Load balancers wrap this (see plan_lb): VMs leave their pools before anything else happens
(and nothing else happens if they could not), the pools' addresses and rules are made beside
the pipelines, and VMs join once their pipelines are done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from ..errors import CsdeployError, Locked
from . import actions_lb
from .actions import (
    affinity_group_action,
    attach_volume,
    firewall_action,
    ip_action,
    keypair_action,
    network_action,
    policy_action,
    port_forward_action,
    static_nat_action,
    vm_action,
    volume_action,
    wait_vm_settled,
)
from .context import ProvisionError, RunContext
from .plan import Plan
from .steps import GLOBAL, LB, LB_ATTACH, LB_DETACH, REMOVE, Action

__all__ = ["ProvisionError", "RunContext", "apply_plan", "run_action"]


# ---- orchestration --------------------------------------------------------------------------

async def run_action(ctx: RunContext, a: Action, fn: Callable[[], Awaitable[str]],
               failures: list[tuple[Action, BaseException]]) -> bool:
    ctx.emit(a, "running")
    try:
        detail = await fn()
    except (CsdeployError, OSError) as exc:
        ctx.emit(a, "failed", str(exc).splitlines()[0])
        failures.append((a, exc))
        return False
    ctx.emit(a, "done", detail)
    return True


async def _vm_pipeline(ctx: RunContext, actions: list[Action], failures: list[tuple[Action, BaseException]]) -> None:
    vm = actions[0].group
    vm_actions = [a for a in actions if a.kind == "vm"]
    ip_creates = [a for a in actions if a.kind == "ip" and a.op == "create"]
    vol_creates = [a for a in actions if a.kind == "volume" and a.op == "create"]
    stage_a = set(map(id, vm_actions + ip_creates + vol_creates))

    async def vm_chain() -> bool:
        ok = True
        if vm in ctx.settling:
            wait = Action("wait", "vm", vm, "busy: wait until it settles", vm)
            if not await run_action(ctx, wait, lambda: wait_vm_settled(ctx, vm, ctx.settling[vm]), failures):
                return False
        for a in vm_actions:
            ok = await run_action(ctx, a, lambda a=a: vm_action(ctx, a), failures) and ok
            if not ok:
                break
        return ok

    oks = await asyncio.gather(
        vm_chain(),
        *(run_action(ctx, a, lambda a=a: ip_action(ctx, a), failures) for a in ip_creates),
        *(run_action(ctx, a, lambda a=a: volume_action(ctx, a), failures) for a in vol_creates),
    )
    if not all(oks):
        return  # stage B needs the VM/IP/disks; the next run picks up from here
    rest = [a for a in actions if id(a) not in stage_a]
    for a in [a for a in rest if a.kind == "static-nat"]:
        if not await run_action(ctx, a, lambda a=a: static_nat_action(ctx, a), failures):
            return
    jobs = []
    for a in rest:
        if a.kind == "firewall":
            jobs.append(run_action(ctx, a, lambda a=a: firewall_action(ctx, a), failures))
        elif a.kind == "port-forward":
            jobs.append(run_action(ctx, a, lambda a=a: port_forward_action(ctx, a), failures))
        elif a.kind == "ip":
            jobs.append(run_action(ctx, a, lambda a=a: ip_action(ctx, a), failures))
        elif a.kind == "volume":
            jobs.append(run_action(ctx, a, lambda a=a: _volume_b(ctx, a), failures))
    for a in vol_creates:  # attach what stage A created
        jobs.append(run_action(ctx, Action("update", "volume", a.name, f"attach to {vm}", vm),
                         lambda a=a: _attach_new(ctx, a), failures))
    await asyncio.gather(*jobs)
    # Snapshot policies last: CloudStack takes them only on a Ready (attached once) volume.
    new_ids = {a.data["disk"].name: a.data.get("id") for a in vol_creates}
    await asyncio.gather(*(run_action(ctx, a, lambda a=a: policy_action(ctx, a, new_ids.get(a.data.get("disk", ""))),
                                      failures) for a in rest if a.kind == "snapshot-policy"))
    if ctx.on_vm_done is not None and not any(a.group == vm for a, _ in failures):
        ctx.on_vm_done(vm)


async def _volume_b(ctx: RunContext, a: Action) -> str:
    if a.data.get("attach"):
        await attach_volume(ctx, a.data["id"], a.group)
        return f"attached to {a.group}"
    return await volume_action(ctx, a)


async def _attach_new(ctx: RunContext, a: Action) -> str:
    await attach_volume(ctx, a.data["id"], a.group)
    return f"attached to {a.group}"


REMOVERS: dict[str, Callable[[RunContext, Action], Awaitable[str]]] = {
    "vm": vm_action,
    "ip": ip_action,
    "volume": volume_action,
    "firewall": firewall_action,
    "port-forward": port_forward_action,
    "affinity-group": affinity_group_action,
}


async def apply_plan(ctx: RunContext, plan: Plan) -> None:
    """Run every action of ``plan``; raise ProvisionError listing what failed (after the rest ran)."""
    groups = plan.groups()
    failures: list[tuple[Action, BaseException]] = []
    for a in groups.pop(GLOBAL, []):
        fn = {"network": network_action, "keypair": keypair_action, "affinity-group": affinity_group_action}[a.kind]
        if not await run_action(ctx, a, lambda a=a, fn=fn: fn(ctx, a), failures):
            if isinstance(failures[-1][1], Locked):
                raise failures[-1][1]
            raise ProvisionError(failures)
    def run(a: Action, fn: Callable[[], Awaitable[str]]) -> Awaitable[bool]:
        return run_action(ctx, a, fn, failures)

    detach, balancers, attach = groups.pop(LB_DETACH, []), groups.pop(LB, []), groups.pop(LB_ATTACH, [])
    if detach:  # a VM goes only once it left its pool: nothing else runs if that failed
        await actions_lb.detach(ctx, detach, run, lambda a: REMOVERS[a.kind](ctx, a))
        if failures:
            raise ProvisionError(failures)
    removals = groups.pop(REMOVE, [])
    # VMs to remove go first among removals so that their IPs and disks are free to delete.
    vm_removals = [a for a in removals if a.kind == "vm"]
    other_removals = [a for a in removals if a.kind != "vm"]

    async def remove_all() -> None:
        await asyncio.gather(*(run_action(ctx, a, lambda a=a: REMOVERS[a.kind](ctx, a), failures) for a in vm_removals))
        await asyncio.gather(*(run_action(ctx, a, lambda a=a: REMOVERS[a.kind](ctx, a), failures)
                               for a in other_removals))

    pipelines_done = asyncio.Event()

    async def pipelines() -> None:
        try:
            await asyncio.gather(*(_vm_pipeline(ctx, actions, failures) for actions in groups.values()))
        finally:
            pipelines_done.set()

    async def load_balancers() -> None:
        if ctx.desired.public_access != "static_nat" and ctx.source_nat is None and balancers:
            await pipelines_done.wait()  # the source-NAT address comes with the first VM
        await actions_lb.setup(ctx, balancers, run)

    await asyncio.gather(remove_all(), pipelines(), load_balancers())
    if attach:
        await actions_lb.attach(ctx, attach, run, skip={a.group for a, _ in failures})
    if failures:
        raise ProvisionError(failures)
