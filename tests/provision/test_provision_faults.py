"""create-env when things go wrong: killed runs, capacity errors, dropped connections,
concurrent runs. Every outcome is checked with `cs`: no duplicates, no orphans."""

from __future__ import annotations

import getpass
import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from cloudstack_deploy.lab.simulator.faults import parse_fault
from cloudstack_deploy.provision.desired import TAG_LOCK
from tests.support.cli import cli_here

from .conftest import CloudView, cli, cli_argv, create_args, wait_until

DEMO_VMS = ("demo-web-1", "demo-worker-1", "demo-db-1")


def assert_converged(cloud_view: CloudView, names: tuple[str, ...] = DEMO_VMS) -> None:
    """Exactly one Running VM per name, one network, one IP per VM, the db disk attached."""
    assert cloud_view.vm_names() == {n: 1 for n in names}
    vms = {v["id"]: v for v in cloud_view.vms()}
    assert all(v["state"] == "Running" for v in vms.values()), [(v["name"], v["state"]) for v in vms.values()]
    assert [n["name"] for n in cloud_view.networks()] == ["csdeploy-demo"]
    ips = cloud_view.public_ips()
    assert len(ips) == len(names)
    assert all(ip.get("isstaticnat") and ip["virtualmachineid"] in vms for ip in ips), ips
    (disk,) = cloud_view.volumes()
    assert disk["name"] == "demo-db-1-db" and vms[disk["virtualmachineid"]]["name"] == "demo-db-1"
    assert [k["name"] for k in cloud_view.keypairs()] == ["csdeploy-demo"]


