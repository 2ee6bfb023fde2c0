"""Day-2 operations over an environment's hosts: status, logs, exec, rollback, reboots."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .. import hostdumps
from ..errors import InvalidInput
from ..inventory import Host
from . import canary, history, lease, stages
from . import plan as planning
from .apps import converge
from .commands import docker as d
from .commands import facts, jobs
from .commands import host as host_cmds
from .commands import hostdump as hostdump_cmds
from .commands import proxy as p
from .commands.script import Script, Var, succeeds
from .contract import accessory_container, container_name, labels, proxy_service
from .deploy import Rollout
from .hosts import Connection, Hosts, PlannedScript
from .records import RolloutOptions, RolloutResult
from .runs import run as run_rollout


@dataclass
class HostStatus:
    name: str
    role: str
    address: str
    containers: list[dict[str, Any]] = field(default_factory=list)
    proxy_targets: str = ""
    maintenance: str | None = None     # maintenance mode's message, when it is on here
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    #: the blueprint's backup schedules of this host's accessories: accessory, schedule, keep,
    #: to, run_by ("host": its timer, whose last run is read here; "serve": `csdeploy serve`)
    backups: list[dict[str, Any]] = field(default_factory=list)

    def find_leftovers(self) -> dict[str, list[str]]:
        """A role with two versions running on one host (a deploy that lost the host while it
        started the new one): said, so the user knows. Returns role -> running versions."""
        running: dict[str, list[str]] = {}
        for c in self.containers:
            if c.get("state") == "running" and c.get("version") and c.get("role") and \
                    not str(c["role"]).startswith("job "):
                running.setdefault(str(c["role"]), []).append(f"{c['version']}")
        for role, versions in running.items():
            if len(versions) > 1:
                self.warnings.append(f"role {role} runs {len(versions)} versions here ({', '.join(versions)}): "
                                     "a deploy or rollback stops all but the one it runs")
        return {role: versions for role, versions in running.items() if len(versions) > 1}


# `kamal-proxy list` colours its table even when its output is not a terminal.
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
PROXY_MARK = "::proxy"
MAINTENANCE_MARK = "::maintenance"


def status_script(service: str) -> Script:
    s = host_cmds.finish_left(service)  # old containers a deploy handed the host: stopped first
    s.run(d.ps_json({"service": service}), stderr_to_stdout=True, may_fail=True)
    s.emit(PROXY_MARK)
    s.run(p.list_services(), may_fail=True)
    with s.when(succeeds(["test", "-f", p.maintenance_file(service)])):
        s.emit(MAINTENANCE_MARK)
        s.run(["head", "-n", "1", p.maintenance_file(service)], may_fail=True)
    return s


async def status(r: Rollout) -> list[HostStatus]:
    """Per host: this service's containers (version, state, health) and kamal-proxy's routes."""

    async def one(conn: Connection) -> HostStatus:
        st = HostStatus(conn.host.name, conn.host.role, conn.host.ssh_address)
        res = await conn.run(status_script(r.bp.service), check=False, what="status")
        body, _, proxy = res.stdout.partition(PROXY_MARK + "\n")
        for line in body.splitlines():
            try:
                c = json.loads(line)
            except json.JSONDecodeError:
                st.error = line
                continue
            lab = dict(kv.split("=", 1) for kv in c.get("Labels", "").split(",") if "=" in kv)
            job = lab.get(jobs.JOB_LABEL)
            st.containers.append({"name": c.get("Names"), "version": lab.get("version"),
                                  "role": lab.get("role") or lab.get("accessory") or (f"job {job}" if job else None),
                                  "state": c.get("State"),
                                  "status": c.get("Status"), "image": c.get("Image")})
        proxy, marked, message = proxy.partition(MAINTENANCE_MARK + "\n")
        st.proxy_targets = ANSI_ESCAPE.sub("", proxy).strip()
        st.maintenance = message.strip() if marked else None
        leftovers = st.find_leftovers()
        if leftovers and current is not None:
            await _end_leftovers(r, conn, st, leftovers, current)
        if conn.host.name == r.inv.primary.name and lock_note:
            st.warnings.append(lock_note)
        st.backups = await _backup_schedules(r, conn)
        return st

    async with r.pool() as pool:
        current, lock_note = await _current_version(r, pool)
        return list(await asyncio.gather(*(_guard(pool, h, one) for h in r.hosts)))


async def _backup_schedules(r: Rollout, conn: Connection) -> list[dict[str, Any]]:
    """The backup schedules of ``conn``'s accessories; for those its timer runs, the last run as
    the job wrote it ({} before the first), read in one more short command on this connection."""
    out = []
    for name in conn.host.accessories:
        acc = r.bp.accessories.get(name)
        policy = acc.backups if acc is not None else None
        if policy is None or not policy.schedule:
            continue
        entry: dict[str, Any] = {"accessory": name, "schedule": policy.schedule, "keep": policy.keep,
                                 "to": policy.to, "run_by": "serve"}
        if hostdumps.runs_on_host(policy):
            where = hostdumps.directory(r.bp, name)
            entry.update(run_by="host", to=f"{hostdumps.HOST}:{where}", last_run={})
            res = await conn.run(hostdump_cmds.last_run(where, r.inv.ssh.user), check=False,
                                 what=f"last scheduled backup of {name}")
            try:
                entry["last_run"] = json.loads(res.stdout) if res.stdout.strip() else {}
            except ValueError:
                entry["last_run"] = {"result": "unknown", "detail": res.stdout.strip()[:200]}
        out.append(entry)
    return out


async def _current_version(r: Rollout, pool: Hosts) -> tuple[str | None, str | None]:
    """The version the history says the environment runs, when no deploy is under way (None
    while one is: two versions side by side are then expected, not left over), and a note for
    the primary when a deploy that is gone still holds the lock (a deploy that failed on a host
    it could not reach, or was killed): its leftovers are ended as if it had released it."""
    try:
        conn = await pool.connect(r.inv.primary)
        res = await conn.run(facts.deploy_state(r.bp.service), check=False, what="read the deploy state",
                             read_only=True)
    except Exception:  # the primary is down: status still shows what it can
        return None, None
    state, _, records = res.stdout.partition(facts.HISTORY_MARK + "\n")
    note = None
    if state.startswith(facts.LOCKED_MARK):
        holder = lease.Holder.parse(state.removeprefix(facts.LOCKED_MARK))
        dead = lease.why_dead(holder)
        if dead is None:
            return None, None
        note = f"the deploy lock is still held by {holder.who}, which is gone ({dead}): the next deploy takes it over"
    ok = [rec for rec in history.parse(records) if rec.status == history.OK and not rec.hosts]
    return (ok[-1].version if ok else None), note


def routed(proxy_list: str) -> dict[str, list[str]]:
    """`kamal-proxy list` (colour codes removed), read by its header's columns: service -> the
    containers it routes to (``name:port`` targets without the port). The Path column may be
    empty, so cells are cut where the header's columns start, not split on blanks."""
    lines = proxy_list.splitlines()
    header = next((i for i, line in enumerate(lines) if line.split()[:1] == ["Service"] and " Target " in line), None)
    if header is None:
        return {}
    head = lines[header]
    host_at, target_at, state_at = head.index(" Host ") + 1, head.index(" Target ") + 1, head.index(" State ") + 1
    out: dict[str, list[str]] = {}
    for row in lines[header + 1:]:
        name = row[:host_at].strip()
        if name:
            out[name] = [t.rsplit(":", 1)[0] for t in row[target_at:state_at].strip().split(",") if t]
    return out


