"""`snapshot` and `recover` killed half-way (SIGKILL): the next run converges, with a census
made with `cs`: no second snapshot of a disk being taken, no untagged snapshot, no duplicate
volume, nothing left after teardown but the snapshots kept on purpose."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cloudstack_deploy.lab.simulator.server import ThreadedSimulator

from .conftest import DEMO, SSH_TIMEOUT, CloudView, cli, cli_argv, create_args, wait_until

ENV_TAG = "csdeploy:env"
#: createTags held long enough to outlast the kill (it follows the snapshot's listing within a
#: poll); a simulator stopping drops a held answer rather than waiting it out, so the hold costs
#: the teardown nothing (it used to wait out the rest of it: 10-12 s a test).
HELD_TAGS = "createTags:slow:12:1"


def all_snapshots(cloud_view: CloudView) -> list[dict[str, Any]]:
    return list(cloud_view.cs.listSnapshots(listall=True).get("snapshot") or [])


def env_of(snap: dict[str, Any]) -> str | None:
    return next((t["value"] for t in snap.get("tags") or [] if t["key"] == ENV_TAG), None)


def killed(args: list[str], until: Any, what: str) -> None:
    proc = subprocess.Popen(cli_argv(*args), env=dict(os.environ), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_until(until, timeout=60, what=what)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL


def test_a_snapshot_killed_before_its_tags_is_adopted_not_taken_twice(home: Path, cloud_view: CloudView,
                                                                      sim: ThreadedSimulator) -> None:
    assert cli(*create_args("demo")).exit_code == 0
    # jobs of 2 s from here on, so that the snapshot is still being taken when its run is killed
    # (from the start, they made create-env take 12 s of the test's 13)
    sim.call(setattr, sim.sim.settings, "job_seconds", 2.0)
    cloud_view.add_faults(HELD_TAGS)  # the run dies between createSnapshot and createTags
    killed(["snapshot", "--env", "demo", "--no-quiesce"], lambda: all_snapshots(cloud_view), "the snapshot")
    cloud_view.clear_faults()
    [left] = all_snapshots(cloud_view)
    assert left["state"] in ("Creating", "BackingUp") and env_of(left) is None  # really mid-way, untagged

    res = cli("snapshot", "--env", "demo", "--no-quiesce", "--wait")
    assert res.exit_code == 0, res.stderr
    assert "adopted, not taken again" in res.stdout
    [snap] = all_snapshots(cloud_view)  # the census: one, the same, finished and tagged
    assert snap["id"] == left["id"] and snap["state"] == "BackedUp" and env_of(snap) == "demo"


def test_a_finished_snapshot_whose_tags_never_landed_gets_them(home: Path, cloud_view: CloudView) -> None:
    assert cli(*create_args("demo")).exit_code == 0
    cloud_view.add_faults(HELD_TAGS)
    killed(["snapshot", "--env", "demo", "--no-quiesce"], lambda: all_snapshots(cloud_view), "the snapshot")
    cloud_view.clear_faults()
    wait_until(lambda: all_snapshots(cloud_view)[0]["state"] == "BackedUp", what="the snapshot to finish")
    res = cli("snapshot", "--env", "demo", "--no-quiesce", "--wait")
    assert res.exit_code == 0, res.stderr
    assert "taken by an interrupted run" in res.stdout
    snaps = all_snapshots(cloud_view)
    assert len(snaps) == 2 and all(env_of(s) == "demo" for s in snaps)  # none lost to the tags
    res = cli("teardown", "--env", "demo", "--yes", "--delete-snapshots")
    assert res.exit_code == 0, res.stderr
    assert all_snapshots(cloud_view) == [] and cloud_view.env_tags() == []


@pytest.mark.simulator(vm_boot_seconds=1.5)
def test_a_recover_killed_midway_is_finished_by_the_next(home: Path, cloud_view: CloudView) -> None:
    assert cli(*create_args("old")).exit_code == 0
    assert cli("snapshot", "--env", "old", "--no-quiesce", "--wait").exit_code == 0
    assert cli("teardown", "--env", "old", "--yes").exit_code == 0
    [snap] = all_snapshots(cloud_view)
    args = ["recover", str(DEMO), "--env", "new", "--from", "old", "--skip-rollout", "--ssh-timeout", str(SSH_TIMEOUT)]
    killed(args, lambda: [v for v in cloud_view.volumes() if v["name"] == "new-db-1-db"], "the restored volume")
    assert any(v["state"] != "Running" for v in cloud_view.vms())  # really mid-way

    res = cli(*args)
    assert res.exit_code == 0, res.stderr
    # the census: one of each, the disk made from the snapshot once
    assert cloud_view.vm_names() == {"new-web-1": 1, "new-worker-1": 1, "new-db-1": 1}
    [vol] = cloud_view.volumes()
    assert vol["name"] == "new-db-1-db" and vol["snapshotid"] == snap["id"]
    assert vol["virtualmachineid"] == cloud_view.vm("new-db-1")["id"]
    assert "up to date" in cli("plan", str(DEMO), "--env", "new").stdout
    assert cli("teardown", "--env", "new", "--yes").exit_code == 0
    left = cloud_view.everything()
    assert left["vms"] == [] and left["volumes"] == [] and left["networks"] == [] and left["ips"] == []
    assert [s["id"] for s in all_snapshots(cloud_view)] == [snap["id"]]  # kept, on purpose
