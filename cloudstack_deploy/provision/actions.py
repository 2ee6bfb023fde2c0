"""The CloudStack calls behind each plan action (network, keypair, VM, IP, NAT, rules, volumes).

Every create is tagged as soon as CloudStack returns its id, so a run killed at any point
leaves resources the next run finds and adopts instead of duplicating.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import sys
import threading
import time
from typing import Any

from ..cloud import CloudError
from ..errors import CsdeployError, Locked
from .context import RunContext, tag
from .desired import (
    ANTI_AFFINITY,
    TAG_CREATED,
    TAG_DISK,
    TAG_EXPIRES,
    TAG_KIND,
    TAG_LOCK,
    TAG_ROLE,
    TAG_VM,
    VMSpec,
    affinity_description,
)
from .hostkeys import generate_host_key, key_fingerprint
from .steps import Action
from .userdata import DataDisk, build_userdata, needs_post

# ---- global actions -------------------------------------------------------------------------

async def network_action(ctx: RunContext, a: Action) -> str:
    d = ctx.desired
    if a.op == "create":
        net = (await ctx.cloud.request("createNetwork", name=d.network, displaytext=f"csdeploy environment {d.env}",
                                       networkofferingid=ctx.catalog.network_offering_id,
                                       zoneid=ctx.catalog.zone_id))["network"]
        ctx.network_id = net["id"]
        extra = {TAG_KIND: "network", TAG_CREATED: ctx.created}
        if ctx.lock_value:
            extra[TAG_LOCK] = ctx.lock_value
        await tag(ctx, "Network", [net["id"]], ctx.tags(**extra), at_once=True)
        await _check_network_race(ctx, net)
        return f"{net['id']}"
    if a.op == "adopt":
        await tag(ctx, "Network", [a.data["id"]], ctx.tags(**{TAG_KIND: "network"}), at_once=True)
        return "tagged"
    if a.op == "update":
        await ctx.cloud.job("deleteTags", resourceids=[a.data["id"]], resourcetype="Network",
                            tags=[{"key": TAG_EXPIRES}])
        await tag(ctx, "Network", [a.data["id"]], [{"key": TAG_EXPIRES, "value": d.base_tags()[TAG_EXPIRES]}],
                  at_once=True)
        return a.detail
    raise AssertionError(a)


async def _check_network_race(ctx: RunContext, mine: dict[str, Any]) -> None:
    """Two runs on different machines may both have created the network: the older one wins."""
    nets = [n for n in await ctx.cloud.list("listNetworks", name=ctx.desired.network)
            if n["name"] == ctx.desired.network]
    others = [n for n in nets if n["id"] != mine["id"]]
    if others:
        # Keep ours only if it is strictly older than every other one. `created` has one-second
        # resolution: on a tie the other run may already have passed this check (it listed
        # before our network existed), so a tie-break by id could let both runs go on.
        created = next((n.get("created", "") for n in nets if n["id"] == mine["id"]), mine.get("created", ""))
        if not all(created < o.get("created", "") for o in others):
            await ctx.cloud.job("deleteNetwork", id=mine["id"])
            raise Locked(f"environment '{ctx.desired.env}' is being created by another csdeploy run "
                          f"(network {others[0]['id']}); this run removed its own duplicate and stops",
                          hint="wait for the other run to finish, then re-run to converge")


async def keypair_action(ctx: RunContext, a: Action) -> str:
    try:
        await ctx.cloud.request("registerSSHKeyPair", name=ctx.desired.keypair, publickey=ctx.public_key)
    except CloudError as exc:
        if "already exists" not in exc.text:
            raise
        # A concurrent run registered it: go on only if it is our key.

        found = await ctx.cloud.list("listSSHKeyPairs", name=ctx.desired.keypair)
        theirs = next((k.get("fingerprint") for k in found if k["name"] == ctx.desired.keypair), None)
        if theirs != key_fingerprint(ctx.public_key):
            raise Locked(f"keypair {ctx.desired.keypair} was just registered by another csdeploy run with "
                          "another key", hint="wait for that run to finish, then re-run from the same machine") from None
        return "registered by a concurrent run (same key)"
    return "registered"


# ---- per-VM actions -------------------------------------------------------------------------

def _disks_for(ctx: RunContext, vm: str) -> list[DataDisk]:
    spec = ctx.desired.vm(vm)
    return [DataDisk(label=d.label, mount=d.mount) for d in (spec.disks if spec else ())]


async def created(ctx: RunContext, command: str, reply: dict[str, Any], rtype: str,
                  tags: list[dict[str, str]]) -> dict[str, Any]:
    """The result of a create command's job, its entity tagged meanwhile: CloudStack answers
    ``command`` with the new entity's id beside the job's (BaseAsyncCreateCmd), so the tags go
    out while the job runs, not after it. The first error is raised once both have ended,
    nothing left running. (An entity whose job fails goes with its tags: e.g. a rule,
    FirewallRulesDaoImpl.remove.)"""
    results = await asyncio.gather(tag(ctx, rtype, [reply["id"]], tags),
                                   ctx.cloud.wait_job(command, reply["jobid"]), return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results[1]  # type: ignore[return-value]


def _load_ssh_meanwhile() -> None:
    """Import SSH's modules (asyncssh and what it loads: a sixth of a second of CPU here) in a
    thread while a VM boots, so that the wait for SSH does not begin with them. Started once
    the VM is asked for: the import holds the interpreter for most of its time, and before
    then it would hold back the calls that make the network and the VMs. An import the event
    loop asks for meanwhile waits for this one (the import system's module locks); a failure
    is left to that import to raise."""
    name = f"{__package__}.ssh_wait"
    if name in sys.modules or _ssh_loading.is_set():
        return
    _ssh_loading.set()

    def load() -> None:
        with contextlib.suppress(BaseException):  # raised again, and reported, by the import that needs it
            importlib.import_module(name)

    threading.Thread(target=load, name="csdeploy-load-ssh", daemon=True).start()


_ssh_loading = threading.Event()


async def deploy_vm(ctx: RunContext, name: str) -> str:
    spec = ctx.desired.vm(name)
    assert spec is not None and ctx.network_id is not None
    key = generate_host_key(comment=name)
    ctx.host_keys[name] = key
    userdata = build_userdata(hostname=name, host_key=key, user=ctx.desired.ssh_user, disks=_disks_for(ctx, name))
    reply = await ctx.cloud.request(
        "deployVirtualMachine", post=needs_post(userdata), name=name, displayname=name,
        zoneid=ctx.catalog.zone_id, templateid=ctx.catalog.template_id,
        serviceofferingid=ctx.catalog.service_offerings[spec.offering], networkids=[ctx.network_id],
        keypair=ctx.desired.keypair, userdata=userdata, **_placement(ctx, spec),
    )
    ctx.vm_ids[name] = reply["id"]
    _load_ssh_meanwhile()
    tags = ctx.tags(**{TAG_ROLE: spec.group, TAG_KIND: "vm", TAG_CREATED: ctx.created})
    vm = (await created(ctx, "deployVirtualMachine", reply, "UserVm", tags))["virtualmachine"]
    return f"{vm['state']}, {vm['nic'][0]['ipaddress']}"


def _placement(ctx: RunContext, spec: VMSpec) -> dict[str, Any]:
    """deployVirtualMachine's root disk size and affinity group (created before the VMs)."""
    out: dict[str, Any] = {}
    if spec.root_disk_gb is not None:
        out["rootdisksize"] = spec.root_disk_gb
    if spec.affinity_group is not None:
        out["affinitygroupids"] = [ctx.affinity_groups[spec.affinity_group]]
    return out


async def affinity_group_action(ctx: RunContext, a: Action) -> str:
    """Create a role's host anti-affinity group (its description names the environment, as
    groups take no tags), or delete one no role uses."""
    if a.op == "delete":
        await ctx.cloud.job("deleteAffinityGroup", id=a.data["id"])
        return "deleted"
    reply = await ctx.cloud.request("createAffinityGroup", name=a.name, type=ANTI_AFFINITY,
                                    description=affinity_description(ctx.desired.env))
    ctx.affinity_groups[a.name] = reply["id"]
    await ctx.cloud.wait_job("createAffinityGroup", reply["jobid"])
    return ANTI_AFFINITY


SETTLING_STATES = ("Starting", "Stopping", "Migrating")


async def wait_vm_settled(ctx: RunContext, name: str, vm_id: str) -> str:
    """Wait until a VM another run was working on leaves its transitional state."""
    deadline = time.monotonic() + ctx.cloud.job_timeout
    while True:
        found = await ctx.cloud.list("listVirtualMachines", id=vm_id)
        state = found[0]["state"] if found else "gone"
        if state in ("Running", "Stopped"):
            return state
        if state not in SETTLING_STATES:
            raise CsdeployError(f"VM {name} became {state} while csdeploy waited for it",
                                hint="re-run create-env: a VM in Error is replaced")
        if time.monotonic() > deadline:
            raise CsdeployError(f"VM {name} is still {state} after {ctx.cloud.job_timeout:.0f}s",
                                hint="check the VM in the CloudStack UI, then re-run")
        await asyncio.sleep(ctx.cloud.poll_interval)


async def vm_action(ctx: RunContext, a: Action) -> str:
    cloud = ctx.cloud
    if a.op == "create":
        return await deploy_vm(ctx, a.name)
    if a.op == "replace":
        await _destroy_vm(ctx, a.data["id"])
        return await deploy_vm(ctx, a.name)
    vm_id = a.data["id"]
    ctx.vm_ids[a.name] = vm_id
    spec = ctx.desired.vm(a.name)
    if a.op == "adopt":
        assert spec is not None
        await tag(ctx, "UserVm", [vm_id], ctx.tags(**{TAG_ROLE: spec.group, TAG_KIND: "vm"}))
        return "tagged"
    if a.op == "start":
        await cloud.job("startVirtualMachine", id=vm_id)
        return "Running"
    if a.op == "scale":
        assert spec is not None
        await cloud.job("stopVirtualMachine", id=vm_id)
        await cloud.job("scaleVirtualMachine", id=vm_id, serviceofferingid=ctx.catalog.service_offerings[spec.offering])
        await cloud.job("startVirtualMachine", id=vm_id)
        return f"now {spec.offering}, Running"
    if a.op == "delete":
        return await _destroy_vm(ctx, vm_id)
    raise AssertionError(a)


async def _destroy_vm(ctx: RunContext, vm_id: str) -> str:
    if await ctx.cloud.destroy_vm(vm_id):
        return "expunged"
    # This account may not expunge: the cloud's expunge thread finishes it later.
    ctx.progress.note(f"VM {vm_id} destroyed; this account may not expunge, so CloudStack removes it later",
                      level="warning")
    return "destroyed (expunged later by CloudStack)"


async def ip_action(ctx: RunContext, a: Action) -> str:
    if a.op == "delete":
        await ctx.cloud.job("disassociateIpAddress", id=a.data["id"])
        return "released"
    vm = a.group
    spec = ctx.desired.vm(vm)
    if a.op == "adopt":
        await tag(ctx, "PublicIpAddress", [a.data["id"]], ctx.tags(**{TAG_VM: vm, TAG_KIND: "ip"}))
        return "tagged"
    reply = await ctx.cloud.request("associateIpAddress", networkid=ctx.network_id)
    # The IP is tagged with its VM (one call per IP): a replaced VM gets its address back.
    tags = ctx.tags(**{TAG_VM: vm, TAG_ROLE: spec.group if spec else "", TAG_KIND: "ip", TAG_CREATED: ctx.created})
    ip = (await created(ctx, "associateIpAddress", reply, "PublicIpAddress", tags))["ipaddress"]
    ctx.ips[vm] = ip
    return ip["ipaddress"]


async def static_nat_action(ctx: RunContext, a: Action) -> str:
    ip_id = a.data.get("ip") or ctx.ips[a.group]["id"]
    await ctx.cloud.request("enableStaticNat", ipaddressid=ip_id, virtualmachineid=ctx.vm_ids[a.group])
    return "enabled"


def _rule_tags(ctx: RunContext, vm: str) -> list[dict[str, str]]:
    """A VM's firewall and port-forwarding rules' tags: its role's, the same for every rule, so
    the batcher sends one call for the rules of many VMs."""
    spec = ctx.desired.vm(vm)
    return ctx.tags(**{TAG_ROLE: spec.group if spec else "", TAG_KIND: "rule"})


async def firewall_action(ctx: RunContext, a: Action) -> str:
    if a.op == "delete":
        await ctx.cloud.job("deleteFirewallRule", id=a.data["id"])
        return "deleted"
    ip_id = a.data.get("ip") or ctx.ips[a.group]["id"]
    port = a.data["port"]
    reply = await ctx.cloud.request("createFirewallRule", ipaddressid=ip_id, protocol="tcp", startport=port,
                                    endport=port, cidrlist=a.data["cidrs"])
    await created(ctx, "createFirewallRule", reply, "FirewallRule", _rule_tags(ctx, a.group))
    return a.detail


async def _source_nat(ctx: RunContext) -> dict[str, Any]:
    async with ctx._snat_lock:
        if ctx.source_nat is None:
            ips = await ctx.cloud.list("listPublicIpAddresses", associatednetworkid=ctx.network_id,
                                       issourcenat=True)
            if not ips:
                raise CsdeployError(f"network {ctx.desired.network} has no source-NAT address yet",
                                    hint="port forwarding needs an implemented isolated network; re-run")
            ctx.source_nat = ips[0]
        return ctx.source_nat


async def port_forward_action(ctx: RunContext, a: Action) -> str:
    if a.op == "delete":
        await ctx.cloud.job("deletePortForwardingRule", id=a.data["id"])
        return "deleted"
    snat = await _source_nat(ctx)
    reply = await ctx.cloud.request("createPortForwardingRule", ipaddressid=snat["id"], protocol="tcp",
                                    publicport=a.data["public"], privateport=a.data["private"],
                                    virtualmachineid=ctx.vm_ids[a.group], cidrlist=a.data["cidrs"],
                                    openfirewall=True)
    await created(ctx, "createPortForwardingRule", reply, "PortForwardingRule", _rule_tags(ctx, a.group))
    return f"{snat['ipaddress']}:{a.data['public']} -> {a.data['private']}"


async def volume_action(ctx: RunContext, a: Action) -> str:
    cloud = ctx.cloud
    if a.op == "delete":
        if a.data.get("attached"):
            await cloud.job("detachVolume", id=a.data["id"])
        await cloud.request("deleteVolume", id=a.data["id"])
        return "deleted"
    spec = ctx.desired.vm(a.group)
    if a.op == "create":
        disk = a.data["disk"]
        offering = ctx.catalog.disk_offerings[disk.offering]
        size = disk.size_gb if offering.get("iscustomized") else None
        if disk.from_snapshot:  # the snapshot gives zone and data; the blueprint's offering and size
            reply = await cloud.request("createVolume", name=disk.name, snapshotid=disk.from_snapshot,
                                        diskofferingid=offering["id"], size=size)
        else:
            reply = await cloud.request("createVolume", name=disk.name, diskofferingid=offering["id"],
                                        size=size, zoneid=ctx.catalog.zone_id)
        tags = ctx.tags(**{TAG_VM: a.group, TAG_ROLE: disk.owner, TAG_DISK: disk.label, TAG_KIND: "volume",
                           TAG_CREATED: ctx.created})
        await created(ctx, "createVolume", reply, "Volume", tags)
        a.data["id"] = reply["id"]
        return f"{disk.size_gb} GB"
    if a.op == "adopt":
        await tag(ctx, "Volume", [a.data["id"]], ctx.tags(**{TAG_VM: a.group, TAG_KIND: "volume",
                                                             TAG_ROLE: spec.group if spec else ""}))
        return "tagged"
    if "size" in a.data:
        await cloud.job("resizeVolume", id=a.data["id"], size=a.data["size"])
        return f"{a.data['size']} GB"
    raise AssertionError(a)


async def attach_volume(ctx: RunContext, volume_id: str, vm: str) -> None:
    await ctx.cloud.job("attachVolume", id=volume_id, virtualmachineid=ctx.vm_ids[vm])


async def policy_action(ctx: RunContext, a: Action, volume_id: str | None) -> str:
    """A disk's snapshot policy. createSnapshotPolicy for an interval the volume already has
    replaces that policy's schedule and tags (SnapshotManagerImpl.persistSnapshotPolicy), so
    create and update are the same call; the tags travel with it (no window without them)."""
    if a.op == "delete":
        await ctx.cloud.request("deleteSnapshotPolicies", id=a.data["id"])
        return "deleted (its snapshots are kept)"
    spec = ctx.desired.vm(a.group)
    disk = next(d for d in (spec.disks if spec else ()) if d.name == a.data["disk"])
    sched = a.data["schedule"]
    vid = a.data.get("volume") or volume_id
    if vid is None:
        raise CsdeployError(f"volume {disk.name} does not exist yet", hint="re-run create-env")
    tags = ctx.tags(**{TAG_VM: a.group, TAG_ROLE: disk.owner, TAG_DISK: disk.label, TAG_KIND: "snapshot-policy"})
    await ctx.cloud.request("createSnapshotPolicy", volumeid=vid, intervaltype=sched.interval,
                            schedule=sched.schedule, maxsnaps=sched.keep, timezone=sched.timezone, tags=tags)
    return sched.describe()