async def _end_leftovers(r: Rollout, conn: Connection, st: HostStatus, leftovers: dict[str, list[str]],
                         current: str) -> None:
    """End the versions of a role that run beside the one the history says runs (a deploy that
    failed while its new container started, or its proxy switched, on a host it could not reach
    any more). A proxy role is first switched back to ``current`` when kamal-proxy routes to the
    leftover (the same switch back a failed deploy does: health-checked, the leftover removed);
    nothing is stopped while kamal-proxy routes to a container this cannot tell, so the host is
    never left serving nothing."""
    routes = routed(st.proxy_targets)
    for role, versions in leftovers.items():
        spec = r.bp.roles.get(role)
        if current not in versions or spec is None:
            continue
        keep = container_name(r.bp.service, role, current)
        others = {container_name(r.bp.service, role, v): v for v in versions if v != current}
        names = list(others)
        if spec.proxy is not None:
            target = routes.get(proxy_service(r.bp.service, role))
            if target is not None and len(target) == 1 and target[0] in others:
                res = await conn.run(stages.proxy_switch_back_script(r.bp, spec, others[target[0]], keep), check=False,
                                     what=f"switch {role} back to {current}")
                if res.exit_status != 0:
                    st.warnings.append(f"role {role}: kamal-proxy routes to {target[0]}, left over beside {current}, "
                                       f"and switching it back failed: {(res.stderr or res.stdout).strip()[-200:]}")
                    continue
                st.warnings.append(f"switched kamal-proxy back to {keep} and removed {target[0]}: left over by a "
                                   f"deploy that lost this host; the history says role {role} runs {current}")
                st.containers = [c for c in st.containers if c.get("name") != target[0]]
                names.remove(target[0])
            elif target != [keep]:
                st.warnings.append(f"role {role}: kamal-proxy routes to {', '.join(target or ['nothing it lists'])}, "
                                   f"not {keep}: left as it is (`csdeploy rollback` or a deploy settles it)")
                continue
        if not names:
            st.warnings = [w for w in st.warnings if not w.startswith(f"role {role} ")]
            continue
        res = await conn.run(d.stop(names), check=False, what=f"stop leftover {role}")
        if res.exit_status == 0:
            st.warnings = [w for w in st.warnings if not w.startswith(f"role {role} ")]
            st.warnings.append(f"stopped {', '.join(names)}: left over beside {current}, which the history says "
                               f"role {role} runs")
            for c in st.containers:
                if c.get("name") in names:
                    c["state"] = "exited"


