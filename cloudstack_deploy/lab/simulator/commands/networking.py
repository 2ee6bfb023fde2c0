"""Isolated networks, public IP addresses and static NAT."""

from __future__ import annotations

import ipaddress
from typing import Any

from .. import catalog
from ..clock import now_str
from ..engine import Simulator
from ..errors import ApiError, invalid_value
from ..registry import TAG_FILTER, AsyncResult, Param, Request, command, finisher
from ._common import get_or_431, owner, select, with_tags, zone_fields

LIVE_VM_STATES = ("Starting", "Running", "Stopping", "Stopped", "Migrating", "Error", "Destroyed", "Expunging")


# ---- networks ----------------------------------------------------------------------------

#: What the VirtualRouter's services of an isolated network can do. createNetworkResponse lists
#: each service with its capabilities (name/value), and no capability key for those with none.
SERVICE_CAPABILITIES: dict[str, dict[str, str]] = {
    "Vpn": {"SupportedVpnTypes": "pptp,l2tp,ipsec", "VpnTypes": "removeaccessvpn"},
    "Dhcp": {"DhcpAccrossMultipleSubnets": "true"},
    "Dns": {"AllowDnsSuffixModification": "true"},
    "Firewall": {"SupportedProtocols": "tcp,udp,icmp", "SupportedTrafficDirection": "ingress, egress",
                 "MultipleIps": "true", "SupportedEgressProtocols": "tcp,udp,icmp, all",
                 "TrafficStatistics": "per public ip"},
    "Lb": {"SupportedLBAlgorithms": "roundrobin,leastconn,source", "SupportedLBIsolation": "dedicated",
           "SupportedProtocols": "tcp, udp, tcp-proxy", "LbSchemes": "Public",
           "TrafficStatistics": "per public ip", "LoadBalancingSupportedIps": "ip4"},
    "SourceNat": {"SupportedSourceNatTypes": "peraccount", "RedundantRouter": "true"},
}


