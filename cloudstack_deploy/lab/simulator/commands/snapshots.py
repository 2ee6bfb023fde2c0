"""Volume snapshots and snapshot policies, as CloudStack keeps them.

Checked against CloudStack's CreateSnapshotCmd, ListSnapshotsCmd, DeleteSnapshotCmd,
CreateSnapshotPolicyCmd, UpdateSnapshotPolicyCmd, ListSnapshotPoliciesCmd,
DeleteSnapshotPoliciesCmd, VolumeApiServiceImpl.allocSnapshot, SnapshotManagerImpl
(allocSnapshot, supportedByHypervisor, createPolicy, deleteSnapshotPolicies,
listPoliciesforVolume, listSnapshots, postCreateRecurringSnapshotForPolicy),
DefaultSnapshotStrategy.deleteSnapshot, SnapshotResponse and SnapshotPolicyResponse:

- createSnapshot checks the volume in its create() phase (an answer, not a failed job): it must
  be Ready (a volume never attached is Allocated), not attached to a Destroyed/Expunging VM
  (530), and within the snapshot and secondary-storage limits (535). The snapshot is listed at
  once as ``Creating``, is ``BackingUp`` half-way through the job, then ``BackedUp``;
- its name defaults to ``<vm host name or "detached">_<volume name>_<yyyyMMddHHmmss>``;
  ``snapshottype``/``intervaltype`` are ``MANUAL``, or the policy's interval (``HOURLY``...)
  for a snapshot taken with ``policyid``, whose policy then keeps only its ``maxsnaps`` newest;
- deleteSnapshot refuses, in its job, a snapshot that is not BackedUp (or Error): "Can't delete
  snapshot X due to it is in Creating Status"; snapshots outlive their volume;
- a policy's ``intervaltype`` is the number of DateUtil.IntervalType (HOURLY 0, DAILY 1,
  WEEKLY 2, MONTHLY 3); createSnapshotPolicy for an interval the volume already has updates
  that policy (and replaces its tags); ``maxsnaps`` is 1..8 (snapshot.max.<interval>).

The simulator does not run the schedules: a policy is a record (a snapshot taken with its
``policyid`` is a recurring one). The docker backend copies the volume's data (backend.py's
``create_snapshot`` effect); createVolume with ``snapshotid`` is in storage.py.
"""

from __future__ import annotations

import re
import zoneinfo
from datetime import UTC, datetime
from functools import cache
from typing import Any

from ..clock import now_str
from ..engine import Simulator
from ..errors import ApiError, invalid_value
from ..registry import TAG_FILTER, AsyncResult, Param, Request, command, finisher
from ._common import get_or_431, like, owner, tag_filter, with_tags, zone_fields

GB = 1024**3
#: DateUtil.IntervalType, in ordinal order (the policy response's ``intervaltype`` number).
INTERVALS = ("HOURLY", "DAILY", "WEEKLY", "MONTHLY")
#: snapshot.max.hourly/daily/weekly/monthly (SnapshotManager's ConfigKeys, default 8 each).
MAX_SNAPS = 8
#: Snapshot.Type names a listSnapshots ``snapshottype`` may give (RECURRING: any interval).
SNAPSHOT_TYPES = ("MANUAL", "RECURRING", "TEMPLATE", *INTERVALS, "GROUP")
#: States in which DefaultSnapshotStrategy.deleteSnapshot lets a snapshot go.
DELETABLE = ("BackedUp", "Error", "Destroying")


def volume_text(vol: dict[str, Any]) -> str:
    """How CloudStack's messages name a volume (VolumeVO's toString: its name and uuid)."""
    return f'Volume {{"name": "{vol["name"]}", "uuid": "{vol["id"]}"}}'


def render_snapshot(sim: Simulator, snap: dict[str, Any]) -> dict[str, Any]:
    return with_tags(sim, snap) | owner(sim) | zone_fields(sim)


