"""Day-2 operations over an environment's hosts: status, logs, exec, rollback, reboots."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .commands import docker as d
from .commands import proxy as p
from .commands.script import Script, q
from .contract import RolloutError, accessory_container
from .deploy import Rollout, RolloutOptions, RolloutResult
from .hosts import Connection, Host


@dataclass
class HostStatus:
    name: str
    role: str
    address: str
    containers: list[dict[str, Any]] = field(default_factory=list)
    proxy_targets: str = ""
    error: str | None = None


# `kamal-proxy list` colours its table even when its output is not a terminal.
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


async def status(r: Rollout) -> list[HostStatus]:
    """Per host: this service's containers (version, state, health) and kamal-proxy's routes."""
    out: list[HostStatus] = []

    async def one(conn: Connection) -> HostStatus:
        st = HostStatus(conn.host.name, conn.host.role, f"{conn.host.address}:{conn.host.port}")
        s = Script(["set -u"])
        s.raw(f"{q(d.ps_json({'service': r.bp.service}))} 2>&1 || true")
        s.raw("echo ::proxy")
        s.raw(f"{q(p.list_services())} 2>/dev/null || true")
        res = await conn.run(s, check=False, what="status")
        body, _, proxy = res.stdout.partition("::proxy\n")
        for line in body.splitlines():
            try:
                c = json.loads(line)
            except json.JSONDecodeError:
                st.error = line
                continue
            labels = dict(kv.split("=", 1) for kv in c.get("Labels", "").split(",") if "=" in kv)
            st.containers.append({"name": c.get("Names"), "version": labels.get("version"),
                                  "role": labels.get("role") or labels.get("accessory"), "state": c.get("State"),
                                  "status": c.get("Status"), "image": c.get("Image")})
        st.proxy_targets = ANSI_ESCAPE.sub("", proxy).strip()
        return st

    async with r.pool() as pool:
        results = await asyncio.gather(*(_guard(pool, h, one) for h in r.hosts))
    out.extend(results)
    return out


async def _guard(pool: Any, host: Host, fn: Callable[[Connection], Any]) -> HostStatus:
    try:
        return await fn(await pool.connect(host))
    except Exception as exc:  # status shows unreachable hosts instead of failing as a whole
        return HostStatus(host.name, host.role, f"{host.address}:{host.port}", error=str(exc).splitlines()[0])


def _current_container(r: Rollout, role: str) -> str:
    return (f"$(docker ps --format '{{{{.Names}}}}' --filter label=service={r.bp.service} "
            f"--filter label=role={role} --filter label=destination={r.env} | head -n 1)")


def _role_hosts(r: Rollout, role: str) -> list[Host]:
    if role in r.bp.accessories:
        return [h for h in r.hosts if role in r.plans[h.name].accessories]
    hosts = [h for h in r.hosts if r.plans[h.name].role == role]
    if not hosts:
        known = ", ".join([*r.bp.roles, *r.bp.accessories])
        raise RolloutError(f"no host runs role or accessory {role!r}", hint=f"known: {known}")
    return hosts


def _target(r: Rollout, role: str) -> str:
    if role in r.bp.accessories:
        return q([accessory_container(r.bp.service, role)])
    return _current_container(r, role)


async def logs(r: Rollout, role: str, *, lines: int, follow: bool, emit: Callable[[str], None]) -> None:
    hosts = _role_hosts(r, role)
    async with r.pool() as pool:
        async def one(h: Host) -> None:
            conn = await pool.connect(h)
            cmd = f"docker logs --tail {int(lines)}{' --follow' if follow else ''} {_target(r, role)} 2>&1"
            await conn.stream(["sh", "-c", cmd], lambda line, h=h: emit(f"{h.name} | {line}"))

        await asyncio.gather(*(one(h) for h in hosts))


async def exec_(r: Rollout, role: str, argv: list[str], emit: Callable[[str], None]) -> int:
    """Run ``argv`` inside the role's current container on each of its hosts; worst exit code."""
    hosts = _role_hosts(r, role)
    worst = 0
    async with r.pool() as pool:
        async def one(h: Host) -> int:
            conn = await pool.connect(h)
            res = await conn.run(f"docker exec {_target(r, role)} {q(argv)}", check=False, what="exec")
            for line in (res.stdout + res.stderr).splitlines():
                emit(f"{h.name} | {line}")
            return res.exit_status

        for code in await asyncio.gather(*(one(h) for h in hosts)):
            worst = max(worst, code)
    return worst


async def previous_version(r: Rollout) -> tuple[str | None, list[dict[str, Any]]]:
    """The last successful version before the current one, from the primary host's history."""
    async with r.pool() as pool:
        history = await r.history(pool)
    ok = [h for h in history if h.get("status") == "ok"]
    if len(ok) < 2:
        return None, history
    current = ok[-1]["version"]
    for entry in reversed(ok[:-1]):
        if entry["version"] != current:
            return entry["version"], history
    return None, history


async def rollback(r: Rollout, to: str | None, *, break_lock: bool = False) -> RolloutResult:
    if to is None:
        to, history = await previous_version(r)
        if to is None:
            versions = ", ".join(h.get("version", "?") for h in history) or "none"
            raise RolloutError("no previous successful version to roll back to",
                               hint=f"deploy history: {versions}; pass --to VERSION")
    return await r.run(RolloutOptions(version=to, break_lock=break_lock, kind="rollback"))


async def proxy_reboot(r: Rollout) -> list[str]:
    """Replace kamal-proxy on every proxy host; routes come back from its state volume."""
    hosts = [h for h in r.hosts if r.plans[h.name].proxy]
    done: list[str] = []
    async with r.pool() as pool:
        async def one(conn: Connection) -> None:
            s = Script()
            s.raw(f"docker rm -f {p.CONTAINER} >/dev/null 2>&1 || true")
            s.run(p.boot(r.bp.rollout.proxy_image))
            s.raw(f"i=0; until docker exec {p.CONTAINER} kamal-proxy list >/dev/null 2>&1; do i=$((i+1)); "
                  "[ $i -gt 60 ] && exit 1; sleep 0.5; done")
            await conn.run(s, what="proxy reboot")
            done.append(conn.host.name)

        await pool.each(one, hosts)
    return done


async def accessory_reboot(r: Rollout, name: str) -> RolloutResult:
    """Restart one accessory deliberately (fresh container, same data), under the deploy lock."""
    if name not in r.bp.accessories:
        raise RolloutError(f"no accessory named {name!r}", hint="known: " + ", ".join(r.bp.accessories))
    hosts = [h for h in r.hosts if name in r.plans[h.name].accessories]
    async with r.pool() as pool:
        await r.lock(pool, f"accessory-{name}", False)
        try:
            await r.prepare(pool, None, hosts)
            outcome = await r.accessories(pool, (name,))
        finally:
            await r.unlock(pool, None)
    return RolloutResult(version="", seconds=0.0, accessories=outcome)
