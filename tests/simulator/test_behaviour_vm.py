"""Virtual machines: the state machine, names, key pairs, user data and resource limits.

Where CloudStack checks inside the async job (plain async commands such as reboot, expunge
or scale run their checks in execute()), the submit succeeds and the *job* fails; deploy is
an async *create* command whose checks run before the job, so it fails the request itself.
"""

from __future__ import annotations

import base64

import pytest
import requests
from cs import CloudStack

from .cloudkit import (
    catalog,
    deploy,
    http_error,
    job_error,
    network,
    vm_params,
    vm_state,
    wait_job,
)
from .conftest import KEY, SECRET


# ---- state machine ------------------------------------------------------------------------
def test_stop_start_reboot_destroy_recover_expunge(cs: CloudStack) -> None:
    cat = catalog(cs)
    vm = deploy(cs, cat, network(cs, cat), "web-1")
    assert vm["state"] == "Running"
    assert cs.stopVirtualMachine(id=vm["id"])["virtualmachine"]["state"] == "Stopped"
    assert vm_state(cs, vm["id"]) == "Stopped"

    text = job_error(431, cs.rebootVirtualMachine, id=vm["id"])
    assert "Stopped" in text
    assert vm_state(cs, vm["id"]) == "Stopped"  # a refused reboot changes nothing

    assert cs.startVirtualMachine(id=vm["id"])["virtualmachine"]["state"] == "Running"
    assert cs.rebootVirtualMachine(id=vm["id"])["virtualmachine"]["state"] == "Running"

    assert cs.destroyVirtualMachine(id=vm["id"])["virtualmachine"]["state"] == "Destroyed"
    assert vm_state(cs, vm["id"]) == "Destroyed"  # still listed, recoverable
    assert cs.recoverVirtualMachine(id=vm["id"])["virtualmachine"]["state"] == "Stopped"
    assert vm_state(cs, vm["id"]) == "Stopped"

    cs.destroyVirtualMachine(id=vm["id"], expunge=True)
    assert cs.listVirtualMachines() == {}
    # Gone, but its id is still known to CloudStack: an empty list, not a 431.
    assert cs.listVirtualMachines(id=vm["id"]) == {}
    assert cs.listVolumes(virtualmachineid=vm["id"]) == {}


def test_expunge_needs_a_destroyed_vm(cs: CloudStack) -> None:
    cat = catalog(cs)
    vm = deploy(cs, cat, network(cs, cat), "web-1")
    text = job_error(431, cs.expungeVirtualMachine, id=vm["id"])
    assert text == "Please destroy vm with specified vmId before expunge"
    assert vm_state(cs, vm["id"]) == "Running"
    cs.destroyVirtualMachine(id=vm["id"])
    cs.expungeVirtualMachine(id=vm["id"])
    assert cs.listVirtualMachines() == {}


def test_refused_plain_async_command_still_answers_a_jobid(cs_raw: CloudStack) -> None:
    """reboot is a plain async command: the request succeeds, the job reports the 431."""
    cat = catalog(cs_raw)
    net = network(cs_raw, cat)
    reply = cs_raw.deployVirtualMachine(**vm_params(cat, net, "web-1", startvm=False))
    wait_job(cs_raw, reply["jobid"])
    submit = cs_raw.rebootVirtualMachine(id=reply["id"])
    assert set(submit) == {"jobid"}
    job = wait_job(cs_raw, submit["jobid"])
    assert job["jobstatus"] == 2
    assert job["jobresultcode"] == 431
    assert job["jobresult"]["errorcode"] == 431
    assert "not Running" in job["jobresult"]["errortext"]


def test_scale_needs_a_stopped_vm_and_changes_the_offering(cs: CloudStack) -> None:
    cat = catalog(cs)
    vm = deploy(cs, cat, network(cs, cat), "web-1")
    text = job_error(431, cs.scaleVirtualMachine, id=vm["id"], serviceofferingid=cat.offerings["medium"])
    assert "Stopped" in text
    assert cs.listVirtualMachines(id=vm["id"])["virtualmachine"][0]["serviceofferingid"] == cat.offerings["micro"]

    cs.stopVirtualMachine(id=vm["id"])
    cs.scaleVirtualMachine(id=vm["id"], serviceofferingid=cat.offerings["medium"])
    listed = cs.listVirtualMachines(id=vm["id"])["virtualmachine"][0]
    assert listed["serviceofferingid"] == cat.offerings["medium"]
    assert listed["serviceofferingname"] == "medium"
    assert listed["cpunumber"] == 2 and listed["memory"] == 2048


# ---- names --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["1web", "web_1", "a" * 64, "web-", "-web", "web.lab", "wéb"])
def test_invalid_vm_names_are_refused(cs: CloudStack, name: str) -> None:
    cat = catalog(cs)
    net = network(cs, cat)
    text = http_error(431, cs.deployVirtualMachine, **vm_params(cat, net, name))
    assert text.startswith("Invalid name.")
    assert cs.listVirtualMachines() == {}


def test_longest_valid_name_is_63_chars(cs: CloudStack) -> None:
    cat = catalog(cs)
    name = "a" + "b1-" * 20 + "cd"
    assert len(name) == 63
    assert deploy(cs, cat, network(cs, cat), name)["name"] == name


