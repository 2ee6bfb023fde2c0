"""Remove everything an environment owns, in dependency order, then prove it is gone.

Found by tags and by what hangs off the environment's network (works without the local
state dir). Independent deletions run concurrently; every job is waited for (no fixed
sleeps). The final re-list is the proof: anything left is named and the exit is non-zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ..cloud import Cloud, CloudError, StillListed
from ..cloud.client import Settled
from ..errors import OperationFailed
from ..progress import Event, Progress
from .actual import read_actual
from .desired import TAG_ENV, affinity_description, keypair_name, network_name
from .snapshots import IN_PROGRESS, SnapshotInfo, list_snapshots, tag_kept, wait_state
from .snapshots import disks_of as env_disks_of

_EXPUNGE_LATER = ("this account may not expunge VMs: CloudStack expunges the destroyed ones after its "
                  "expunge.delay setting; re-run `csdeploy teardown` then (or ask the cloud's administrators)")


@dataclass
class TeardownResult:
    env: str
    deleted: list[str] = field(default_factory=list)
    api_calls: int = 0
    kept_snapshots: int = 0   # snapshots left on purpose (for `csdeploy recover`)


async def _step(progress: Progress, env: str, resource: str, fn: Callable[[], Awaitable[Any]],
                failures: list[str], deleted: list[str]) -> None:
    progress.emit(Event(resource=resource, action="delete", status="running", env=env))
    try:
        await fn()
    except CloudError as exc:
        if exc.code == 431 and "does not exist" not in exc.text and "Unable to find" not in exc.text \
                and "invalid value" not in exc.text:
            failures.append(f"{resource}: {exc}")
            progress.emit(Event(resource=resource, action="delete", status="failed", detail=str(exc), env=env))
            return
        if exc.code != 431:
            failures.append(f"{resource}: {exc}")
            progress.emit(Event(resource=resource, action="delete", status="failed", detail=str(exc), env=env))
            return
        progress.emit(Event(resource=resource, action="delete", status="skipped", detail="already gone", env=env))
        return
    deleted.append(resource)
    progress.emit(Event(resource=resource, action="delete", status="done", env=env))


#: VM ids per listVirtualMachines call that checks which are gone (a GET: its URL stays short).
IDS_PER_LISTING = 50


async def _destroy(cloud: Cloud, vm_id: str, not_expunged: list[str], settled: Settled | None = None) -> None:
    if not await cloud.destroy_vm(vm_id, settled=settled):
        not_expunged.append(vm_id)
        raise CloudError("destroyVirtualMachine", 531, "this account may not expunge; the VM is Destroyed and "
                         "CloudStack expunges it later (re-run teardown then)")


async def teardown_env(cloud: Cloud, env: str, progress: Progress, *, delete_snapshots: bool = False) -> TeardownResult:
    """Remove ``env``; its snapshots stay (a later `recover` needs them) unless ``delete_snapshots``."""
    calls_before = cloud.total_calls
    result = TeardownResult(env)
    failures: list[str] = []
    not_expunged: list[str] = []
    step = lambda res, fn: _step(progress, env, res, fn, failures, result.deleted)  # noqa: E731
    # Whether VMs can be expunged is asked while the environment is read, not behind the
    # hundreds of calls that follow (the first destroy would otherwise queue behind them).
    capabilities = asyncio.ensure_future(cloud.capabilities())
    # read here, so a failure before it is awaited below is not reported a second time at exit
    capabilities.add_done_callback(lambda t: t.cancelled() or t.exception())
    actual = await read_actual(cloud, env, members=False, rules=False)
    # 0. Load-balancer rules first: no traffic goes to VMs that are about to stop, and no rule
    # is edited by a VM's expunge while it is being deleted. (Releasing an address takes its
    # rules too, but rules on the source-NAT address stay until the network goes.)
    rules = [r for r in actual.lb_rules if r.get("state") != "Deleting"]
    # The rules' job is on the critical path (every VM waits for it): its submission goes to
    # the cloud alone, answered before the early releases below are sent, not queued behind
    # them (a job's first poll is timed from its answer).
    unanswered = len(rules)
    rules_sent = asyncio.Event()

    async def delete_rule(rule: dict[str, Any]) -> None:
        nonlocal unanswered
        try:
            reply = await cloud.request("deleteLoadBalancerRule", id=rule["id"])
        finally:
            unanswered -= 1
            if not unanswered:
                rules_sent.set()
        if "jobid" in reply:
            await cloud.wait_job("deleteLoadBalancerRule", reply["jobid"])

    lbs = asyncio.gather(*(step(f"load-balancer {r.get('name') or r['id']}", lambda r=r: delete_rule(r))
                           for r in rules))

    # Many deletions are proven done by listing what is left, not by reading each job's
    # result: once their jobs leave the cloud's listing of pending jobs, one listing tells
    # for all of them at once (200 VMs: 4 calls, not 200). Anything still listed has its
    # job's result read, so a failure is reported with the cloud's own message.
    async def vms_left(ids: list[str]) -> set[str]:
        chunks = [ids[i:i + IDS_PER_LISTING] for i in range(0, len(ids), IDS_PER_LISTING)]
        found = await asyncio.gather(*(cloud.list("listVirtualMachines", ids=",".join(c), details="min")
                                       for c in chunks))
        return {vm["id"] for batch in found for vm in batch}

    async def ips_left(ids: list[str]) -> set[str]:  # how read_actual found them
        return {ip["id"] for ip in await cloud.list("listPublicIpAddresses",
                                                     associatednetworkid=actual.network["id"])}

    vm_gone = StillListed(vms_left)
    ip_gone = StillListed(ips_left) if actual.network is not None else None

    def release(ip: dict[str, Any]) -> Awaitable[None]:
        settled = ip_gone.check(ip["id"]) if ip_gone is not None else None
        return step(f"ip {ip['ipaddress']}",
                    lambda: cloud.job("disassociateIpAddress", id=ip["id"], settled=settled))

    # While the rules go (a job's wait, when nothing else could run), the addresses that carry
    # none are released: 200 releases no longer compete with 200 VM destroys for the API. An
    # address with rules waits for them (not one rule deleted twice at once). Without rules to
    # wait for, the VMs go first (below).
    ruled = {r.get("publicipid") for r in actual.lb_rules}
    # They go in the background: the VMs' destroys, asked for once the rules are gone, go
    # before those still waiting (not behind up to 200 releases).
    early = [ip for ip in actual.ips if ip["id"] not in ruled] if actual.lb_rules else []

    async def release_early(ip: dict[str, Any]) -> None:
        if rules:
            await rules_sent.wait()
        await release(ip)

    with cloud.background():
        ips_early = asyncio.gather(*(release_early(ip) for ip in early))
    # What is read next (snapshots, volumes, their policies) overlaps the rules' deletion.
    try:
        # Snapshots first, while the volumes still find a policy's (untagged) ones: deleted, or
        # kept and tagged so that `snapshots` and `recover` find them once the volumes are gone.
        # (The environment's tags are read meanwhile: they find its volumes, not its snapshots.)
        found, tagged = await asyncio.gather(list_snapshots(cloud, env, env_disks_of(actual)),
                                             cloud.list("listTags", key=TAG_ENV, value=env))

        async def delete_snapshot(snap: SnapshotInfo) -> None:
            if snap.state in IN_PROGRESS:  # CloudStack deletes only a finished snapshot
                await wait_state(cloud, snap.id, IN_PROGRESS)
            await cloud.job("deleteSnapshot", id=snap.id)

        if delete_snapshots:
            await asyncio.gather(*(step(f"snapshot {s.name}", lambda s=s: delete_snapshot(s)) for s in found))
        else:
            result.kept_snapshots = len(found)
            try:
                await asyncio.gather(*(tag_kept(cloud, s) for s in found if not s.tagged))
            except CloudError as exc:
                failures.append(f"tags of the kept snapshots: {exc}")

        volumes = dict(actual.volumes)
        volumes.update(await _loose_volumes_of(cloud, env, actual.loose_volumes))
        for t in tagged:  # tagged volumes anywhere (e.g. detached ones)
            if t["resourcetype"] == "Volume" and not any(v["id"] == t["resourceid"] for v in volumes.values()):
                for vol in await cloud.list("listVolumes", id=t["resourceid"]):
                    volumes[vol["name"]] = vol
        policies = [p for found in await asyncio.gather(*(cloud.list("listSnapshotPolicies", volumeid=v["id"])
                                                           for v in volumes.values())) for p in found]

        with contextlib.suppress(CloudError):  # a failure here is met again by the first destroy
            await capabilities
    except BaseException:
        for started_early in (lbs, ips_early):
            started_early.cancel()
        raise
    await lbs

    # 1. Then everything at once; only real dependencies wait: a VM's data disks once it is
    # gone; the network and the affinity groups once every VM is gone (the critical path, so
    # the VMs are asked for first) and the public IPs are released. Snapshot policies, loose
    # disks and the key pair depend on nothing.
    async def delete_volume(vol: dict[str, Any]) -> None:
        current = await cloud.list("listVolumes", id=vol["id"])
        if current and current[0].get("virtualmachineid"):
            await cloud.job("detachVolume", id=vol["id"])
        await cloud.request("deleteVolume", id=vol["id"])

    def disks_of(vm: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {n: v for n, v in volumes.items() if v.get("virtualmachineid") == vm["id"]}

    async def vm_and_disks(name: str, vm: dict[str, Any]) -> None:
        await step(f"vm {name}", lambda: _destroy(cloud, vm["id"], not_expunged, vm_gone.check(vm["id"])))
        await asyncio.gather(*(step(f"volume {n}", lambda v=v: delete_volume(v)) for n, v in disks_of(vm).items()))

    # Tasks start in the order they are made: the VMs first (the critical path), then the rest.
    vms = asyncio.gather(*(vm_and_disks(name, vm) for name, vm in actual.vms.items()))
    started = {ip["id"] for ip in early}
    ips = asyncio.gather(ips_early, *(release(ip) for ip in actual.ips if ip["id"] not in started))

    async def network_and_groups() -> None:
        # 2. the addresses are released already, not twice by the network's deletion at once
        await asyncio.gather(asyncio.shield(vms), asyncio.shield(ips))
        jobs = []
        if actual.network is not None:  # refused while VMs remain
            jobs.append(step(f"network {actual.network['name']}",
                             lambda: cloud.job("deleteNetwork", id=actual.network["id"])))
        # Affinity groups once their VMs are gone (CloudStack would drop the members, but no
        # VM of the environment should outlive its placement rule).
        jobs += [step(f"affinity-group {name}", lambda g=g: cloud.job("deleteAffinityGroup", id=g["id"]))
                 for name, g in actual.affinity_groups.items()]
        await asyncio.gather(*jobs)

    attached = {n for vm in actual.vms.values() for n in disks_of(vm)}
    await asyncio.gather(
        network_and_groups(),
        vms,
        ips,
        *(step(f"snapshot-policy {p['id']}", lambda p=p: cloud.request("deleteSnapshotPolicies", id=p["id"]))
          for p in policies),
        *(step(f"volume {n}", lambda v=v: delete_volume(v)) for n, v in volumes.items() if n not in attached),
        *([step(f"keypair {actual.keypair['name']}",
                lambda: cloud.request("deleteSSHKeyPair", name=actual.keypair["name"]))]
          if actual.keypair is not None else []),
    )

    # 3. Proof: re-list by tag, by name and by what hangs off the network.
    left = await remaining(cloud, env, snapshots=delete_snapshots)
    result.api_calls = cloud.total_calls - calls_before
    if left or failures:
        lines = left + [f"(error) {f}" for f in failures if not any(f.startswith(x) for x in left)]
        raise OperationFailed(f"environment '{env}' is not fully removed; still in the cloud:\n  "
                                 + "\n  ".join(lines),
                                 hint=_EXPUNGE_LATER if not_expunged else
                                 "re-run `csdeploy teardown`; if it persists, remove these with cloudmonkey/cs")
    return result


async def _loose_volumes_of(cloud: Cloud, env: str, loose: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Untagged, unattached volumes named ``<env>-...`` (a run killed between createVolume and
    createTags), or load-balancer rules named so. Env names may contain '-', so a name is ours
    only if no other known environment is a longer prefix of it (``demo-x-web-1-web`` belongs
    to ``demo-x``)."""
    if not loose:
        return {}
    envs = {t.get("value", "") for t in await cloud.list("listTags", key=TAG_ENV)} | {env}
    out = {}
    for name, vol in loose.items():
        owner = max((e for e in envs if name.startswith(e + "-")), key=len, default=None)
        if owner == env:
            out[name] = vol
    return out


