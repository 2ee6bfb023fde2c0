"""What an environment has in the cloud right now, found by tags (and adopted by name).

A lookup that fails raises: it is never taken as "absent" (the prior pipeline created
duplicates that way). Everything hanging off the environment's network (VMs, IPs, rules)
belongs to it even without tags, which is how a run killed between a create and its
createTags is finished by the next run.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from ..cloud import Cloud
from ..errors import OperationFailed
from .desired import (
    HTTP_PORTS,
    KIND_LB_IP,
    TAG_ENV,
    TAG_KIND,
    TAG_ROLE,
    TAG_VM,
    affinity_description,
    keypair_name,
    lb_rule_name,
    network_name,
)

GONE_STATES = ("Expunging",)



@dataclass
class Actual:
    env: str
    network: dict[str, Any] | None = None
    vms: dict[str, dict[str, Any]] = field(default_factory=dict)           # by name
    ips: list[dict[str, Any]] = field(default_factory=list)                # non-source-NAT
    source_nat: dict[str, Any] | None = None
    firewall: list[dict[str, Any]] = field(default_factory=list)
    port_forwards: list[dict[str, Any]] = field(default_factory=list)
    volumes: dict[str, dict[str, Any]] = field(default_factory=dict)       # by name
    #: Unattached, untagged volumes named like ours: adopted only if the plan wants that name.
    loose_volumes: dict[str, dict[str, Any]] = field(default_factory=dict)
    keypair: dict[str, Any] | None = None
    #: Load-balancer rules on the network's addresses, and each rule's member VM ids.
    lb_rules: list[dict[str, Any]] = field(default_factory=list)
    lb_members: dict[str, list[str]] = field(default_factory=dict)         # rule id -> VM ids
    tags: dict[str, dict[str, str]] = field(default_factory=dict)          # resource id -> {key: value}
    #: Snapshot policies of the volumes above (listSnapshotPolicies takes one volume), by volume id.
    policies: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    #: The environment's affinity groups (they take no tags: found by name and description), by name.
    affinity_groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: User data (base64) of the VMs it was read for (see `read_vm_userdata`), by VM id.
    userdata: dict[str, str | None] = field(default_factory=dict)

    @property
    def exists(self) -> bool:
        return bool(self.network or self.vms or self.ips or self.volumes or self.keypair or self.affinity_groups)

    def tag(self, resource_id: str, key: str) -> str | None:
        return self.tags.get(resource_id, {}).get(key)

    def ip_of_vm(self, vm_id: str) -> dict[str, Any] | None:
        """The static-NAT IP of a VM, or an IP tagged for it that is not yet NATed."""
        for ip in self.ips:
            if ip.get("virtualmachineid") == vm_id and ip.get("isstaticnat"):
                return ip
        return None

    def ip_tagged_for(self, vm: str) -> dict[str, Any] | None:
        return next((ip for ip in self.ips if self.tag(ip["id"], TAG_VM) == vm), None)

    def lb_ip(self, role: str) -> dict[str, Any] | None:
        """The address of a role's load balancer (static NAT mode): tagged for it, else the one
        carrying its rules (a run killed before the address's tags landed)."""
        tagged = next((ip for ip in self.ips if self.tag(ip["id"], TAG_KIND) == KIND_LB_IP
                       and self.tag(ip["id"], TAG_ROLE) == role), None)
        if tagged is not None:
            return tagged
        names = {lb_rule_name(self.env, role, port) for port in HTTP_PORTS}
        holding = {r["publicipid"] for r in self.lb_rules if r.get("name") in names}
        return next((ip for ip in self.ips if ip["id"] in holding and not ip.get("isstaticnat")), None)

    def lb_rules_on(self, ip_id: str) -> list[dict[str, Any]]:
        """Rules on an address, except those being deleted."""
        return [r for r in self.lb_rules if r.get("publicipid") == ip_id and r.get("state") != "Deleting"]


def _tag_map(tags: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for t in tags:
        out.setdefault(t["resourceid"], {})[t["key"]] = t.get("value", "")
    return out


async def read_actual(cloud: Cloud, env: str, *, members: bool = True, rules: bool = True) -> Actual:
    """Read everything the environment owns. Raises CloudError when the cloud cannot tell.

    ``members=False`` leaves ``lb_members`` empty: a teardown does not need them, and each
    rule's listing holds every VM of its role (200 VMs, listed twice over). ``rules=False``
    leaves ``firewall`` and ``port_forwards`` empty: a teardown deletes neither (releasing an
    address or expunging a VM takes them), and 200 VMs have 400 of them."""
    env_tags, keypairs, named_nets, groups = await asyncio.gather(
        cloud.list("listTags", key=TAG_ENV, value=env),
        cloud.list("listSSHKeyPairs", name=keypair_name(env)),
        cloud.list("listNetworks", name=network_name(env)),
        cloud.list("listAffinityGroups", keyword=f"{env}-"),
    )
    actual = Actual(env=env)
    actual.affinity_groups = {g["name"]: g for g in groups if g.get("description") == affinity_description(env)}
    actual.keypair = next((k for k in keypairs if k["name"] == keypair_name(env)), None)
    tagged_ids = {t["resourceid"] for t in env_tags if t["resourcetype"] == "Network"}
    nets = [n for n in named_nets if n["name"] == network_name(env) or n["id"] in tagged_ids]
    missing = tagged_ids - {n["id"] for n in nets}
    if missing:  # tagged networks not named as ours: fetch them by id
        for nid in missing:
            nets += await cloud.list("listNetworks", id=nid)
    if len({n["id"] for n in nets}) > 1:
        names = ", ".join(f"{n['name']} ({n['id']})" for n in nets)
        raise OperationFailed(
            f"environment '{env}' has {len(nets)} networks: {names}",
            hint=f"delete the extra one(s) with cloudmonkey/cs, or `csdeploy teardown --env {env}`",
        )
    actual.network = nets[0] if nets else None
    vol_tagged = [t["resourceid"] for t in env_tags if t["resourcetype"] == "Volume"]
    lists: list[Any] = [cloud.list("listVolumes", type="DATADISK", keyword=f"{env}-")]
    if actual.network:
        nid = actual.network["id"]
        lists += [
            cloud.list("listVirtualMachines", networkid=nid, listall=True),
            cloud.list("listPublicIpAddresses", associatednetworkid=nid),
            cloud.list("listFirewallRules", networkid=nid) if rules else asyncio.sleep(0, result=[]),
            cloud.list("listPortForwardingRules", networkid=nid) if rules else asyncio.sleep(0, result=[]),
            cloud.list("listLoadBalancerRules", networkid=nid),
        ]
    results = await asyncio.gather(*lists)
    volumes = results[0]
    if actual.network:
        vms, ips, fw, pf, lbs = results[1:]
        actual.lb_rules = lbs
        instances = (await asyncio.gather(*(cloud.list("listLoadBalancerRuleInstances", id=r["id"]) for r in lbs))
                     if members else [[] for _ in lbs])
        actual.lb_members = {r["id"]: [vm["id"] for vm in found] for r, found in zip(lbs, instances, strict=True)}
        actual.vms = {v["name"]: v for v in vms if v["state"] not in GONE_STATES}
        for ip in ips:
            if ip.get("issourcenat"):
                actual.source_nat = ip
            else:
                actual.ips.append(ip)
        actual.firewall = fw
        actual.port_forwards = pf
    # Volumes: ours if tagged for the env or attached to one of our VMs; unattached ones named
    # like ours are candidates for adoption (a run killed between createVolume and createTags).
    our_vm_ids = {v["id"] for v in actual.vms.values()}
    for vol in volumes:
        if vol["id"] in vol_tagged or vol.get("virtualmachineid") in our_vm_ids:
            actual.volumes[vol["name"]] = vol
        elif vol["name"].startswith(f"{env}-") and not vol.get("virtualmachineid"):
            actual.loose_volumes[vol["name"]] = vol
    # Snapshot policies hang off their volume: one list per volume (CloudStack lists no others).
    vols = [*actual.volumes.values(), *actual.loose_volumes.values()]
    found = await asyncio.gather(*(cloud.list("listSnapshotPolicies", volumeid=v["id"]) for v in vols))
    actual.policies = {v["id"]: pols for v, pols in zip(vols, found, strict=True)}
    listed = [actual.network] if actual.network else []
    listed += [*actual.vms.values(), *actual.ips, *actual.volumes.values(), *actual.loose_volumes.values(),
               *actual.firewall, *actual.port_forwards, *actual.lb_rules,
               *(p for pols in actual.policies.values() for p in pols)]
    if actual.source_nat:
        listed.append(actual.source_nat)
    actual.tags = _tag_map(env_tags + [dict(t, resourceid=r["id"]) for r in listed for t in r.get("tags") or []])
    return actual


async def read_vm_userdata(cloud: Cloud, actual: Actual, names: list[str]) -> None:
    """Fetch the user data of the named VMs into ``actual.userdata``.

    A VM's data disk mount points are in its user data and fixed when it is created, so
    the plan needs it to tell whether a VM still mounts what the blueprint asks for.
    """
    ids = [actual.vms[n]["id"] for n in names if n in actual.vms and actual.vms[n]["id"] not in actual.userdata]
    replies = await asyncio.gather(*(cloud.request("getVirtualMachineUserData", virtualmachineid=i) for i in ids))
    for vm_id, reply in zip(ids, replies, strict=True):
        actual.userdata[vm_id] = (reply.get("virtualmachineuserdata") or {}).get("userdata")