@pytest.mark.simulator(vm_boot_seconds=1.5)
def test_a_run_killed_midway_is_finished_by_the_next(home: Path, cloud_view: CloudView) -> None:
    proc = subprocess.Popen(cli_argv(*create_args("demo")), env=dict(os.environ), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        # deployVirtualMachine accepted: the VMs exist and are still booting.
        wait_until(cloud_view.vms, timeout=30, what="the first VM")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    assert any(v["state"] != "Running" for v in cloud_view.vms())  # really mid-way

    res = cli(*create_args("demo"))
    assert res.exit_code == 0, res.stderr
    assert "took over the environment's lock" in res.stderr  # the dead run's lock, no --break-lock needed
    assert_converged(cloud_view)
    assert "up to date" in cli("plan", *create_args("demo")[1:4]).stdout


@pytest.mark.simulator(faults=[parse_fault("deployVirtualMachine:job:533:1")])
def test_no_capacity_fails_clearly_and_a_rerun_replaces_the_error_vm(home: Path, cloud_view: CloudView) -> None:
    res = cli(*create_args("demo"))
    assert res.exit_code == 1
    (failed,) = [v for v in cloud_view.vms() if v["state"] == "Error"]
    assert failed["name"] in res.stderr
    assert "capacity" in res.stderr
    others = [v for v in cloud_view.vms() if v["name"] != failed["name"]]
    assert len(others) == 2 and all(v["state"] == "Running" and v.get("publicip") for v in others)

    res = cli(*create_args("demo"))
    assert res.exit_code == 0, res.stderr
    assert_converged(cloud_view)
    assert cloud_view.vm(failed["name"])["id"] != failed["id"]  # replaced, not reused


@pytest.mark.simulator(faults=[parse_fault("createNetwork:drop:0:1")])
def test_a_dropped_create_is_not_resent_and_a_rerun_converges(home: Path, cloud_view: CloudView) -> None:
    res = cli(*create_args("demo"))
    assert res.exit_code == 1
    assert "createNetwork" in res.stderr and "no answer" in res.stderr
    assert len(cloud_view.networks()) <= 1
    res = cli(*create_args("demo"))
    assert res.exit_code == 0, res.stderr
    assert_converged(cloud_view)


def test_a_lock_held_elsewhere_is_respected_until_broken(home: Path, cloud_view: CloudView) -> None:
    assert cli(*create_args("demo")).exit_code == 0
    net = cloud_view.networks()[0]
    # A live csdeploy on this machine (our parent process) and one on another machine.
    for holder in (f"{getpass.getuser()}@{socket.gethostname()} pid {os.getppid()} since 2030-01-01T00:00:00Z",
                   "ops@build-7 pid 4242 since 2030-01-01T00:00:00Z"):
        cloud_view.cs.createTags(resourceids=net["id"], resourcetype="Network",
                                 tags=[{"key": TAG_LOCK, "value": holder}])
        res = cli(*create_args("demo", "roles.web.count=2"))
        assert res.exit_code == 1
        assert f"locked in the cloud by {holder}" in res.stderr and "--break-lock" in res.stderr
        assert "demo-web-2" not in cloud_view.vm_names()
        cloud_view.cs.deleteTags(resourceids=net["id"], resourcetype="Network", tags=[{"key": TAG_LOCK}])
    cloud_view.cs.createTags(resourceids=net["id"], resourcetype="Network",
                             tags=[{"key": TAG_LOCK, "value": "ops@build-7 pid 4242 since 2030-01-01T00:00:00Z"}])
    res = cli(*create_args("demo", "roles.web.count=2", extra=["--break-lock"]))
    assert res.exit_code == 0, res.stderr
    assert cloud_view.vm_names()["demo-web-2"] == 1
    assert TAG_LOCK not in {t["key"] for t in cloud_view.networks()[0].get("tags", [])}  # released at the end


# ---- two runs at once ----------------------------------------------------------------------------
REFUSALS = (
    "is being changed by another csdeploy",      # the local lock (same CSDEPLOY_HOME)
    "is locked in the cloud by",                 # the cloud lock tag
    "was locked by another csdeploy run",        # both tried to take the cloud lock
    "is being created by another csdeploy run",  # both created the network: the newer one yields
    "in the cloud has fingerprint",              # the other machine's key won: this one cannot log in
    "this machine has no key for the environment",  # the same, seen before this run made a key
)


def run_two(homes: tuple[Path, Path]) -> list[subprocess.CompletedProcess[str]]:
    procs = [subprocess.Popen(cli_argv(*create_args("demo")), env=dict(os.environ, CSDEPLOY_HOME=str(h)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for h in homes]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=90)
        results.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return results


def check_no_duplicates(results: list[subprocess.CompletedProcess[str]], cloud_view: CloudView) -> None:
    failed = [r for r in results if r.returncode != 0]
    assert failed, "both runs went ahead at once"
    for r in failed:
        assert any(text in r.stderr for text in REFUSALS), r.stderr
    assert len(cloud_view.networks()) <= 1
    assert all(n == 1 for n in cloud_view.vm_names().values()), cloud_view.vm_names()
    if len(failed) == 1:
        assert_converged(cloud_view)


@pytest.mark.simulator(vm_boot_seconds=1.5)
def test_two_runs_with_the_same_state_dir_one_refuses(home: Path, cloud_view: CloudView) -> None:
    results = run_two((home, home))
    assert sorted(r.returncode for r in results) == [0, 1]
    (refused,) = [r for r in results if r.returncode != 0]
    assert "is being changed by another csdeploy" in refused.stderr
    check_no_duplicates(results, cloud_view)


@pytest.mark.simulator(vm_boot_seconds=0.3)
def test_two_runs_on_different_machines_never_duplicate(home: Path, cloud_view: CloudView,
                                                        tmp_path: Path) -> None:
    results = run_two((tmp_path / "machine-a", tmp_path / "machine-b"))
    check_no_duplicates(results, cloud_view)
    # Whoever won (or neither, when both yielded), a re-run from one machine converges.
    winner = next((i for i, r in enumerate(results) if r.returncode == 0), 0)
    # in process: what counts is that it converges, not its process (the two runs above need theirs)
    rerun = cli_here(*create_args("demo"), env=dict(os.environ, CSDEPLOY_HOME=str(tmp_path / f"machine-{'ab'[winner]}")))
    assert rerun.returncode == 0, rerun.stderr
    assert_converged(cloud_view)
