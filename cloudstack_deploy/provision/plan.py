"""Desired vs actual: the list of actions that makes the cloud match the blueprint (pure).

`csdeploy plan` prints this list; `create-env` executes exactly it, VM by VM in parallel.
Nothing here does I/O, so every decision is unit-testable and a plan can always be
recomputed from the cloud alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidInput
from .actual import Actual
from .desired import (
    ANYWHERE,
    HTTP_PORTS,
    SSH_PF_BASE,
    TAG_ENV,
    TAG_EXPIRES,
    TAG_VM,
    Desired,
    DiskSpec,
    VMSpec,
)
from .plan_lb import plan_load_balancers
from .steps import GLOBAL, REMOVE, Action
from .userdata import disks_from_userdata

__all__ = ["GLOBAL", "REMOVE", "Action", "Plan", "make_plan"]

GB = 1024**3

#: `key_fingerprint` meaning "there is no local key: create-env would make a new one".
NO_LOCAL_KEY = "(no local key)"
_PLAN_HINT = "change the blueprint (or --set) so that it asks for what can be done, then re-run"


@dataclass
class Plan:
    env: str
    actions: list[Action] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.actions

    def count(self, *ops: str) -> int:
        return sum(1 for a in self.actions if a.op in ops)

    def groups(self) -> dict[str, list[Action]]:
        out: dict[str, list[Action]] = {}
        for a in self.actions:
            out.setdefault(a.group, []).append(a)
        return out

    def to_dict(self) -> dict[str, Any]:
        creates = [a.to_dict() for a in self.actions if a.op in ("create", "replace")]
        deletes = [a.to_dict() for a in self.actions if a.op == "delete"]
        changes = [a.to_dict() for a in self.actions if a.op not in ("create", "replace", "delete")]
        return {"env": self.env, "creates": creates, "changes": changes, "deletes": deletes,
                "warnings": self.warnings}


def _rules_for(actual: Actual, ip_id: str) -> list[dict[str, Any]]:
    return [r for r in actual.firewall if r.get("ipaddressid") == ip_id]


def _cidrs(rule: dict[str, Any]) -> tuple[str, ...]:
    return tuple(sorted(c.strip() for c in (rule.get("cidrlist") or "").split(",") if c.strip()))


def make_plan(desired: Desired, actual: Actual, *, key_fingerprint: str | None = None,
              key_path: str | None = None) -> Plan:
    """The actions that make ``actual`` what ``desired`` asks for; InvalidInput if some cannot be.

    ``key_fingerprint`` is that of the key create-env logs in with (at ``key_path``),
    ``NO_LOCAL_KEY`` when there is none and create-env would make one, None not to check.
    """
    plan = Plan(desired.env)
    add = plan.actions.append
    problems: list[str] = []
    hints: list[str] = []

    # ---- global: network and keypair -----------------------------------------------------
    net = actual.network
    if net is None:
        add(Action("create", "network", desired.network, f"isolated, offering {desired.network_offering}"))
    else:
        if actual.tag(net["id"], TAG_ENV) != desired.env:
            add(Action("adopt", "network", desired.network, "untagged network of this environment: tag it",
                       data={"id": net["id"]}))
        have_exp = actual.tag(net["id"], TAG_EXPIRES)
        if desired.expires is not None and have_exp != desired.base_tags()[TAG_EXPIRES]:
            add(Action("update", "network", desired.network,
                       f"expires {have_exp or 'never'} -> {desired.base_tags()[TAG_EXPIRES]}",
                       data={"id": net["id"]}))
    if actual.keypair is None:
        add(Action("create", "keypair", desired.keypair, "register the environment's SSH key"))
    elif key_fingerprint and actual.keypair.get("fingerprint") != key_fingerprint:
        where = key_path or "the local key"
        if key_fingerprint == NO_LOCAL_KEY:
            problems.append(f"keypair {desired.keypair} is in the cloud but this machine has no key for the "
                            f"environment ({where} is missing: the environment was created from another "
                            "machine, or $CSDEPLOY_HOME was lost): a new key would not open its VMs")
        else:
            problems.append(f"keypair {desired.keypair} in the cloud has fingerprint "
                            f"{actual.keypair.get('fingerprint')}, not that of {where} ({key_fingerprint}): "
                            "csdeploy could not log in to its VMs")
        hints.append(f"the environment's VMs accept only the key it was created with: copy that private key "
                     f"to {where} (or point cloud.ssh.key at it); if it is lost, `csdeploy teardown "
                     f"--env {desired.env}` and create the environment again")

    # ---- affinity groups: before the VMs that join them ---------------------------------------
    for group in desired.affinity_groups:
        if group not in actual.affinity_groups:
            add(Action("create", "affinity-group", group, "host anti-affinity: its VMs on different hosts"))
        outside = sorted(v.name for v in desired.vms if v.affinity_group == group and v.name in actual.vms
                         and not any(g.get("name") == group for g in actual.vms[v.name].get("affinitygroup") or []))
        if outside:
            plan.warnings.append(f"{', '.join(outside)} stay where they are: CloudStack changes a VM's affinity "
                                 f"groups only while it is stopped, so only new VMs join {group}")

    # ---- per VM ---------------------------------------------------------------------------
    used_pf_ports = {int(r["publicport"]) for r in actual.port_forwards}
    next_port = SSH_PF_BASE
    wanted_ips: set[str] = set()
    wanted_volumes: set[str] = set()
    wanted_rules: set[str] = set()
    # port forwarding: 80/443 of the shared address go to the first proxy VM, or to a load balancer
    first_proxy = None if desired.load_balancers else next((v.name for v in desired.vms if v.proxy), None)
    for spec in desired.vms:
        vm = actual.vms.get(spec.name)
        g = spec.name
        replaced_id = None  # a broken VM's id: its disks are detached when it is expunged
        if vm is None:
            add(Action("create", "vm", spec.name, f"{spec.group} #{spec.index}, {spec.offering}", g))
        elif vm["state"] in ("Error", "Destroyed"):
            add(Action("replace", "vm", spec.name, f"VM is {vm['state']}: expunge it and deploy again", g,
                       data={"id": vm["id"]}))
            replaced_id = vm["id"]
            vm = None
        elif (missing := _unmounted_disks(actual, spec, vm["id"])):
            wanted = ", ".join(f"{d.label} at {d.mount}" for d in missing)
            add(Action("replace", "vm", spec.name, f"its data disks changed ({wanted}): mount points are "
                       "fixed when a VM is created, so destroy it and deploy it again; its data disks are "
                       "kept and re-attached", g, data={"id": vm["id"]}))
            plan.warnings.append(f"{spec.name} will be replaced to mount {wanted}: what is on its root disk "
                                 "(containers, images, anything outside its data disks) is lost; its data "
                                 "disks and public IP are kept")
            replaced_id = vm["id"]
            vm = None
        else:
            if actual.tag(vm["id"], TAG_ENV) != desired.env:
                add(Action("adopt", "vm", spec.name, "untagged VM of this environment: tag it", g,
                           data={"id": vm["id"]}))
            if vm.get("serviceofferingname") != spec.offering:
                add(Action("scale", "vm", spec.name, f"{vm.get('serviceofferingname')} -> {spec.offering} "
                           "(stop, scale, start: the VM is down meanwhile)", g, data={"id": vm["id"]}))
                plan.warnings.append(f"{spec.name} will be stopped to change its offering to {spec.offering}")
            elif vm["state"] == "Stopped":
                add(Action("start", "vm", spec.name, "VM is Stopped", g, data={"id": vm["id"]}))

        vm_id = vm["id"] if vm else None
        # Public access.
        ports = (desired.ssh_port,) + (HTTP_PORTS if spec.proxy and not spec.balanced else ())
        if desired.public_access == "static_nat":
            ip = actual.ip_of_vm(vm_id) if vm_id else None
            ip = ip or actual.ip_tagged_for(spec.name)
            if ip is None:
                add(Action("create", "ip", f"public IP for {spec.name}", "associateIpAddress", g))
                add(Action("create", "static-nat", spec.name, "enableStaticNat", g))
            else:
                wanted_ips.add(ip["id"])
                if actual.tag(ip["id"], TAG_ENV) != desired.env:
                    add(Action("adopt", "ip", ip["ipaddress"], "untagged IP of this environment: tag it", g,
                               data={"id": ip["id"]}))
                if not (ip.get("isstaticnat") and ip.get("virtualmachineid") == vm_id):
                    add(Action("create", "static-nat", spec.name, f"{ip['ipaddress']} -> {spec.name}", g,
                               data={"ip": ip["id"]}))
            existing = _rules_for(actual, ip["id"]) if ip else []
            for port in ports:
                cidrs = tuple(sorted(desired.ssh_cidrs)) if port == desired.ssh_port else ANYWHERE
                match = [r for r in existing if r.get("startport") == port and r.get("endport") == port
                         and r.get("protocol") == "tcp"]
                good = [r for r in match if _cidrs(r) == cidrs]
                if good:
                    wanted_rules.update(r["id"] for r in good)
                    continue
                for r in match:
                    add(Action("delete", "firewall", f"{ip['ipaddress'] if ip else '?'}:{port}",  # type: ignore[index]
                               f"from {','.join(_cidrs(r))} (replaced)", g, data={"id": r["id"]}))
                    wanted_rules.add(r["id"])  # handled here, not again as a stray
                add(Action("create", "firewall", f"{spec.name}:{port}", f"tcp {port} from {', '.join(cidrs)}", g,
                           data={"port": port, "cidrs": list(cidrs), "ip": ip["id"] if ip else None}))
        else:  # port_forwarding on the network's source-NAT address
            pfs = [r for r in actual.port_forwards if vm_id and r.get("virtualmachineid") == vm_id]
            ssh = next((r for r in pfs if int(r["privateport"]) == desired.ssh_port), None)
            if ssh is None:
                while next_port in used_pf_ports:
                    next_port += 1
                used_pf_ports.add(next_port)
                add(Action("create", "port-forward", f"{spec.name}:ssh", f"public {next_port} -> 22 from "
                           f"{', '.join(desired.ssh_cidrs)}", g, data={"public": next_port,
                           "private": desired.ssh_port, "cidrs": list(desired.ssh_cidrs)}))
            elif tuple(sorted(c for c in ssh.get("cidrlist", "").split(",") if c)) != tuple(sorted(desired.ssh_cidrs)):
                add(Action("delete", "port-forward", f"{spec.name}:ssh", "allowed CIDRs changed", g,
                           data={"id": ssh["id"]}))
                add(Action("create", "port-forward", f"{spec.name}:ssh", f"public {ssh['publicport']} -> 22 from "
                           f"{', '.join(desired.ssh_cidrs)}", g, data={"public": int(ssh["publicport"]),
                           "private": desired.ssh_port, "cidrs": list(desired.ssh_cidrs)}))
            if spec.name == first_proxy:
                for port in HTTP_PORTS:
                    if not any(int(r["privateport"]) == port for r in pfs):
                        add(Action("create", "port-forward", f"{spec.name}:{port}", f"public {port} -> {port}", g,
                                   data={"public": port, "private": port, "cidrs": list(ANYWHERE)}))
        # Data disks.
        for disk in spec.disks:
            _plan_disk(plan, actual, spec, disk, vm_id, problems, replaced_id, desired.env)
            wanted_volumes.add(disk.name)

    # ---- load balancers (see plan_lb) -------------------------------------------------------
    replaced = {a.name for a in plan.actions if a.kind == "vm" and a.op == "replace"}
    released: set[str] = set()
    plan.actions += plan_load_balancers(desired, actual, replaced, wanted_ips, wanted_rules, released, plan.warnings)

    # ---- removals -------------------------------------------------------------------------
    wanted_vms = {v.name for v in desired.vms}
    for name, vm in sorted(actual.vms.items()):
        if name not in wanted_vms:
            add(Action("delete", "vm", name, f"not in the blueprint ({vm['state']}): destroy and expunge",
                       REMOVE, data={"id": vm["id"]}))
            ip = actual.ip_of_vm(vm["id"]) or actual.ip_tagged_for(name)
            if ip is not None:
                wanted_ips.discard(ip["id"])
    if desired.public_access == "static_nat":
        for ip in actual.ips:
            if ip["id"] not in wanted_ips | released:
                owner = actual.tag(ip["id"], TAG_VM) or "no VM"
                if owner in wanted_vms and not ip.get("isstaticnat"):
                    continue  # being (re)attached by its VM's pipeline
                add(Action("delete", "ip", ip["ipaddress"], f"was for {owner}: release it with its rules",
                           REMOVE, data={"id": ip["id"]}))
        kept_ips = wanted_ips
        for r in actual.firewall:
            if r["ipaddressid"] in kept_ips and r["id"] not in wanted_rules:
                add(Action("delete", "firewall", f"{r.get('ipaddress')}:{r.get('startport')}",
                           "not in the blueprint", REMOVE, data={"id": r["id"]}))
        removed_vm_ids = {vm["id"] for name, vm in actual.vms.items() if name not in wanted_vms}
        for r in actual.port_forwards:  # left from port_forwarding mode: they would keep ports open
            if r.get("virtualmachineid") not in removed_vm_ids:
                add(Action("delete", "port-forward", f"{r.get('ipaddress')}:{r.get('publicport')}",
                           "the blueprint uses static NAT now", REMOVE, data={"id": r["id"]}))
    else:
        for ip in [ip for ip in actual.ips if ip["id"] not in released]:  # left from static_nat mode
            add(Action("delete", "ip", ip["ipaddress"], "the blueprint uses port forwarding now: release it",
                       REMOVE, data={"id": ip["id"]}))
    for name, group in sorted(actual.affinity_groups.items()):
        if name not in desired.affinity_groups:
            add(Action("delete", "affinity-group", name, "no role spreads its VMs with it any more", REMOVE,
                       data={"id": group["id"]}))
    for name, vol in sorted(actual.volumes.items()):
        if name not in wanted_volumes:
            add(Action("delete", "volume", name, f"{vol['size'] // GB} GB; its data is lost", REMOVE,
                       data={"id": vol["id"], "attached": bool(vol.get("virtualmachineid"))}))
            plan.warnings.append(f"volume {name} is no longer in the blueprint: it will be deleted with its data")
    if problems:
        if len(hints) < len(problems):  # some problems are the blueprint's to fix
            hints.append(_PLAN_HINT)
        raise InvalidInput("the plan cannot be made:\n  " + "\n  ".join(problems), hint="; ".join(hints))
    return plan


def _unmounted_disks(actual: Actual, spec: VMSpec, vm_id: str) -> list[DiskSpec]:
    """The blueprint's disks for this VM that its user data does not mount where asked.

    Empty when the user data was not read or is not csdeploy's: then nothing is known.
    Disks the VM mounts but the blueprint no longer wants are harmless (never found again).
    """
    if not spec.disks or vm_id not in actual.userdata:
        return []
    have = disks_from_userdata(actual.userdata[vm_id])
    if have is None:
        return []
    return [d for d in spec.disks if (d.label, d.mount) not in have]


#: DateUtil.IntervalType's ordinals: a policy's `intervaltype` as CloudStack returns it.
_INTERVALS = ("HOURLY", "DAILY", "WEEKLY", "MONTHLY")


def _interval(policy: dict[str, Any]) -> str:
    value = policy.get("intervaltype")
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        return _INTERVALS[int(value)] if int(value) < len(_INTERVALS) else str(value)
    return str(value).upper()


def _plan_policies(plan: Plan, actual: Actual, env: str, spec: VMSpec, disk: DiskSpec,
                   vol: dict[str, Any] | None) -> None:
    """The disk's snapshot policies: one per interval on its volume (a new volume gets them once
    it is attached: CloudStack takes policies only on a Ready volume). Policies csdeploy did not
    tag are left alone unless the blueprint names their interval (then csdeploy takes them over)."""
    add = plan.actions.append
    have = {_interval(p): p for p in actual.policies.get(vol["id"], [])} if vol else {}
    for sched in disk.snapshots:
        name = f"{disk.name} {sched.every}"
        data = {"disk": disk.name, "schedule": sched, "volume": vol["id"] if vol else None}
        pol = have.pop(sched.interval, None)
        if pol is None:
            add(Action("create", "snapshot-policy", name, sched.describe(), spec.name, data=data))
            continue
        same = (pol.get("schedule") == sched.schedule and pol.get("timezone") == sched.timezone
                and int(pol.get("maxsnaps", 0)) == sched.keep and actual.tag(pol["id"], TAG_ENV) == env)
        if not same:
            add(Action("update", "snapshot-policy", name, f"-> {sched.describe()}", spec.name,
                       data={**data, "id": pol["id"]}))
    for interval, pol in sorted(have.items()):
        if actual.tag(pol["id"], TAG_ENV) == env:
            add(Action("delete", "snapshot-policy", f"{disk.name} {interval.lower()}",
                       "not in the blueprint (its snapshots are kept)", spec.name, data={"id": pol["id"]}))


def _plan_disk(plan: Plan, actual: Actual, spec: VMSpec, disk: DiskSpec, vm_id: str | None,
               problems: list[str], replaced_id: str | None = None, env: str = "") -> None:
    add = plan.actions.append
    g = spec.name
    vol = actual.volumes.get(disk.name) or actual.loose_volumes.get(disk.name)
    if vol is None:
        made = f"from snapshot {disk.from_snapshot}" if disk.from_snapshot else f"{disk.offering}"
        add(Action("create", "volume", disk.name, f"{disk.size_gb} GB {made}, label {disk.label} "
                   f"at {disk.mount}", g, data={"disk": disk}))
        _plan_policies(plan, actual, env, spec, disk, None)
        return
    if disk.name in actual.loose_volumes:
        add(Action("adopt", "volume", disk.name, "untagged volume of this environment: tag it", g,
                   data={"id": vol["id"]}))
    have = vol["size"] // GB
    if disk.size_gb < have:
        problems.append(f"volume {disk.name} is {have} GB and the blueprint asks for {disk.size_gb} GB: "
                        "shrinking a disk would destroy data; keep the size or move the data first")
    elif disk.size_gb > have:
        add(Action("update", "volume", disk.name, f"grow {have} -> {disk.size_gb} GB (filesystem grown on the VM)",
                   g, data={"id": vol["id"], "size": disk.size_gb}))
    attached_to = vol.get("virtualmachineid")
    if attached_to and attached_to == replaced_id:
        attached_to = None  # expunging the broken VM detaches it; attach it to the new one
    if attached_to and attached_to != vm_id:
        problems.append(f"volume {disk.name} is attached to another VM ({vol.get('vmname') or attached_to})")
    elif not attached_to:
        add(Action("update", "volume", disk.name, f"attach to {spec.name}", g,
                   data={"id": vol["id"], "attach": True}))
    _plan_policies(plan, actual, env, spec, disk, vol)
