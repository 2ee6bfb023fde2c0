"""`csdeploy recover`: an environment whose data disks are made from another's (or its own)
snapshots, found by tags, on the memory simulator; checked with `cs`.

CloudStack behaviour relied on (apache/cloudstack: CreateVolumeCmd with snapshotid,
VolumeApiServiceImpl.allocVolume: the snapshot gives the zone and the data, it must be
BackedUp, the disk offering's size must hold it; ListSnapshotsCmd's tags filter).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from .conftest import DEMO, SSH_TIMEOUT, CloudView, cli

GB = 1024**3


def recover_args(env: str, source: str, *extra: str) -> list[str]:
    return ["recover", str(DEMO), "--env", env, "--from", source, "--skip-rollout", "--progress", "plain",
            "--ssh-timeout", str(SSH_TIMEOUT), *extra]


def volume(cloud_view: CloudView, name: str) -> dict[str, Any]:
    [vol] = [v for v in cloud_view.volumes() if v["name"] == name]
    return vol


def snap_ids(cloud_view: CloudView, env: str) -> dict[str, str]:
    """The env's manual snapshots: name -> id."""
    found = cloud_view.cs.listSnapshots(tags=[{"key": "csdeploy:env", "value": env}], listall=True)
    return {s["name"]: s["id"] for s in found.get("snapshot") or []}


@pytest.fixture
def old(home: Path, cloud_view: CloudView) -> CloudView:
    res = cli("create-env", str(DEMO), "--env", "old", "--skip-rollout", "--ssh-timeout", str(SSH_TIMEOUT))
    assert res.exit_code == 0, res.stderr
    return cloud_view


def test_recover_makes_each_disk_from_the_latest_snapshot_after_old_is_gone(old: CloudView) -> None:
    assert cli("snapshot", "--env", "old", "--no-quiesce", "--wait").exit_code == 0
    assert cli("snapshot", "--env", "old", "--no-quiesce", "--wait").exit_code == 0
    newest = max(snap_ids(old, "old").items())  # names end with their time
    assert cli("teardown", "--env", "old", "--yes").exit_code == 0
    assert old.vms() == []
    res = cli(*recover_args("new", "old"))
    assert res.exit_code == 0, res.stderr
    vol = volume(old, "new-db-1-db")
    assert vol["snapshotid"] == newest[1]  # made from the newest snapshot, not blank
    assert vol["virtualmachineid"] == old.vm("new-db-1")["id"]
    assert vol["size"] == 10 * GB
    assert f"from old's snapshot {newest[0]}" in res.stdout
    # the recovered disk has its policy like any other, and the env is an ordinary one
    assert len(old.cs.listSnapshotPolicies(volumeid=vol["id"])["snapshotpolicy"]) == 1
    plan = cli("plan", str(DEMO), "--env", "new")
    assert "nothing to do" in plan.stdout, plan.stdout


def test_recover_at_a_time_takes_the_snapshot_before_it(old: CloudView) -> None:
    assert cli("snapshot", "--env", "old", "--no-quiesce", "--wait").exit_code == 0
    [(_, first)] = snap_ids(old, "old").items()
    created = old.cs.listSnapshots(id=first)["snapshot"][0]["created"]
    import time

    time.sleep(1.1)  # CloudStack's times have whole seconds
    assert cli("snapshot", "--env", "old", "--no-quiesce", "--wait").exit_code == 0
    res = cli(*recover_args("new", "old", "--at", created.replace("+0000", "Z")))
    assert res.exit_code == 0, res.stderr
    assert volume(old, "new-db-1-db")["snapshotid"] == first


def test_recover_in_place_after_the_vms_are_lost(old: CloudView) -> None:
    """--env OLD --from OLD: the VMs are gone and so are their disks: rebuilt from the snapshots."""
    assert cli("snapshot", "--env", "old", "--no-quiesce", "--wait").exit_code == 0
    for vm in old.vms():
        old.cs.destroyVirtualMachine(id=vm["id"], expunge=True, fetch_result=True)
    for vol in old.volumes():
        old.cs.deleteVolume(id=vol["id"])
    res = cli(*recover_args("old", "old"))
    assert res.exit_code == 0, res.stderr
    assert volume(old, "old-db-1-db")["snapshotid"] == next(iter(snap_ids(old, "old").values()))
    assert sorted(v["name"] for v in old.vms() if v["state"] == "Running") == ["old-db-1", "old-web-1", "old-worker-1"]


