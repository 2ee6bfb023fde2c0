"""Networks, public IPs, rules, volumes and key pairs: refused exactly where CloudStack refuses."""

from __future__ import annotations

from typing import Any

from cs import CloudStack

from .cloudkit import Catalog, catalog, deploy, http_error, job_error, network, public_key


def _setup(cs: CloudStack, vms: int = 1) -> tuple[Catalog, dict[str, Any], list[dict[str, Any]]]:
    cat = catalog(cs)
    net = network(cs, cat)
    return cat, net, [deploy(cs, cat, net, f"vm-{i}") for i in range(vms)]


def _source_nat(cs: CloudStack, net: dict[str, Any]) -> dict[str, Any]:
    [ip] = cs.listPublicIpAddresses(associatednetworkid=net["id"], issourcenat=True)["publicipaddress"]
    return ip


def _new_ip(cs: CloudStack, net: dict[str, Any]) -> dict[str, Any]:
    return cs.associateIpAddress(networkid=net["id"])["ipaddress"]


# ---- static NAT ---------------------------------------------------------------------------
def test_a_vm_has_at_most_one_static_nat_ip(cs: CloudStack) -> None:
    _, net, [vm] = _setup(cs)
    ip1, ip2 = _new_ip(cs, net), _new_ip(cs, net)
    assert cs.enableStaticNat(ipaddressid=ip1["id"], virtualmachineid=vm["id"]) == {"success": True}
    text = http_error(431, cs.enableStaticNat, ipaddressid=ip2["id"], virtualmachineid=vm["id"])
    assert "already associated" in text
    listed = {ip["id"]: ip for ip in cs.listPublicIpAddresses(isstaticnat=True)["publicipaddress"]}
    assert list(listed) == [ip1["id"]]
    assert listed[ip1["id"]]["virtualmachineid"] == vm["id"]
    assert cs.listVirtualMachines(id=vm["id"])["virtualmachine"][0]["publicip"] == ip1["ipaddress"]
    # Once the first is released from the VM, the second one may take it.
    cs.disableStaticNat(ipaddressid=ip1["id"])
    cs.enableStaticNat(ipaddressid=ip2["id"], virtualmachineid=vm["id"])
    assert cs.listVirtualMachines(id=vm["id"])["virtualmachine"][0]["publicip"] == ip2["ipaddress"]


def test_the_source_nat_ip_takes_no_static_nat_and_cannot_be_released(cs: CloudStack) -> None:
    _, net, [vm] = _setup(cs)
    snat = _source_nat(cs, net)
    text = http_error(431, cs.enableStaticNat, ipaddressid=snat["id"], virtualmachineid=vm["id"])
    assert "sourceNat" in text
    text = job_error(431, cs.disassociateIpAddress, id=snat["id"])
    assert "source nat" in text
    assert cs.listPublicIpAddresses(id=snat["id"])["count"] == 1


def test_released_ip_goes_with_its_rules(cs: CloudStack) -> None:
    _, net, [vm] = _setup(cs)
    ip = _new_ip(cs, net)
    cs.createFirewallRule(ipaddressid=ip["id"], protocol="tcp", startport=80, endport=80)
    cs.createPortForwardingRule(ipaddressid=ip["id"], protocol="tcp", publicport=2222, privateport=22,
                                virtualmachineid=vm["id"])
    cs.disassociateIpAddress(id=ip["id"])
    assert cs.listPublicIpAddresses(id=ip["id"]) == {}
    assert cs.listFirewallRules() == {}
    assert cs.listPortForwardingRules() == {}


