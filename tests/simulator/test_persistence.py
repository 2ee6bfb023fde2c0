"""--state: the cloud survives a restart of the simulator, pending jobs included."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from cs import CloudStack

from cloudstack_deploy.lab.simulator.server import ThreadedSimulator

from .cloudkit import catalog, deploy, network, public_key, vm_params
from .conftest import KEY, SECRET, make_config, public_range


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
