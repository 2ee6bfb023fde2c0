"""The CloudStack calls behind load-balancer actions (see plan_lb for when each runs).

Like every create, a load balancer's address and rules are tagged as soon as CloudStack
returns their ids; rules are named ``<env>-<role>-<port>``, so one whose tags did not land
is found (and adopted) by the next run, never created twice. Members are added and removed
in one call per rule, whatever the number of VMs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import CsdeployError
from .actions import _source_nat, created
from .context import RunContext, tag
from .desired import KIND_LB_IP, KIND_LB_RULE, TAG_CREATED, TAG_KIND, TAG_ROLE, lb_rule_name
from .steps import Action

Failures = list[tuple[Action, BaseException]]
Runner = Callable[[Action, Callable[[], Awaitable[str]]], Awaitable[bool]]


async def _joined(*aws: Awaitable[Any]) -> list[Any]:
    """Wait for all; raise the first error after every one finished (nothing left running)."""
    results = await asyncio.gather(*aws, return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results


async def lb_address(ctx: RunContext, role: str) -> dict[str, Any]:
    """The address a role's rules go on: its own (static NAT mode) or the source-NAT one."""
    if ctx.desired.public_access == "static_nat":
        ip = ctx.lb_ips.get(role)
        if ip is None:
            raise CsdeployError(f"role {role}'s load-balancer address was not acquired", hint="re-run create-env")
        return ip
    return await _source_nat(ctx)


async def ip_action(ctx: RunContext, a: Action) -> str:
    role = a.data["role"]
    if a.op == "adopt":
        await tag(ctx, "PublicIpAddress", [a.data["id"]], ctx.tags(**{TAG_ROLE: role, TAG_KIND: KIND_LB_IP}))
        return "tagged"
    reply = await ctx.cloud.request("associateIpAddress", networkid=ctx.network_id)
    tags = ctx.tags(**{TAG_ROLE: role, TAG_KIND: KIND_LB_IP, TAG_CREATED: ctx.created})
    done = await created(ctx, "associateIpAddress", reply, "PublicIpAddress", tags)
    ctx.lb_ips[role] = done["ipaddress"]
    return done["ipaddress"]["ipaddress"]


async def rule_action(ctx: RunContext, a: Action) -> str:
    if a.op == "delete":
        await ctx.cloud.job("deleteLoadBalancerRule", id=a.data["id"])
        return "deleted"
    if a.op == "update":
        await ctx.cloud.job("updateLoadBalancerRule", id=a.data["id"], algorithm=a.data["algorithm"])
        return a.detail
    if a.op == "adopt":
        await tag(ctx, "LoadBalancer", [a.data["id"]], ctx.tags(**{TAG_ROLE: a.data["role"], TAG_KIND: KIND_LB_RULE}))
        return "tagged"
    role, port = a.data["role"], a.data["port"]
    ip = await lb_address(ctx, role)
    # openfirewall: CloudStack opens the port to everyone with a firewall rule that goes with the rule
    reply = await ctx.cloud.request("createLoadBalancerRule", publicipid=ip["id"], name=lb_rule_name(
        ctx.desired.env, role, port), algorithm=a.data["algorithm"], privateport=port, publicport=port,
        openfirewall=True)
    ctx.lb_rules[(role, port)] = reply["id"]
    tags = ctx.tags(**{TAG_ROLE: role, TAG_KIND: KIND_LB_RULE, TAG_CREATED: ctx.created})
    await created(ctx, "createLoadBalancerRule", reply, "LoadBalancer", tags)
    return f"{ip['ipaddress']}:{port} -> {port}, {a.data['algorithm']}"


async def firewall_action(ctx: RunContext, a: Action) -> str:
    ip = await lb_address(ctx, a.data["role"])
    port = a.data["port"]
    reply = await ctx.cloud.request("createFirewallRule", ipaddressid=ip["id"], protocol="tcp", startport=port,
                                    endport=port, cidrlist=a.data["cidrs"])
    await created(ctx, "createFirewallRule", reply, "FirewallRule",
                  ctx.tags(**{TAG_ROLE: a.data["role"], TAG_KIND: "rule"}))
    return a.detail


