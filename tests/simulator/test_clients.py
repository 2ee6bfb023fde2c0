"""Real CloudStack clients drive the simulator end to end: `cs` (sync and asyncio) and libcloud.

Each client is used the way its users use it, against the HTTP endpoint of a simulator
running in its own thread; nothing is mocked. The last test is the lab's "done when"
scenario: configured from the environment like a user's shell, it builds a VM with a public
IP, static NAT, a firewall rule and a data disk, then really logs in over SSH.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any
from urllib.parse import urlparse

import asyncssh
import cs as cs_module
import pytest
from cs import AIOCloudStack, CloudStack, CloudStackApiException
from libcloud.compute.base import NodeDriver
from libcloud.compute.providers import get_driver
from libcloud.compute.types import KeyPairDoesNotExistError, NodeState, Provider, StorageVolumeState

from cloudstack_deploy.lab.simulator.server import ThreadedSimulator

try:  # tests/simulator is a package; work either way
    from .conftest import KEY, SECRET
except ImportError:
    from conftest import KEY, SECRET  # type: ignore[no-redef]

GB = 1024**3


def _catalog(api: CloudStack) -> dict[str, Any]:
    zone = api.listZones()["zone"][0]
    offerings = {o["name"]: o for o in api.listServiceOfferings()["serviceoffering"]}
    templates = api.listTemplates(templatefilter="featured", zoneid=zone["id"])["template"]
    netoff = api.listNetworkOfferings(guestiptype="Isolated", state="Enabled")["networkoffering"][0]
    disk = next(d for d in api.listDiskOfferings()["diskoffering"] if not d["iscustomized"])
    return {"zone": zone, "offerings": offerings, "template": templates[0], "netoff": netoff, "disk": disk}


def _public_key() -> tuple[asyncssh.SSHKey, str]:
    key = asyncssh.generate_private_key("ssh-ed25519")
    return key, key.export_public_key().decode().strip()


def _md5_fingerprint(public_key: str) -> str:
    blob = asyncssh.import_public_key(public_key).public_data
    digest = hashlib.md5(blob).hexdigest()
    return ":".join(digest[i:i + 2] for i in range(0, 32, 2))


# ---- cs, synchronous -------------------------------------------------------------------------

def test_cs_sync_client_drives_a_vm_through_its_life(cs: CloudStack) -> None:
    cat = _catalog(cs)
    small, medium = cat["offerings"]["small"], cat["offerings"]["medium"]
    net = cs.createNetwork(name="life", displaytext="life", networkofferingid=cat["netoff"]["id"],
                           zoneid=cat["zone"]["id"])["network"]
    assert net["state"] == "Allocated"
    _, pub = _public_key()
    kp = cs.registerSSHKeyPair(name="life-key", publickey=pub)["keypair"]
    assert kp["fingerprint"] == _md5_fingerprint(pub)

    vm = cs.deployVirtualMachine(zoneid=cat["zone"]["id"], serviceofferingid=small["id"],
                                 templateid=cat["template"]["id"], networkids=[net["id"]],
                                 name="life-1", keypair="life-key")["virtualmachine"]
    assert (vm["name"], vm["state"], vm["keypairs"]) == ("life-1", "Running", "life-key")
    assert vm["nic"][0]["networkid"] == net["id"] and vm["nic"][0]["isdefault"] is True
    listed = cs.listVirtualMachines(id=vm["id"])
    assert listed["count"] == 1 and listed["virtualmachine"][0]["state"] == "Running"
    assert cs.listNetworks(id=net["id"])["network"][0]["state"] == "Implemented"

    assert cs.rebootVirtualMachine(id=vm["id"])["virtualmachine"]["state"] == "Running"
    assert cs.stopVirtualMachine(id=vm["id"])["virtualmachine"]["state"] == "Stopped"
    scaled = cs.scaleVirtualMachine(id=vm["id"], serviceofferingid=medium["id"])["virtualmachine"]
    assert (scaled["serviceofferingid"], scaled["cpunumber"]) == (medium["id"], medium["cpunumber"])
    assert cs.startVirtualMachine(id=vm["id"])["virtualmachine"]["state"] == "Running"

    assert cs.destroyVirtualMachine(id=vm["id"])["virtualmachine"]["state"] == "Destroyed"
    assert cs.listVirtualMachines(id=vm["id"])["virtualmachine"][0]["state"] == "Destroyed"
    assert cs.recoverVirtualMachine(id=vm["id"])["virtualmachine"]["state"] == "Stopped"
    # the network cannot go while a VM (even a stopped one) is in it: the job fails with 530
    with pytest.raises(CloudStackApiException) as err:
        cs.deleteNetwork(id=net["id"])
    assert err.value.error["errorcode"] == 530
    cs.destroyVirtualMachine(id=vm["id"], expunge=True)
    assert cs.listVirtualMachines(name="life-1") == {}
    assert cs.deleteNetwork(id=net["id"]) == {"success": True}
    assert cs.deleteSSHKeyPair(name="life-key") == {"success": True}
    assert cs.listNetworks() == {} and cs.listSSHKeyPairs() == {}


# ---- cs, asyncio ------------------------------------------------------------------------------

async def test_aio_cs_client_runs_calls_concurrently_on_one_session(simulator: ThreadedSimulator) -> None:
    async with AIOCloudStack(endpoint=simulator.endpoint, key=KEY, secret=SECRET, poll_interval=0.02,
                             job_timeout=30, fetch_result=True) as api:
        session = api.session
        assert session is not None and not session.closed
        zones, offerings, templates, netoffs = await asyncio.gather(
            api.listZones(), api.listServiceOfferings(name="micro"),
            api.listTemplates(templatefilter="executable"),
            api.listNetworkOfferings(guestiptype="Isolated"))
        zone = zones["zone"][0]
        net = (await api.createNetwork(name="fleet", networkofferingid=netoffs["networkoffering"][0]["id"],
                                       zoneid=zone["id"]))["network"]
        deploy = dict(zoneid=zone["id"], serviceofferingid=offerings["serviceoffering"][0]["id"],
                      templateid=templates["template"][0]["id"], networkids=net["id"])
        vms = await asyncio.gather(*(api.deployVirtualMachine(name=f"fleet-{i}", **deploy) for i in range(5)))
        vms = [v["virtualmachine"] for v in vms]
        assert sorted(v["name"] for v in vms) == [f"fleet-{i}" for i in range(5)]
        assert {v["state"] for v in vms} == {"Running"}
        assert len({v["id"] for v in vms}) == 5
        assert len({v["nic"][0]["ipaddress"] for v in vms}) == 5  # each got its own guest address
        listed = await api.listVirtualMachines(networkid=net["id"], fetch_list=True)
        assert sorted(v["name"] for v in listed) == [f"fleet-{i}" for i in range(5)]

        results = await asyncio.gather(*(api.destroyVirtualMachine(id=v["id"], expunge=True) for v in vms))
        assert len(results) == 5
        assert await api.listVirtualMachines() == {}
        assert await api.deleteNetwork(id=net["id"]) == {"success": True}
        assert api.session is session  # every call above went through the one shared session
    assert session.closed


# ---- apache-libcloud ----------------------------------------------------------------------------

@pytest.fixture
def driver(simulator: ThreadedSimulator) -> NodeDriver:
    url = urlparse(simulator.endpoint)
    drv = get_driver(Provider.CLOUDSTACK)(KEY, SECRET, host=url.hostname, port=url.port, path=url.path,
                                          secure=False)
    drv.connection.poll_interval = 0.02  # libcloud polls async jobs every second by default
    return drv


def test_libcloud_driver_full_cycle(driver: Any, cs: CloudStack) -> None:
    [location] = driver.list_locations()
    assert (location.id, location.name) == (cs.listZones()["zone"][0]["id"], "lab-zone-1")
    sizes = {s.name: s for s in driver.list_sizes()}
    assert set(sizes) == {"micro", "small", "medium", "large"}
    assert (sizes["small"].ram, sizes["small"].extra["cpu"]) == (1024, 1)
    images = driver.list_images(location=location)
    assert "Debian 12 bookworm 2026-11-01" in {i.name for i in images}
    image = next(i for i in images if i.name.startswith("Debian"))
    assert image.extra["os"] == "Debian GNU/Linux 12 (64-bit)"
    offering = next(o for o in driver.ex_list_network_offerings() if o.guest_ip_type == "Isolated")
    net = driver.ex_create_network(display_text="lc", name="lc", network_offering=offering, location=location)

    # key pairs
    _, pub = _public_key()
    kp = driver.import_key_pair_from_string("lc-key", pub)
    assert (kp.name, kp.fingerprint) == ("lc-key", _md5_fingerprint(pub))
    assert [k.name for k in driver.list_key_pairs()] == ["lc-key"]
    assert driver.get_key_pair("lc-key").fingerprint == kp.fingerprint
    with pytest.raises(KeyPairDoesNotExistError):
        driver.get_key_pair("no-such-key")

    # nodes: libcloud sends startvm=False unless told otherwise, so the VM stays Stopped
    node = driver.create_node(name="lc-1", size=sizes["small"], image=image, location=location,
                              networks=[net], ex_keyname="lc-key")
    assert node.state == NodeState.STOPPED
    raw = cs.listVirtualMachines(id=node.id)["virtualmachine"][0]
    assert (raw["state"], raw["keypairs"]) == ("Stopped", "lc-key")
    assert node.private_ips == [raw["nic"][0]["ipaddress"]]
    started = driver.create_node(name="lc-2", size=sizes["micro"], image=image, location=location,
                                 networks=[net], ex_start_vm=True)
    assert started.state == NodeState.RUNNING
    assert driver.ex_start(node) == "Running"
    assert driver.reboot_node(node) is True
    assert driver.ex_stop(node) == "Stopped"
    assert driver.ex_change_node_size(node, sizes["large"]) == sizes["large"].id
    assert driver.ex_start(node) == "Running"
    nodes = {n.name: n for n in driver.list_nodes()}
    assert {n: x.state for n, x in nodes.items()} == {"lc-1": NodeState.RUNNING, "lc-2": NodeState.RUNNING}
    assert nodes["lc-1"].extra["size_id"] == sizes["large"].id

    # public IPs, static NAT + IP forwarding, firewall and port forwarding
    nat_ip = driver.ex_allocate_public_ip(network_id=net.id)
    fwd_ip = driver.ex_allocate_public_ip(network_id=net.id)
    listed_ips = {a.address: a for a in driver.ex_list_public_ips()}
    assert {nat_ip.address, fwd_ip.address} < set(listed_ips)  # beside the network's source NAT
    assert listed_ips[nat_ip.address].associated_network_id == net.id
    # libcloud has no static-NAT call of its own: its generic request does it
    driver._sync_request("enableStaticNat", params={"ipaddressid": nat_ip.id, "virtualmachineid": node.id})
    ipf = driver.ex_create_ip_forwarding_rule(node, nat_ip, "TCP", 22, 22)  # opens 22 in the firewall
    fw = driver.ex_create_firewall_rule(nat_ip, "127.0.0.0/8", "TCP", start_port=8080, end_port=8081)
    rules = {r.id: r for r in driver.ex_list_firewall_rules()}
    assert len(rules) == 2
    assert (rules[fw.id].address.address, rules[fw.id].cidr_list, rules[fw.id].protocol) == \
        (nat_ip.address, "127.0.0.0/8", "tcp")
    assert (rules[fw.id].start_port, rules[fw.id].end_port) == (8080, 8081)  # ints, as in 4.x
    pf = driver.ex_create_port_forwarding_rule(nodes["lc-1"], fwd_ip, 22, 2222, "TCP")
    [listed_pf] = driver.ex_list_port_forwarding_rules()
    assert (listed_pf.id, listed_pf.public_port, listed_pf.private_port, listed_pf.node.id) == \
        (pf.id, "2222", "22", node.id)  # port forwarding ports are strings
    assert len(driver.ex_list_firewall_rules()) == 3  # openfirewall: one more, for 2222
    lc1 = next(n for n in driver.list_nodes() if n.name == "lc-1")
    assert nat_ip.address in lc1.public_ips and fwd_ip.address in lc1.public_ips
    assert [r.id for r in lc1.extra["ip_forwarding_rules"]] == [ipf.id]
    assert [r.id for r in lc1.extra["port_forwarding_rules"]] == [pf.id]
    assert driver.ex_delete_port_forwarding_rule(lc1, lc1.extra["port_forwarding_rules"][0]) is True
    assert driver.ex_delete_ip_forwarding_rule(lc1, lc1.extra["ip_forwarding_rules"][0]) is True
    # deleting a forwarding rule also removes the firewall rule it opened; ours stays
    assert driver.ex_list_port_forwarding_rules() == []
    assert [r.id for r in driver.ex_list_firewall_rules()] == [fw.id]
    assert driver.ex_delete_firewall_rule(fw) is True
    assert driver.ex_list_firewall_rules() == []

    # tags
    assert driver.ex_create_tags([node.id], "UserVm", {"env": "lab", "tier": "web"}) is True
    tagged = next(n for n in driver.list_nodes() if n.id == node.id)
    assert tagged.extra["tags"] == {"env": "lab", "tier": "web"}
    assert driver.ex_delete_tags([node.id], "UserVm", ["env"]) is True
    assert next(n for n in driver.list_nodes() if n.id == node.id).extra["tags"] == {"tier": "web"}

    # volumes: libcloud picks the first disk offering that fits: the custom-size one
    vol = driver.create_volume(10, "lc-data", location=location)
    assert (vol.name, vol.size, vol.state) == ("lc-data", 10, StorageVolumeState.AVAILABLE)
    assert driver.attach_volume(node, vol) is True
    on_node = {v.name: v for v in driver.list_volumes(node=node)}
    assert set(on_node) == {"lc-data", "ROOT-1"}
    assert on_node["lc-data"].state == StorageVolumeState.INUSE and on_node["lc-data"].size == 10 * GB
    assert on_node["lc-data"].extra["volume_type"] == "DATADISK" and on_node["lc-data"].extra["device_id"] == 1
    assert driver.detach_volume(vol) is True
    assert {v.name: v.state for v in driver.list_volumes()}["lc-data"] == StorageVolumeState.AVAILABLE
    assert driver.destroy_volume(vol) is True
    assert "lc-data" not in {v.name for v in driver.list_volumes()}

    # teardown
    assert driver.ex_release_public_ip(fwd_ip) is True
    assert driver.destroy_node(started) is True
    assert next(n for n in driver.list_nodes() if n.id == started.id).state == NodeState.TERMINATED
    assert driver.destroy_node(node, ex_expunge=True) is True
    assert driver.destroy_node(started, ex_expunge=True) is True
    assert driver.list_nodes() == []
    # the static-NAT address stays with the account, no longer pointing at the VM
    kept = {a.address: a for a in driver.ex_list_public_ips()}[nat_ip.address]
    assert kept.virtualmachine_id is None
    assert driver.ex_release_public_ip(kept) is True
    assert driver.ex_delete_network(net) is True
    assert driver.ex_list_networks() == []
    # libcloud compares "success" with the string "true" that CloudStack < 4 sent; modern
    # CloudStack (and the lab) send a JSON boolean, so libcloud says False although it worked.
    assert driver.delete_key_pair(kp) is False
    assert driver.list_key_pairs() == []


# ---- the lab's "done when" -----------------------------------------------------------------------

async def _ssh(host: str, key: asyncssh.SSHKey) -> asyncssh.SSHClientConnection:
    return await asyncio.wait_for(asyncssh.connect(
        host, 22, username="debian", client_keys=[key], known_hosts=None, config=None, agent_path=None), 10)


async def _login(host: str, key: asyncssh.SSHKey, stranger: asyncssh.SSHKey) -> tuple[int | None, str]:
    async with await _ssh(host, key) as conn:
        result = await conn.run("hostname")
    with pytest.raises(asyncssh.PermissionDenied):
        await _ssh(host, stranger)
    return result.exit_status, str(result.stderr)


async def _refused(host: str) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, 22), 10)
    except ConnectionRefusedError:
        return True
    writer.close()
    await writer.wait_closed()
    return False


def test_done_when_a_user_configured_cs_builds_a_vm_and_logs_in(
        simulator: ThreadedSimulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    for name in ("CLOUDSTACK_CONFIG", "CLOUDSTACK_OVERRIDES", "CLOUDSTACK_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no ./cloudstack.ini in the way
    monkeypatch.setenv("CLOUDSTACK_ENDPOINT", simulator.endpoint)
    monkeypatch.setenv("CLOUDSTACK_KEY", KEY)
    monkeypatch.setenv("CLOUDSTACK_SECRET", SECRET)
    monkeypatch.setenv("CLOUDSTACK_POLL_INTERVAL", "0.02")
    monkeypatch.setenv("CLOUDSTACK_JOB_TIMEOUT", "30")
    config = cs_module.read_config()
    assert (config["endpoint"], config["key"]) == (simulator.endpoint, KEY)
    api = CloudStack(**config, fetch_result=True)
    cat = _catalog(api)

    net = api.createNetwork(name="done", networkofferingid=cat["netoff"]["id"], zoneid=cat["zone"]["id"])["network"]
    key, pub = _public_key()
    api.registerSSHKeyPair(name="done-key", publickey=pub)
    vm = api.deployVirtualMachine(zoneid=cat["zone"]["id"], serviceofferingid=cat["offerings"]["micro"]["id"],
                                  templateid=cat["template"]["id"], networkids=[net["id"]], name="done-1",
                                  keypair="done-key")["virtualmachine"]
    assert vm["state"] == "Running"
    ip = api.associateIpAddress(networkid=net["id"])["ipaddress"]
    assert (ip["state"], ip["issourcenat"], ip["associatednetworkid"]) == ("Allocated", False, net["id"])
    assert api.enableStaticNat(ipaddressid=ip["id"], virtualmachineid=vm["id"]) == {"success": True}
    fw = api.createFirewallRule(ipaddressid=ip["id"], protocol="tcp", startport=22, endport=22,
                                cidrlist=["127.0.0.0/8"])["firewallrule"]
    assert (fw["startport"], fw["endport"], fw["cidrlist"], fw["state"]) == (22, 22, "127.0.0.0/8", "Active")
    assert api.listVirtualMachines(id=vm["id"])["virtualmachine"][0]["publicip"] == ip["ipaddress"]

    vol = api.createVolume(name="done-data", diskofferingid=cat["disk"]["id"], zoneid=cat["zone"]["id"])["volume"]
    assert vol["size"] == cat["disk"]["disksize"] * GB
    attached = api.attachVolume(id=vol["id"], virtualmachineid=vm["id"])["volume"]
    assert (attached["state"], attached["virtualmachineid"]) == ("Ready", vm["id"])
    assert {v["type"] for v in api.listVolumes(virtualmachineid=vm["id"])["volume"]} == {"ROOT", "DATADISK"}
    assert "virtualmachineid" not in api.detachVolume(id=vol["id"])["volume"]
    assert api.deleteVolume(id=vol["id"]) == {"success": True}

    api.createTags(resourceids=[vm["id"]], resourcetype="UserVm", tags=[{"key": "role", "value": "web"}])
    found = api.listVirtualMachines(tags=[{"key": "role", "value": "web"}])["virtualmachine"]
    assert [(v["id"], v["tags"][0]["key"], v["tags"][0]["value"]) for v in found] == [(vm["id"], "role", "web")]

    simulator.settle()
    status, stderr = asyncio.run(_login(ip["ipaddress"], key, asyncssh.generate_private_key("ssh-ed25519")))
    assert status == 126 and "done-1" in stderr  # a memory VM: logged in, but it runs no commands

    api.destroyVirtualMachine(id=vm["id"], expunge=True)
    assert api.deleteNetwork(id=net["id"]) == {"success": True}
    assert api.deleteSSHKeyPair(name="done-key") == {"success": True}
    for command, params in (("listVirtualMachines", {}), ("listNetworks", {}), ("listSSHKeyPairs", {}),
                            ("listPublicIpAddresses", {}), ("listVolumes", {}), ("listFirewallRules", {}),
                            ("listTags", {"resourceid": vm["id"]})):
        assert getattr(api, command)(**params) == {}, command
    simulator.settle()
    assert asyncio.run(_refused(ip["ipaddress"]))
