"""`csdeploy snapshot`: a snapshot of every data disk of an environment, made consistent on its
host first when it can be.

The cloud side (which disks, taking, tagging, waiting) is `provision.snapshots`; this module
adds the host side around it: for a PostgreSQL accessory a `CHECKPOINT`, then the disk's
filesystem frozen while CloudStack captures it and thawed right after (in a ``finally``; a
watchdog on the host thaws it too if csdeploy dies). Whatever could not be done is said, per
disk, in the result: nothing is skipped silently. `quiesce=False` touches no host (the host
may be down): a crash-consistent snapshot, like pulling the power.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from .accessories import kind_of
from .cloud import Cloud
from .errors import CsdeployError, InvalidInput
from .inventory import Host
from .progress import Event, Progress
from .provision.snapshots import (
    IN_PROGRESS,
    TAKING,
    EnvDisk,
    adopt_snapshot,
    env_disks,
    left_behind,
    start_snapshot,
    wait_state,
)
from .rollout.commands import snapshot as cmd
from .rollout.contract import accessory_container

#: How long a disk may stay frozen at most: the host's watchdog thaws it after that.
FREEZE_GUARD_SECONDS = 120

CRASH = "crash-consistent"
FROZEN = "filesystem frozen"
APP = "PostgreSQL checkpoint + filesystem frozen"


@dataclass
class DiskSnapshot:
    disk: EnvDisk
    snapshot_id: str = ""
    name: str = ""
    state: str = ""
    consistency: str = CRASH
    notes: list[str] = field(default_factory=list)
    adopted: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"volume": self.disk.volume, "role": self.disk.role, "disk": self.disk.label, "vm": self.disk.vm,
                "snapshot": self.snapshot_id, "name": self.name, "state": self.state,
                "consistency": self.consistency, "notes": self.notes, "adopted": self.adopted}


@dataclass
class SnapshotResult:
    env: str
    items: list[DiskSnapshot] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"env": self.env, "snapshots": [i.to_dict() for i in self.items]}


class Quiescer(Protocol):
    def around(self, disk: EnvDisk, item: DiskSnapshot) -> contextlib.AbstractAsyncContextManager[None]: ...


class NoQuiesce:
    """`--no-quiesce`: no host is touched."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    @contextlib.asynccontextmanager
    async def around(self, disk: EnvDisk, item: DiskSnapshot) -> AsyncIterator[None]:
        item.notes.append(self.reason)
        yield


class HostQuiesce:
    """Checkpoint and freeze on the disk's host, over SSH (``pool``: a `rollout.hosts.Hosts`)."""

    def __init__(self, pool: Any, hosts: list[Host], accessories: dict[str, tuple[str, str, str, str]]) -> None:
        self.pool = pool
        self.hosts = hosts
        #: accessory name -> (image, PostgreSQL user, database, service): see `postgres_settings`
        self.accessories = accessories

    def _where(self, disk: EnvDisk) -> tuple[Host, str] | None:
        for h in self.hosts:
            for hd in h.disks:
                if hd.name == disk.volume:
                    return h, hd.mount
        return None

    @contextlib.asynccontextmanager
    async def around(self, disk: EnvDisk, item: DiskSnapshot) -> AsyncIterator[None]:
        where = self._where(disk)
        if where is None:
            item.notes.append(f"not quiesced: the inventory has no host with {disk.volume} (crash-consistent)")
            yield
            return
        host, mount = where
        try:
            conn = await self.pool.connect(host)
        except CsdeployError as exc:
            item.notes.append(f"not quiesced: {str(exc).splitlines()[0]} (crash-consistent)")
            yield
            return
        checkpointed = False
        acc = self.accessories.get(disk.role)
        if acc is not None and (kind := kind_of(acc[0])) is not None and kind.name == "postgres":
            container = accessory_container(acc[3], disk.role)
            checkpointed, why = await _run(conn, cmd.postgres_checkpoint(container, acc[1], acc[2]), "checkpoint")
            if not checkpointed:
                item.notes.append(f"PostgreSQL CHECKPOINT skipped: {why}")
        frozen, why = await _run(conn, cmd.freeze(mount, FREEZE_GUARD_SECONDS), "freeze")
        if not frozen:
            item.notes.append(f"fsfreeze of {mount} on {host.name} skipped: {why}")
        item.consistency = APP if checkpointed and frozen else FROZEN if frozen else CRASH
        try:
            yield
        finally:
            # thawed even when the freeze seemed to fail: it may have frozen before its answer was lost
            thawed, _ = await _run(conn, cmd.unfreeze(mount), "unfreeze")
            if frozen and not thawed:
                item.notes.append(f"could not thaw {mount} on {host.name}: its watchdog thaws it within "
                                  f"{FREEZE_GUARD_SECONDS}s")