def test_recover_in_place_keeps_a_volume_that_survived(old: CloudView) -> None:
    assert cli("snapshot", "--env", "old", "--no-quiesce", "--wait").exit_code == 0
    before = volume(old, "old-db-1-db")
    old.cs.destroyVirtualMachine(id=old.vm("old-db-1")["id"], expunge=True, fetch_result=True)
    res = cli(*recover_args("old", "old", "--json"))
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["kept"] == ["old-db-1-db"]
    after = volume(old, "old-db-1-db")
    assert after["id"] == before["id"] and after["virtualmachineid"] == old.vm("old-db-1")["id"]


def test_bad_input_creates_nothing(old: CloudView) -> None:
    res = cli(*recover_args("new", "nosuch"))
    assert res.exit_code == 2
    assert "environment 'nosuch' has no usable snapshots" in res.stderr
    assert cli("snapshot", "--env", "old", "--no-quiesce", "--wait").exit_code == 0
    early = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    res = cli(*recover_args("new", "old", "--at", early))
    assert res.exit_code == 2
    assert f"--at {early} is before the first snapshot of environment 'old'" in res.stderr
    res = cli(*recover_args("new", "old", "--at", "yesterday"))
    assert res.exit_code == 2 and "--at" in res.stderr
    res = cli(*recover_args("new", "old", "--set", "accessories.db.disk.size=5"))
    assert res.exit_code == 2 and "is 10 GB and the blueprint asks for 5 GB" in res.stderr
    assert not any(v["name"].startswith("new-") for v in old.vms())
    assert not any(n["name"] == "csdeploy-new" for n in old.networks())
    assert not any(v["name"].startswith("new-") for v in old.volumes())


def _info(name: str, role: str, created: str, taken: str | None = None, state: str = "BackedUp") -> Any:
    from cloudstack_deploy.provision.snapshots import SnapshotInfo

    return SnapshotInfo(id=name, name=name, env="old", role=role, disk=f"csd-{role}", kind="manual",
                        created=created, state=state, size=2 * GB, volume=name.split(":")[0], taken=taken)


def test_choosing_snapshots_per_disk_vm_and_time() -> None:
    """Each VM's disk from its own VM's snapshot; two taken in one second keep their order
    (csdeploy's own sub-second time); --at counts whole seconds, as CloudStack shows times;
    a disk without a snapshot is made blank; one still being taken is not used."""
    from cloudstack_deploy.blueprint import load_blueprint
    from cloudstack_deploy.provision.desired import desired_state
    from cloudstack_deploy.provision.snapshots import choose_snapshots

    bp = load_blueprint(DEMO, overrides=["roles.web.count=2", "roles.web.disk={size: 2}"])
    desired = desired_state(bp, "new")
    found = [
        _info("old-web-1-web:a", "web", "2026-12-06T03:00:00+0000", "2026-12-06T03:00:00.100000Z"),
        _info("old-web-1-web:b", "web", "2026-12-06T03:00:00+0000", "2026-12-06T03:00:00.900000Z"),
        _info("old-web-2-web:c", "web", "2026-12-06T02:00:00+0000"),
        _info("old-web-2-web:d", "web", "2026-12-06T04:00:00+0000", state="Creating"),
    ]
    picks = {r.disk: r.snapshot.id if r.snapshot else None for r in choose_snapshots(desired, "old", found)}
    assert picks == {"new-web-1-web": "old-web-1-web:b", "new-web-2-web": "old-web-2-web:c", "new-db-1-db": None}
    at = datetime(2026, 12, 6, 3, 0, 0, tzinfo=UTC)
    picks = {r.disk: r.snapshot.id if r.snapshot else None for r in choose_snapshots(desired, "old", found, at)}
    assert picks["new-web-1-web"] == "old-web-1-web:b"
    at = datetime(2026, 12, 6, 2, 30, 0, tzinfo=UTC)
    picks = {r.disk: r.snapshot.id if r.snapshot else None for r in choose_snapshots(desired, "old", found, at)}
    assert picks["new-web-1-web"] == "old-web-2-web:c"  # no snapshot of VM 1 then: the role's newest


def test_a_preview_seeded_from_another_environment_gets_its_snapshot_then_keeps_its_own_disk(old: CloudView) -> None:
    """`preview up --from-env E`: the preview's new data disk is made from E's newest snapshot; a
    second push keeps the preview's own disk (no second volume, not re-made)."""
    assert cli("snapshot", "--env", "old", "--no-quiesce", "--wait").exit_code == 0
    [(_, snap)] = snap_ids(old, "old").items()
    args = ["preview", "up", str(DEMO), "--pr", "7", "--from-env", "old", "--skip-rollout",
            "--ssh-timeout", str(SSH_TIMEOUT)]
    first = cli(*args)
    assert first.exit_code == 0, first.output
    vol = volume(old, "pr-7-db-1-db")
    assert vol["snapshotid"] == snap
    again = cli(*args)
    assert again.exit_code == 0, again.output
    assert volume(old, "pr-7-db-1-db")["id"] == vol["id"]
