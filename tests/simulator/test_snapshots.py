"""Volume snapshots and snapshot policies, as CloudStack has them (memory backend).

Each test names the CloudStack classes its behaviour was checked against (apache/cloudstack:
CreateSnapshotCmd, ListSnapshotsCmd, DeleteSnapshotCmd, CreateSnapshotPolicyCmd,
UpdateSnapshotPolicyCmd, ListSnapshotPoliciesCmd, DeleteSnapshotPoliciesCmd,
VolumeApiServiceImpl, SnapshotManagerImpl, DefaultSnapshotStrategy, SnapshotResponse,
SnapshotPolicyResponse, ResourceTag.ResourceObjectType).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from cs import CloudStack
from libcloud.compute.providers import get_driver
from libcloud.compute.types import Provider

from cloudstack_deploy.lab.simulator.server import ThreadedSimulator

from .cloudkit import Catalog, catalog, deploy, http_error, network, wait_job
from .conftest import KEY, SECRET, make_config, public_range
from .test_persistence import _client

GB = 1024**3


def _vm_with_disk(cs: CloudStack, disk: str = "Small") -> tuple[Catalog, dict[str, Any], dict[str, Any]]:
    """A running VM and a data volume attached to it (Ready)."""
    cat = catalog(cs)
    vm = deploy(cs, cat, network(cs, cat), "web-1")
    vol = cs.createVolume(name="data-1", diskofferingid=cat.disks[disk], zoneid=cat.zone,
                          virtualmachineid=vm["id"])["volume"]
    return cat, vm, vol


def _names(listing: dict[str, Any], key: str = "snapshot") -> list[str]:
    return [s["name"] for s in listing.get(key, [])]


# ---- createSnapshot ------------------------------------------------------------------------------
@pytest.mark.simulator(job_seconds=1.0)
def test_a_snapshot_is_listed_while_it_is_taken_then_backed_up(cs: CloudStack, cs_raw: CloudStack) -> None:
    """CreateSnapshotCmd (BaseAsyncCreateCmd): the snapshot exists, Creating, as soon as the call
    answers (allocSnapshot in create()); the job ends with it BackedUp. SnapshotResponse's fields:
    MANUAL type and interval, the volume's id, name and type, sizes, zone; the default name is
    SnapshotManagerImpl.allocSnapshot's <vm host name>_<volume name>_<yyyyMMddHHmmss>."""
    _, vm, vol = _vm_with_disk(cs)
    started = cs_raw.createSnapshot(volumeid=vol["id"])
    early = cs.listSnapshots(id=started["id"])["snapshot"][0]
    assert early["state"] in ("Creating", "BackingUp")
    job = wait_job(cs_raw, started["jobid"], timeout=15)
    assert job["jobstatus"] == 1 and job["jobinstancetype"] == "Snapshot"
    snap = job["jobresult"]["snapshot"]
    assert snap["state"] == "BackedUp" and snap["id"] == started["id"]
    assert re.fullmatch(r"web-1_data-1_\d{14}", snap["name"]), snap["name"]
    assert (snap["snapshottype"], snap["intervaltype"]) == ("MANUAL", "MANUAL")
    assert (snap["volumeid"], snap["volumename"], snap["volumetype"]) == (vol["id"], "data-1", "DATADISK")
    assert snap["physicalsize"] == snap["virtualsize"] == vol["size"]
    assert snap["zoneid"] == catalog(cs).zone and snap["created"] and snap["account"]
    assert cs.listSnapshots(id=snap["id"])["snapshot"][0]["state"] == "BackedUp"