async def _guard(pool: Hosts, host: Host, fn: Callable[[Connection], Any]) -> HostStatus:
    try:
        return await fn(await pool.connect(host))
    except Exception as exc:  # status shows unreachable hosts instead of failing as a whole
        return HostStatus(host.name, host.role, host.ssh_address, error=str(exc).splitlines()[0])


def _role_hosts(r: Rollout, role: str) -> list[Host]:
    if role in r.bp.accessories:
        host = r.inv.accessory_host(role)
        return [host] if host else []
    hosts = r.role_hosts(role)
    if not hosts:
        known = ", ".join([*r.bp.roles, *r.bp.accessories, *(j.name for x in r.bp.roles.values()
                                                               for j in x.schedules)])
        raise InvalidInput(f"no host runs role or accessory {role!r}", hint=f"known: {known}")
    return hosts


def _in_container(r: Rollout, role: str, build: Callable[[str | Var], list[Any]]) -> Script:
    """A script running ``build(container)`` against the role's current container (or the accessory's)."""
    s = Script()
    if role in r.bp.accessories:
        return s.run(build(accessory_container(r.bp.service, role)), stderr_to_stdout=True)
    name = Var("name")
    s.extend(d.current(labels(r.bp.service, r.env, role), into=name))
    return s.run(build(name), stderr_to_stdout=True)


def _job(r: Rollout, name: str) -> tuple[str, str] | None:
    """(role, job) for a scheduled job's name, or ``ROLE.JOB``."""
    for role in r.bp.roles.values():
        for job in role.schedules:
            if name in (job.name, jobs.job_label(role.name, job.name)):
                return role.name, job.name
    return None