# ---- deleting a network -------------------------------------------------------------------
def test_delete_network_waits_for_every_vm_to_be_expunged(cs: CloudStack) -> None:
    _, net, [vm] = _setup(cs)
    extra = _new_ip(cs, net)
    text = job_error(530, cs.deleteNetwork, id=net["id"])
    assert vm["id"] in text and "Running" in text

    cs.destroyVirtualMachine(id=vm["id"])  # Destroyed is not enough: it is still attached
    text = job_error(530, cs.deleteNetwork, id=net["id"])
    assert vm["id"] in text and "Destroyed" in text
    assert cs.listNetworks(id=net["id"])["count"] == 1

    cs.expungeVirtualMachine(id=vm["id"])
    assert cs.deleteNetwork(id=net["id"]) == {"success": True}
    assert cs.listNetworks() == {}
    assert cs.listNetworks(id=net["id"]) == {}  # a removed network's id lists empty
    # Its addresses (source NAT and the extra one) went with it.
    assert cs.listPublicIpAddresses() == {}
    assert cs.listPublicIpAddresses(id=extra["id"]) == {}


# ---- volumes ------------------------------------------------------------------------------
def test_volume_delete_only_when_detached(cs: CloudStack) -> None:
    cat, _, [vm] = _setup(cs)
    vol = cs.createVolume(name="data", diskofferingid=cat.disks["Small"], zoneid=cat.zone)["volume"]
    attached = cs.attachVolume(id=vol["id"], virtualmachineid=vm["id"])["volume"]
    assert attached["virtualmachineid"] == vm["id"] and attached["state"] == "Ready"
    text = http_error(431, cs.deleteVolume, id=vol["id"])
    assert text == "Please specify a volume that is not attached to any VM."
    assert cs.listVolumes(id=vol["id"])["count"] == 1

    detached = cs.detachVolume(id=vol["id"])["volume"]
    assert "virtualmachineid" not in detached
    assert cs.deleteVolume(id=vol["id"]) == {"success": True}
    assert cs.listVolumes(id=vol["id"]) == {}
    assert cs.listVolumes(virtualmachineid=vm["id"], type="DATADISK") == {}


def test_root_volume_cannot_be_attached(cs: CloudStack) -> None:
    _, net, [vm] = _setup(cs)
    [root] = cs.listVolumes(virtualmachineid=vm["id"], type="ROOT")["volume"]
    other = deploy(cs, catalog(cs), net, "other")
    text = job_error(431, cs.attachVolume, id=root["id"], virtualmachineid=other["id"])
    assert "DATADISK" in text
    assert cs.listVolumes(id=root["id"])["volume"][0]["virtualmachineid"] == vm["id"]


def test_resize_shrink_needs_shrinkok(cs: CloudStack) -> None:
    cat = catalog(cs)
    vol = cs.createVolume(name="data", diskofferingid=cat.disks["Custom"], size=10, zoneid=cat.zone)["volume"]
    assert vol["size"] == 10 * 1024**3
    text = job_error(431, cs.resizeVolume, id=vol["id"], size=5)
    assert "shrinkok" in text
    assert cs.listVolumes(id=vol["id"])["volume"][0]["size"] == 10 * 1024**3
    assert cs.resizeVolume(id=vol["id"], size=20)["volume"]["size"] == 20 * 1024**3
    assert cs.resizeVolume(id=vol["id"], size=5, shrinkok=True)["volume"]["size"] == 5 * 1024**3


# ---- key pairs ----------------------------------------------------------------------------
def test_keypair_names_and_keys_are_unique(cs: CloudStack) -> None:
    key = public_key()
    cs.registerSSHKeyPair(name="deploy", publickey=key)
    text = http_error(431, cs.registerSSHKeyPair, name="deploy", publickey=public_key())
    assert text == "A key pair with name 'deploy' already exists."
    text = http_error(431, cs.registerSSHKeyPair, name="deploy-2", publickey=key)
    assert "already exists" in text
    assert [k["name"] for k in cs.listSSHKeyPairs()["sshkeypair"]] == ["deploy"]
    http_error(431, cs.createSSHKeyPair, name="deploy")


def test_delete_unknown_keypair_is_431(cs: CloudStack) -> None:
    text = http_error(431, cs.deleteSSHKeyPair, name="nope")
    assert "A key pair with name 'nope' does not exist" in text
    cs.registerSSHKeyPair(name="deploy", publickey=public_key())
    assert cs.deleteSSHKeyPair(name="deploy") == {"success": True}
    assert cs.listSSHKeyPairs() == {}


