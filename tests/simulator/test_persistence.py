"""--state: the cloud survives a restart of the simulator, pending jobs included.

Since the journal (store.py), a change is on disk before its call answers, so even a killed
simulator keeps it; and what a change writes no longer grows with the cloud's history.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from cs import CloudStack

from cloudstack_deploy.lab.simulator import asyncjobs
from cloudstack_deploy.lab.simulator.server import ThreadedSimulator

from .cloudkit import catalog, deploy, http_error, network, public_key, vm_params
from .conftest import KEY, SECRET, make_config, public_range
from .test_cli_simulator import Served


def _client(sim: ThreadedSimulator, *, fetch_result: bool = True) -> CloudStack:
    return CloudStack(endpoint=sim.endpoint, key=KEY, secret=SECRET, poll_interval=0.02, job_timeout=30,
                      fetch_result=fetch_result)


def _snapshot(cs: CloudStack) -> dict[str, list[tuple]]:
    return {
        "networks": sorted((n["id"], n["name"], n["state"]) for n in cs.listNetworks()["network"]),
        "vms": sorted((v["id"], v["name"], v["state"], v["nic"][0]["ipaddress"])
                      for v in cs.listVirtualMachines()["virtualmachine"]),
        "ips": sorted((i["id"], i["ipaddress"], i["isstaticnat"], i.get("virtualmachineid"))
                      for i in cs.listPublicIpAddresses()["publicipaddress"]),
        "keys": sorted((k["name"], k["fingerprint"]) for k in cs.listSSHKeyPairs()["sshkeypair"]),
        "rules": sorted((r["id"], r["startport"]) for r in cs.listFirewallRules()["firewallrule"]),
        "tags": sorted((t["resourceid"], t["key"], t["value"]) for t in cs.listTags()["tag"]),
    }


def test_the_cloud_survives_a_restart(tmp_path: Path) -> None:
    state, rng = tmp_path / "state.json", public_range()
    with ThreadedSimulator(make_config(state_file=str(state), public_range=rng)) as sim:
        cs = _client(sim)
        cat = catalog(cs)
        net = network(cs, cat, "app-net")
        cs.registerSSHKeyPair(name="deploy", publickey=public_key())
        vm = deploy(cs, cat, net, "web-1", keypair="deploy")
        stopped = deploy(cs, cat, net, "db-1", startvm=False)
        gone = deploy(cs, cat, net, "tmp-1")
        cs.destroyVirtualMachine(id=gone["id"], expunge=True)
        ip = cs.associateIpAddress(networkid=net["id"])["ipaddress"]
        cs.enableStaticNat(ipaddressid=ip["id"], virtualmachineid=vm["id"])
        cs.createFirewallRule(ipaddressid=ip["id"], protocol="tcp", startport=22, endport=22)
        cs.createTags(resourcetype="UserVm", resourceids=vm["id"], tags=[{"key": "role", "value": "web"}])
        before = _snapshot(cs)
    assert json.loads(state.read_text())["collections"]["vms"]  # written as JSON
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temp files left behind

    with ThreadedSimulator(make_config(state_file=str(state), public_range=rng)) as sim:
        cs = _client(sim)
        assert _snapshot(cs) == before
        assert {v["id"]: v["state"] for v in cs.listVirtualMachines()["virtualmachine"]} == {
            vm["id"]: "Running", stopped["id"]: "Stopped"}
        assert cs.listVirtualMachines(id=gone["id"]) == {}  # still known as removed: empty, not 431
        assert cs.listVirtualMachines(tags=[{"key": "role", "value": "web"}])["virtualmachine"][0]["id"] == vm["id"]
        # The restarted cloud carries on: names and addresses stay unique.
        new_ip = cs.associateIpAddress(networkid=net["id"])["ipaddress"]
        assert new_ip["ipaddress"] not in {i[1] for i in before["ips"]}
        again = deploy(cs, cat, net, "web-2")
        assert again["nic"][0]["ipaddress"] not in {v[3] for v in before["vms"]}
        cs.stopVirtualMachine(id=vm["id"])

    with ThreadedSimulator(make_config(state_file=str(state), public_range=rng)) as sim:
        assert _client(sim).listVirtualMachines(id=vm["id"])["virtualmachine"][0]["state"] == "Stopped"


def test_a_pending_job_completes_after_a_restart(tmp_path: Path) -> None:
    state, rng = tmp_path / "state.json", public_range()
    with ThreadedSimulator(make_config(state_file=str(state), public_range=rng, vm_boot_seconds=2)) as sim:
        raw = _client(sim, fetch_result=False)
        cat = catalog(raw)
        reply = raw.deployVirtualMachine(**vm_params(cat, network(raw, cat), "web-1"))
    # Stopped while the VM was still Starting.
    with ThreadedSimulator(make_config(state_file=str(state), public_range=rng, vm_boot_seconds=2)) as sim:
        raw = _client(sim, fetch_result=False)
        assert raw.queryAsyncJobResult(jobid=reply["jobid"])["jobstatus"] == 0
        assert raw.listVirtualMachines(id=reply["id"])["virtualmachine"][0]["state"] == "Starting"
        deadline = time.monotonic() + 10
        while (job := raw.queryAsyncJobResult(jobid=reply["jobid"]))["jobstatus"] == 0:
            assert time.monotonic() < deadline, "the resumed job never finished"
            time.sleep(0.05)
        assert job["jobstatus"] == 1
        assert job["jobresult"]["virtualmachine"]["state"] == "Running"
        assert raw.listVirtualMachines(id=reply["id"])["virtualmachine"][0]["state"] == "Running"


@pytest.mark.parametrize(("content", "why"), [
    ("{not json", "Expecting property name"),
    ("[]", "not a simulator state file"),
    ('{"version": 1}', "not a simulator state file"),
])
def test_an_unreadable_state_file_is_refused_and_left_alone(tmp_path: Path, content: str, why: str) -> None:
    state = tmp_path / "state.json"
    state.write_text(content)
    with pytest.raises(ValueError) as info:
        ThreadedSimulator(make_config(state_file=str(state)))
    assert str(state) in str(info.value)
    assert why in str(info.value)
    assert state.read_text() == content  # never overwritten with a fresh cloud


# ---- the journal: saving what changed, surviving a kill ---------------------------------------------

@pytest.fixture
def served(tmp_path: Path):
    """`csdeploy lab simulator` processes (see test_cli_simulator.py), killed at the end."""
    started: list[Served] = []

    def start(*args: str) -> Served:
        started.append(Served(tmp_path, *args))
        return started[-1]

    yield start
    for s in started:
        s.kill()


def test_a_killed_simulator_keeps_every_answered_change_and_its_pending_job(served, tmp_path: Path) -> None:
    """SIGKILL gives no chance to save at exit: what a call changed is on disk before the call
    answers (the journal), and the next start replays it, pending jobs included."""
    state = tmp_path / "state.json"
    # the boot outlasts the restart even on a loaded machine (3 s did not, at load 20)
    first = served("--state", str(state), "--vm-boot-seconds", "10")
    raw = first.client()
    raw.fetch_result = False
    cat = catalog(raw)
    net = network(raw, cat, "kept-net")
    raw.registerSSHKeyPair(name="kept-key", publickey=public_key())
    reply = raw.deployVirtualMachine(**vm_params(cat, net, "web-1", keypair="kept-key"))
    first.proc.kill()
    first.proc.wait(10)
    assert state.exists() and state.with_name("state.json.journal").stat().st_size > 0

    again = served("--state", str(state))
    raw = again.client()
    raw.fetch_result = False
    assert raw.listNetworks(id=net["id"])["network"][0]["name"] == "kept-net"
    assert [k["name"] for k in raw.listSSHKeyPairs()["sshkeypair"]] == ["kept-key"]
    assert raw.queryAsyncJobResult(jobid=reply["jobid"])["jobstatus"] == 0
    deadline = time.monotonic() + 30
    while (job := raw.queryAsyncJobResult(jobid=reply["jobid"]))["jobstatus"] == 0:
        assert time.monotonic() < deadline, "the job pending at the kill never finished"
        time.sleep(0.1)
    assert job["jobstatus"] == 1 and job["jobresult"]["virtualmachine"]["state"] == "Running"
    code, err = again.stop()
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("state")) == ["state.json"]


def test_a_change_writes_what_changed_not_the_whole_cloud(tmp_path: Path) -> None:
    """With thousands of finished jobs in the cloud, one more call leaves the snapshot alone
    and adds a few KB to the journal (it used to rewrite megabytes)."""
    state, rng = tmp_path / "state.json", public_range()
    with ThreadedSimulator(make_config(state_file=str(state), public_range=rng, ssh=False)) as sim:
        cs = _client(sim)
        cat = catalog(cs)
        net = network(cs, cat)
        deploy(cs, cat, net, "web-1")

        def history() -> None:
            model = next(j for j in sim.sim.col("jobs").values() if j.get("_command") == "deployVirtualMachine")
            for i in range(3000):
                sim.sim.add("jobs", dict(model, id=f"old-{i}", jobid=f"old-{i}"))
            sim.sim.changed()

        sim.call(history)
        journal = state.with_name("state.json.journal")
        snapshot = state.stat()
        before = journal.stat().st_size
        cs.createTags(resourcetype="Network", resourceids=net["id"], tags=[{"key": "k", "value": "v"}])
        grown = journal.stat().st_size - before
        assert 0 < grown < 20_000, grown
        assert (state.stat().st_mtime_ns, state.stat().st_size) == (snapshot.st_mtime_ns, snapshot.st_size)
    saved = json.loads(state.read_text())  # stopped: everything folded into the snapshot
    assert len(saved["collections"]["jobs"]) > 3000 and not journal.exists()


def test_a_torn_last_journal_line_is_ignored_and_a_corrupt_one_refused(tmp_path: Path) -> None:
    """A process killed mid-write leaves a partial last line: that change never answered
    anyone, so it is dropped. A damaged line before it is not that: refused, files kept."""
    state, rng = tmp_path / "state.json", public_range()
    with ThreadedSimulator(make_config(state_file=str(state), public_range=rng, ssh=False)) as sim:
        net = network(_client(sim), catalog(_client(sim)), "n1")
    journal = state.with_name("state.json.journal")
    journal.write_text('[["p","networks","x",{"id":"x","na')
    with ThreadedSimulator(make_config(state_file=str(state), public_range=rng, ssh=False)) as sim:
        assert [n["id"] for n in _client(sim).listNetworks()["network"]] == [net["id"]]
    broken = '[["p","networks","y",{"id":"y"}]]\n{oops\n[["d","networks","y"]]\n'
    journal.write_text(broken)
    snapshot = state.read_text()
    with pytest.raises(ValueError, match=r"state\.json\.journal, line 2"):
        ThreadedSimulator(make_config(state_file=str(state), public_range=rng, ssh=False))
    assert journal.read_text() == broken and state.read_text() == snapshot


class _ShiftedClock:
    """The simulator's job clock (asyncjobs' ``time``), moved forward by the test: an expiry is
    checked by minutes passing at once, not by sleeping through a deadline a loaded machine can
    overshoot (a 0.6 s expiry failed CI when 0.2 s of sleep took longer)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def time(self) -> float:
        return time.time() + self.offset