def _snapshot_name(sim: Simulator, vol: dict[str, Any]) -> str:
    vm = sim.get("vms", vol["virtualmachineid"]) if vol.get("virtualmachineid") else None
    host = vm["name"] if vm else "detached"
    return f"{host}_{vol['name']}_{datetime.now(UTC).strftime('%Y%m%d%H%M%S')}"


def _used_secondary_gb(sim: Simulator) -> int:
    return sum(s.get("_size", 0) for s in sim.col("snapshots").values()) // GB


# ---- snapshots -------------------------------------------------------------------------------

@command("createSnapshot", Param("volumeid", "uuid", required=True, entity="volumes"), Param("name"),
         Param("policyid", "uuid", entity="snapshot_policies"), Param("account"), Param("domainid", "uuid"),
         Param("quiescevm", "boolean"), Param("locationtype"), Param("asyncbackup", "boolean"),
         Param("tags", "map"), Param("zoneids", "list", item_type="uuid"),
         isasync=True, key="snapshot")
def create_snapshot(sim: Simulator, req: Request) -> AsyncResult:
    """Creates an instant snapshot of a volume."""
    vol = get_or_431(sim, "volumes", req.get("volumeid"), "volume")
    if vol["state"] != "Ready":
        raise invalid_value(f"{volume_text(vol)} is not in Ready state but {vol['state']}. Cannot take snapshot.")
    if req.get("locationtype") is not None:  # local primary storage is not managed storage
        raise invalid_value(f"VolumeId: {vol['id']} LocationType is supported only for managed storage")
    vm = sim.get("vms", vol["virtualmachineid"]) if vol.get("virtualmachineid") else None
    if vm is not None and vm["state"] in ("Destroyed", "Expunging"):
        raise ApiError(530, f"Creating snapshot failed due to volume:{vol['id']} is associated with "
                            f"vm:{vm.get('instancename', vm['name'])} is in {vm['state']} state")
    policy = None
    if "policyid" in req:
        policy = get_or_431(sim, "snapshot_policies", req.get("policyid"), "snapshot policy")
    sim.check_limit("snapshot", len(sim.col("snapshots")))
    sim.check_limit("secondary_storage", _used_secondary_gb(sim), vol["size"] // GB)
    kind = INTERVALS[policy["intervaltype"]] if policy else "MANUAL"
    snap = sim.add("snapshots", {
        "name": req.get("name") or _snapshot_name(sim, vol), "volumeid": vol["id"],
        "volumename": vol["name"], "volumetype": vol["type"], "snapshottype": kind, "intervaltype": kind,
        "state": "Creating", "created": now_str(), "physicalsize": vol["size"], "virtualsize": vol["size"],
        "revertable": False, "_size": vol["size"], "_diskofferingid": vol.get("diskofferingid"),
        "_policyid": policy["id"] if policy else None,
    })
    tags = [{"key": t.get("key"), "value": t.get("value", "")} for t in req.get("tags") or []]
    args = {"id": snap["id"], "tags": tags}
    return AsyncResult("snapshot_created", args, "Snapshot", snap["id"], entity_id=snap["id"],
                       effect="create_snapshot", effect_args={"id": snap["id"]},
                       midway={"col": "snapshots", "id": snap["id"], "when": {"state": "Creating"},
                               "set": {"state": "BackingUp"}})


def _fail_snapshot(sim: Simulator, id: str, tags: list[dict[str, str]] | None = None) -> None:
    sim.remove("snapshots", id)  # the manager expunges a snapshot whose creation failed


@finisher("snapshot_created", on_failure=_fail_snapshot)
def _finish_snapshot(sim: Simulator, id: str, tags: list[dict[str, str]] | None = None) -> dict[str, Any]:
    snap = sim.get("snapshots", id)
    if snap is None:
        raise ApiError(530, f"Failed to create snapshot due to an internal error creating snapshot for volume {id}")
    snap["state"] = "BackedUp"
    for t in tags or []:  # takeSnapshot tags the snapshot once it exists (TaggedResourceService)
        sim.add("tags", {"key": t["key"], "value": t["value"], "resourcetype": "Snapshot",
                         "resourceid": id, **owner(sim)})
    if snap.get("_policyid"):
        _keep_newest(sim, snap)
    return {"snapshot": render_snapshot(sim, snap)}


def _keep_newest(sim: Simulator, snap: dict[str, Any]) -> None:
    """postCreateRecurringSnapshotForPolicy: a volume keeps its policy's maxsnaps newest
    snapshots of that interval; the oldest go."""
    policy = sim.get("snapshot_policies", snap["_policyid"])
    keep = min(MAX_SNAPS, policy["maxsnaps"]) if policy else MAX_SNAPS
    same = [s for s in sim.col("snapshots").values()
            if s["volumeid"] == snap["volumeid"] and s["snapshottype"] == snap["snapshottype"]]
    while len(same) > keep and len(same) > 1:
        oldest = same.pop(0)
        sim.remove("snapshots", oldest["id"])
        sim.background_effect("delete_snapshot", {"id": oldest["id"]})


def _snapshot_type(value: str, error: str) -> str:
    """SnapshotVO.getSnapshotType: a Snapshot.Type name, in any case."""
    found = next((t for t in SNAPSHOT_TYPES if t.lower() == value.lower()), None)
    if found is None:
        raise invalid_value(f"{error} {value}")
    return found


@command("listSnapshots", Param("id", "uuid", entity="snapshots"), Param("ids", "list", item_type="uuid"),
         Param("name"), Param("volumeid", "uuid", entity="volumes"), Param("snapshottype"),
         Param("intervaltype"), Param("zoneid", "uuid", entity="zones"), Param("showunique", "boolean"),
         Param("locationtype"), TAG_FILTER, key="snapshot", listing=True)
def list_snapshots(sim: Simulator, req: Request) -> list[dict[str, Any]]:
    """Lists all available snapshots for the account (newest first)."""
    wanted = tag_filter(req)
    types: tuple[str, ...] | None = None
    if "snapshottype" in req:
        kind = _snapshot_type(req.get("snapshottype"), "Unsupported snapshot type")
        types = INTERVALS if kind == "RECURRING" else (kind,)
    elif "intervaltype" in req and "volumeid" in req:  # the interval filter needs a volume
        types = (_snapshot_type(req.get("intervaltype"), "Unsupported snapstho interval type"),)
    else:
        types = ("MANUAL", *INTERVALS)  # templates' and groups' snapshots are not listed
    ids = set(req.get("ids") or [])
    out = []
    for snap in reversed(list(sim.col("snapshots").values())):
        if "id" in req and snap["id"] != req.get("id"):
            continue
        if ids and snap["id"] not in ids:
            continue
        if "volumeid" in req and snap["volumeid"] != req.get("volumeid"):
            continue
        if "name" in req and snap["name"] != req.get("name"):
            continue
        if "keyword" in req and not like(snap["name"], req.get("keyword")):
            continue
        if "zoneid" in req and req.get("zoneid") != sim.zone["id"]:
            continue
        if snap["snapshottype"] not in types:
            continue
        if wanted and not sim.matches_tags(snap["id"], wanted):
            continue
        out.append(render_snapshot(sim, snap))
    return out


@command("deleteSnapshot", Param("id", "uuid", required=True, entity="snapshots"),
         Param("zoneid", "uuid", entity="zones"), isasync=True)
def delete_snapshot(sim: Simulator, req: Request) -> AsyncResult:
    """Deletes a snapshot of a disk volume."""
    snap = get_or_431(sim, "snapshots", req.get("id"), "snapshot")
    # the job looks at the snapshot as soon as it starts (now): remember what it saw
    return AsyncResult("snapshot_deleted", {"id": snap["id"], "seen": snap["state"]}, "Snapshot", snap["id"])


@finisher("snapshot_deleted")
def _finish_delete_snapshot(sim: Simulator, id: str, seen: str = "BackedUp") -> dict[str, Any]:
    snap = sim.get("snapshots", id)
    if snap is None:
        raise ApiError(530, f"unable to find a snapshot with id {id}")
    if seen not in DELETABLE:
        raise ApiError(530, f"Can't delete snapshot {id} due to it is in {seen} Status")
    sim.remove("snapshots", id)
    sim.background_effect("delete_snapshot", {"id": id})
    return {"success": True}


# ---- snapshot policies -----------------------------------------------------------------------

_SCHEDULE_PARTS = {"HOURLY": 1, "DAILY": 2, "WEEKLY": 3, "MONTHLY": 3}
_INT = re.compile(r"^[+-]?\d+$")


def _valid_schedule(interval: str, schedule: str) -> bool:
    """DateUtil.getNextRunTime on a non-lenient Calendar: MM[:HH[:DD]], each part in range
    (DD: day of week 1-7 for WEEKLY, day of month 1-28 for MONTHLY)."""
    parts = schedule.split(":")
    if len(parts) < _SCHEDULE_PARTS[interval] or not all(_INT.match(p) for p in parts[:_SCHEDULE_PARTS[interval]]):
        return False
    nums = [int(p) for p in parts[:_SCHEDULE_PARTS[interval]]]
    ranges = [(0, 59), (0, 23), (1, 7) if interval == "WEEKLY" else (1, 28)]
    return all(lo <= n <= hi for n, (lo, hi) in zip(nums, ranges, strict=False))


@cache
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def java_timezone(name: str) -> str:
    """TimeZone.getTimeZone(name).getID(): a known zone id, else GMT (what the policy keeps)."""
    return name if name in _zones() or name in ("GMT", "UTC") else "GMT"


def render_policy(sim: Simulator, pol: dict[str, Any]) -> dict[str, Any]:
    return with_tags(sim, pol)


@command("createSnapshotPolicy", Param("volumeid", "uuid", required=True, entity="volumes"),
         Param("intervaltype", required=True), Param("schedule", required=True),
         Param("maxsnaps", "integer", required=True), Param("timezone", required=True),
         Param("zoneids", "list", item_type="uuid"), Param("tags", "map"), Param("fordisplay", "boolean"),
         key="snapshotpolicy")
def create_snapshot_policy(sim: Simulator, req: Request) -> dict[str, Any]:
    """Creates a snapshot policy for the account."""
    vol = get_or_431(sim, "volumes", req.get("volumeid"), "volume")
    display = req.get("fordisplay", True)
    if vol["state"] != "Ready" and display:
        raise invalid_value(f"VolumeId: {vol['id']} is not in Ready state but {vol['state']}. Cannot take snapshot.")
    given = req.get("intervaltype")
    interval = next((i for i in INTERVALS if i.lower() == given.lower()), None)
    if interval is None:
        raise invalid_value(f"Unsupported interval type {given}")
    tz = java_timezone(req.get("timezone"))
    schedule = req.get("schedule")
    if not _valid_schedule(interval, schedule):
        raise invalid_value(f"{volume_text(vol)} has an invalid schedule [{schedule}] for interval type [{given}].")
    maxsnaps = req.get("maxsnaps")
    if maxsnaps <= 0:
        raise invalid_value(f"maxSnaps [{maxsnaps}] for volume {volume_text(vol)} should be greater than 0.")
    if maxsnaps > MAX_SNAPS:
        raise invalid_value(f"maxSnaps [{maxsnaps}] for volume {volume_text(vol)} exceeds limit [{MAX_SNAPS}] "
                            f"for interval type [{given}].")
    number = INTERVALS.index(interval)
    fields = {"schedule": schedule, "timezone": tz, "intervaltype": number, "maxsnaps": maxsnaps,
              "fordisplay": display}
    pol = next((p for p in sim.col("snapshot_policies").values()
                if p["volumeid"] == vol["id"] and p["intervaltype"] == number), None)
    if pol is not None:  # persistSnapshotPolicy: one policy per volume and interval
        pol.update(fields)
        for tag in sim.tags_on(pol["id"]):
            sim.forget("tags", tag["id"])
    else:
        pol = sim.add("snapshot_policies", {"volumeid": vol["id"], **fields, "zone": []})
    for t in req.get("tags") or []:
        sim.add("tags", {"key": t.get("key"), "value": t.get("value", ""), "resourcetype": "SnapshotPolicy",
                         "resourceid": pol["id"], **owner(sim)})
    return render_policy(sim, pol)


@command("updateSnapshotPolicy", Param("id", "uuid", entity="snapshot_policies"), Param("fordisplay", "boolean"),
         Param("customid"), isasync=True, key="snapshotpolicy")
def update_snapshot_policy(sim: Simulator, req: Request) -> AsyncResult:
    """Updates the snapshot policy."""
    if "id" not in req:  # getEntityOwnerId finds no policy for a null id
        raise invalid_value("Invalid Snapshot policy ID was provided")
    pol = get_or_431(sim, "snapshot_policies", req.get("id"), "snapshot policy")
    changes = {"fordisplay": req.get("fordisplay")} if "fordisplay" in req else {}
    return AsyncResult("snapshot_policy_updated", {"id": pol["id"], "changes": changes}, "Volume", pol["volumeid"])


@finisher("snapshot_policy_updated")
def _finish_update_policy(sim: Simulator, id: str, changes: dict[str, Any]) -> dict[str, Any]:
    pol = sim.get("snapshot_policies", id)
    if pol is None:
        raise ApiError(530, "Failed to update Snapshot policy")
    pol.update(changes)
    return {"snapshotpolicy": render_policy(sim, pol)}


@command("listSnapshotPolicies", Param("id", "uuid", entity="snapshot_policies"),
         Param("volumeid", "uuid", entity="volumes"), Param("fordisplay", "boolean"),
         key="snapshotpolicy", listing=True)
def list_snapshot_policies(sim: Simulator, req: Request) -> list[dict[str, Any]]:
    """Lists snapshot policies (of one volume: by volumeid, or the volume of policy ``id``)."""
    display = req.get("fordisplay", True)
    volume_id = req.get("volumeid")
    by_id: list[dict[str, Any]] = []
    if "id" in req:  # the policy (if displayed as asked) names the volume; else volumeid must
        pol = sim.get("snapshot_policies", req.get("id"))
        if pol is not None and pol.get("fordisplay", True) == display:
            by_id, volume_id = [pol], pol["volumeid"]
    if volume_id is None or not sim.exists("volumes", volume_id):
        raise invalid_value(f"Unable to find a volume with id {volume_id if volume_id else 'null'}")
    items = by_id if "id" in req else [p for p in sim.col("snapshot_policies").values()
                                       if p["volumeid"] == volume_id and p.get("fordisplay", True) == display]
    return [render_policy(sim, p) for p in items]


@command("deleteSnapshotPolicies", Param("id", "uuid", entity="snapshot_policies"),
         Param("ids", "list", item_type="uuid"), kind="success")
def delete_snapshot_policies(sim: Simulator, req: Request) -> None:
    """Deletes snapshot policies for the account."""
    if "id" not in req and "ids" not in req:
        raise invalid_value("No policy id (or list of ids) specified.")
    ids = list(req.get("ids")) if "ids" in req else [req.get("id")]
    if not ids:
        raise invalid_value("There are no policy ids")
    for pid in ids:
        pol = sim.get("snapshot_policies", pid)
        if pol is None:
            raise invalid_value(f"Policy id given: {pid} does not exist")
        if not sim.exists("volumes", pol["volumeid"]):
            raise invalid_value(f"Policy id given: {pid} does not belong to a valid volume")
    for pid in ids:
        sim.remove("snapshot_policies", pid)  # and its tags (deletePolicy)
