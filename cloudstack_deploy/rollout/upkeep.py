"""`csdeploy hosts upgrade`: package updates applied role by role, one host at a time, each
host rebooted by the cloud and waited for before the next one starts.

A host behind its role's load balancer leaves the pool first (the cloud's
removeFromLoadBalancerRule), so no new connection reaches it while it upgrades and reboots;
it joins again only once it serves (its role's container running and healthy, kamal-proxy
answering the health path on the host itself). The cloud side (pool membership, reboots) is
a `Rotation` given by the caller (`provision/rotation.py`): the rollout does not talk to the
cloud itself. With a dry run the scripts are recorded and the cloud calls listed, nothing runs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ..errors import InvalidInput, OperationFailed
from ..inventory import Host
from .commands import hardening
from .commands.script import Script
from .contract import labels
from .deploy import Rollout
from .hosts import PlannedScript

#: How long after leaving the pool a host keeps answering the requests it already has.
DRAIN_SECONDS = 3.0
SERVE_TIMEOUT = 300.0
SSH_TIMEOUT = 300.0
RETRY_PAUSE = 1.0       # between tries to reach a rebooting host


class Rotation(Protocol):
    """The cloud's part: a host out of its role's load balancer and back, and its reboot."""

    async def leave(self, host: Host) -> bool:
        """Take ``host`` out of its role's load-balancer rules; False when it is in none."""
        ...

    async def join(self, host: Host) -> None: ...

    async def reboot(self, host: Host) -> None: ...


@dataclass
class HostUpgrade:
    host: str
    role: str
    steps: list[str] = field(default_factory=list)   # what was done, in order
    seconds: float = 0.0


@dataclass
class UpgradeResult:
    hosts: list[HostUpgrade] = field(default_factory=list)
    planned: list[PlannedScript] = field(default_factory=list)   # a dry run: the scripts and cloud calls
    seconds: float = 0.0


def upgrade_order(r: Rollout, roles: tuple[str, ...]) -> list[tuple[str, list[Host]]]:
    """Role by role (the blueprint's order, then the accessories' own VMs), each role's hosts in
    index order; ``roles`` narrows it (an unknown name is refused before anything runs)."""
    groups: dict[str, list[Host]] = {}
    for h in sorted(r.inv.hosts, key=lambda h: h.index):
        groups.setdefault(h.role, []).append(h)
    known = [*(role for role in r.bp.roles if role in groups), *(g for g in groups if g not in r.bp.roles)]
    unknown = [role for role in roles if role not in groups]
    if unknown:
        raise InvalidInput(f"--roles {', '.join(unknown)}: no VM of environment {r.env} has that role",
                           hint="roles with VMs here: " + ", ".join(known))
    return [(role, groups[role]) for role in known if not roles or role in roles]


def _serving_script(r: Rollout, host: Host) -> Script | None:
    """Waits until every app role on ``host`` (its own, and those placed on it) serves again."""
    roles = [r.bp.roles[name] for name in host.app_roles if name in r.bp.roles]
    if not roles:
        return None
    out = Script()
    for role in roles:
        path = None
        host_header = None
        if host.proxy and role.proxy is not None:
            path = role.proxy.public_path(role.proxy.healthcheck.path or "/")
            host_header = role.proxy.hosts[0] if role.proxy.hosts else None
        out.extend(hardening.wait_serving(labels(r.bp.service, r.env, role.name), timeout=SERVE_TIMEOUT,
                                          host_header=host_header, path=path))
    return out


async def _rebooted(r: Rollout, host: Host, before: str, deadline: float) -> None:
    """SSH answers again and the host booted since ``before`` (its `boot_mark`); a new
    connection each try: the old one died with the reboot."""
    last: object = "it still runs the boot it had before the reboot"
    while time.monotonic() < deadline:
        try:
            async with r.pool() as pool:
                conn = await pool.connect(host)
                res = await conn.run(hardening.boot_mark(), what="ssh after the reboot", read_only=True, timeout=30)
                if res.stdout.strip() and res.stdout != before:
                    return
        except Exception as exc:  # refused, reset, timed out: the host is still rebooting
            last = exc
        await asyncio.sleep(RETRY_PAUSE)
    raise OperationFailed(f"{host.name}: not back within {SSH_TIMEOUT:g}s of the reboot: {last}",
                          hint="look at the VM's console in the cloud; the host stays out of its load balancer")


async def upgrade(r: Rollout, rotation: Rotation, *, roles: tuple[str, ...] = (), drain: float = DRAIN_SECONDS,
                  emit: Callable[[str], None] = lambda line: None) -> UpgradeResult:
    """Upgrade every selected host, one at a time: out of the pool, upgrade, reboot, wait until it
    serves, back in the pool. The first host that fails stops the run (it stays out of the pool:
    the rest keep serving); hosts not reached yet are untouched."""
    started = time.monotonic()
    order = upgrade_order(r, roles)
    result = UpgradeResult()
    script = hardening.upgrade(r.bp.hosts.upgrade_command)
    for role, hosts in order:
        for host in hosts:
            done = HostUpgrade(host.name, role)
            result.hosts.append(done)
            t0 = time.monotonic()

            def step(text: str, done: HostUpgrade = done) -> None:
                done.steps.append(text)
                emit(f"{done.host}: {text}")

            if r.dry_run:
                _plan_one(r, host, script, result.planned)
                continue
            out = await rotation.leave(host)
            if out:
                step("left the load balancer")
                await asyncio.sleep(drain)
            async with r.pool() as pool:
                conn = await pool.connect(host)
                await conn.run(script, what="upgrade packages", timeout=1800)
                before = (await conn.run(hardening.boot_mark(), what="read the boot", read_only=True)).stdout
            step("upgraded")
            await rotation.reboot(host)
            step("rebooted")
            await _rebooted(r, host, before, time.monotonic() + SSH_TIMEOUT)
            serving = _serving_script(r, host)
            if serving is not None:
                async with r.pool() as pool:
                    conn = await pool.connect(host)
                    await conn.run(serving, what="wait until it serves", timeout=SERVE_TIMEOUT + 30)
                step("serves again")
            if out:
                await rotation.join(host)
                step("joined the load balancer")
            done.seconds = time.monotonic() - t0
    result.seconds = time.monotonic() - started
    return result


def _plan_one(r: Rollout, host: Host, script: Script, planned: list[PlannedScript]) -> None:
    """What a dry run shows for one host, in the order it would happen (no host is contacted)."""
    lb = r.inv.load_balancer(host.app_role) if host.app_role else None
    balanced = lb is not None and host.name in lb.members
    if balanced:
        planned.append(PlannedScript(host.name, "cloud: removeFromLoadBalancerRule", ""))
    planned.append(PlannedScript(host.name, "upgrade packages", script.text()))
    planned.append(PlannedScript(host.name, "cloud: rebootVirtualMachine", ""))
    serving = _serving_script(r, host)
    if serving is not None:
        planned.append(PlannedScript(host.name, "wait until it serves", serving.text()))
    if balanced:
        planned.append(PlannedScript(host.name, "cloud: assignToLoadBalancerRule", ""))
