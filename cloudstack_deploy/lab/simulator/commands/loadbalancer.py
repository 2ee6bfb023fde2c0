"""Load-balancer rules on public IPs, as the isolated network's virtual router (HAProxy) has them.

Checked against CloudStack's CreateLoadBalancerRuleCmd, AssignToLoadBalancerRuleCmd,
RemoveFromLoadBalancerRuleCmd, UpdateLoadBalancerRuleCmd, DeleteLoadBalancerRuleCmd, the list
commands, LoadBalancingRulesManagerImpl and ApiResponseHelper.createLoadBalancerResponse:

- a rule is created in state ``Add`` and becomes ``Active`` once members are applied; when its
  last member goes it is ``Add`` again (applyLoadBalancerRules); a rule being deleted is
  ``Revoke``, which its response shows as ``Deleting``;
- ``openfirewall`` (default true outside VPCs) opens the public port to 0.0.0.0/0 with a firewall
  rule related to the LB rule (or reuses an existing rule for exactly that port), and
  deleteLoadBalancerRule revokes that related rule first;
- a public port may carry one LB or port-forwarding rule (537); a static-NAT address carries
  none (537), and enableStaticNat refuses an address with LB rules;
- assign/remove check their members inside the job: a member that cannot be assigned fails
  the job with 530 "Failed to assign load balancer rule" (the command catches the manager's
  CloudRuntimeException); removing a VM that is not a member is not an error.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from ..clock import now_str
from ..engine import Simulator
from ..errors import ApiError, invalid_value, param_error, rule_conflict, unknown_id
from ..registry import TAG_FILTER, AsyncResult, Param, Request, command, finisher
from ._common import get_or_431, like, owner, tag_filter, with_tags, zone_fields
from .rules import forwarding_conflict, rule_for_all_cidrs

ALGORITHMS = ("roundrobin", "leastconn", "source")
#: HAProxy's statistics port on the virtual router (VirtualRoutingResource / validateHAProxyLBRule).
HAPROXY_STATS_PORT = 8081
DNS_PORT = 53
#: VM states listLoadBalancerRuleInstances leaves out.
UNLISTED_VM_STATES = ("Destroyed", "Expunging", "Error", "Unknown")


def valid_algorithm(name: str | None) -> bool:
    """NetUtils.isValidAlgorithm: roundrobin, leastconn or source, in any case."""
    return name is not None and name.lower() in ALGORITHMS


def members(rule: dict[str, Any]) -> list[str]:
    """The VM ids assigned to a rule (and not being removed)."""
    return list(rule.get("_vms") or [])


def _cidr_string(items: list[str], sep: str) -> str:
    """LoadBalancingRulesManagerImpl.generateCidrString: each entry a valid IP or CIDR."""
    out = []
    for item in items:
        text = item.strip()
        try:
            ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise param_error(f"CIDR [{text}] is invalid.") from None
        out.append(text)
    return sep.join(out)


def _port(value: int, what: str) -> int:
    if not 1 <= value <= 65535:
        raise invalid_value(f"{what} is an invalid value: {value}")
    return value


# ---- create --------------------------------------------------------------------------------------

@command("createLoadBalancerRule", Param("algorithm", required=True), Param("name", required=True),
         Param("privateport", "integer", required=True), Param("publicport", "integer", required=True),
         Param("publicipid", "uuid", entity="public_ips"), Param("zoneid", "uuid", entity="zones"),
         Param("networkid", "uuid", entity="networks"), Param("openfirewall", "boolean"), Param("account"),
         Param("domainid", "uuid"), Param("cidrlist", "list"), Param("protocol"),
         Param("description", length=4096), Param("fordisplay", "boolean"), isasync=True, key="loadbalancer")
def create_load_balancer_rule(sim: Simulator, req: Request) -> AsyncResult:
    """Creates a load balancer rule."""
    if "publicipid" not in req:
        if not ("account" in req and "domainid" in req):  # getEntityOwnerId, before create()
            raise invalid_value("Can't define IP owner. Either specify account/domainId or publicIpId")
        if "networkid" not in req and "zoneid" not in req:
            raise invalid_value("Either networkId or zoneId or publicIpId has to be specified")
        # an isolated network's offering has no elastic LB: no address is allocated for the rule
        raise invalid_value("Unable to create load balance rule; can't find/allocate source IP")
    ip = get_or_431(sim, "public_ips", req.get("publicipid"), "ip address")
    if ip.get("state") != "Allocated":  # IpAddress.readyToUse()
        raise invalid_value(f"Unable to create load balancer rule, invalid IP address ID {ip['id']}")
    public_port, private_port = req.get("publicport"), req.get("privateport")
    if public_port == DNS_PORT and ip.get("issourcenat"):
        raise invalid_value("Error adding load balancer rule, cannot add port 53 with network service offering "
                            "having DNS service and Source NAT.")
    if ip.get("isstaticnat"):
        raise rule_conflict(f"Can't do load balance on ip address: {ip['ipaddress']}")
    cidrs = _cidr_string(req.get("cidrlist"), " ") if "cidrlist" in req else None
    _port(private_port, "privatePort")
    if not valid_algorithm(req.get("algorithm")):
        raise invalid_value(f"Invalid algorithm: {req.get('algorithm')}")
    _port(public_port, "publicPort")
    if public_port == HAPROXY_STATS_PORT:  # VirtualRouterElement.validateLBRule
        raise invalid_value("LB service provider cannot support this rule")
    forwarding_conflict(sim, ip, "lb", public_port, public_port)
    rule = sim.add("lb_rules", {
        "name": req.get("name"), "description": req.get("description"), "algorithm": req.get("algorithm"),
        "publicipid": ip["id"], "publicip": ip["ipaddress"], "publicport": str(public_port),
        "privateport": str(private_port), "networkid": ip["associatednetworkid"], "protocol": req.get("protocol"),
        "state": "Add", "cidrlist": cidrs, "fordisplay": req.get("fordisplay", True), "created": now_str(),
        "_vms": [],
    })
    if req.get("openfirewall", True):
        rule_for_all_cidrs(sim, ip, "tcp", public_port, public_port, related=rule["id"])
    return AsyncResult("lb_created", {"id": rule["id"]}, "FirewallRule", rule["id"], entity_id=rule["id"])


def _fail_create(sim: Simulator, id: str) -> None:
    _drop_rule(sim, id)


@finisher("lb_created", on_failure=_fail_create)
def _finish_create(sim: Simulator, id: str) -> dict[str, Any]:
    """CreateLoadBalancerRuleCmd.execute applies the ingress firewall only: the rule stays Add."""
    rule = sim.get("lb_rules", id)
    if rule is None:
        raise ApiError(530, "Failed to create load balancer rule")
    return {"loadbalancer": render_lb(sim, rule)}


def render_lb(sim: Simulator, rule: dict[str, Any]) -> dict[str, Any]:
    out = with_tags(sim, rule) | owner(sim) | zone_fields(sim)
    # createLoadBalancerResponse joins the rule's source CIDRs: "" when there are none, never absent
    out["cidrlist"] = rule.get("cidrlist") or ""
    if out.get("state") == "Revoke":
        out["state"] = "Deleting"
    return out


# ---- members -------------------------------------------------------------------------------------

def _vm_ids(req: Request) -> list[str] | None:
    """virtualmachineids plus the vmid of each vmidipmap entry; None when neither is given."""
    ids = list(req.get("virtualmachineids") or [])
    for entry in req.get("vmidipmap") or []:
        vm_id = entry.get("vmid")
        if vm_id and vm_id not in ids:
            ids.append(vm_id)
    return ids if ("virtualmachineids" in req or "vmidipmap" in req) else None


def _check_member(sim: Simulator, rule: dict[str, Any], vm_id: str, req: Request) -> None:
    """AssignToLoadBalancerRuleCmd / assignToLoadBalancer checks, raised as what the job reports."""
    failed = ApiError(530, "Failed to assign load balancer rule")
    vm = sim.get("vms", vm_id)
    if vm is None or vm.get("_removed") or vm["state"] in ("Destroyed", "Expunging"):
        raise failed  # "Invalid instance id specified"
    nic = next((n for n in vm.get("nic", []) if n["networkid"] == rule["networkid"]), None)
    if nic is None:
        raise failed  # "VM with id specified cannot be added because it doesn't belong in the same network."
    if vm_id in members(rule):
        raise failed  # "VM ... with <ip> is already mapped to load balancer."
    for entry in req.get("vmidipmap") or []:
        if entry.get("vmid") != vm_id:
            continue
        try:
            ipaddress.IPv4Address(entry.get("vmip") or "")
        except ValueError:
            raise invalid_value(f"Invalid ip address {entry.get('vmip')} passed in vmidipmap for vmid "
                                f"{vm_id}") from None
        if entry["vmip"] != nic["ipaddress"]:  # the lab's VMs have no secondary IPs
            raise failed  # "VM ip ... specified does not belong to nic in network ..."


@command("assignToLoadBalancerRule", Param("id", "uuid", required=True, entity="lb_rules"),
         Param("virtualmachineids", "list", item_type="uuid", entity="vms"), Param("vmidipmap", "map"),
         isasync=True)
def assign_to_load_balancer_rule(sim: Simulator, req: Request) -> AsyncResult:
    """Assigns virtual machine(s) to a load balancer rule."""
    rule = get_or_431(sim, "lb_rules", req.get("id"), "load balancer rule")
    ids = _vm_ids(req)
    if ids is None:  # "Both instanceids and vmidipmap can't be null", caught by the command
        raise ApiError(530, "Failed to assign load balancer rule")
    for entry in req.get("vmidipmap") or []:
        if not sim.exists("vms", entry.get("vmid") or ""):
            raise invalid_value(f"Unable to find Instance ID: {entry.get('vmid')}")
    for vm_id in ids:
        _check_member(sim, rule, vm_id, req)
    return AsyncResult("lb_members", {"id": rule["id"], "vms": ids, "add": True}, "FirewallRule", rule["id"])


@command("removeFromLoadBalancerRule", Param("id", "uuid", required=True, entity="lb_rules"),
         Param("virtualmachineids", "list", item_type="uuid", entity="vms"), Param("vmidipmap", "map"),
         isasync=True)
def remove_from_load_balancer_rule(sim: Simulator, req: Request) -> AsyncResult:
    """Removes virtual machine(s) from a load balancer rule (a VM that is not a member is no error)."""
    rule = get_or_431(sim, "lb_rules", req.get("id"), "load balancer rule")
    ids = _vm_ids(req)
    if ids is None:  # an InvalidParameterValueException the command turns into PARAM_ERROR
        raise invalid_value("Failed to remove Instance from load balancer rule")
    for entry in req.get("vmidipmap") or []:
        if not sim.exists("vms", entry.get("vmid") or ""):
            raise invalid_value(f"Unable to find Instance ID: {entry.get('vmid')}")
    return AsyncResult("lb_members", {"id": rule["id"], "vms": ids, "add": False}, "FirewallRule", rule["id"])


@finisher("lb_members")
def _finish_members(sim: Simulator, id: str, vms: list[str], add: bool) -> dict[str, Any]:
    """applyLoadBalancerRules: the new mappings are applied, revoked ones removed; the rule is
    Active while it has members and Add again without any."""
    rule = sim.get("lb_rules", id)
    if rule is None:
        raise ApiError(530, "Failed to assign load balancer rule" if add else
                       "Failed to remove specified load balancer rule id for vms " + str(vms))
    current = members(rule)
    if add:
        current += [v for v in vms if v not in current and sim.exists("vms", v)]
    else:
        current = [v for v in current if v not in vms]
    rule["_vms"] = current  # replaced, not edited in place: the change is journaled
    rule["state"] = "Active" if current else "Add"
    return {"success": True}


# ---- update / delete -----------------------------------------------------------------------------

@command("updateLoadBalancerRule", Param("id", "uuid", required=True, entity="lb_rules"), Param("algorithm"),
         Param("description", length=4096), Param("name"), Param("fordisplay", "boolean"), Param("protocol"),
         Param("cidrlist", "list"), Param("customid"), isasync=True, key="loadbalancer")
def update_load_balancer_rule(sim: Simulator, req: Request) -> AsyncResult:
    """Updates load balancer (name, description, algorithm, protocol, CIDR list)."""
    rule = get_or_431(sim, "lb_rules", req.get("id"), "load balancer rule")
    if "algorithm" in req and not valid_algorithm(req.get("algorithm")):
        # CloudStack stores any text and its virtual router then fails to apply the rule; the lab
        # refuses it up front (a known difference, see the README)
        raise invalid_value(f"Invalid algorithm: {req.get('algorithm')}")
    changes = {field: req.get(name) for name, field in (("name", "name"), ("description", "description"),
               ("algorithm", "algorithm"), ("fordisplay", "fordisplay"), ("protocol", "protocol"))
               if name in req}
    if "cidrlist" in req:
        changes["cidrlist"] = _cidr_string(req.get("cidrlist"), ",") or None
    return AsyncResult("lb_updated", {"id": rule["id"], "changes": changes}, "FirewallRule", rule["id"])


@finisher("lb_updated")
def _finish_update(sim: Simulator, id: str, changes: dict[str, Any]) -> dict[str, Any]:
    rule = sim.get("lb_rules", id)
    if rule is None:
        raise ApiError(530, f"Unable to find lb rule by id={id}")
    rule.update(changes)
    return {"loadbalancer": render_lb(sim, rule)}


@command("deleteLoadBalancerRule", Param("id", "uuid", required=True, entity="lb_rules"), isasync=True)
def delete_load_balancer_rule(sim: Simulator, req: Request) -> AsyncResult:
    """Deletes a load balancer rule (its related firewall rule and its member mappings too)."""
    rule = get_or_431(sim, "lb_rules", req.get("id"), "load balancer rule")
    if rule["state"] in ("Add", "Active"):
        rule["state"] = "Revoke"  # traffic stops as the job starts; the row goes when it ends
    return AsyncResult("lb_deleted", {"id": rule["id"]}, "FirewallRule", rule["id"])


def _drop_rule(sim: Simulator, id: str) -> None:
    """Remove a rule with the firewall rule opened for it (revokeRelatedFirewallRule)."""
    for fw in [r for r in sim.col("firewall_rules").values() if r.get("related") == id]:
        sim.remove("firewall_rules", fw["id"])
    sim.remove("lb_rules", id)


@finisher("lb_deleted")
def _finish_delete(sim: Simulator, id: str) -> dict[str, Any]:
    _drop_rule(sim, id)
    return {"success": True}


# ---- lists ---------------------------------------------------------------------------------------

_EXACT = (("id", "id"), ("publicipid", "publicipid"), ("networkid", "networkid"))


@command("listLoadBalancerRules", Param("id", "uuid", entity="lb_rules"), Param("name"),
         Param("publicipid", "uuid", entity="public_ips"), Param("virtualmachineid", "uuid", entity="vms"),
         Param("zoneid", "uuid", entity="zones"), Param("networkid", "uuid", entity="networks"),
         Param("fordisplay", "boolean"), TAG_FILTER, key="loadbalancerrule", listing=True)
def list_load_balancer_rules(sim: Simulator, req: Request) -> list[dict[str, Any]]:
    """Lists load balancer rules (``name`` is an exact match, ``keyword`` a substring of the name
    or description: searchForLoadBalancers)."""
    wanted = tag_filter(req)
    name, keyword = req.get("name"), req.get("keyword")
    items = []
    for rule in sim.col("lb_rules").values():
        if any(p in req and rule.get(f) != req.get(p) for p, f in _EXACT):
            continue
        if name is not None and rule.get("name") != name:
            continue
        if keyword is not None and not (like(rule.get("name"), keyword) or like(rule.get("description"), keyword)):
            continue
        if "virtualmachineid" in req and req.get("virtualmachineid") not in members(rule):
            continue
        if "fordisplay" in req and bool(rule.get("fordisplay", True)) != req.get("fordisplay"):
            continue
        if wanted and not sim.matches_tags(rule["id"], wanted):
            continue
        items.append(rule)
    return [render_lb(sim, r) for r in items]


class KeyedList(list[dict[str, Any]]):
    """A list answer whose items are named differently from the command's usual key."""

    def __init__(self, items: list[dict[str, Any]], key: str) -> None:
        super().__init__(items)
        self.key = key