def test_only_a_ready_volume_can_be_snapshotted(cs: CloudStack) -> None:
    """VolumeApiServiceImpl.allocSnapshot: a volume never attached is Allocated, and "is not in
    Ready state but Allocated. Cannot take snapshot." (431, before any job); a volume of a
    Destroyed VM is refused by SnapshotManagerImpl.supportedByHypervisor (530); an unknown
    volume id is the parameter's 431."""
    cat = catalog(cs)
    loose = cs.createVolume(name="loose", diskofferingid=cat.disks["Small"], zoneid=cat.zone)["volume"]
    text = http_error(431, cs.createSnapshot, volumeid=loose["id"])
    assert "is not in Ready state but Allocated. Cannot take snapshot." in text
    vm = deploy(cs, cat, network(cs, cat), "doomed")
    root = cs.listVolumes(virtualmachineid=vm["id"], type="ROOT")["volume"][0]
    cs.destroyVirtualMachine(id=vm["id"])
    text = http_error(530, cs.createSnapshot, volumeid=root["id"])
    assert text.startswith("Creating snapshot failed due to volume:") and "is in Destroyed state" in text
    assert "volumeid" in http_error(431, cs.createSnapshot, volumeid="3f7e0e1c-0000-4000-8000-000000000000")
    assert cs.listSnapshots() == {}


@pytest.mark.simulator(limits={"snapshot": 1})
def test_the_snapshot_limit_is_535(cs: CloudStack) -> None:
    """ResourceLimitManager via SnapshotManagerImpl.allocSnapshot: ResourceType.snapshot."""
    _, _, vol = _vm_with_disk(cs)
    cs.createSnapshot(volumeid=vol["id"], name="one")
    text = http_error(535, cs.createSnapshot, volumeid=vol["id"], name="two")
    assert "Maximum number of resources of type 'snapshot'" in text
    assert _names(cs.listSnapshots()) == ["one"]


@pytest.mark.simulator(limits={"secondary_storage": 1})
def test_the_secondary_storage_limit_counts_the_volume_size(cs: CloudStack) -> None:
    """SnapshotManagerImpl.allocSnapshot checks ResourceType.secondary_storage for the volume's
    size (GB here): a 5 GB volume does not fit in 1 GB."""
    _, _, vol = _vm_with_disk(cs)
    assert vol["size"] > GB
    text = http_error(535, cs.createSnapshot, volumeid=vol["id"])
    assert "Maximum number of resources of type 'secondary_storage'" in text
    assert cs.listSnapshots() == {}


def test_snapshot_tags_come_with_it_and_filter_lists(cs: CloudStack) -> None:
    """CreateSnapshotCmd.tags are the snapshot's tags (resource type Snapshot); createTags on a
    Snapshot works (ResourceObjectType.Snapshot supports tags); listSnapshots' tags filter
    matches any pair, case-insensitively as MySQL's default collation compares."""
    _, _, vol = _vm_with_disk(cs)
    a = cs.createSnapshot(volumeid=vol["id"], name="a", tags=[{"key": "Purpose", "value": "Backup"}])["snapshot"]
    b = cs.createSnapshot(volumeid=vol["id"], name="b")["snapshot"]
    assert [(t["key"], t["resourcetype"]) for t in a["tags"]] == [("Purpose", "Snapshot")]
    assert [t["value"] for t in cs.listSnapshots(id=a["id"])["snapshot"][0]["tags"]] == ["Backup"]
    cs.createTags(resourcetype="Snapshot", resourceids=b["id"], tags=[{"key": "purpose", "value": "test"}])
    assert _names(cs.listSnapshots(tags=[{"key": "purpose", "value": "backup"}])) == ["a"]
    assert _names(cs.listSnapshots(tags=[{"key": "PURPOSE", "value": "TEST"}])) == ["b"]
    tags = cs.listTags(resourcetype="Snapshot")["tag"]
    assert sorted((t["resourceid"], t["key"]) for t in tags) == sorted([(a["id"], "Purpose"), (b["id"], "purpose")])


