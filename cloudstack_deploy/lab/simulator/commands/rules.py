"""Network rules on public IPs: firewall (ingress), egress, port forwarding, IP forwarding, LB."""

from __future__ import annotations

import ipaddress
from typing import Any

from ..clock import now_str
from ..engine import Simulator
from ..errors import ApiError, invalid_value, rule_conflict
from ..registry import TAG_FILTER, AsyncResult, Param, Request, command, finisher
from ._common import get_or_431, select, with_tags

PROTOCOLS = ("tcp", "udp", "icmp", "all")


def _cidrs(text: str | list[str] | None, what: str = "Source") -> list[str]:
    items = text if isinstance(text, list) else [c.strip() for c in (text or "").split(",") if c.strip()]
    out = []
    for c in items:
        try:
            out.append(str(ipaddress.ip_network(c, strict=False)))
        except ValueError:
            raise invalid_value(f"{what} cidrs formatting error {c}") from None
    return out


def _overlap(a: list[str], b: list[str]) -> bool:
    return any(ipaddress.ip_network(x).overlaps(ipaddress.ip_network(y)) for x in a for y in b)


def _ports(req: Request, start: str, end: str, protocol: str) -> tuple[int | None, int | None]:
    sp, ep = req.get(start), req.get(end)
    if protocol in ("all", "icmp") and (sp is not None or ep is not None):
        raise invalid_value(f"For protocol {protocol} no ports can be specified")
    if sp is None and ep is not None:
        sp = ep
    if ep is None:
        ep = sp
    for p in (sp, ep):
        if p is not None and not 1 <= p <= 65535:
            raise invalid_value(f"Invalid port range {sp}-{ep}")
    if sp is not None and ep is not None and sp > ep:
        raise invalid_value(f"Start port can't be bigger than end port: {sp}-{ep}")
    return sp, ep


def _protocol(req: Request) -> str:
    proto = req.get("protocol").lower()
    if proto not in PROTOCOLS and not proto.isdigit():
        raise invalid_value(f"Invalid protocol {req.get('protocol')}; valid values are tcp, udp, icmp and all")
    return proto


def _ranges_overlap(a: tuple[int | None, int | None], b: tuple[int | None, int | None]) -> bool:
    if a[0] is None or b[0] is None:
        return True
    return a[0] <= (b[1] or b[0]) and b[0] <= (a[1] or a[0])


# ---- firewall (ingress) ------------------------------------------------------------------

def add_firewall_rule(sim: Simulator, ip: dict[str, Any], protocol: str, sp: int | None, ep: int | None,
                      cidrs: list[str], related: str | None = None) -> dict[str, Any]:
    """Create an ingress rule after CloudStack's conflict check (537 on an overlap)."""
    for rule in sim.col("firewall_rules").values():
        if rule["ipaddressid"] != ip["id"] or rule["protocol"] != protocol:
            continue
        if _ranges_overlap((rule["startport"], rule["endport"]), (sp, ep)) and \
                _overlap(rule["cidrlist"].split(","), cidrs):
            raise rule_conflict(
                f"The range specified, {sp}-{ep}, conflicts with rule {rule['id']} which has "
                f"{rule['startport']}-{rule['endport']}"
            )
    return sim.add("firewall_rules", {
        "protocol": protocol, "startport": sp, "endport": ep, "ipaddressid": ip["id"],
        "ipaddress": ip["ipaddress"], "networkid": ip["associatednetworkid"], "state": "Add",
        "cidrlist": ",".join(cidrs), "purpose": "Firewall", "fordisplay": True, "related": related,
        "traffictype": "Ingress", "created": now_str(),
    })


