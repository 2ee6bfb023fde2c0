"""Conformance with clients nobody here wrote, used the way their users use them.

- apache-libcloud's CloudStack driver with its defaults: a public IP asked for by zone only
  (``ex_allocate_public_ip()``), ``create_node`` (which creates the VM stopped) then
  ``ex_start``, and a real SSH login through the address it got.
- A CloudMonkey-style client: it learns every command from ``listApis`` and checks that
  each required parameter is enforced the way CloudStack does (ParamProcessWorker: 431
  "Unable to execute API command <cmd> due to missing parameter <name>").
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlparse

import asyncssh
import pytest
from cs import CloudStack
from libcloud.compute.base import NodeDriver
from libcloud.compute.providers import get_driver
from libcloud.compute.types import NodeState, Provider

from cloudstack_deploy.lab.simulator.server import ThreadedSimulator

from .cloudkit import catalog, deploy, network, public_key, wait_job
from .cmkclient import CmkStyleClient
from .conftest import KEY, SECRET


@pytest.fixture
def driver(simulator: ThreadedSimulator) -> NodeDriver:
    url = urlparse(simulator.endpoint)
    drv = get_driver(Provider.CLOUDSTACK)(KEY, SECRET, host=url.hostname, port=url.port, path=url.path,
                                          secure=False)
    drv.connection.poll_interval = 0.02  # libcloud polls async jobs every second by default
    return drv


async def _login(host: str, key: asyncssh.SSHKey) -> str:
    conn = await asyncio.wait_for(asyncssh.connect(host, 22, username="debian", client_keys=[key],
                                                   known_hosts=None, config=None, agent_path=None), 10)
    async with conn:
        result = await conn.run("hostname")
    return str(result.stderr)


def test_libcloud_life_cycle_with_the_drivers_defaults(simulator: ThreadedSimulator, driver: Any,
                                                       cs: CloudStack) -> None:
    """The path a libcloud user takes on a real cloud, with nothing but defaults: one isolated
    network, create_node (stopped: libcloud sends startvm=false), ex_start, an address asked
    for by zone only (AssociateIPAddrCmd picks the account's one isolated network), static
    NAT, a firewall rule, SSH in, reboot (still Running), then everything torn down."""
    [location] = driver.list_locations()
    size = next(s for s in driver.list_sizes() if s.name == "micro")
    image = next(i for i in driver.list_images(location=location) if i.name.startswith("Debian 12"))
    offering = next(o for o in driver.ex_list_network_offerings() if o.guest_ip_type == "Isolated")
    net = driver.ex_create_network(display_text="lc", name="lc", network_offering=offering, location=location)
    key = asyncssh.generate_private_key("ssh-ed25519")
    driver.import_key_pair_from_string("lc-key", key.export_public_key().decode())

    node = driver.create_node(name="lc-1", size=size, image=image, location=location, networks=[net],
                              ex_keyname="lc-key")
    assert node.state == NodeState.STOPPED
    assert driver.ex_start(node) == "Running"

    address = driver.ex_allocate_public_ip()
    [listed] = [a for a in driver.ex_list_public_ips() if a.id == address.id]
    assert listed.associated_network_id == net.id
    driver._sync_request("enableStaticNat", params={"ipaddressid": address.id, "virtualmachineid": node.id})
    driver.ex_create_firewall_rule(address, "127.0.0.0/8", "TCP", start_port=22, end_port=22)
    simulator.settle()
    assert "lc-1" in asyncio.run(_login(address.address, key))

    assert driver.reboot_node(node) is True
    [again] = [n for n in driver.list_nodes() if n.id == node.id]
    assert again.state == NodeState.RUNNING and address.address in again.public_ips

    # a second isolated network makes the zone-only request ambiguous, as on a real cloud
    other = driver.ex_create_network(display_text="lc2", name="lc2", network_offering=offering, location=location)
    with pytest.raises(Exception, match="more than one isolated network"):
        driver.ex_allocate_public_ip()
    assert driver.ex_delete_network(other) is True

    assert driver.ex_stop(node) == "Stopped"
    assert driver.destroy_node(node, ex_expunge=True) is True
    assert driver.ex_release_public_ip(address) is True
    assert driver.ex_delete_network(net) is True
    assert driver.list_nodes() == [] and driver.ex_list_networks() == []
    assert cs.listPublicIpAddresses() == {}


#: Envelopes CloudStack names other than "<command lower-cased>response" (the Cmd's s_name).
ENVELOPES = {"resetSSHKeyForVirtualMachine": "resetSSHKeyforvirtualmachineresponse"}


def _world(cs: CloudStack) -> None:
    """One live record of every kind a command parameter can point at."""
    cat = catalog(cs)
    net = network(cs, cat)
    cs.registerSSHKeyPair(name="kp", publickey=public_key())
    vm = deploy(cs, cat, net, "vm-1", keypair="kp")
    nat_ip = cs.associateIpAddress(networkid=net["id"])["ipaddress"]
    cs.enableStaticNat(ipaddressid=nat_ip["id"], virtualmachineid=vm["id"])
    cs.createIpForwardingRule(ipaddressid=nat_ip["id"], protocol="tcp", startport=80)
    cs.createFirewallRule(ipaddressid=nat_ip["id"], protocol="tcp", startport=22, endport=22)
    pf_ip = cs.associateIpAddress(networkid=net["id"])["ipaddress"]
    cs.createPortForwardingRule(ipaddressid=pf_ip["id"], privateport=22, publicport=2222, protocol="tcp",
                                virtualmachineid=vm["id"])
    cs.createLoadBalancerRule(algorithm="roundrobin", name="lb", privateport=80, publicport=80,
                              publicipid=pf_ip["id"])
    cs.createEgressFirewallRule(networkid=net["id"], protocol="tcp", startport=80, endport=80)
    vol = cs.createVolume(name="data", diskofferingid=cat.disks["Small"], zoneid=cat.zone,
                          virtualmachineid=vm["id"])["volume"]  # attached: Ready, so it may be snapshotted
    cs.createSnapshot(volumeid=vol["id"])
    cs.createSnapshotPolicy(volumeid=vol["id"], intervaltype="DAILY", schedule="00:01", maxsnaps=1,
                            timezone="UTC")


def test_a_cloudmonkey_style_client_finds_every_required_parameter_enforced(simulator: ThreadedSimulator,
                                                                            cs: CloudStack) -> None:
    """For every command listApis reports, leaving out any one required parameter (the others
    given values of their type, uuids completed from the related list API) is a 431 naming
    it, and so is sending no parameters at all (the first required one, in listApis order):
    ParamProcessWorker.processParameters checks each field in order."""
    _world(cs)
    cmk = CmkStyleClient(simulator.endpoint, KEY, SECRET)
    apis = cmk.sync()
    checked = 0
    for name in sorted(apis):
        required = cmk.required(name)
        if not required:
            continue
        values = {p["name"]: cmk.value_for(name, p) for p in required}
        first = cmk.call(name)
        assert first.status == 431, (name, first.body)
        assert first.value["errortext"] == \
            f"Unable to execute API command {name.lower()} due to missing parameter {required[0]['name']}"
        for missing in required:
            params: dict[str, str] = {}
            for p in required:
                if p is not missing:
                    params.update(values[p["name"]])
            answer = cmk.call(name, **params)
            assert answer.status == 431, (name, missing["name"], answer.body)
            assert list(answer.body) == [ENVELOPES.get(name, f"{name.lower()}response")], name
            assert answer.value == {
                "uuidList": [], "errorcode": 431, "cserrorcode": 9999,
                "errortext": f"Unable to execute API command {name.lower()} due to missing parameter "
                             f"{missing['name']}"}, (name, missing["name"])
            checked += 1
    assert checked == sum(len(cmk.required(n)) for n in apis) >= 70  # every required parameter of every command


def test_the_cmk_client_really_completes_ids(simulator: ThreadedSimulator, cs: CloudStack,
                                             cs_raw: CloudStack) -> None:
    """(The client above is only a fair check if its values are accepted: with all required
    parameters, commands run.)"""
    _world(cs)
    cmk = CmkStyleClient(simulator.endpoint, KEY, SECRET)
    cmk.sync()
    for name in ("attachVolume", "scaleVirtualMachine", "deleteFirewallRule", "deleteEgressFirewallRule"):
        params: dict[str, str] = {}
        for p in cmk.required(name):
            params.update(cmk.value_for(name, p))
        answer = cmk.call(name, **params)
        assert answer.status == 200, (name, answer.body)
        wait_job(cs_raw, answer.value["jobid"])