async def remaining(cloud: Cloud, env: str, *, snapshots: bool = False) -> list[str]:
    """Everything that still belongs to ``env`` in the cloud, as readable lines (its snapshots
    too if ``snapshots``: they are kept on purpose otherwise)."""
    tagged, nets, keys, vols, lbs, groups = await asyncio.gather(
        cloud.list("listTags", key=TAG_ENV, value=env),
        cloud.list("listNetworks", name=network_name(env)),
        cloud.list("listSSHKeyPairs", name=keypair_name(env)),
        cloud.list("listVolumes", type="DATADISK", keyword=f"{env}-"),
        cloud.list("listLoadBalancerRules", keyword=f"{env}-"),
        cloud.list("listAffinityGroups", keyword=f"{env}-"),
    )
    loose = {v["name"]: v for v in vols if v["name"].startswith(f"{env}-") and not v.get("virtualmachineid")
             and not v.get("tags")}
    left = [f"{t['resourcetype']} {t['resourceid']} (tagged {TAG_ENV}={env})" for t in tagged
            if snapshots or t["resourcetype"] != "Snapshot"]
    left += [f"Network {n['name']} ({n['id']})" for n in nets if n["name"] == network_name(env)
             and not any(n["id"] in x for x in left)]
    left += [f"SSHKeyPair {k['name']}" for k in keys if k["name"] == keypair_name(env)]
    left += [f"AffinityGroup {g['name']} ({g['id']})" for g in groups
             if g.get("description") == affinity_description(env)]
    left += [f"Volume {name} ({v['id']}, untagged)" for name, v in (await _loose_volumes_of(cloud, env, loose)).items()]
    ours = re.compile(rf"{re.escape(env)}-[a-z0-9-]+-[0-9]+")  # desired.lb_rule_name's pattern
    named = {r["name"]: r for r in lbs if ours.fullmatch(r.get("name", "")) and not any(r["id"] in x for x in left)}
    left += [f"LoadBalancer {name} ({r['id']}, {r.get('publicip')}:{r.get('publicport')})"
             for name, r in (await _loose_volumes_of(cloud, env, named)).items()]
    return left