def test_names_are_unique_per_network(cs: CloudStack) -> None:
    cat = catalog(cs)
    net_a, net_b = network(cs, cat, "net-a"), network(cs, cat, "net-b")
    deploy(cs, cat, net_a, "web-1")
    text = http_error(431, cs.deployVirtualMachine, **vm_params(cat, net_a, "web-1"))
    assert "web-1 already exists" in text
    assert deploy(cs, cat, net_b, "web-1")["name"] == "web-1"
    assert cs.listVirtualMachines(name="web-1")["count"] == 2


# ---- key pairs and user data --------------------------------------------------------------
def test_unknown_keypair_is_refused(cs: CloudStack) -> None:
    cat = catalog(cs)
    text = http_error(431, cs.deployVirtualMachine, **vm_params(cat, network(cs, cat), "web-1", keypair="x"))
    assert text == "A key pair with name 'x' was not found."


def test_keypair_is_shown_on_the_vm(cs: CloudStack) -> None:
    cat = catalog(cs)
    cs.createSSHKeyPair(name="deploy")
    vm = deploy(cs, cat, network(cs, cat), "web-1", keypair="deploy")
    assert vm["keypairs"] == "deploy"


def _userdata(size: int) -> str:
    """Base64 text of exactly ``size`` characters (size a multiple of 4)."""
    data = base64.b64encode(b"#cloud-config\n" + b"x" * (size // 4 * 3 - 14)).decode()
    assert len(data) == size
    return data


def test_userdata_over_4096_chars_needs_post(simulator, cs: CloudStack) -> None:
    cat = catalog(cs)
    net = network(cs, cat)
    big = _userdata(4100)
    text = http_error(431, cs.deployVirtualMachine, **vm_params(cat, net, "web-1", userdata=big))
    assert "POST" in text
    assert deploy(cs, cat, net, "web-2", userdata=_userdata(4096))["state"] == "Running"

    post = CloudStack(endpoint=simulator.endpoint, key=KEY, secret=SECRET, method="post",
                      poll_interval=0.02, job_timeout=30, fetch_result=True)
    vm = post.deployVirtualMachine(**vm_params(cat, net, "web-1", userdata=big))["virtualmachine"]
    stored = cs.getVirtualMachineUserData(virtualmachineid=vm["id"])["virtualmachineuserdata"]
    assert stored["userdata"] == big


def test_userdata_must_be_base64(cs: CloudStack) -> None:
    cat = catalog(cs)
    text = http_error(431, cs.deployVirtualMachine,
                      **vm_params(cat, network(cs, cat), "web-1", userdata="#cloud-config not base64!"))
    assert "base64" in text


# ---- resource limits ----------------------------------------------------------------------
@pytest.mark.simulator(limits={"user_vm": 2})
def test_user_vm_limit(cs: CloudStack) -> None:
    cat = catalog(cs)
    net = network(cs, cat)
    limits = cs.listResourceLimits(resourcetypename="user_vm")["resourcelimit"]
    assert [(lim["resourcetype"], lim["max"]) for lim in limits] == [("0", 2)]
    first, _ = deploy(cs, cat, net, "vm-1"), deploy(cs, cat, net, "vm-2")
    text = http_error(535, cs.deployVirtualMachine, **vm_params(cat, net, "vm-3"))
    assert text.startswith("Maximum number of resources of type 'user_vm'")
    assert "exceeded" in text
    assert cs.listVirtualMachines()["count"] == 2  # nothing was created

    cs.destroyVirtualMachine(id=first["id"])  # a destroyed VM no longer counts
    deploy(cs, cat, net, "vm-3")
    # ... so recovering it would pass the limit again.
    text = http_error(535, cs.recoverVirtualMachine, id=first["id"])
    assert "'user_vm'" in text
    assert vm_state(cs, first["id"]) == "Destroyed"


@pytest.mark.simulator(limits={"public_ip": 2})
def test_public_ip_limit_counts_the_source_nat_address(cs: CloudStack) -> None:
    cat = catalog(cs)
    net = network(cs, cat)
    deploy(cs, cat, net, "web-1")  # implements the network: its source-NAT IP is the first
    cs.associateIpAddress(networkid=net["id"])
    text = http_error(535, cs.associateIpAddress, networkid=net["id"])
    assert text.startswith("Maximum number of resources of type 'public_ip'")
    assert cs.listPublicIpAddresses()["count"] == 2


def test_limits_change_at_runtime_through_the_admin_endpoint(simulator, cs: CloudStack) -> None:
    cat = catalog(cs)
    net = network(cs, cat)
    url = simulator.endpoint.replace("/client/api", "/admin/limits")
    assert requests.post(url, json={"user_vm": 1}, timeout=10).status_code == 401  # no key
    r = requests.post(url, json={"user_vm": 1}, headers={"X-Lab-Key": KEY}, timeout=10)
    assert r.status_code == 200 and r.json()["limits"]["user_vm"] == 1
    assert cs.listResourceLimits(resourcetypename="user_vm")["resourcelimit"][0]["max"] == 1
    deploy(cs, cat, net, "vm-1")
    http_error(535, cs.deployVirtualMachine, **vm_params(cat, net, "vm-2"))

    r = requests.post(url, json={"no_such_thing": 1}, headers={"X-Lab-Key": KEY}, timeout=10)
    assert r.status_code == 400 and "no_such_thing" in r.json()["error"]
    requests.post(url, json={"user_vm": -1}, headers={"X-Lab-Key": KEY}, timeout=10)  # -1: unlimited
    deploy(cs, cat, net, "vm-2")