def rule_for_all_cidrs(sim: Simulator, ip: dict[str, Any], protocol: str, sp: int, ep: int,
                       related: str) -> dict[str, Any]:
    """The firewall rule a forwarding or LB rule opens with ``openfirewall`` (the default).

    FirewallManagerImpl.createRuleForAllCidrs: when an ingress rule for exactly this port range
    and protocol already exists on the IP, that rule is returned (and stays unrelated to the new
    one, so it outlives it); otherwise a rule from 0.0.0.0/0 is created, related to the new rule
    and revoked with it.
    """
    for rule in sim.col("firewall_rules").values():
        if (rule["ipaddressid"] == ip["id"] and rule["protocol"] == protocol and rule["startport"] == sp
                and rule["endport"] == ep):
            return rule
    fw = add_firewall_rule(sim, ip, protocol, sp, ep, ["0.0.0.0/0"], related=related)
    fw["state"] = "Active"
    return fw


def forwarding_conflict(sim: Simulator, ip: dict[str, Any], protocol: str, lo: int, hi: int) -> None:
    """537 when a port-forwarding or load-balancer rule on ``ip`` already covers a port of lo..hi.

    FirewallManagerImpl.detectRulesConflict: rules of these purposes on one IP may share ports
    only when both are port forwarding with different protocols (LB rules are always tcp).
    """
    for rule in sim.col("pf_rules").values():
        if rule["ipaddressid"] == ip["id"] and _ranges_overlap(
                (int(rule["publicport"]), int(rule["publicendport"])), (lo, hi)) and \
                (rule["protocol"] == protocol or protocol == "lb"):
            raise rule_conflict(f"The range specified, {lo}-{hi}, conflicts with rule {rule['id']} "
                                f"which has {rule['publicport']}-{rule['publicendport']}")
    for rule in sim.col("lb_rules").values():
        if rule["publicipid"] == ip["id"] and rule.get("state") != "Revoke" and \
                _ranges_overlap((int(rule["publicport"]), int(rule["publicport"])), (lo, hi)):
            raise rule_conflict(f"The range specified, {lo}-{hi}, conflicts with rule {rule['id']} "
                                f"which has {rule['publicport']}-{rule['publicport']}")


@command("createFirewallRule", Param("ipaddressid", "uuid", required=True, entity="public_ips"),
         Param("protocol", required=True), Param("startport", "integer"), Param("endport", "integer"),
         Param("cidrlist", "list"), Param("icmptype", "integer"), Param("icmpcode", "integer"),
         Param("type"), Param("fordisplay", "boolean"), isasync=True, key="firewallrule")
def create_firewall_rule(sim: Simulator, req: Request) -> AsyncResult:
    """Creates a firewall rule for a given IP address."""
    ip = get_or_431(sim, "public_ips", req.get("ipaddressid"), "ip address")
    protocol = _protocol(req)
    sp, ep = _ports(req, "startport", "endport", protocol)
    cidrs = _cidrs(req.get("cidrlist") or ["0.0.0.0/0"])
    rule = add_firewall_rule(sim, ip, protocol, sp, ep, cidrs)
    if protocol == "icmp":  # FirewallResponse shows them; CloudStack stores -1 (any) when not given
        rule.update(icmptype=req.get("icmptype", -1), icmpcode=req.get("icmpcode", -1))
    return AsyncResult("activate_rule", {"col": "firewall_rules", "id": rule["id"], "key": "firewallrule"},
                       "FirewallRule", rule["id"], entity_id=rule["id"])


def _fail_rule(sim: Simulator, col: str, id: str, key: str) -> None:
    sim.remove(col, id)


@finisher("activate_rule", on_failure=_fail_rule)
def _finish_activate_rule(sim: Simulator, col: str, id: str, key: str) -> dict[str, Any]:
    rule = sim.get(col, id)
    if rule is None:
        raise ApiError(530, f"Unable to find rule with id {id}")
    rule["state"] = "Active"
    return {key: RENDER[col](sim, rule)}


def _render_firewall(sim: Simulator, rule: dict[str, Any]) -> dict[str, Any]:
    out = with_tags(sim, rule)
    out.pop("related", None)
    return out


@command("deleteFirewallRule", Param("id", "uuid", required=True, entity="firewall_rules"), isasync=True)
def delete_firewall_rule(sim: Simulator, req: Request) -> AsyncResult:
    """Deletes a firewall rule."""
    return AsyncResult("delete_rule", {"col": "firewall_rules", "id": req.get("id")}, "FirewallRule", req.get("id"))


