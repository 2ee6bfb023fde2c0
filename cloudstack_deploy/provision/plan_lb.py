"""The load-balancer part of a plan: each balanced role's address, rules, firewall and members.

A role behind a load balancer gets one public address (static NAT mode: an address of its own;
port forwarding: the network's source-NAT address) with a CloudStack load-balancer rule per
port (80, 443) whose members are the role's VMs. The actions land in three groups that
`apply` runs in order, so that traffic never goes to a VM that is going away or not yet there:

- LB_DETACH, first: members leave the rules before their VMs are destroyed or replaced, and
  rules, addresses and forwarding rules in the way go (a port carries one LB or forwarding rule);
- LB, beside the VM pipelines: the address, the rules (their firewall rules come with them,
  ``openfirewall``), algorithm changes, adoptions;
- LB_ATTACH, last: VMs join the rules once they run, in one assign call per rule. When a rule
  already has members that stay, a VM joins only after the rollout on it (``defer``), so the
  pool never sends requests to a host that does not serve the app yet.
"""

from __future__ import annotations

from typing import Any

from .actual import Actual
from .desired import (
    ANYWHERE,
    KIND_LB_IP,
    TAG_ENV,
    TAG_KIND,
    TAG_ROLE,
    Desired,
    LBSpec,
    lb_rule_name,
)
from .steps import LB, LB_ATTACH, LB_DETACH, Action

NOT_MEMBERS = ("Error", "Destroyed")  # VM states that cannot be (or stay) a member


def _cidrs(rule: dict[str, Any]) -> tuple[str, ...]:
    return tuple(sorted(c.strip() for c in (rule.get("cidrlist") or "").split(",") if c.strip()))


def plan_load_balancers(desired: Desired, actual: Actual, replaced: set[str], wanted_ips: set[str],
                        wanted_rules: set[str], released: set[str], warnings: list[str]) -> list[Action]:
    """The actions for every balanced role, plus the removal of rules and addresses no role
    wants any more. ``wanted_ips`` / ``wanted_rules`` (firewall rule ids) get what is kept and
    ``released`` the addresses released here, so the caller's stray sweep leaves both alone;
    ``replaced`` are VM names planned for a replace."""
    out: list[Action] = []
    static = desired.public_access == "static_nat"
    kept_rules: set[str] = set()
    for spec in desired.load_balancers:
        ip = actual.lb_ip(spec.role) if static else actual.source_nat
        if static and ip is None:
            out.append(Action("create", "ip", f"load balancer of {spec.role}", "associateIpAddress", LB,
                              data={"role": spec.role}))
            if any(name in actual.vms for name in spec.members):
                warnings.append(f"role {spec.role} gets a load-balanced address: from now on it is served there "
                                "(create-env prints it), and its VMs' own addresses open SSH only")
        elif static and ip is not None:
            wanted_ips.add(ip["id"])
            if actual.tag(ip["id"], TAG_ENV) != desired.env or actual.tag(ip["id"], TAG_KIND) != KIND_LB_IP:
                out.append(Action("adopt", "ip", ip["ipaddress"], f"load balancer of {spec.role}: tag it", LB,
                                  data={"id": ip["id"], "role": spec.role}))
        out += _rules_and_members(desired, actual, spec, ip, replaced, kept_rules, wanted_rules)
    out += _leftovers(desired, actual, kept_rules, wanted_ips, wanted_rules, released, warnings)
    return out


def _rules_and_members(desired: Desired, actual: Actual, spec: LBSpec, ip: dict[str, Any] | None,
                       replaced: set[str], kept_rules: set[str], wanted_rules: set[str]) -> list[Action]:
    out: list[Action] = []
    live = {name: actual.vms[name]["id"] for name in spec.members if name in actual.vms
            and actual.vms[name]["state"] not in NOT_MEMBERS and name not in replaced}
    names = {vm["id"]: name for name, vm in actual.vms.items()}
    on_ip = actual.lb_rules_on(ip["id"]) if ip else []
    current: dict[int, set[str]] = {}     # port -> member VM ids of the kept rule
    leaving: dict[str, list[str]] = {}    # VM id -> rule ids it leaves
    for port in spec.ports:
        name = lb_rule_name(desired.env, spec.role, port)
        rule = next((r for r in on_ip if int(r["publicport"]) == port), None)
        if rule is not None and int(rule["privateport"]) != port:
            out.append(Action("delete", "load-balancer", rule.get("name") or rule["id"],
                              f"forwards to port {rule['privateport']}, not {port}", LB_DETACH, data={"id": rule["id"]}))
            rule = None
        if rule is None:
            out.append(Action("create", "load-balancer", name, f"{spec.algorithm}, public {port} -> {port} on the "
                              f"{spec.role} VMs", LB, data={"role": spec.role, "port": port,
                                                            "algorithm": spec.algorithm}))
            current[port] = set()
        else:
            kept_rules.add(rule["id"])
            members = set(actual.lb_members.get(rule["id"], []))
            current[port] = members & set(live.values())
            for vm_id in members - set(live.values()):
                leaving.setdefault(vm_id, []).append(rule["id"])
            if str(rule.get("algorithm", "")).lower() != spec.algorithm:
                out.append(Action("update", "load-balancer", rule.get("name") or name,
                                  f"algorithm {rule.get('algorithm')} -> {spec.algorithm}", LB,
                                  data={"id": rule["id"], "algorithm": spec.algorithm}))
            if actual.tag(rule["id"], TAG_ENV) != desired.env:
                out.append(Action("adopt", "load-balancer", rule.get("name") or name, "untagged rule of this "
                                  "environment: tag it", LB, data={"id": rule["id"], "role": spec.role}))
        out += _firewall(actual, spec, ip, port, created=rule is None, wanted_rules=wanted_rules)
    for vm_id, rule_ids in sorted(leaving.items(), key=lambda item: names.get(item[0], item[0])):
        out.append(Action("remove", "lb-member", names.get(vm_id, vm_id), f"leaves {spec.role}'s load balancer "
                          "first", LB_DETACH, data={"vm_id": vm_id, "rules": rule_ids}))
    stays = any(current[p] for p in spec.ports)
    for name in spec.members:
        ports = [p for p in spec.ports if live.get(name) not in current[p]]
        if not ports:
            continue
        rules = ", ".join(f"{spec.role}:{p}" for p in ports)
        when = ("once the app runs on it: after create-env's rollout, the pool serving meanwhile" if stays
                else "once it runs")
        out.append(Action("assign", "lb-member", name, f"joins {rules} {when}", LB_ATTACH,
                          data={"role": spec.role, "ports": ports, "defer": stays}))
    return out


