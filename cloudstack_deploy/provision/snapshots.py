"""An environment's data disks and their snapshots, in the cloud (no host is touched here).

Snapshots outlive their volumes, VMs and network, so they are found by their tags
(`csdeploy:env`, `csdeploy:role`, `csdeploy:disk`): `csdeploy snapshots` lists them and
`csdeploy recover` makes new disks from them after the rest of the environment is gone.
Snapshots CloudStack takes by a policy carry no tags of ours: they are found by the volumes
the environment has now (each volume's tags name its role and disk).

A snapshot is tagged as soon as CloudStack gives its id; its name (`<volume>-manual-<time>`)
finds it when a run was killed before its tags landed, and a re-run adopts a snapshot still
being taken instead of taking another.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from ..cloud import Cloud
from ..errors import InvalidInput, OperationFailed
from .actual import Actual, read_actual
from .desired import (
    TAG_BY,
    TAG_CREATED,
    TAG_DISK,
    TAG_ENV,
    TAG_EXPIRES,
    TAG_KIND,
    TAG_ROLE,
    TAG_SERVICE,
    TAG_VM,
    Desired,
    format_time,
)
from .userdata import disk_label

KIND_SNAPSHOT = "snapshot"
#: Snapshot states in which the data is not yet captured (Snapshot.State, CloudStack).
TAKING = ("Allocated", "Creating")
#: States of a snapshot that is still being made (captured, or not yet).
IN_PROGRESS = (*TAKING, "CreatedOnPrimary", "BackingUp")
USABLE = ("BackedUp",)
MANUAL_MARK = "-manual-"
GB = 1024**3


@dataclass(frozen=True)
class EnvDisk:
    """One data volume of an environment, as its tags describe it."""

    volume_id: str
    volume: str        # CloudStack volume name, `<vm>-<owner>`
    role: str          # the role or accessory the disk is for
    label: str         # its filesystem label (the disk's identity across environments)
    vm: str | None     # the VM it is attached to, by name
    size: int          # bytes
    service: str | None = None
    expires: str | None = None   # the environment's csdeploy:expires: its snapshots share it


@dataclass
class SnapshotInfo:
    id: str
    name: str
    env: str
    role: str
    disk: str          # the disk label
    kind: str          # "manual" or the policy's interval ("daily" ...)
    created: str
    state: str
    size: int
    volume: str
    by: str | None = None
    tagged: bool = True   # carries csdeploy's tags (a policy's snapshots do not, until teardown)

    taken: str | None = None   # csdeploy's own time of a manual one (sub-second: two in a second stay ordered)

    @property
    def when(self) -> datetime:
        return parse_cloud_time(self.taken or self.created)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_cloud_time(text: str) -> datetime:
    """CloudStack's `created` (``2026-12-06T03:40:00+0000``), or ours (``...Z``)."""
    for fmt in ("%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S.%fZ"):
        try:
            parsed = datetime.strptime(text, fmt)
        except (TypeError, ValueError):
            continue
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return datetime.min.replace(tzinfo=UTC)