async def setup(ctx: RunContext, actions: list[Action], run: Runner) -> None:
    """The LB group: addresses first, then rules, algorithm changes, firewall rules, adoptions."""
    ips = [a for a in actions if a.kind == "ip"]
    oks = await asyncio.gather(*(run(a, lambda a=a: ip_action(ctx, a)) for a in ips))
    lost = {a.data["role"] for a, ok in zip(ips, oks, strict=True) if not ok and a.op == "create"}
    rest = [a for a in actions if a.kind != "ip" and a.data.get("role") not in lost]
    await asyncio.gather(*(run(a, lambda a=a: (firewall_action if a.kind == "firewall" else rule_action)(ctx, a))
                           for a in rest))


async def detach(ctx: RunContext, actions: list[Action], run: Runner,
                 others: Callable[[Action], Awaitable[str]]) -> None:
    """The LB_DETACH group: members leave (one call per rule), rules and whatever is in their way
    go; ``others`` runs the plain deletes (addresses, forwarding and firewall rules)."""
    leaving = [a for a in actions if a.kind == "lb-member"]
    by_rule: dict[str, list[str]] = {}
    for a in leaving:
        for rule_id in a.data["rules"]:
            by_rule.setdefault(rule_id, []).append(a.data["vm_id"])
    await _batched(ctx, leaving, run, [ctx.cloud.job("removeFromLoadBalancerRule", id=rule_id,
                                                     virtualmachineids=ids) for rule_id, ids in by_rule.items()])
    rest = [a for a in actions if a.kind != "lb-member"]
    await asyncio.gather(*(run(a, lambda a=a: rule_action(ctx, a) if a.kind == "load-balancer" else others(a))
                           for a in rest))


async def attach(ctx: RunContext, actions: list[Action], run: Runner, skip: set[str]) -> None:
    """The LB_ATTACH group: running VMs join their role's rules, one assign call per rule. VMs in
    ``skip`` (their pipeline failed) wait for the next run; with ``ctx.defer_joins`` so do VMs
    joining a pool that already serves (create-env adds them after the rollout on them)."""
    now: list[Action] = []
    for a in actions:
        if a.name in skip or a.name not in ctx.vm_ids:
            continue
        if a.data.get("defer") and ctx.defer_joins:
            ctx.deferred.append(a)
            ctx.emit(a, "skipped", "joins after the rollout on it")
            continue
        now.append(a)
    await join(ctx, now, run)


async def join(ctx: RunContext, actions: list[Action], run: Runner) -> None:
    """Assign VMs to their roles' rules: one call per rule with every VM that joins it."""
    by_rule: dict[str, list[str]] = {}
    for a in actions:
        for port in a.data["ports"]:
            rule_id = ctx.lb_rules.get((a.data["role"], port))
            if rule_id is not None:  # a rule that could not be made: reported already
                by_rule.setdefault(rule_id, []).append(ctx.vm_ids[a.name])
    await _batched(ctx, actions, run, [ctx.cloud.job("assignToLoadBalancerRule", id=rule_id, virtualmachineids=ids)
                                       for rule_id, ids in by_rule.items()])


async def _batched(ctx: RunContext, actions: list[Action], run: Runner, calls: list[Awaitable[Any]]) -> None:
    """Run ``calls`` (one per rule) and report them on each action they serve."""
    if not actions:
        for c in calls:  # nothing to report on: still do them
            await c
        return
    shared = asyncio.ensure_future(_joined(*calls))

    async def one(a: Action) -> str:
        await asyncio.shield(shared)
        return a.detail

    await asyncio.gather(*(run(a, lambda a=a: one(a)) for a in actions))
