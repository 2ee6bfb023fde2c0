"""Where outside clients found the simulator differing from CloudStack (issue 13), now agreeing.

Each test states CloudStack's behaviour and names the source it was checked against
(apache/cloudstack, 4.19-era main unless said otherwise).
"""

from __future__ import annotations

import asyncio
import time

import asyncssh
import pytest
from cs import CloudStack

from cloudstack_deploy.lab.simulator.server import ThreadedSimulator

from .cloudkit import catalog, deploy, http_error, job_error, network, vm_params, wait_job
from .conftest import KEY, SECRET
from .rawclient import call


def raw(simulator: ThreadedSimulator, command: str, **params: object):
    return call(simulator.endpoint, command, KEY, SECRET, **params)


def _states_while(cs_raw: CloudStack, vm_id: str, jobid: str, timeout: float = 10) -> list[str]:
    """The VM's states as a poller sees them until the job ends (consecutive repeats folded)."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listed = cs_raw.listVirtualMachines(id=vm_id).get("virtualmachine", [])
        state = listed[0]["state"] if listed else "(gone)"
        if not seen or seen[-1] != state:
            seen.append(state)
        if cs_raw.queryAsyncJobResult(jobid=jobid)["jobstatus"] != 0:
            break
        time.sleep(0.01)
    listed = cs_raw.listVirtualMachines(id=vm_id).get("virtualmachine", [])
    final = listed[0]["state"] if listed else "(gone)"
    if seen[-1] != final:
        seen.append(final)
    return seen


# ---- 1. associateIpAddress with a zone only ---------------------------------------------------
def test_a_zone_only_ip_goes_to_the_accounts_one_isolated_network(cs: CloudStack) -> None:
    """AssociateIPAddrCmd.getNetworkId(): without networkid, in an Advanced zone, the account's
    isolated networks in that zone are looked up: none is a 431 ("... doesn't have virtual
    networks in zone=..."), several a 431 ("Account has more than one isolated network in the
    zone"), exactly one is the network the address is associated with. Neither zoneid nor
    networkid: getZoneId()'s 431 "Unable to figure out zone to assign IP to"."""
    cat = catalog(cs)
    text = http_error(431, cs.associateIpAddress, zoneid=cat.zone)
    assert text == "Account name=admin domain=ROOT doesn't have virtual networks in zone=lab-zone-1"
    assert "Unable to figure out zone to assign IP to" in http_error(431, cs.associateIpAddress)
    only = network(cs, cat, "only")
    ip = cs.associateIpAddress(zoneid=cat.zone)["ipaddress"]
    assert (ip["associatednetworkid"], ip["issourcenat"], ip["state"]) == (only["id"], False, "Allocated")
    network(cs, cat, "second")
    assert http_error(431, cs.associateIpAddress, zoneid=cat.zone) == \
        "Account has more than one isolated network in the zone"
    # naming the network still works with several
    assert cs.associateIpAddress(zoneid=cat.zone, networkid=only["id"])["ipaddress"]["associatednetworkid"] == \
        only["id"]


# ---- 2. updateNetwork, resetSSHKeyForVirtualMachine -------------------------------------------
def test_update_network_renames_in_a_job(simulator: ThreadedSimulator, cs: CloudStack) -> None:
    """UpdateNetworkCmd (user API, BaseAsyncCustomIdCmd): an async job whose result is the
    network; name and displaytext change, the rest stays."""
    cat = catalog(cs)
    net = network(cs, cat, "before")
    submit = raw(simulator, "updateNetwork", id=net["id"], name="after", displaytext="renamed")
    assert submit.status == 200 and set(submit.body("updateNetwork")) == {"jobid"}
    updated = cs.updateNetwork(id=net["id"], name="after", displaytext="renamed")["network"]
    assert (updated["id"], updated["name"], updated["displaytext"]) == (net["id"], "after", "renamed")
    listed = cs.listNetworks(id=net["id"])["network"][0]
    assert (listed["name"], listed["cidr"], listed["gateway"]) == ("after", net["cidr"], net["gateway"])
    cs.createTags(resourcetype="Network", resourceids=net["id"], tags=[{"key": "tier", "value": "web"}])
    assert cs.listNetworks(tags=[{"key": "tier", "value": "web"}])["network"][0]["name"] == "after"


async def _login(host: str, key: asyncssh.SSHKey) -> bool:
    try:
        conn = await asyncio.wait_for(asyncssh.connect(host, 22, username="debian", client_keys=[key],
                                                       known_hosts=None, config=None, agent_path=None), 10)
    except asyncssh.PermissionDenied:
        return False
    conn.close()
    return True


def test_reset_ssh_key_needs_a_stopped_vm_and_swaps_the_key(simulator: ThreadedSimulator, cs: CloudStack,
                                                            cs_raw: CloudStack) -> None:
    """UserVmManagerImpl.resetVMSSHKey (ResetVMSSHKeyCmd, async, envelope
    "resetSSHKeyforvirtualmachineresponse"): the VM must be Stopped ("Vm ... should be
    stopped to do SSH Key reset"), every named key pair must exist ("Not all specified
    keyparis exist"); both are checked inside the job (431). Then the VM has the new key."""
    cat = catalog(cs)
    net = network(cs, cat)
    old, new = (asyncssh.generate_private_key("ssh-ed25519") for _ in range(2))
    for name, key in (("old", old), ("new", new)):
        cs.registerSSHKeyPair(name=name, publickey=key.export_public_key().decode())
    vm = deploy(cs, cat, net, "web-1", keypair="old")
    ip = cs.associateIpAddress(networkid=net["id"])["ipaddress"]
    cs.enableStaticNat(ipaddressid=ip["id"], virtualmachineid=vm["id"])
    cs.createFirewallRule(ipaddressid=ip["id"], protocol="tcp", startport=22, endport=22)

    assert "should be stopped to do SSH Key reset" in job_error(431, cs.resetSSHKeyForVirtualMachine,
                                                                id=vm["id"], keypair="new")
    cs.stopVirtualMachine(id=vm["id"])
    assert job_error(431, cs.resetSSHKeyForVirtualMachine, id=vm["id"], keypair="nope") == \
        "Not all specified keyparis exist"
    submit = raw(simulator, "resetSSHKeyForVirtualMachine", id=vm["id"], keypair="new")
    assert list(submit.json) == ["resetSSHKeyforvirtualmachineresponse"]
    done = wait_job(cs_raw, submit.json["resetSSHKeyforvirtualmachineresponse"]["jobid"])
    assert done["jobresult"]["virtualmachine"]["keypairs"] == "new"
    cs.startVirtualMachine(id=vm["id"])
    simulator.settle()
    assert asyncio.run(_login(ip["ipaddress"], new)) is True
    assert asyncio.run(_login(ip["ipaddress"], old)) is False


# ---- 3. createNetwork with gateway + netmask --------------------------------------------------
@pytest.mark.parametrize(("gateway", "netmask", "cidr"), [
    ("10.20.0.1", "255.255.0.0", "10.20.0.0/16"),
    ("192.168.7.65", "255.255.255.192", "192.168.7.64/26"),
    ("10.9.8.1", "255.255.255.0", "10.9.8.0/24"),
])
def test_network_cidr_follows_gateway_and_netmask(cs: CloudStack, gateway: str, netmask: str, cidr: str) -> None:
    """NetworkServiceImpl.createGuestNetwork: cidr = NetUtils.ipAndNetMaskToCidr(gateway,
    netmask); the guest addresses of VMs come from that CIDR."""
    cat = catalog(cs)
    net = cs.createNetwork(name="n", zoneid=cat.zone, networkofferingid=cat.isolated, gateway=gateway,
                           netmask=netmask)["network"]
    assert (net["gateway"], net["netmask"], net["cidr"]) == (gateway, netmask, cidr)
    assert cs.listNetworks(id=net["id"])["network"][0]["cidr"] == cidr
    ip = deploy(cs, cat, net, "vm-1")["nic"][0]["ipaddress"]
    assert ip != gateway and ip.rsplit(".", 2)[0] == gateway.rsplit(".", 2)[0]


@pytest.mark.parametrize(("gateway", "netmask", "text"), [
    ("10.1.1.1", "255.0.255.0", "Invalid netmask"),
    ("10.1.1.300", "255.255.255.0", "Invalid gateway"),
    ("10.1.1.0", "255.255.255.0", "Invalid gateway IP provided. Either the IP is broadcast or network IP."),
    ("10.1.1.255", "255.255.255.0", "Invalid gateway IP provided. Either the IP is broadcast or network IP."),
])
def test_bad_gateway_or_netmask_is_431(cs: CloudStack, gateway: str, netmask: str, text: str) -> None:
    """NetworkServiceImpl.createGuestNetwork's checks (InvalidParameterValueException, 431)."""
    cat = catalog(cs)
    assert http_error(431, cs.createNetwork, name="n", zoneid=cat.zone, networkofferingid=cat.isolated,
                      gateway=gateway, netmask=netmask) == text
    assert cs.listNetworks() == {}


# ---- 4. rebootVirtualMachine ------------------------------------------------------------------
@pytest.mark.simulator(vm_boot_seconds=0.6)
def test_a_rebooting_vm_stays_running(cs: CloudStack, cs_raw: CloudStack) -> None:
    """VirtualMachineManagerImpl.orchestrateReboot sends the host a RebootCommand and makes no
    state transition: the VM is Running throughout (listed with the pending job's id)."""
    cat = catalog(cs)
    vm = deploy(cs, cat, network(cs, cat), "web-1")
    submit = cs_raw.rebootVirtualMachine(id=vm["id"])
    listed = cs_raw.listVirtualMachines(id=vm["id"])["virtualmachine"][0]
    assert (listed["state"], listed["jobid"], listed["jobstatus"]) == ("Running", submit["jobid"], 0)
    assert _states_while(cs_raw, vm["id"], submit["jobid"]) == ["Running"]
    assert wait_job(cs_raw, submit["jobid"])["jobresult"]["virtualmachine"]["state"] == "Running"


# ---- 5. tag filters ----------------------------------------------------------------------------
def test_several_tag_filters_match_any_of_them(cs: CloudStack) -> None:
    """QueryManagerImpl (VMs, volumes...) and the other list implementations join the tags
    filter with OR: a resource having any of the key=value pairs is listed.
    BaseListTaggedResourcesCmd.getTags keeps one value per key (a repeated key: the later)."""
    cat = catalog(cs)
    net = network(cs, cat)
    vms = {name: deploy(cs, cat, net, name) for name in ("web", "db", "cache")}
    for name, tags in (("web", {"role": "web", "env": "prod"}), ("db", {"role": "db", "env": "prod"}),
                       ("cache", {"role": "cache", "env": "dev"})):
        cs.createTags(resourcetype="UserVm", resourceids=vms[name]["id"],
                      tags=[{"key": k, "value": v} for k, v in tags.items()])

    def names(*pairs: tuple[str, str]) -> set[str]:
        found = cs.listVirtualMachines(tags=[{"key": k, "value": v} for k, v in pairs])
        return {v["name"] for v in found.get("virtualmachine", [])}

    assert names(("role", "web")) == {"web"}
    assert names(("role", "web"), ("role", "cache")) == {"cache"}  # same key twice: the later one
    assert names(("role", "web"), ("env", "dev")) == {"web", "cache"}  # any, not all
    assert names(("role", "web"), ("env", "prod")) == {"web", "db"}
    assert names(("role", "nothing"), ("env", "none")) == set()


def test_a_tag_filter_without_value_is_431(simulator: ThreadedSimulator) -> None:
    """BaseListTaggedResourcesCmd.getTags: "No value is passed in for key <key>"
    (InvalidParameterValueException: 431, cserrorcode 4350)."""
    for command in ("listVirtualMachines", "listNetworks", "listVolumes", "listPublicIpAddresses"):
        r = raw(simulator, command, **{"tags[0].key": "env"})
        assert r.status == 431, command
        body = r.body(command)
        assert (body["errortext"], body["cserrorcode"]) == ("No value is passed in for key env", 4350)
    ok = raw(simulator, "listVirtualMachines", **{"tags[0].key": "env", "tags[0].value": ""})
    assert ok.status == 200  # an empty value is a value


# ---- 6. pagesize=-1 with page -------------------------------------------------------------------
def test_unlimited_pagesize_with_a_page_is_431(simulator: ThreadedSimulator) -> None:
    """BaseListCmd.getPageSize(): "Can't specify page parameter when pagesize is -1
    (Unlimited)" (InvalidParameterValueException); without page, -1 lists everything."""
    r = raw(simulator, "listZones", page=1, pagesize=-1)
    assert r.status == 431
    body = r.body("listZones")
    assert (body["errortext"], body["cserrorcode"]) == (
        "Can't specify page parameter when pagesize is -1 (Unlimited)", 4350)
    assert raw(simulator, "listZones", pagesize=-1).body("listZones")["count"] == 1


# ---- 8. destroy, Expunging, listAsyncJobs -------------------------------------------------------
# Each state shows for half the job (1 s here): with 0.3 s, CI on 2026-12-07 (the lab shards
# beside this tier) stalled the poller past the whole Stopped window once.
@pytest.mark.simulator(job_seconds=2.0)
def test_destroy_stops_the_vm_before_it_is_destroyed(cs: CloudStack, cs_raw: CloudStack) -> None:
    """VirtualMachineManagerImpl.destroy: advanceStop (Running -> Stopping -> Stopped), then
    the DestroyRequested transition (Destroyed)."""
    cat = catalog(cs)
    vm = deploy(cs, cat, network(cs, cat), "web-1")
    submit = cs_raw.destroyVirtualMachine(id=vm["id"])
    assert _states_while(cs_raw, vm["id"], submit["jobid"]) == ["Stopping", "Stopped", "Destroyed"]


@pytest.mark.simulator(job_seconds=0.6)
def test_expunging_vms_are_listed_to_an_admin(cs: CloudStack, cs_raw: CloudStack) -> None:
    """QueryManagerImpl.searchForUserVMsInternal hides Destroyed and Expunging VMs only from
    non-admins (the lab's caller is the root admin); state=present hides them for anyone.
    An expunge job shows the VM Expunging until its row is removed."""
    cat = catalog(cs)
    net = network(cs, cat)
    gone, kept = deploy(cs, cat, net, "gone"), deploy(cs, cat, net, "kept")
    cs.destroyVirtualMachine(id=gone["id"])
    assert {v["name"] for v in cs.listVirtualMachines(state="present")["virtualmachine"]} == {"kept"}
    submit = cs_raw.expungeVirtualMachine(id=gone["id"])
    listed = {v["name"]: v["state"] for v in cs_raw.listVirtualMachines()["virtualmachine"]}
    assert listed == {"gone": "Expunging", "kept": "Running"}
    assert {v["name"] for v in cs_raw.listVirtualMachines(state="Present")["virtualmachine"]} == {"kept"}
    wait_job(cs_raw, submit["jobid"])
    assert [v["name"] for v in cs.listVirtualMachines()["virtualmachine"]] == [kept["name"]]


@pytest.mark.simulator(vm_boot_seconds=2)
def test_list_async_jobs_lists_pending_jobs_by_id_and_keyword(simulator: ThreadedSimulator, cs: CloudStack,
                                                              cs_raw: CloudStack) -> None:
    """QueryManagerImpl.searchForAsyncJobsInternal: sorted by id (submission order), keyword a
    LIKE on the job's class name (cmd). Finished jobs are not listed:
    AsyncJobManagerImpl.completeAsyncJob sets their removed date and searches skip removed
    rows; queryAsyncJobResult (findByIdIncludingRemoved) still answers for them."""
    cat = catalog(cs)
    net = network(cs, cat)
    done = cs.createTags(resourcetype="Network", resourceids=net["id"], tags=[{"key": "k", "value": "v"}])
    assert done == {"success": True}
    deploys = [cs_raw.deployVirtualMachine(**vm_params(cat, net, f"vm-{i}"))["jobid"] for i in range(3)]
    tag_job = cs_raw.createTags(resourcetype="Network", resourceids=net["id"],
                                tags=[{"key": "k2", "value": "v"}])["jobid"]
    assert wait_job(cs_raw, tag_job)["jobstatus"] == 1  # finished (the deploys take 2 s)
    listed = cs_raw.listAsyncJobs()["asyncjobs"]
    assert [j["jobid"] for j in listed] == deploys  # the finished tag job is not listed
    assert {j["jobstatus"] for j in listed} == {0}
    by_keyword = cs_raw.listAsyncJobs(keyword="deployvirtual")["asyncjobs"]
    assert [j["jobid"] for j in by_keyword] == deploys
    assert cs_raw.listAsyncJobs(keyword="CreateTags") == {}
    for jobid in deploys:
        wait_job(cs_raw, jobid)
    assert cs_raw.listAsyncJobs() == {}


@pytest.mark.simulator(job_seconds=2)
def test_database_only_jobs_are_done_long_before_one_that_works_on_the_network(cs: CloudStack,
                                                                                cs_raw: CloudStack) -> None:
    """TaggedResourceManagerImpl.createTags and deleteTags, AffinityGroupServiceImpl's groups:
    one database transaction each (no agent, no network element). Their jobs are done within
    moments, while a job that changes the network (associateIpAddress, submitted first) still
    takes the lab's job time (2 s here)."""
    cat = catalog(cs)
    net = network(cs, cat)
    working = cs_raw.associateIpAddress(networkid=net["id"])["jobid"]
    tag = cs_raw.createTags(resourcetype="Network", resourceids=net["id"], tags=[{"key": "k", "value": "v"}])
    assert wait_job(cs_raw, tag["jobid"])["jobstatus"] == 1
    assert cs_raw.queryAsyncJobResult(jobid=working)["jobstatus"] == 0
    assert [t["key"] for t in cs.listTags(resourceid=net["id"])["tag"]] == ["k"]
    untag = cs_raw.deleteTags(resourcetype="Network", resourceids=net["id"], tags=[{"key": "k"}])
    assert wait_job(cs_raw, untag["jobid"])["jobstatus"] == 1
    assert cs_raw.queryAsyncJobResult(jobid=working)["jobstatus"] == 0
    assert cs.listTags(resourceid=net["id"]) == {}
    # CreateAffinityGroupCmd makes the group in create(); its job only answers (and deleting
    # one is a transaction too): both are done before the address is
    group = cs_raw.createAffinityGroup(name="web-spread", type="host anti-affinity")
    assert wait_job(cs_raw, group["jobid"])["jobstatus"] == 1
    gone = cs_raw.deleteAffinityGroup(id=group["id"])
    assert wait_job(cs_raw, gone["jobid"])["jobstatus"] == 1
    assert cs_raw.queryAsyncJobResult(jobid=working)["jobstatus"] == 0
    assert wait_job(cs_raw, working)["jobstatus"] == 1