def _firewall(actual: Actual, spec: LBSpec, ip: dict[str, Any] | None, port: int, *, created: bool,
              wanted_rules: set[str]) -> list[Action]:
    """Port ``port`` open to everyone on the balanced address: a new rule opens it itself
    (openfirewall); for a kept rule, a missing or narrowed firewall rule is put right."""
    match = [r for r in actual.firewall if ip and r.get("ipaddressid") == ip["id"] and r.get("startport") == port
             and r.get("endport") == port and r.get("protocol") == "tcp"]
    good = [r for r in match if _cidrs(r) == ANYWHERE]
    wanted_rules.update(r["id"] for r in match)  # handled here, never as strays
    if good:
        return []
    out = [Action("delete", "firewall", f"{ip['ipaddress'] if ip else '?'}:{port}", f"from {','.join(_cidrs(r))} "
                  "(the load balancer is open to all)", LB_DETACH, data={"id": r["id"]}) for r in match]
    if not created:
        out.append(Action("create", "firewall", f"{spec.role} load balancer:{port}", f"tcp {port} from "
                          f"{', '.join(ANYWHERE)}", LB, data={"role": spec.role, "port": port,
                                                              "cidrs": list(ANYWHERE)}))
    return out


def _leftovers(desired: Desired, actual: Actual, kept_rules: set[str], wanted_ips: set[str],
               wanted_rules: set[str], released: set[str], warnings: list[str]) -> list[Action]:
    """Rules no balanced role keeps, and load-balancer addresses no role wants: removed first,
    before any VM goes (their members would otherwise get traffic while they stop)."""
    out: list[Action] = []
    balanced = {spec.role for spec in desired.load_balancers}
    for ip in actual.ips:
        role = actual.tag(ip["id"], TAG_ROLE) or "?"
        if actual.tag(ip["id"], TAG_KIND) == KIND_LB_IP and ip["id"] not in wanted_ips:
            out.append(Action("delete", "ip", ip["ipaddress"], f"load balancer of {role}, which is no longer "
                              "balanced: release it with its rules", LB_DETACH, data={"id": ip["id"]}))
            released.add(ip["id"])  # handled here, not again by the stray sweep
            if role not in balanced and any(v.group == role for v in desired.vms):
                warnings.append(f"role {role} is no longer load balanced: its address {ip['ipaddress']} is "
                                "released and its first VM's own address serves it")
    for rule in actual.lb_rules:
        if rule["id"] in kept_rules or rule.get("publicipid") in released or rule.get("state") == "Deleting":
            continue
        out.append(Action("delete", "load-balancer", rule.get("name") or rule["id"],
                          f"{rule.get('publicip')}:{rule.get('publicport')} is not in the blueprint", LB_DETACH,
                          data={"id": rule["id"]}))
        # its firewall rule (openfirewall) goes with it: not a stray to delete as well
        wanted_rules.update(r["id"] for r in actual.firewall if r.get("ipaddressid") == rule.get("publicipid")
                            and str(r.get("startport")) == str(rule.get("publicport")) == str(r.get("endport")))
    if desired.public_access == "port_forwarding" and desired.load_balancers:
        # the balanced ports were forwarded to one VM before: those rules are in the way
        for pf in actual.port_forwards:
            if int(pf["publicport"]) in desired.load_balancers[0].ports:
                out.append(Action("delete", "port-forward", f"{pf.get('ipaddress')}:{pf['publicport']}",
                                  "the port is load balanced now", LB_DETACH, data={"id": pf["id"]}))
    return out