def precise_time(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _tags(item: dict[str, Any]) -> dict[str, str]:
    return {t["key"]: t.get("value", "") for t in item.get("tags") or []}


async def env_disks(cloud: Cloud, env: str, role: str | None = None) -> list[EnvDisk]:
    """The environment's data volumes (of ``role``, a role or accessory, if given)."""
    return disks_of(await read_actual(cloud, env), role)


def disks_of(actual: Actual, role: str | None = None) -> list[EnvDisk]:
    """The data volumes ``actual`` holds (of ``role``, if given), as their tags describe them."""
    names = {vm["id"]: name for name, vm in actual.vms.items()}
    out = []
    for name, vol in sorted(actual.volumes.items()):
        tags = actual.tags.get(vol["id"], {})
        owner = tags.get(TAG_ROLE) or name.rsplit("-", 1)[-1]
        if role is not None and owner != role:
            continue
        out.append(EnvDisk(volume_id=vol["id"], volume=name, role=owner, label=tags.get(TAG_DISK) or disk_label(owner),
                           vm=names.get(vol.get("virtualmachineid", "")) or tags.get(TAG_VM), size=int(vol.get("size", 0)),
                           service=tags.get(TAG_SERVICE), expires=tags.get(TAG_EXPIRES)))
    return out


def snapshot_tags(env: str, disk: EnvDisk, by: str, created: str) -> list[dict[str, str]]:
    tags = {TAG_ENV: env, TAG_ROLE: disk.role, TAG_DISK: disk.label, TAG_KIND: KIND_SNAPSHOT, TAG_BY: by,
            TAG_CREATED: created}
    if disk.service:
        tags[TAG_SERVICE] = disk.service
    if disk.expires:
        tags[TAG_EXPIRES] = disk.expires
    return [{"key": k, "value": v} for k, v in tags.items()]


async def left_behind(cloud: Cloud, disk: EnvDisk) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """What killed runs left of ``disk``'s manual snapshots (found by name): one still being
    taken (adopted, not taken twice), and finished ones whose tags never landed."""
    found = [s for s in await cloud.list("listSnapshots", volumeid=disk.volume_id)
             if s.get("name", "").startswith(disk.volume + MANUAL_MARK)]
    taking = next((s for s in found if s.get("state") in IN_PROGRESS), None)
    untagged = [s for s in found if TAG_ENV not in _tags(s) and s is not taking]
    return taking, untagged


async def start_snapshot(cloud: Cloud, env: str, disk: EnvDisk, by: str) -> dict[str, Any]:
    """createSnapshot, tagged at once; returns ``{"id", "jobid", "name"}``."""
    now = datetime.now(UTC)
    name = f"{disk.volume}{MANUAL_MARK}{now.strftime('%Y%m%d%H%M%S%f')[:17]}"
    reply = await cloud.request("createSnapshot", volumeid=disk.volume_id, name=name)
    await cloud.job("createTags", resourceids=[reply["id"]], resourcetype="Snapshot",
                    tags=snapshot_tags(env, disk, by, precise_time(now)))
    return {"id": reply["id"], "jobid": reply.get("jobid"), "name": name}


async def adopt_snapshot(cloud: Cloud, env: str, disk: EnvDisk, snap: dict[str, Any], by: str) -> None:
    """Tag a snapshot a killed run took (if its tags did not land)."""
    if TAG_ENV not in _tags(snap):
        await cloud.job("createTags", resourceids=[snap["id"]], resourcetype="Snapshot",
                        tags=snapshot_tags(env, disk, by, format_time(datetime.now(UTC))))


async def wait_state(cloud: Cloud, snap_id: str, past: tuple[str, ...]) -> dict[str, Any]:
    """Poll the snapshot until its state is none of ``past``; raise if it failed or vanished."""
    deadline = time.monotonic() + cloud.job_timeout
    while True:
        found = await cloud.list("listSnapshots", id=snap_id)
        if not found:
            raise OperationFailed(f"snapshot {snap_id} disappeared while it was taken (CloudStack failed it)",
                                  hint="see the cloud's events; run `csdeploy snapshot` again")
        if found[0].get("state") == "Error":
            raise OperationFailed(f"snapshot {found[0].get('name', snap_id)} failed in CloudStack (state Error)",
                                  hint="see the cloud's events; run `csdeploy snapshot` again")
        if found[0].get("state") not in past:
            return found[0]
        if time.monotonic() > deadline:
            raise OperationFailed(f"snapshot {found[0].get('name', snap_id)} is still {found[0].get('state')} after "
                                  f"{cloud.job_timeout:.0f}s", hint="check it with `csdeploy snapshots`")
        await asyncio.sleep(cloud.poll_interval)


def _info(snap: dict[str, Any], env: str, disk: EnvDisk | None) -> SnapshotInfo:
    tags = _tags(snap)
    kind = str(snap.get("intervaltype") or snap.get("snapshottype") or "MANUAL").lower()
    role = tags.get(TAG_ROLE) or (disk.role if disk else "?")
    return SnapshotInfo(id=snap["id"], name=snap.get("name", ""), env=tags.get(TAG_ENV, env), role=role,
                        disk=tags.get(TAG_DISK) or (disk.label if disk else disk_label(role)), kind=kind,
                        created=snap.get("created", ""), state=snap.get("state", "?"),
                        size=int(snap.get("physicalsize") or snap.get("virtualsize") or 0),
                        volume=snap.get("volumename", ""), by=tags.get(TAG_BY), tagged=TAG_ENV in tags,
                        taken=tags.get(TAG_CREATED) if tags.get(TAG_KIND) == KIND_SNAPSHOT and tags.get(TAG_BY) else None)


async def tag_kept(cloud: Cloud, snap: SnapshotInfo) -> None:
    """Tag a policy's snapshot with its environment, role and disk before the volume that
    names them goes (teardown keeping snapshots)."""
    tags = {TAG_ENV: snap.env, TAG_ROLE: snap.role, TAG_DISK: snap.disk, TAG_KIND: KIND_SNAPSHOT}
    await cloud.job("createTags", resourceids=[snap.id], resourcetype="Snapshot",
                    tags=[{"key": k, "value": v} for k, v in tags.items()])


async def list_snapshots(cloud: Cloud, env: str, disks: list[EnvDisk] | None = None) -> list[SnapshotInfo]:
    """Every snapshot of ``env``, newest first: manual ones by their tags (even when the
    environment is gone), a policy's by the environment's volumes (``disks``: read if None)."""
    tagged, disks = await asyncio.gather(
        cloud.list("listSnapshots", tags=[{"key": TAG_ENV, "value": env}], listall=True),
        env_disks(cloud, env) if disks is None else asyncio.sleep(0, disks),
    )
    by_volume = await asyncio.gather(*(cloud.list("listSnapshots", volumeid=d.volume_id) for d in disks))
    found: dict[str, SnapshotInfo] = {s["id"]: _info(s, env, None) for s in tagged}
    for disk, snaps in zip(disks, by_volume, strict=True):
        for s in snaps:
            if s["id"] not in found and (TAG_ENV not in _tags(s) or _tags(s)[TAG_ENV] == env):
                found[s["id"]] = _info(s, env, disk)
    return sorted(found.values(), key=lambda s: (s.when, s.id), reverse=True)


async def snapshot_envs(cloud: Cloud) -> dict[str, list[SnapshotInfo]]:
    """Environments that have snapshots, by name (one call: every snapshot tagged by csdeploy)."""
    tags = await cloud.list("listTags", resourcetype="Snapshot", key=TAG_ENV)
    envs = sorted({t.get("value", "") for t in tags if t.get("value")})
    found = await asyncio.gather(*(cloud.list("listSnapshots", tags=[{"key": TAG_ENV, "value": e}], listall=True)
                                   for e in envs))
    return {e: [_info(s, e, None) for s in snaps] for e, snaps in zip(envs, found, strict=True) if snaps}


@dataclass(frozen=True)
class Restore:
    """Which snapshot each new data disk of a recovered environment is made from."""

    disk: str            # the new volume's name
    role: str
    label: str
    snapshot: SnapshotInfo | None    # None: no snapshot of that disk: made blank

    def to_dict(self) -> dict[str, Any]:
        return {"volume": self.disk, "role": self.role, "disk": self.label,
                "snapshot": self.snapshot.to_dict() if self.snapshot else None}


def _index(snap: SnapshotInfo) -> int | None:
    """The VM number of the volume a snapshot was taken of (``<env>-<group>-<n>-<owner>``)."""
    suffix = f"-{snap.role}"
    if not snap.volume.endswith(suffix):
        return None
    head = snap.volume[: -len(suffix)].rsplit("-", 1)
    return int(head[1]) if len(head) == 2 and head[1].isdigit() else None


def choose_snapshots(desired: Desired, source: str, found: list[SnapshotInfo],
                     at: datetime | None = None) -> list[Restore]:
    """For each data disk ``desired`` wants, the newest usable snapshot of ``source``'s disk of
    the same role and label (and VM number, when the role has several), taken at or before
    ``at``. InvalidInput (nothing created) when there is nothing to recover from."""
    usable = [s for s in found if s.state in USABLE]
    if not usable:
        raise InvalidInput(f"environment '{source}' has no usable snapshots"
                           + (f" ({len(found)} still being taken)" if found else ""),
                           hint=f"take one with `csdeploy snapshot --env {source} --wait`; "
                                f"`csdeploy snapshots --env {source}` lists what there is")
    if at is not None:  # to the second, as CloudStack shows a snapshot's time
        first = min(s.when for s in usable).replace(microsecond=0)
        if at < first:
            raise InvalidInput(f"--at {format_time(at)} is before the first snapshot of environment '{source}' "
                               f"({format_time(first)})", hint=f"see `csdeploy snapshots --env {source}`")
        usable = [s for s in usable if s.when.replace(microsecond=0) <= at]
    out = []
    for vm in desired.vms:
        for disk in vm.disks:
            mine = [s for s in usable if s.role == disk.owner and s.disk == disk.label]
            same_vm = [s for s in mine if _index(s) == vm.index]
            pick = max(same_vm or mine, key=lambda s: (s.when, s.id), default=None)
            if pick is not None and pick.size > disk.size_gb * GB:
                raise InvalidInput(f"snapshot {pick.name} of {disk.owner}'s disk is {pick.size // GB} GB and the "
                                   f"blueprint asks for {disk.size_gb} GB: a disk cannot be smaller than its data",
                                   hint=f"set the disk's size to at least {pick.size // GB} GB (--set ...disk.size=N)")
            out.append(Restore(disk.name, disk.owner, disk.label, pick))
    if not any(r.snapshot for r in out):
        raise InvalidInput(f"none of environment '{source}''s snapshots is of a disk this blueprint has "
                           f"(roles/disks: {', '.join(sorted({f'{s.role}/{s.disk}' for s in usable})) or 'none'})",
                           hint="recover with the blueprint the environment was made from")
    return out