# ---- listSnapshots -------------------------------------------------------------------------------
def test_list_snapshots_filters(cs: CloudStack) -> None:
    """ListSnapshotsCmd / SnapshotManagerImpl.listSnapshots: id, ids, volumeid, name (exact),
    keyword (substring), snapshottype (MANUAL, RECURRING = any interval; another word is
    "Unsupported snapshot type"), intervaltype only with volumeid; newest first."""
    cat, vm, vol = _vm_with_disk(cs)
    root = cs.listVolumes(virtualmachineid=vm["id"], type="ROOT")["volume"][0]
    first = cs.createSnapshot(volumeid=vol["id"], name="nightly-1")["snapshot"]
    time.sleep(1.05)  # created has one-second resolution
    second = cs.createSnapshot(volumeid=root["id"], name="nightly-2")["snapshot"]
    assert _names(cs.listSnapshots()) == ["nightly-2", "nightly-1"]
    assert _names(cs.listSnapshots(id=first["id"])) == ["nightly-1"]
    assert _names(cs.listSnapshots(ids=f"{first['id']},{second['id']}")) == ["nightly-2", "nightly-1"]
    assert _names(cs.listSnapshots(volumeid=root["id"])) == ["nightly-2"]
    assert cs.listSnapshots(name="nightly") == {}
    assert _names(cs.listSnapshots(keyword="NIGHTLY-1")) == ["nightly-1"]
    assert len(cs.listSnapshots(snapshottype="manual")["snapshot"]) == 2
    assert cs.listSnapshots(snapshottype="RECURRING") == {}
    assert http_error(431, cs.listSnapshots, snapshottype="sometimes") == "Unsupported snapshot type sometimes"
    assert cs.listSnapshots(volumeid=vol["id"], intervaltype="DAILY") == {}
    assert len(cs.listSnapshots(intervaltype="DAILY")["snapshot"]) == 2  # ignored without volumeid
    assert _names(cs.listSnapshots(zoneid=cat.zone, volumeid=vol["id"])) == ["nightly-1"]


# ---- deleteSnapshot ------------------------------------------------------------------------------
@pytest.mark.simulator(job_seconds=1.0)
def test_a_snapshot_being_taken_cannot_be_deleted(cs: CloudStack, cs_raw: CloudStack) -> None:
    """DefaultSnapshotStrategy.deleteSnapshot: only a BackedUp (or Error) snapshot goes; the
    delete job of one still Creating fails (530) "Can't delete snapshot X due to it is in
    Creating Status", and the snapshot stays."""
    _, _, vol = _vm_with_disk(cs)
    started = cs_raw.createSnapshot(volumeid=vol["id"])
    deleting = cs_raw.deleteSnapshot(id=started["id"])
    job = wait_job(cs_raw, deleting["jobid"], timeout=15)
    assert job["jobstatus"] == 2 and job["jobresultcode"] == 530
    assert job["jobresult"]["errortext"] == f"Can't delete snapshot {started['id']} due to it is in Creating Status"
    assert wait_job(cs_raw, started["jobid"], timeout=15)["jobstatus"] == 1
    assert cs.listSnapshots(id=started["id"])["snapshot"][0]["state"] == "BackedUp"
    assert cs.deleteSnapshot(id=started["id"])["success"] is True
    assert cs.listSnapshots() == {}
    assert "id" in http_error(431, cs.deleteSnapshot, id=started["id"])


# ---- createVolume from a snapshot ----------------------------------------------------------------
def test_a_volume_from_a_snapshot_outlives_the_original(cs: CloudStack) -> None:
    """VolumeApiServiceImpl.allocVolume with snapshotid: the snapshot's size and disk offering,
    its zone (no zoneid needed); a snapshot outlives its volume (it is on secondary storage);
    a disk offering given with it must hold the snapshot."""
    cat, vm, vol = _vm_with_disk(cs, "Medium")
    snap = cs.createSnapshot(volumeid=vol["id"], name="before-upgrade")["snapshot"]
    cs.detachVolume(id=vol["id"])
    cs.deleteVolume(id=vol["id"])
    assert _names(cs.listSnapshots()) == ["before-upgrade"]
    restored = cs.createVolume(name="restored", snapshotid=snap["id"])["volume"]
    assert restored["size"] == vol["size"] and restored["diskofferingid"] == vol["diskofferingid"]
    assert restored["zoneid"] == cat.zone and restored["snapshotid"] == snap["id"]
    cs.attachVolume(id=restored["id"], virtualmachineid=vm["id"])
    assert cs.listVolumes(id=restored["id"])["volume"][0]["virtualmachineid"] == vm["id"]
    text = http_error(431, cs.createVolume, name="small", snapshotid=snap["id"], diskofferingid=cat.disks["Small"])
    assert text.startswith("Invalid size for volume creation")


