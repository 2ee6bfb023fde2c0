"""`csdeploy snapshot`, `snapshots` and teardown keeping (or deleting) them, on the memory
simulator, checked with `cs`.

CloudStack behaviour relied on (apache/cloudstack: CreateSnapshotCmd, ListSnapshotsCmd with
its `tags` filter, DeleteSnapshotCmd, SnapshotManagerImpl, DefaultSnapshotStrategy,
ResourceTag.ResourceObjectType.Snapshot): a snapshot is listed (Creating) as soon as
createSnapshot answers, can be tagged then, is BackedUp when its job ends, outlives its
volume, and is deleted only once finished.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from .conftest import CloudView, cli, create_args


def snaps(cloud_view: CloudView, env: str = "demo") -> list[dict[str, Any]]:
    return list(cloud_view.cs.listSnapshots(tags=[{"key": "csdeploy:env", "value": env}], listall=True)
                .get("snapshot") or [])


def tags(item: dict[str, Any]) -> dict[str, str]:
    return {t["key"]: t["value"] for t in item.get("tags") or []}


@pytest.fixture
def demo(home: Path, cloud_view: CloudView, monkeypatch: pytest.MonkeyPatch) -> CloudView:
    monkeypatch.setenv("CSDEPLOY_ACTOR", "ci-run-42")
    res = cli(*create_args("demo", "roles.web.disk={size: 2}"))
    assert res.exit_code == 0, res.stderr
    return cloud_view


def test_snapshot_no_quiesce_takes_one_tagged_snapshot_per_disk(demo: CloudView) -> None:
    res = cli("snapshot", "--env", "demo", "--no-quiesce", "--wait")
    assert res.exit_code == 0, res.stderr
    assert "--no-quiesce: crash-consistent, no host touched" in res.stdout
    found = snaps(demo)
    assert sorted(tags(s)["csdeploy:role"] for s in found) == ["db", "web"]
    for s in found:
        t = tags(s)
        assert s["state"] == "BackedUp"
        assert t["csdeploy:disk"] == "csd-" + t["csdeploy:role"]
        assert t["csdeploy:by"] == "ci-run-42" and t["csdeploy:kind"] == "snapshot"
        assert s["volumename"] == f"demo-{t['csdeploy:role']}-1-{t['csdeploy:role']}"


def test_snapshot_of_one_role_and_of_a_role_without_disks(demo: CloudView) -> None:
    res = cli("snapshot", "--env", "demo", "--role", "db", "--no-quiesce")
    assert res.exit_code == 0, res.stderr
    assert [tags(s)["csdeploy:role"] for s in snaps(demo)] == ["db"]
    res = cli("snapshot", "--env", "demo", "--role", "worker", "--no-quiesce")
    assert res.exit_code == 2
    assert "role or accessory 'worker' of environment 'demo' has no data disks" in res.stderr
    assert len(snaps(demo)) == 1


def test_snapshot_says_what_it_could_not_quiesce(demo: CloudView) -> None:
    """The memory simulator's hosts answer SSH but run no command: the checkpoint and the
    freeze are reported as skipped, and the snapshot is still taken (crash-consistent)."""
    res = cli("snapshot", "--env", "demo", "--role", "db")
    assert res.exit_code == 0, res.stderr
    assert "PostgreSQL CHECKPOINT skipped" in res.stdout
    assert "fsfreeze of /data/db on demo-db-1 skipped" in res.stdout
    assert "crash-consistent" in res.stdout
    assert len(snaps(demo)) == 1


def test_snapshot_of_an_env_without_the_local_state_still_works(demo: CloudView, home: Path) -> None:
    import shutil

    shutil.rmtree(home / "envs" / "demo")
    res = cli("snapshot", "--env", "demo", "--role", "db")
    assert res.exit_code == 0, res.stderr
    assert "not quiesced: csdeploy does not know which blueprint" in res.stdout
    assert len(snaps(demo)) == 1


def test_snapshots_lists_manual_and_policy_snapshots(demo: CloudView) -> None:
    assert cli("snapshot", "--env", "demo", "--role", "db", "--no-quiesce", "--wait").exit_code == 0
    vol = next(v for v in demo.volumes() if v["name"] == "demo-db-1-db")
    [pol] = demo.cs.listSnapshotPolicies(volumeid=vol["id"])["snapshotpolicy"]
    demo.cs.createSnapshot(volumeid=vol["id"], policyid=pol["id"], fetch_result=True)  # what the scheduler does
    res = cli("snapshots", "--env", "demo", "--json")
    assert res.exit_code == 0, res.stderr
    listed = json.loads(res.stdout)
    assert sorted(s["kind"] for s in listed) == ["daily", "manual"]
    assert {(s["role"], s["disk"], s["state"]) for s in listed} == {("db", "csd-db", "BackedUp")}
    assert listed[0]["created"] >= listed[1]["created"]  # newest first
    text = cli("snapshots", "--env", "demo").stdout
    assert "policy daily" in text and "manual" in text and "ci-run-42" in text


def test_teardown_keeps_snapshots_and_they_stay_listed(demo: CloudView) -> None:
    assert cli("snapshot", "--env", "demo", "--no-quiesce", "--wait").exit_code == 0
    vol = next(v for v in demo.volumes() if v["name"] == "demo-db-1-db")
    [pol] = demo.cs.listSnapshotPolicies(volumeid=vol["id"])["snapshotpolicy"]
    demo.cs.createSnapshot(volumeid=vol["id"], policyid=pol["id"], fetch_result=True)
    res = cli("teardown", "--env", "demo", "--yes")
    assert res.exit_code == 0, res.stderr
    assert "3 snapshot(s) kept" in res.stdout
    assert demo.vms() == [] and demo.volumes() == []
    # the policy's snapshot got the environment's tags before its volume went
    assert len(snaps(demo)) == 3
    listed = json.loads(cli("snapshots", "--env", "demo", "--json").stdout)
    assert sorted((s["role"], s["kind"]) for s in listed) == [("db", "daily"), ("db", "manual"), ("web", "manual")]
    envs = cli("envs").stdout
    assert "demo" in envs and "snapshots only" in envs, envs
    # and then they go, on request
    res = cli("teardown", "--env", "demo", "--yes", "--delete-snapshots")
    assert res.exit_code == 0, res.stderr
    assert snaps(demo) == [] and demo.cs.listSnapshots().get("snapshot") is None
    assert demo.env_tags("demo") == []


def test_teardown_delete_snapshots_waits_for_one_being_taken(demo: CloudView) -> None:
    vol = next(v for v in demo.volumes() if v["name"] == "demo-db-1-db")
    demo.cs.createSnapshot(volumeid=vol["id"])  # not waited for: still Creating
    res = cli("teardown", "--env", "demo", "--yes", "--delete-snapshots")
    assert res.exit_code == 0, res.stderr
    assert demo.cs.listSnapshots().get("snapshot") is None


def test_reap_deletes_an_expired_environments_snapshots(home: Path, cloud_view: CloudView) -> None:
    """An ephemeral environment's snapshots share its expiry: reap removes them with it, and
    removes an environment that is only snapshots (torn down keeping them) once it expired."""
    from datetime import UTC, datetime, timedelta

    from cloudstack_deploy import service

    for env in ("live", "gone"):
        assert cli(*create_args(env, extra=["--ttl", "1h"])).exit_code == 0
        assert cli("snapshot", "--env", env, "--no-quiesce", "--wait").exit_code == 0
    assert tags(snaps(cloud_view, "gone")[0])["csdeploy:expires"]
    assert cli("teardown", "--env", "gone", "--yes").exit_code == 0
    assert len(snaps(cloud_view, "gone")) == 1
    assert "snapshots only" in cli("envs").stdout
    early = asyncio.run(service.reap())
    assert early.items == [] and len(snaps(cloud_view, "live")) == 1
    result = asyncio.run(service.reap(now=datetime.now(UTC) + timedelta(hours=2)))
    assert sorted((i.env, i.result) for i in result.items) == [("gone", "removed"), ("live", "removed")]
    assert cloud_view.cs.listSnapshots().get("snapshot") is None
    assert cloud_view.env_tags() == []


class _Result:
    def __init__(self, code: int, err: str = "") -> None:
        self.exit_status, self.stdout, self.stderr = code, "", err


class _Conn:
    """A host that records the scripts it is sent (and what the cloud saw meanwhile)."""

    def __init__(self, log: list[str], fail: str | None = None) -> None:
        self.log, self.fail = log, fail

    async def run(self, script: Any, **kw: Any) -> _Result:
        self.log.append(kw["what"])
        return _Result(1, f"{kw['what']}: refused") if kw["what"] == self.fail else _Result(0)


class _Pool:
    def __init__(self, conn: _Conn) -> None:
        self.conn = conn

    async def connect(self, host: Any) -> _Conn:
        return self.conn


def _quiescer(log: list[str], fail: str | None = None) -> Any:
    from cloudstack_deploy.backup import HostQuiesce
    from cloudstack_deploy.inventory import Host, HostDisk

    host = Host(name="demo-db-1", role="db", index=1, vm_id="v", public_ip="127.0.0.1", ssh_port=22,
                private_ip="10.0.0.2", host_key="k", offering="small", accessories=("db",),
                disks=(HostDisk(name="demo-db-1-db", label="csd-db", mount="/data/db", size_gb=10),))
    return HostQuiesce(_Pool(_Conn(log, fail)), [host], {"db": ("registry.lab:5000/postgres:15", "demo", "demo", "demo")})


@pytest.mark.parametrize("fail", [None, "checkpoint", "freeze"])
async def test_quiesce_checkpoints_freezes_and_always_thaws(fail: str | None) -> None:
    """Order on the host: CHECKPOINT, freeze, (the snapshot is taken), thaw; the thaw also
    when the snapshot request fails, and a step that fails is named, not hidden."""
    from cloudstack_deploy.backup import APP, CRASH, FROZEN, DiskSnapshot
    from cloudstack_deploy.provision.snapshots import EnvDisk

    log: list[str] = []
    disk = EnvDisk(volume_id="v1", volume="demo-db-1-db", role="db", label="csd-db", vm="demo-db-1", size=1)
    item = DiskSnapshot(disk)
    with pytest.raises(RuntimeError):
        async with _quiescer(log, fail).around(disk, item):
            log.append("snapshot")
            raise RuntimeError("createSnapshot failed")
    assert log == ["checkpoint", "freeze", "snapshot", "unfreeze"]
    assert item.consistency == {None: APP, "checkpoint": FROZEN, "freeze": CRASH}[fail]
    if fail == "checkpoint":
        assert item.notes == ["PostgreSQL CHECKPOINT skipped: checkpoint: refused"]
    if fail == "freeze":
        assert item.notes == ["fsfreeze of /data/db on demo-db-1 skipped: freeze: refused"]


def test_the_host_scripts() -> None:
    """fsfreeze is undone first (a killed run's freeze would block sync), a watchdog thaws the
    disk whatever happens to csdeploy, and a thaw of a disk that is not frozen is no error."""
    from cloudstack_deploy.rollout.commands import snapshot as cmd

    text = cmd.freeze("/data/db", 120).text()
    lines = text.splitlines()
    assert lines.index("fsfreeze --unfreeze /data/db 2>/dev/null || true") < lines.index("sync") \
        < lines.index("fsfreeze --freeze /data/db")
    assert "setsid sh -c 'sleep 120; fsfreeze --unfreeze /data/db' </dev/null >/dev/null 2>&1 &" in lines
    assert "mountpoint -q /data/db" in text
    assert cmd.unfreeze("/data/db").text().splitlines()[-1] == "fsfreeze --unfreeze /data/db 2>/dev/null || true"
    assert cmd.postgres_checkpoint("demo-db", "demo", "demo")[:3] == ["docker", "exec", "demo-db"]
    assert cmd.postgres_checkpoint("demo-db", "demo", "demo")[-1] == "CHECKPOINT"