@command("listLoadBalancerRuleInstances", Param("id", "uuid", required=True, entity="lb_rules"),
         Param("applied", "boolean"), Param("lbvmips", "boolean"), key="loadbalancerruleinstance",
         listing=True)
def list_load_balancer_rule_instances(sim: Simulator, req: Request) -> list[dict[str, Any]]:
    """List all virtual machine instances that are assigned to a load balancer rule.

    LoadBalancingRulesManagerImpl.listLoadBalancerInstances: the account's VMs in the rule's
    network, except VMs Destroyed, Expunging, in Error or Unknown, that are members
    (``applied`` true, the default) or that are not (``applied=false``: those that could be
    assigned). With ``lbvmips=true`` each item is an ``lbrulevmidip`` holding the VM and its
    member IPs.
    """
    from .compute import render_vm

    rule = get_or_431(sim, "lb_rules", req.get("id"), "load balancer rule")
    applied = req.get("applied", True)
    assigned = set(members(rule))
    vms = [v for v in sim.col("vms").values()
           if not v.get("_removed") and v["state"] not in UNLISTED_VM_STATES
           and any(n["networkid"] == rule["networkid"] for n in v.get("nic", []))
           and (v["id"] in assigned) == applied]
    if not req.get("lbvmips"):
        return [render_vm(sim, v) for v in vms]
    items = []
    for vm in vms:
        nic = next((n for n in vm.get("nic", []) if n["networkid"] == rule["networkid"]), {})
        items.append({"loadbalancerruleinstance": render_vm(sim, vm),
                      "lbvmipaddresses": [nic.get("ipaddress")] if nic.get("ipaddress") else []})
    return KeyedList(items, "lbrulevmidip")


# ---- autoscale -----------------------------------------------------------------------------------

@command("listAutoScaleVmGroups", Param("id", "uuid"), Param("name"),
         Param("lbruleid", "uuid", entity="lb_rules"), Param("vmprofileid", "uuid"), Param("policyid", "uuid"),
         Param("zoneid", "uuid", entity="zones"), Param("fordisplay", "boolean"),
         key="autoscalevmgroup", listing=True)
def list_autoscale_vm_groups(sim: Simulator, req: Request) -> list[dict[str, Any]]:
    """Lists autoscale vm groups.

    ListAutoScaleVmGroupsCmd: the lab has no autoscaling, so there are no groups, profiles or
    policies: every list is empty (clients such as the Terraform/OpenTofu provider ask for the
    groups of each load-balancer rule), and an ``id``, ``vmprofileid`` or ``policyid`` is an
    unknown entity (431), as for any id CloudStack cannot find.
    """
    for name in ("id", "vmprofileid", "policyid"):
        if name in req:
            raise unknown_id("listAutoScaleVmGroups", name, req.get(name))
    return []