@pytest.mark.simulator(job_seconds=1.0)
def test_a_volume_needs_a_backed_up_snapshot(cs: CloudStack, cs_raw: CloudStack) -> None:
    """VolumeApiServiceImpl.allocVolume: "Snapshot id=X is not in BackedUp state yet and can't
    be used for volume creation"."""
    _, _, vol = _vm_with_disk(cs)
    started = cs_raw.createSnapshot(volumeid=vol["id"])
    text = http_error(431, cs.createVolume, name="too-early", snapshotid=started["id"])
    assert text == f"Snapshot id={started['id']} is not in BackedUp state yet and can't be used for volume creation"
    wait_job(cs_raw, started["jobid"], timeout=15)


# ---- snapshot policies ---------------------------------------------------------------------------
def test_a_policy_is_kept_as_cloudstack_returns_it(cs: CloudStack) -> None:
    """SnapshotPolicyResponse: intervaltype is DateUtil.IntervalType's ordinal (a number: DAILY
    is 1), schedule, maxsnaps, timezone, fordisplay, tags; SnapshotManagerImpl.persistSnapshotPolicy:
    a second policy for the same interval updates the first and replaces its tags."""
    _, _, vol = _vm_with_disk(cs)
    pol = cs.createSnapshotPolicy(volumeid=vol["id"], intervaltype="daily", schedule="30:02", maxsnaps=3,
                                  timezone="Europe/Berlin", tags=[{"key": "tier", "value": "gold"}])["snapshotpolicy"]
    assert (pol["intervaltype"], pol["schedule"], pol["maxsnaps"], pol["timezone"]) == (1, "30:02", 3, "Europe/Berlin")
    assert pol["volumeid"] == vol["id"] and pol["fordisplay"] is True
    assert [(t["key"], t["value"], t["resourcetype"]) for t in pol["tags"]] == [("tier", "gold", "SnapshotPolicy")]
    again = cs.createSnapshotPolicy(volumeid=vol["id"], intervaltype="DAILY", schedule="00:04", maxsnaps=5,
                                    timezone="UTC", tags=[{"key": "tier", "value": "silver"}])["snapshotpolicy"]
    assert again["id"] == pol["id"] and (again["schedule"], again["maxsnaps"]) == ("00:04", 5)
    assert [t["value"] for t in again["tags"]] == ["silver"]
    weekly = cs.createSnapshotPolicy(volumeid=vol["id"], intervaltype="WEEKLY", schedule="00:04:7", maxsnaps=2,
                                     timezone="No/Such_Zone")["snapshotpolicy"]
    assert weekly["intervaltype"] == 2 and weekly["timezone"] == "GMT"  # TimeZone.getTimeZone's fallback
    listed = cs.listSnapshotPolicies(volumeid=vol["id"])
    assert listed["count"] == 2 and {p["id"] for p in listed["snapshotpolicy"]} == {pol["id"], weekly["id"]}
    assert [p["id"] for p in cs.listSnapshotPolicies(id=weekly["id"])["snapshotpolicy"]] == [weekly["id"]]
    cs.createTags(resourcetype="SnapshotPolicy", resourceids=weekly["id"], tags=[{"key": "owner", "value": "ops"}])
    assert {t["resourceid"] for t in cs.listTags(resourcetype="SnapshotPolicy")["tag"]} == {pol["id"], weekly["id"]}