async def _run(conn: Any, script: Any, what: str) -> tuple[bool, str]:
    """Run a quiescing step; (succeeded, why not) — a failure is reported, never raised."""
    try:
        res = await conn.run(script, check=False, what=what, timeout=120)
    except (CsdeployError, OSError) as exc:
        return False, str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if res.exit_status == 0:
        return True, ""
    lines = (res.stderr or res.stdout or "").strip().splitlines()
    return False, lines[-1] if lines else f"exit {res.exit_status}"


async def take_snapshots(cloud: Cloud, env: str, quiescer: Quiescer, progress: Progress, *, by: str,
                         role: str | None = None, wait: bool = False) -> SnapshotResult:
    """Snapshot every data disk of ``env`` (of ``role``): each disk at once, in parallel."""
    disks = await env_disks(cloud, env, role)
    if not disks:
        what = f"role or accessory '{role}' of environment '{env}'" if role else f"environment '{env}'"
        raise InvalidInput(f"{what} has no data disks in the cloud: nothing to snapshot",
                           hint="check the names with `csdeploy envs` and the blueprint's `disk:` sections")
    result = SnapshotResult(env)

    async def one(disk: EnvDisk) -> DiskSnapshot:
        item = DiskSnapshot(disk)
        resource = f"snapshot {disk.volume}"
        progress.emit(Event(resource=resource, action="create", status="running", env=env))
        prior, strays = await left_behind(cloud, disk)
        for stray in strays:  # finished, but the run that took it died before tagging it
            await adopt_snapshot(cloud, env, disk, stray, by)
            item.notes.append(f"tagged {stray.get('name')}, taken by an interrupted run")
        if prior is not None:  # a killed run's snapshot: finish that one, take no second
            await adopt_snapshot(cloud, env, disk, prior, by)
            item.snapshot_id, item.name, item.adopted = prior["id"], prior.get("name", ""), True
            item.notes.append("an interrupted run was taking this snapshot: adopted, not taken again "
                              "(its consistency is that run's)")
            async with quiescer.around(disk, item):
                pass  # thaws a disk that run left frozen
            item.consistency = "as the interrupted run left it"
        else:
            async with quiescer.around(disk, item):
                started = await start_snapshot(cloud, env, disk, by)
                item.snapshot_id, item.name = started["id"], started["name"]
                await wait_state(cloud, item.snapshot_id, TAKING)  # captured: the disk may thaw
        snap = await wait_state(cloud, item.snapshot_id, IN_PROGRESS if wait else TAKING)
        item.state = snap.get("state", "?")
        progress.emit(Event(resource=resource, action="create", status="done", env=env,
                            detail=f"{item.name} {item.state} ({item.consistency})"))
        return item

    outcomes = await asyncio.gather(*(one(disk) for disk in disks), return_exceptions=True)
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    result.items = [o for o in outcomes if isinstance(o, DiskSnapshot)]
    if errors:
        if len(errors) == 1 and not result.items:
            raise errors[0]
        raise CsdeployError("; ".join(str(e).splitlines()[0] for e in errors),
                            hint="run `csdeploy snapshot` again: a snapshot still being taken is adopted")
    return result


def postgres_settings(bp: Any) -> dict[str, tuple[str, str, str, str]]:
    """Each accessory's (image, PostgreSQL user, database, service) from the blueprint."""
    out = {}
    for acc in bp.accessories.values():
        user = acc.env.clear.get("POSTGRES_USER", "postgres")
        out[acc.name] = (acc.image, user, acc.env.clear.get("POSTGRES_DB", user), bp.service)
    return out


__all__ = ["DiskSnapshot", "HostQuiesce", "NoQuiesce", "SnapshotResult", "postgres_settings", "take_snapshots"]