async def logs(r: Rollout, role: str, *, lines: int, follow: bool, emit: Callable[[str], None],
               since_seconds: int | None = None) -> None:
    job = _job(r, role) if role not in r.bp.roles and role not in r.bp.accessories else None
    if job is not None:  # a scheduled job: its runs on the role's first host
        hosts = r.role_hosts(job[0])[:1]
        script = jobs.logs_script(job[0], job[1], lines, since_seconds)
    else:
        hosts = _role_hosts(r, role)
        script = _in_container(r, role, lambda c: list(d.logs(c, tail=lines, follow=follow,
                                                                 since_seconds=since_seconds)))
    async with r.pool() as pool:
        async def one(h: Host) -> None:
            conn = await pool.connect(h)
            await conn.stream(script, lambda line, h=h: emit(f"{h.name} | {line}"))

        await asyncio.gather(*(one(h) for h in hosts))


async def exec_(r: Rollout, role: str, argv: list[str], emit: Callable[[str], None]) -> int:
    """Run ``argv`` inside the role's current container on each of its hosts; worst exit code."""
    hosts = _role_hosts(r, role)
    script = _in_container(r, role, lambda c: list(d.exec_(c, argv)))
    async with r.pool() as pool:
        async def one(h: Host) -> int:
            conn = await pool.connect(h)
            res = await conn.run(script, check=False, what="exec")
            for line in (res.stdout + res.stderr).splitlines():
                emit(f"{h.name} | {line}")
            return res.exit_status

        codes = await asyncio.gather(*(one(h) for h in hosts))
    return max(codes, default=0)


async def previous_version(r: Rollout) -> tuple[str | None, list[history.DeployRecord]]:
    """The last successful version before the current one, from the primary host's history."""
    async with r.pool() as pool:
        records = await r.history(pool)
    return history.previous_version(records), records


async def finish_canary(r: Rollout, kind: str, *, break_lock: bool = False,
                        gate: Awaitable[None] | None = None) -> RolloutResult:
    """`deploy --promote` (``kind`` promote: the rest of the hosts, then commit) or `--abort`
    (``abort``: the canary hosts back) of the canary paused on the primary host."""
    reader = Rollout(r.bp, r.inv, r.secrets, r.progress)
    async with reader.pool() as pool:
        paused = await reader.paused(pool)
    if paused is None:
        raise canary.none_paused(r.env)
    opts = RolloutOptions(version=paused.version, break_lock=break_lock, kind=kind, paused=paused)
    return await run_rollout(r, opts, gate=gate)


async def rollback(r: Rollout, to: str | None, *, break_lock: bool = False, roles: tuple[str, ...] = (),
                   hosts: tuple[str, ...] = (), continue_on_error: bool = False,
                   gate: Awaitable[None] | None = None) -> RolloutResult:
    reader = Rollout(r.bp, r.inv, r.secrets, r.progress)
    if to is None:
        to, records = await previous_version(reader)
        if to is None:
            versions = ", ".join(rec.version for rec in records) or "none"
            raise InvalidInput("no previous successful version to roll back to",
                               hint=f"deploy history: {versions}; pass --to VERSION")
    else:
        async with reader.pool() as pool:
            records = await reader.history(pool)
    # each role back to the image it ran at that version (a pinned image may have changed since)
    r.images = {role: image for role, image in history.images_at(records, to).items() if role in r.bp.roles}
    opts = RolloutOptions(version=to, break_lock=break_lock, kind="rollback", roles=roles, hosts=hosts,
                          continue_on_error=continue_on_error)
    return await run_rollout(r, opts, gate=gate)