@pytest.mark.parametrize(("params", "text"), [
    ({"intervaltype": "YEARLY"}, "Unsupported interval type YEARLY"),
    ({"schedule": "61:02"}, "has an invalid schedule [61:02] for interval type [DAILY]."),
    ({"schedule": "30"}, "has an invalid schedule [30] for interval type [DAILY]."),
    ({"intervaltype": "MONTHLY", "schedule": "00:01:29"}, "has an invalid schedule [00:01:29] for interval type "
                                                          "[MONTHLY]."),
    ({"maxsnaps": 0}, "should be greater than 0."),
    ({"maxsnaps": 9}, "exceeds limit [8] for interval type [DAILY]."),
])
def test_bad_policies_are_431(cs: CloudStack, params: dict[str, Any], text: str) -> None:
    """SnapshotManagerImpl.createPolicy's checks: the interval, DateUtil.getNextRunTime's
    schedule (MM:HH for DAILY, MM:HH:DD with day 1-28 for MONTHLY), maxsnaps 1..snapshot.max.*."""
    _, _, vol = _vm_with_disk(cs)
    args = {"volumeid": vol["id"], "intervaltype": "DAILY", "schedule": "00:01", "maxsnaps": 1, "timezone": "UTC"}
    assert text in http_error(431, cs.createSnapshotPolicy, **(args | params))
    assert cs.listSnapshotPolicies(volumeid=vol["id"]) == {}


def test_a_policy_needs_a_ready_volume_and_lists_need_one(cs: CloudStack) -> None:
    """createPolicy: "VolumeId: X is not in Ready state but Allocated" for a volume never
    attached; listPoliciesforVolume without volumeid or id: "Unable to find a volume with id null"."""
    cat = catalog(cs)
    loose = cs.createVolume(name="loose", diskofferingid=cat.disks["Small"], zoneid=cat.zone)["volume"]
    text = http_error(431, cs.createSnapshotPolicy, volumeid=loose["id"], intervaltype="HOURLY", schedule="5",
                      maxsnaps=1, timezone="UTC")
    assert text == f"VolumeId: {loose['id']} is not in Ready state but Allocated. Cannot take snapshot."
    assert http_error(431, cs.listSnapshotPolicies) == "Unable to find a volume with id null"


def test_policies_are_updated_hidden_and_deleted(cs: CloudStack) -> None:
    """UpdateSnapshotPolicyCmd (async): fordisplay; ListSnapshotPoliciesCmd lists displayed
    policies unless fordisplay=false; DeleteSnapshotPoliciesCmd: id or ids ("No policy id (or
    list of ids) specified." without), the policy's tags go with it; deleting the volume
    deletes its policies (deletePoliciesForVolume)."""
    _, _, vol = _vm_with_disk(cs)
    hourly = cs.createSnapshotPolicy(volumeid=vol["id"], intervaltype="HOURLY", schedule="15", maxsnaps=8,
                                     timezone="UTC", tags=[{"key": "k", "value": "v"}])["snapshotpolicy"]
    daily = cs.createSnapshotPolicy(volumeid=vol["id"], intervaltype="DAILY", schedule="15:01", maxsnaps=1,
                                    timezone="UTC")["snapshotpolicy"]
    updated = cs.updateSnapshotPolicy(id=hourly["id"], fordisplay=False)["snapshotpolicy"]
    assert updated["fordisplay"] is False
    assert [p["id"] for p in cs.listSnapshotPolicies(volumeid=vol["id"])["snapshotpolicy"]] == [daily["id"]]
    hidden = cs.listSnapshotPolicies(volumeid=vol["id"], fordisplay=False)["snapshotpolicy"]
    assert [p["id"] for p in hidden] == [hourly["id"]]
    # by id alone, a hidden policy names no volume (listPoliciesforVolume): "with id null"
    assert http_error(431, cs.listSnapshotPolicies, id=hourly["id"]) == "Unable to find a volume with id null"
    assert cs.listSnapshotPolicies(id=hourly["id"], volumeid=vol["id"]) == {}
    assert http_error(431, cs.deleteSnapshotPolicies) == "No policy id (or list of ids) specified."
    assert cs.deleteSnapshotPolicies(ids=hourly["id"])["success"] is True
    assert cs.listTags(resourcetype="SnapshotPolicy") == {}
    cs.detachVolume(id=vol["id"])
    cs.deleteVolume(id=vol["id"])
    assert "id" in http_error(431, cs.deleteSnapshotPolicies, id=daily["id"])