def _network_services(off: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for svc in off.get("service", []):
        entry: dict[str, Any] = {"name": svc["name"]}
        caps = SERVICE_CAPABILITIES.get(svc["name"])
        if caps:
            entry["capability"] = [{"name": k, "value": v, "canchooseservicecapability": False}
                                   for k, v in caps.items()]
        out.append(entry)
    return out


def _render_network(sim: Simulator, net: dict[str, Any]) -> dict[str, Any]:
    off = sim.get("network_offerings", net["networkofferingid"]) or {}
    out = with_tags(sim, net)
    out.update(
        networkofferingname=off.get("name"), networkofferingdisplaytext=off.get("displaytext"),
        networkofferingavailability=off.get("availability"), networkofferingconservemode=off.get("conservemode"),
        service=_network_services(off), **zone_fields(sim), **owner(sim),
    )
    return out


@command("createNetwork", Param("name", required=True), Param("networkofferingid", "uuid", required=True,
         entity="network_offerings"), Param("zoneid", "uuid", required=True, entity="zones"),
         Param("displaytext"), Param("gateway"), Param("netmask"), Param("networkdomain"),
         Param("account"), Param("domainid", "uuid"), Param("projectid", "uuid"), Param("vpcid", "uuid"),
         Param("aclid", "uuid"), key="network")
def create_network(sim: Simulator, req: Request) -> dict[str, Any]:
    """Creates a network."""
    off = sim.get("network_offerings", req.get("networkofferingid"))
    assert off is not None
    if off["guestiptype"] != "Isolated":
        raise invalid_value("Only isolated networks can be created in the lab; use "
                            "DefaultIsolatedNetworkOfferingWithSourceNatService")
    if bool(req.get("gateway")) != bool(req.get("netmask")):
        raise invalid_value("gateway/netmask are required when specifying one of them")
    net = new_isolated_network(sim, off, req.get("name"), displaytext=req.get("displaytext"),
                               gateway=req.get("gateway"), netmask=req.get("netmask"),
                               networkdomain=req.get("networkdomain"))
    return _render_network(sim, net)


def new_isolated_network(sim: Simulator, off: dict[str, Any], name: str, *, displaytext: str | None = None,
                         gateway: str | None = None, netmask: str | None = None,
                         networkdomain: str | None = None) -> dict[str, Any]:
    """An isolated network of offering ``off`` (createNetwork, or deployVirtualMachine's
    default network), within the account's network limit."""
    in_use = sum(1 for n in sim.col("networks").values())
    sim.check_limit("network", in_use)
    gateway = gateway or _free_gateway(sim)
    netmask = netmask or "255.255.255.0"
    cidr = guest_cidr(gateway, netmask)
    net = sim.add("networks", {
        "name": name, "displaytext": displaytext or name,
        "networkofferingid": off["id"], "state": "Allocated", "type": "Isolated", "traffictype": "Guest",
        "broadcastdomaintype": "Vlan", "gateway": gateway, "netmask": netmask, "cidr": cidr,
        "dns1": "127.0.0.53", "dns2": "", "networkdomain": networkdomain or "cs.lab.internal",
        "acltype": "Account", "canusefordeploy": True, "displaynetwork": True, "ispersistent": False,
        "issystem": False, "restartrequired": False, "specifyipranges": False, "subdomainaccess": False,
        "physicalnetworkid": sim.zone["id"], "related": None, "created": now_str(), "vpcid": None,
        "_hosts": 1,
    })
    net["related"] = net["id"]
    return net


def guest_cidr(gateway: str, netmask: str) -> str:
    """The network's CIDR as NetworkServiceImpl derives it (NetUtils.ipAndNetMaskToCidr), after
    its checks: a valid gateway and netmask, and a gateway that is a host address."""
    try:
        gw = ipaddress.IPv4Address(gateway)
    except ValueError:
        raise invalid_value("Invalid gateway") from None
    try:
        mask = int(ipaddress.IPv4Address(netmask))
    except ValueError:
        raise invalid_value("Invalid netmask") from None
    inverse = ~mask & 0xFFFFFFFF
    if mask == 0 or inverse & (inverse + 1):  # the ones must be contiguous from the top
        raise invalid_value("Invalid netmask")
    net = ipaddress.IPv4Network(f"{gw}/{netmask}", strict=False)
    if net.prefixlen < 31 and gw in (net.network_address, net.broadcast_address):
        raise invalid_value("Invalid gateway IP provided. Either the IP is broadcast or network IP.")
    return str(net)


def _free_gateway(sim: Simulator) -> str:
    """The next guest /24's gateway, skipping subnets the backend says are taken on this machine."""
    reserved = sim.backend.reserved_subnets()
    for _ in range(250):
        n = sim.counter("network")
        if f"10.1.{n % 250 + 1}.0/24" not in reserved:
            break
    return f"10.1.{n % 250 + 1}.1"


@command("listNetworks", Param("id", "uuid", entity="networks"), Param("name"), Param("zoneid", "uuid", entity="zones"),
         Param("type"), Param("traffictype"), Param("issystem", "boolean"), Param("networkofferingid", "uuid"),
         Param("canusefordeploy", "boolean"), Param("vpcid", "uuid"), TAG_FILTER, key="network", listing=True)
def list_networks(sim: Simulator, req: Request) -> list[dict[str, Any]]:
    """Lists all available networks."""
    if req.get("issystem"):
        return []
    items = select(sim, "networks", req, fields={"type": "type", "traffictype": "traffictype",
                                                 "networkofferingid": "networkofferingid"},
                   keyword_fields=("name", "displaytext"))
    return [_render_network(sim, n) for n in items]


@command("updateNetwork", Param("id", "uuid", required=True, entity="networks"), Param("name"),
         Param("displaytext"), Param("networkdomain"), Param("networkofferingid", "uuid", entity="network_offerings"),
         Param("changecidr", "boolean"), Param("guestvmcidr"), Param("displaynetwork", "boolean"),
         Param("customid"), Param("forced", "boolean"), Param("updateinsequence", "boolean"),
         Param("hideipaddressusage", "boolean"), isasync=True, key="network")
def update_network(sim: Simulator, req: Request) -> AsyncResult:
    """Updates a network (name, display text, network domain, display flag)."""
    net = get_or_431(sim, "networks", req.get("id"), "network")
    if req.get("networkofferingid") not in (None, net["networkofferingid"]):
        raise invalid_value("Changing the network offering is not supported in the lab; only the "
                            "DefaultIsolatedNetworkOfferingWithSourceNatService exists")
    if req.get("guestvmcidr") is not None:
        raise invalid_value("Changing the guest VM CIDR is not supported in the lab")
    changes = {field: req.get(name) for name, field in (("name", "name"), ("displaytext", "displaytext"),
               ("networkdomain", "networkdomain"), ("displaynetwork", "displaynetwork")) if name in req}
    return AsyncResult("network_updated", {"id": net["id"], "changes": changes}, "Network", net["id"])


@finisher("network_updated")
def _finish_update_network(sim: Simulator, id: str, changes: dict[str, Any]) -> dict[str, Any]:
    net = sim.get("networks", id)
    if net is None:
        raise ApiError(530, f"Unable to find network with id {id}")
    net.update(changes)
    return {"network": _render_network(sim, net)}


@command("deleteNetwork", Param("id", "uuid", required=True, entity="networks"), Param("forced", "boolean"),
         isasync=True)
def delete_network(sim: Simulator, req: Request) -> AsyncResult:
    """Deletes a network (fails while it still has VMs that are not expunged)."""
    return AsyncResult("delete_network", {"id": req.get("id")}, "Network", req.get("id"),
                       effect="delete_network", effect_args={"id": req.get("id")})


@finisher("delete_network")
def _finish_delete_network(sim: Simulator, id: str) -> dict[str, Any]:
    net = sim.get("networks", id)
    if net is None:
        raise ApiError(530, f"Unable to find network with id {id}")
    for vm in sim.col("vms").values():
        if any(nic["networkid"] == id for nic in vm.get("nic", [])):
            raise ApiError(530, f"Can't delete the network, not all user vms are expunged. Vm "
                                f"VM instance {{\"id\": \"{vm['id']}\", \"instanceName\": \"{vm['instancename']}\"}} "
                                f"is in {vm['state']} state")
    for ip in [ip for ip in sim.col("public_ips").values() if ip.get("associatednetworkid") == id]:
        release_ip(sim, ip)
    for rule in [r for r in sim.col("egress_rules").values() if r.get("networkid") == id]:
        sim.remove("egress_rules", rule["id"])
    sim.remove("networks", id)
    return {"success": True}


def implement_network(sim: Simulator, net: dict[str, Any]) -> None:
    """First VM in an isolated network: CloudStack implements it and gives it a source-NAT IP."""
    if net["state"] != "Allocated":
        return
    net["state"] = "Implemented"
    # the guest VLAN it got; root admins see it as broadcasturi/vlan (and on the VMs' nics)
    vlan = str(1000 + sim.counter("vlan"))
    net.update(broadcasturi=f"vlan://{vlan}", vlan=vlan)
    _new_ip(sim, net, source_nat=True, state="Allocated")


# ---- public IP addresses -----------------------------------------------------------------

def _new_ip(sim: Simulator, net: dict[str, Any], *, source_nat: bool, state: str) -> dict[str, Any]:
    used = sum(1 for _ in sim.col("public_ips").values())
    sim.check_limit("public_ip", used)
    return sim.add("public_ips", {
        "ipaddress": sim.allocate_public_address(), "allocated": now_str(), "issourcenat": source_nat,
        "isstaticnat": False, "associatednetworkid": net["id"], "associatednetworkname": net["name"],
        "networkid": sim.zone["id"], "forvirtualnetwork": True, "state": state, "isportable": False,
        "issystem": False, "fordisplay": True, "virtualmachineid": None, "hasrules": False,
        "vlanid": sim.zone["id"], "vlanname": "vlan://untagged",
    })


def render_ip(sim: Simulator, ip: dict[str, Any]) -> dict[str, Any]:
    out = with_tags(sim, ip) | zone_fields(sim) | owner(sim) | {"physicalnetworkid": sim.zone["id"]}
    if ip.get("virtualmachineid"):
        vm = sim.get("vms", ip["virtualmachineid"]) or {}
        out.update(virtualmachinename=vm.get("name"), virtualmachinedisplayname=vm.get("displayname"),
                   virtualmachinetype="User", vmipaddress=_guest_ip(vm))
    return out


def _guest_ip(vm: dict[str, Any]) -> str | None:
    nics = vm.get("nic") or []
    return nics[0]["ipaddress"] if nics else None


@command("associateIpAddress", Param("networkid", "uuid", entity="networks"), Param("zoneid", "uuid", entity="zones"),
         Param("vpcid", "uuid"), Param("ipaddress"), Param("isportable", "boolean"), Param("account"),
         Param("domainid", "uuid"), Param("projectid", "uuid"), Param("fordisplay", "boolean"),
         isasync=True, key="ipaddress")
def associate_ip_address(sim: Simulator, req: Request) -> AsyncResult:
    """Acquires and associates a public IP to an account."""
    net = sim.get("networks", req.get("networkid")) if "networkid" in req else _only_network(sim, req)
    assert net is not None
    ip = _new_ip(sim, net, source_nat=False, state="Allocating")
    return AsyncResult("associate_ip", {"id": ip["id"]}, "IpAddress", ip["id"], entity_id=ip["id"])


def _only_network(sim: Simulator, req: Request) -> dict[str, Any]:
    """AssociateIPAddrCmd.getNetworkId() without a network: in an Advanced zone, the account's
    one isolated network there (an error when it has none or several)."""
    if "zoneid" not in req:
        raise invalid_value("Unable to figure out zone to assign IP to. Please specify either zoneId, or "
                            "networkId, or vpcId in the call")
    nets = [n for n in sim.col("networks").values() if n.get("type") == "Isolated"]
    if not nets:
        raise invalid_value(f"Account name={catalog.ACCOUNT} domain={catalog.DOMAIN} doesn't have virtual "
                            f"networks in zone={sim.zone['name']}")
    if len(nets) > 1:
        raise invalid_value("Account has more than one isolated network in the zone")
    return nets[0]


def _fail_associate(sim: Simulator, id: str) -> None:
    sim.remove("public_ips", id)


@finisher("associate_ip", on_failure=_fail_associate)
def _finish_associate(sim: Simulator, id: str) -> dict[str, Any]:
    ip = sim.get("public_ips", id)
    if ip is None:
        raise ApiError(530, f"Unable to find ip address with id {id}")
    ip["state"] = "Allocated"
    return {"ipaddress": render_ip(sim, ip)}


def release_ip(sim: Simulator, ip: dict[str, Any]) -> None:
    """Release an address with everything on it: static NAT, firewall, forwarding and LB rules."""
    for col in ("firewall_rules", "pf_rules", "ip_forwarding_rules", "lb_rules"):
        for rule in [r for r in sim.col(col).values() if r.get("ipaddressid") == ip["id"]
                     or r.get("publicipid") == ip["id"]]:
            sim.remove(col, rule["id"])
    sim.remove("public_ips", ip["id"])


@command("disassociateIpAddress", Param("id", "uuid", required=True, entity="public_ips"),
         Param("ipaddress"), isasync=True)
def disassociate_ip_address(sim: Simulator, req: Request) -> AsyncResult:
    """Disassociates an IP address from the account (releases it, with its rules)."""
    ip = get_or_431(sim, "public_ips", req.get("id"), "ip address")
    if ip.get("issourcenat"):
        raise invalid_value(f"IP address id={ip['id']} is a source nat address and can't be released "
                            "(it goes with its network)")
    return AsyncResult("disassociate_ip", {"id": ip["id"]}, "IpAddress", ip["id"])


@finisher("disassociate_ip")
def _finish_disassociate(sim: Simulator, id: str) -> dict[str, Any]:
    ip = sim.get("public_ips", id)
    if ip is not None:
        release_ip(sim, ip)
    return {"success": True}


@command("listPublicIpAddresses", Param("id", "uuid", entity="public_ips"), Param("ipaddress"),
         Param("associatednetworkid", "uuid", entity="networks"),
         Param("networkid", "uuid"), Param("isstaticnat", "boolean"), Param("issourcenat", "boolean"),
         Param("allocatedonly", "boolean"), Param("forvirtualnetwork", "boolean"), Param("vpcid", "uuid"),
         Param("zoneid", "uuid"), Param("state"), Param("fordisplay", "boolean"), TAG_FILTER,
         key="publicipaddress", listing=True)
def list_public_ip_addresses(sim: Simulator, req: Request) -> list[dict[str, Any]]:
    """Lists all public IP addresses."""
    items = select(sim, "public_ips", req, name_field="ipaddress", keyword_fields=("ipaddress",),
                   fields={"ipaddress": "ipaddress", "associatednetworkid": "associatednetworkid",
                           "state": "state"})
    for flag in ("isstaticnat", "issourcenat"):
        if flag in req:
            items = [ip for ip in items if bool(ip.get(flag)) == req.get(flag)]
    return [render_ip(sim, ip) for ip in items]


# ---- static NAT --------------------------------------------------------------------------

@command("enableStaticNat", Param("ipaddressid", "uuid", required=True, entity="public_ips"),
         Param("virtualmachineid", "uuid", required=True, entity="vms"), Param("networkid", "uuid"),
         Param("vmguestip"), kind="success")
def enable_static_nat(sim: Simulator, req: Request) -> None:
    """Enables static NAT for given IP address (one static-NAT IP per VM)."""
    ip = get_or_431(sim, "public_ips", req.get("ipaddressid"), "ip address")
    vm = get_or_431(sim, "vms", req.get("virtualmachineid"), "virtual machine")
    if ip.get("issourcenat"):
        raise invalid_value(f"Can't enable static, ip address id={ip['id']} is a sourceNat ip address")
    if vm["state"] not in ("Running", "Stopped", "Starting", "Stopping"):
        raise invalid_value(f"Can't enable static nat for the vm {vm['name']} as it's in state {vm['state']}")
    if ip.get("isstaticnat") and ip.get("virtualmachineid") != vm["id"]:
        raise invalid_value(f"Failed to enable static nat for the ip address id={ip['id']} as it's already "
                            f"assigned to another vm id={ip['virtualmachineid']}")
    other = next((o for o in sim.col("public_ips").values()
                  if o.get("isstaticnat") and o.get("virtualmachineid") == vm["id"] and o["id"] != ip["id"]), None)
    if other is not None:
        raise invalid_value(f"Failed to enable static nat for the ip address id={ip['id']} as vm id={vm['id']} "
                            f"is already associated with ip id={other['id']}")
    # RulesManagerImpl.isIpReadyForStaticNat: no port-forwarding or load-balancing rules on it
    if not ip.get("isstaticnat"):
        if any(r.get("ipaddressid") == ip["id"] for r in sim.col("pf_rules").values()):
            raise ApiError(537, f"Failed to enable static nat for the ip address id={ip['id']} as it already has "
                                "PortForwarding rules assigned")
        if any(r.get("publicipid") == ip["id"] and r.get("state") != "Revoke" for r in sim.col("lb_rules").values()):
            raise ApiError(537, f"Failed to enable static nat for the ip address id={ip['id']} as it already has "
                                "LoadBalancing rules assigned")
    if not any(nic["networkid"] == ip["associatednetworkid"] for nic in vm.get("nic", [])):
        raise invalid_value(f"VM {vm['name']} is not in the network of ip address id={ip['id']}")
    ip.update(isstaticnat=True, virtualmachineid=vm["id"])


@command("disableStaticNat", Param("ipaddressid", "uuid", required=True, entity="public_ips"), isasync=True)
def disable_static_nat(sim: Simulator, req: Request) -> AsyncResult:
    """Disables static NAT for given IP address."""
    ip = get_or_431(sim, "public_ips", req.get("ipaddressid"), "ip address")
    if not ip.get("isstaticnat"):
        raise invalid_value("Specified IP address id is not associated with any vm Id")
    return AsyncResult("disable_static_nat", {"id": ip["id"]}, "IpAddress", ip["id"])


@finisher("disable_static_nat")
def _finish_disable_static_nat(sim: Simulator, id: str) -> dict[str, Any]:
    ip = sim.get("public_ips", id)
    if ip is not None:
        ip.update(isstaticnat=False, virtualmachineid=None)
    return {"success": True}