@finisher("delete_rule")
def _finish_delete_rule(sim: Simulator, col: str, id: str) -> dict[str, Any]:
    sim.remove(col, id)
    # the firewall rule opened with it goes too (Delete{PortForwarding,IpForwarding}RuleCmd call
    # revokeRelatedFirewallRule before revoking the rule itself)
    if col in ("pf_rules", "ip_forwarding_rules"):
        for fw in [r for r in sim.col("firewall_rules").values() if r.get("related") == id]:
            sim.remove("firewall_rules", fw["id"])
    return {"success": True}


@command("listFirewallRules", Param("id", "uuid", entity="firewall_rules"),
         Param("ipaddressid", "uuid", entity="public_ips"), Param("networkid", "uuid", entity="networks"),
         Param("fordisplay", "boolean"), TAG_FILTER, key="firewallrule", listing=True)
def list_firewall_rules(sim: Simulator, req: Request) -> list[dict[str, Any]]:
    """Lists all firewall rules for an IP address."""
    items = select(sim, "firewall_rules", req, name_field="ipaddress", keyword_fields=("ipaddress",),
                   fields={"ipaddressid": "ipaddressid", "networkid": "networkid"})
    return [_render_firewall(sim, r) for r in items]


# ---- egress --------------------------------------------------------------------------------

@command("createEgressFirewallRule", Param("networkid", "uuid", required=True, entity="networks"),
         Param("protocol", required=True), Param("startport", "integer"), Param("endport", "integer"),
         Param("cidrlist", "list"), Param("destcidrlist", "list"), Param("icmptype", "integer"),
         Param("icmpcode", "integer"), Param("type"), Param("fordisplay", "boolean"), isasync=True,
         key="firewallrule")
def create_egress_firewall_rule(sim: Simulator, req: Request) -> AsyncResult:
    """Creates an egress firewall rule for a given network."""
    net = get_or_431(sim, "networks", req.get("networkid"), "network")
    protocol = _protocol(req)
    sp, ep = _ports(req, "startport", "endport", protocol)
    cidrs = _cidrs(req.get("cidrlist") or [net["cidr"]])
    for rule in sim.col("egress_rules").values():
        if rule["networkid"] == net["id"] and rule["protocol"] == protocol and \
                _ranges_overlap((rule["startport"], rule["endport"]), (sp, ep)) and \
                _overlap(rule["cidrlist"].split(","), cidrs):
            raise rule_conflict(f"The range specified, {sp}-{ep}, conflicts with rule {rule['id']} which has "
                                f"{rule['startport']}-{rule['endport']}")
    rule = sim.add("egress_rules", {
        "protocol": protocol, "startport": sp, "endport": ep, "networkid": net["id"], "state": "Add",
        "cidrlist": ",".join(cidrs), "destcidrlist": ",".join(_cidrs(req.get("destcidrlist"), "Destination")),
        "purpose": "Firewall", "traffictype": "Egress", "fordisplay": True,
    })
    return AsyncResult("activate_rule", {"col": "egress_rules", "id": rule["id"], "key": "firewallrule"},
                       "FirewallRule", rule["id"], entity_id=rule["id"])


@command("deleteEgressFirewallRule", Param("id", "uuid", required=True, entity="egress_rules"), isasync=True)
def delete_egress_firewall_rule(sim: Simulator, req: Request) -> AsyncResult:
    """Deletes an egress firewall rule."""
    return AsyncResult("delete_rule", {"col": "egress_rules", "id": req.get("id")}, "FirewallRule", req.get("id"))


@command("listEgressFirewallRules", Param("id", "uuid", entity="egress_rules"),
         Param("networkid", "uuid", entity="networks"), Param("fordisplay", "boolean"),
         TAG_FILTER, key="firewallrule", listing=True)