# ---- firewall and port forwarding -----------------------------------------------------------
def test_firewall_rule_overlap_is_537(cs: CloudStack) -> None:
    _, net, _ = _setup(cs)
    ip = _new_ip(cs, net)
    rule = cs.createFirewallRule(ipaddressid=ip["id"], protocol="tcp", startport=20, endport=30,
                                 cidrlist="10.0.0.0/8")["firewallrule"]
    assert (rule["startport"], rule["endport"], rule["cidrlist"]) == (20, 30, "10.0.0.0/8")

    text = http_error(537, cs.createFirewallRule, ipaddressid=ip["id"], protocol="tcp", startport=25,
                      endport=40, cidrlist="10.1.0.0/16")
    assert text == f"The range specified, 25-40, conflicts with rule {rule['id']} which has 20-30"
    http_error(537, cs.createFirewallRule, ipaddressid=ip["id"], protocol="TCP", startport=30, endport=30)

    # No conflict: other ports, another protocol, or the same ports from a disjoint source.
    cs.createFirewallRule(ipaddressid=ip["id"], protocol="tcp", startport=31, endport=40, cidrlist="10.0.0.0/8")
    cs.createFirewallRule(ipaddressid=ip["id"], protocol="udp", startport=20, endport=30, cidrlist="10.0.0.0/8")
    cs.createFirewallRule(ipaddressid=ip["id"], protocol="tcp", startport=20, endport=30,
                          cidrlist="192.168.0.0/16")
    assert cs.listFirewallRules(ipaddressid=ip["id"])["count"] == 4


def test_port_forwarding_opens_and_closes_its_firewall_rule(cs: CloudStack) -> None:
    _, net, [vm] = _setup(cs)
    ip = _new_ip(cs, net)
    pf = cs.createPortForwardingRule(ipaddressid=ip["id"], protocol="tcp", publicport=2222, privateport=22,
                                     virtualmachineid=vm["id"])["portforwardingrule"]
    assert (pf["publicport"], pf["privateport"]) == ("2222", "22")  # strings, as CloudStack sends them
    [fw] = cs.listFirewallRules(ipaddressid=ip["id"])["firewallrule"]
    assert (fw["startport"], fw["endport"], fw["cidrlist"]) == (2222, 2222, "0.0.0.0/0")

    text = http_error(537, cs.createPortForwardingRule, ipaddressid=ip["id"], protocol="tcp", publicport=2222,
                      privateport=23, virtualmachineid=vm["id"])
    assert f"conflicts with rule {pf['id']}" in text

    cs.deletePortForwardingRule(id=pf["id"])
    assert cs.listPortForwardingRules() == {}
    assert cs.listFirewallRules(ipaddressid=ip["id"]) == {}

    cs.createPortForwardingRule(ipaddressid=ip["id"], protocol="tcp", publicport=2222, privateport=22,
                                virtualmachineid=vm["id"], openfirewall=False)
    assert cs.listFirewallRules(ipaddressid=ip["id"]) == {}


def test_no_port_forwarding_on_a_static_nat_ip(cs: CloudStack) -> None:
    _, net, [vm] = _setup(cs)
    ip = _new_ip(cs, net)
    cs.enableStaticNat(ipaddressid=ip["id"], virtualmachineid=vm["id"])
    text = http_error(431, cs.createPortForwardingRule, ipaddressid=ip["id"], protocol="tcp", publicport=22,
                      privateport=22, virtualmachineid=vm["id"])
    assert text == f"Unable to create port forwarding rule; ip id={ip['id']} has static nat enabled"
    assert cs.listPortForwardingRules() == {}


def test_no_static_nat_on_an_ip_with_port_forwarding(cs: CloudStack) -> None:
    _, net, [vm] = _setup(cs)
    ip = _new_ip(cs, net)
    cs.createPortForwardingRule(ipaddressid=ip["id"], protocol="tcp", publicport=22, privateport=22,
                                virtualmachineid=vm["id"])
    http_error(537, cs.enableStaticNat, ipaddressid=ip["id"], virtualmachineid=vm["id"])
    assert cs.listPublicIpAddresses(isstaticnat=True) == {}