async def proxy_reboot(r: Rollout) -> list[str]:
    """Replace kamal-proxy on every proxy host; routes come back from its state volume."""
    done: list[str] = []
    async with r.pool() as pool:
        async def one(conn: Connection) -> None:
            await conn.run(p.reboot(r.bp.rollout.proxy_image), what="proxy reboot")
            done.append(conn.host.name)

        await pool.each(one, r.inv.proxy_hosts)
    return done


async def accessory_reboot(r: Rollout, name: str) -> RolloutResult:
    """Restart one accessory deliberately (fresh container, same data), under the deploy lock."""
    if name not in r.bp.accessories or r.inv.accessory_host(name) is None:
        raise InvalidInput(f"no accessory named {name!r}", hint="known: " + ", ".join(r.bp.accessories))
    host = r.inv.accessory_host(name)
    assert host is not None
    started = time.monotonic()
    async with r.pool() as pool:
        facts = await r.read_facts(pool, [host], None, lock=r.lock_script(
            f"accessory-{name}", False, canary=host_cmds.CANARY_IGNORE))
        try:
            outcome = await converge(r, pool, planning.build(r.context(), facts, [host], reboot=(name,), user=r.inv.ssh.user))
        finally:
            await r.unlock(pool, None)
    return RolloutResult(version="", seconds=time.monotonic() - started, accessories=outcome)


# ---- maintenance mode ---------------------------------------------------------------------------

def check_message(message: str) -> str:
    """The maintenance message: one line (the marker file holds it), at most MAINTENANCE_MAX characters."""
    if "\n" in message or "\r" in message:
        raise InvalidInput("--message must be one line", hint="kamal-proxy shows it as one paragraph")
    if len(message) > p.MAINTENANCE_MAX:
        raise InvalidInput(f"--message is {len(message)} characters long; at most {p.MAINTENANCE_MAX}")
    return message


def _maintenance_hosts(r: Rollout) -> list[Host]:
    hosts = r.inv.proxy_hosts
    if not hosts:
        raise InvalidInput(f"environment {r.env} has no proxy host: no role serves HTTP through kamal-proxy",
                           hint="maintenance mode stops kamal-proxy's routes; workers are stopped with "
                                "`csdeploy app stop`")
    return hosts


def _maintenance_script(r: Rollout, host: Host, on: bool, message: str) -> Script:
    roles = [r.bp.roles[name] for name in host.app_roles if name in r.bp.roles]
    services = [(proxy_service(r.bp.service, role.name), role.proxy.drain_timeout)
                for role in roles if role.proxy is not None]
    return (p.maintenance_on(r.bp.service, services, message) if on
            else p.maintenance_off(r.bp.service, [name for name, _ in services]))


def maintenance_plan(r: Rollout, on: bool, message: str = "") -> list[PlannedScript]:
    """`maintenance on|off --dry-run`: what each proxy host would run (no host is contacted)."""
    check_message(message)
    return [PlannedScript(h.name, f"maintenance {'on' if on else 'off'}", _maintenance_script(r, h, on, message).text())
            for h in _maintenance_hosts(r)]


async def maintenance(r: Rollout, on: bool, message: str = "") -> dict[str, dict[str, str]]:
    """Maintenance mode on (kamal-proxy answers 503 with ``message`` for every proxy role) or off,
    on every proxy host. Returns host -> proxied service -> ``on``/``off``/``none`` (not served
    there yet). A deploy meanwhile keeps it on (the marker file, see `proxy.keep_maintenance`)."""
    check_message(message)
    hosts = _maintenance_hosts(r)
    out: dict[str, dict[str, str]] = {}

    async def one(conn: Connection) -> None:
        res = await conn.run(_maintenance_script(r, conn.host, on, message), what=f"maintenance {'on' if on else 'off'}")
        out[conn.host.name] = {parts[1]: parts[2] for parts in (line.split("|") for line in res.stdout.splitlines())
                               if len(parts) == 3 and parts[0] == p.MAINTENANCE_MARK}

    async with r.pool() as pool:
        await pool.each(one, hosts)
    return out