def list_egress_firewall_rules(sim: Simulator, req: Request) -> list[dict[str, Any]]:
    """Lists all egress firewall rules for network."""
    items = select(sim, "egress_rules", req, fields={"networkid": "networkid"})
    return [with_tags(sim, r) for r in items]


# ---- port forwarding -------------------------------------------------------------------------

def _vm_in_network(sim: Simulator, vm: dict[str, Any], ip: dict[str, Any]) -> dict[str, Any]:
    nic = next((n for n in vm.get("nic", []) if n["networkid"] == ip["associatednetworkid"]), None)
    if nic is None:
        raise invalid_value(f"VM {vm['name']} is not in the network of ip address {ip['ipaddress']}")
    return nic


@command("createPortForwardingRule", Param("ipaddressid", "uuid", required=True, entity="public_ips"),
         Param("privateport", "integer", required=True), Param("publicport", "integer", required=True),
         Param("protocol", required=True), Param("virtualmachineid", "uuid", required=True, entity="vms"),
         Param("privateendport", "integer"), Param("publicendport", "integer"), Param("openfirewall", "boolean"),
         Param("cidrlist", "list"), Param("networkid", "uuid"), Param("vmguestip"), Param("fordisplay", "boolean"),
         isasync=True, key="portforwardingrule")
def create_port_forwarding_rule(sim: Simulator, req: Request) -> AsyncResult:
    """Creates a port forwarding rule (and, unless openfirewall=false, its firewall rule)."""
    ip = get_or_431(sim, "public_ips", req.get("ipaddressid"), "ip address")
    vm = get_or_431(sim, "vms", req.get("virtualmachineid"), "virtual machine")
    protocol = req.get("protocol").lower()
    if protocol not in ("tcp", "udp"):
        raise invalid_value(f"Invalid protocol {req.get('protocol')} for port forwarding; use tcp or udp")
    if ip.get("isstaticnat"):  # RulesManagerImpl: InvalidParameterValueException (431), not a rule conflict
        raise invalid_value(f"Unable to create port forwarding rule; ip id={ip['id']} has static nat enabled")
    pub = _ports(req, "publicport", "publicendport", protocol)
    priv = _ports(req, "privateport", "privateendport", protocol)
    if (pub[1] - pub[0]) != (priv[1] - priv[0]):  # type: ignore[operator]
        raise invalid_value("Private port range and public port range must be of the same size")
    nic = _vm_in_network(sim, vm, ip)
    forwarding_conflict(sim, ip, protocol, pub[0], pub[1])  # type: ignore[arg-type]
    cidrs = _cidrs(req.get("cidrlist")) if req.get("cidrlist") else []
    rule = sim.add("pf_rules", {
        "ipaddressid": ip["id"], "ipaddress": ip["ipaddress"], "protocol": protocol,
        "publicport": str(pub[0]), "publicendport": str(pub[1]), "privateport": str(priv[0]),
        "privateendport": str(priv[1]), "virtualmachineid": vm["id"], "virtualmachinename": vm["name"],
        "virtualmachinedisplayname": vm.get("displayname", vm["name"]), "vmguestip": nic["ipaddress"],
        "networkid": ip["associatednetworkid"], "state": "Add", "cidrlist": ",".join(cidrs), "fordisplay": True,
    })
    if req.get("openfirewall", True):
        if cidrs:  # RulesManagerImpl: the rule's own source CIDRs get a firewall rule of their own
            add_firewall_rule(sim, ip, protocol, pub[0], pub[1], cidrs, related=rule["id"])["state"] = "Active"
        else:
            rule_for_all_cidrs(sim, ip, protocol, pub[0], pub[1], related=rule["id"])  # type: ignore[arg-type]
    return AsyncResult("activate_rule", {"col": "pf_rules", "id": rule["id"], "key": "portforwardingrule"},
                       "FirewallRule", rule["id"], entity_id=rule["id"])