def test_a_policys_snapshots_are_recurring_and_kept_to_maxsnaps(cs: CloudStack) -> None:
    """CreateSnapshotCmd.policyid: the snapshot's type is the policy's interval (DAILY), listed
    by snapshottype=RECURRING; SnapshotManagerImpl.postCreateRecurringSnapshotForPolicy keeps
    the policy's maxsnaps newest of that interval, manual snapshots aside."""
    _, _, vol = _vm_with_disk(cs)
    pol = cs.createSnapshotPolicy(volumeid=vol["id"], intervaltype="DAILY", schedule="00:01", maxsnaps=2,
                                  timezone="UTC")["snapshotpolicy"]
    cs.createSnapshot(volumeid=vol["id"], name="manual")
    for i in range(3):
        snap = cs.createSnapshot(volumeid=vol["id"], policyid=pol["id"], name=f"daily-{i}")["snapshot"]
        assert (snap["snapshottype"], snap["intervaltype"]) == ("DAILY", "DAILY")
    assert sorted(_names(cs.listSnapshots(snapshottype="RECURRING"))) == ["daily-1", "daily-2"]
    assert sorted(_names(cs.listSnapshots(volumeid=vol["id"], intervaltype="daily"))) == ["daily-1", "daily-2"]
    assert _names(cs.listSnapshots(snapshottype="MANUAL")) == ["manual"]


# ---- persistence ---------------------------------------------------------------------------------
def test_snapshots_and_policies_survive_a_restart(tmp_path: Path) -> None:
    """--state: snapshots, policies and their tags are records like the others (store.py)."""
    state, rng = tmp_path / "state.json", public_range()
    with ThreadedSimulator(make_config(state_file=str(state), public_range=rng)) as sim:
        cs = _client(sim)
        _, _, vol = _vm_with_disk(cs)
        snap = cs.createSnapshot(volumeid=vol["id"], name="keep", tags=[{"key": "a", "value": "b"}])["snapshot"]
        pol = cs.createSnapshotPolicy(volumeid=vol["id"], intervaltype="WEEKLY", schedule="00:03:1", maxsnaps=4,
                                      timezone="UTC", tags=[{"key": "c", "value": "d"}])["snapshotpolicy"]
        before = (cs.listSnapshots(), cs.listSnapshotPolicies(volumeid=vol["id"]))
    with ThreadedSimulator(make_config(state_file=str(state), public_range=rng)) as sim:
        cs = _client(sim)
        assert (cs.listSnapshots(), cs.listSnapshotPolicies(volumeid=vol["id"])) == before
        assert cs.listSnapshots(id=snap["id"])["snapshot"][0]["tags"][0]["value"] == "b"
        assert cs.listSnapshotPolicies(id=pol["id"])["snapshotpolicy"][0]["tags"][0]["value"] == "d"
        assert cs.createVolume(name="back", snapshotid=snap["id"])["volume"]["size"] == vol["size"]


# ---- another client --------------------------------------------------------------------------------
def test_libcloud_snapshots_a_volume_and_deletes_it(simulator: ThreadedSimulator, cs: CloudStack) -> None:
    """apache-libcloud's CloudStack driver (create_volume_snapshot, list_snapshots,
    destroy_volume_snapshot) reads the snapshot as CloudStack's SnapshotResponse gives it."""
    _, _, vol = _vm_with_disk(cs)
    url = urlparse(simulator.endpoint)
    driver = get_driver(Provider.CLOUDSTACK)(KEY, SECRET, host=url.hostname, port=url.port, path=url.path,
                                             secure=False)
    driver.connection.poll_interval = 0.02
    [volume] = [v for v in driver.list_volumes() if v.id == vol["id"]]
    snap = driver.create_volume_snapshot(volume)
    assert snap.extra["volume_id"] == vol["id"] and snap.extra["name"].startswith("web-1_data-1_")
    assert [s.id for s in driver.list_snapshots()] == [snap.id]
    assert driver.destroy_volume_snapshot(snap) is True
    assert cs.listSnapshots() == {}