def _finished(raw: CloudStack, jobid: str) -> dict:
    deadline = time.monotonic() + 30
    while (job := raw.queryAsyncJobResult(jobid=jobid))["jobstatus"] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    return job


def test_finished_jobs_expire_after_job_expire_minutes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """AsyncJobManagerImpl's GC expunges a finished job job.expire.minutes after it completed:
    until then queryAsyncJobResult answers; after, its id is unknown (431). A pending job is
    never dropped, and the expiry survives a restart."""
    clock = _ShiftedClock()
    monkeypatch.setattr(asyncjobs, "time", clock)
    state, rng = tmp_path / "state.json", public_range()
    config = dict(state_file=str(state), public_range=rng, ssh=False, job_expire_minutes=1)
    with ThreadedSimulator(make_config(**config)) as sim:
        cs, raw = _client(sim), _client(sim, fetch_result=False)
        net = network(cs, catalog(cs))
        done = raw.createTags(resourcetype="Network", resourceids=net["id"], tags=[{"key": "a", "value": "1"}])
        assert _finished(raw, done["jobid"])["jobstatus"] == 1
        clock.offset += 50
        assert raw.queryAsyncJobResult(jobid=done["jobid"])["jobstatus"] == 1, "50 s of a minute: kept"
        clock.offset += 11
        assert "Invalid parameter jobid" in http_error(431, raw.queryAsyncJobResult, jobid=done["jobid"])
        later = raw.createTags(resourcetype="Network", resourceids=net["id"], tags=[{"key": "b", "value": "1"}])
        assert _finished(raw, later["jobid"])["jobstatus"] == 1
    clock.offset += 62  # its completion is stored to the second
    with ThreadedSimulator(make_config(**config)) as sim:
        raw = _client(sim, fetch_result=False)
        assert "Invalid parameter jobid" in http_error(431, raw.queryAsyncJobResult, jobid=later["jobid"])
        assert len(raw.listTags(resourceid=net["id"])["tag"]) == 2  # what the jobs did stays