@command("deletePortForwardingRule", Param("id", "uuid", required=True, entity="pf_rules"), isasync=True)
def delete_port_forwarding_rule(sim: Simulator, req: Request) -> AsyncResult:
    """Deletes a port forwarding rule (and the firewall rule opened with it)."""
    return AsyncResult("delete_rule", {"col": "pf_rules", "id": req.get("id")}, "FirewallRule", req.get("id"))


@command("listPortForwardingRules", Param("id", "uuid", entity="pf_rules"),
         Param("ipaddressid", "uuid", entity="public_ips"), Param("networkid", "uuid", entity="networks"),
         Param("fordisplay", "boolean"), TAG_FILTER, key="portforwardingrule", listing=True)
def list_port_forwarding_rules(sim: Simulator, req: Request) -> list[dict[str, Any]]:
    """Lists all port forwarding rules for an IP address."""
    items = select(sim, "pf_rules", req, name_field="ipaddress", keyword_fields=("ipaddress",),
                   fields={"ipaddressid": "ipaddressid", "networkid": "networkid"})
    return [with_tags(sim, r) for r in items]


# ---- IP forwarding (static NAT rules) -----------------------------------------------------------

@command("createIpForwardingRule", Param("ipaddressid", "uuid", required=True, entity="public_ips"),
         Param("protocol", required=True), Param("startport", "integer", required=True), Param("endport", "integer"),
         Param("openfirewall", "boolean"), Param("cidrlist", "list"), isasync=True, key="ipforwardingrule")
def create_ip_forwarding_rule(sim: Simulator, req: Request) -> AsyncResult:
    """Creates an IP forwarding rule on a static-NAT IP."""
    ip = get_or_431(sim, "public_ips", req.get("ipaddressid"), "ip address")
    if not ip.get("isstaticnat"):
        raise invalid_value(f"Can't create ip forwarding rules for ip {ip['ipaddress']}: static nat is not enabled")
    protocol = _protocol(req)
    sp, ep = _ports(req, "startport", "endport", protocol)
    vm = sim.get("vms", ip["virtualmachineid"]) or {}
    rule = sim.add("ip_forwarding_rules", {
        "ipaddressid": ip["id"], "ipaddress": ip["ipaddress"], "protocol": protocol, "startport": sp,
        "endport": ep, "virtualmachineid": vm.get("id"), "virtualmachinename": vm.get("name"),
        "virtualmachinedisplayname": vm.get("displayname"), "state": "Add",
    })
    if req.get("openfirewall", True):
        add_firewall_rule(sim, ip, protocol, sp, ep, ["0.0.0.0/0"], related=rule["id"])["state"] = "Active"
    return AsyncResult("activate_rule", {"col": "ip_forwarding_rules", "id": rule["id"], "key": "ipforwardingrule"},
                       "FirewallRule", rule["id"], entity_id=rule["id"])


@command("deleteIpForwardingRule", Param("id", "uuid", required=True, entity="ip_forwarding_rules"), isasync=True)
def delete_ip_forwarding_rule(sim: Simulator, req: Request) -> AsyncResult:
    """Deletes an IP forwarding rule."""
    return AsyncResult("delete_rule", {"col": "ip_forwarding_rules", "id": req.get("id")}, "FirewallRule",
                       req.get("id"))


@command("listIpForwardingRules", Param("id", "uuid", entity="ip_forwarding_rules"),
         Param("ipaddressid", "uuid", entity="public_ips"),
         Param("virtualmachineid", "uuid"), key="ipforwardingrule", listing=True)
def list_ip_forwarding_rules(sim: Simulator, req: Request) -> list[dict[str, Any]]:
    """List the IP forwarding rules."""
    items = select(sim, "ip_forwarding_rules", req, name_field="ipaddress", keyword_fields=("ipaddress",),
                   fields={"ipaddressid": "ipaddressid", "virtualmachineid": "virtualmachineid"})
    return [with_tags(sim, r) for r in items]


RENDER = {
    "firewall_rules": _render_firewall,
    "egress_rules": with_tags,
    "pf_rules": with_tags,
    "ip_forwarding_rules": with_tags,
}
