"""teardown's order (what is deleted before what) and its job waits when many jobs are pending.

Checked against CloudStack's source: NetworkOrchestrator.destroyNetwork refuses a network
while it still has VMs that are not expunged ("Can't delete the network, not all user vms
are expunged"), and its cleanupNetworkResources releases the network's remaining addresses
itself (so an address released by csdeploy must be gone before the network is asked for);
ListAsyncJobsCmd / QueryManagerImpl.searchForAsyncJobsInternal list pending jobs only
(AsyncJobManagerImpl.completeAsyncJob marks a finished job removed, AsyncJobJoinVO has the
removed column), so each finished job is still asked for its result with queryAsyncJobResult.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from cloudstack_deploy.cloud import Cloud, read_cloud_config
from cloudstack_deploy.errors import OperationFailed
from cloudstack_deploy.lab.simulator.server import ThreadedSimulator
from cloudstack_deploy.progress import Recorder
from cloudstack_deploy.provision.teardown import teardown_env

from .conftest import CloudView, create


def _index(rec: Recorder, status: str, kind: str) -> list[int]:
    """Where in the event stream each ``kind`` step reached ``status`` (running/done)."""
    return [i for i, e in enumerate(rec.events) if e.status == status and e.resource.split()[0] == kind]


async def test_teardown_deletes_in_dependency_order(home: Path, cloud_view: CloudView) -> None:
    """Load-balancer rules before any VM; the addresses that carry no rule meanwhile; the
    rules' own address after them; each VM before its data disk; every VM and address before
    the network and the affinity groups. Then nothing is left."""
    await create("demo", "roles.web.count=3")
    lb_ip = next(r["publicipid"] for r in cloud_view.lb_rules())
    addresses = {ip["id"]: ip["ipaddress"] for ip in cloud_view.public_ips()}
    disks = {v["name"] for v in cloud_view.volumes()}
    assert disks, "the db accessory has a data disk"
    rec = Recorder()
    async with Cloud(read_cloud_config()) as cloud:
        await teardown_env(cloud, "demo", rec)

    lb_done = _index(rec, "done", "load-balancer")
    vm_start, vm_done = _index(rec, "running", "vm"), _index(rec, "done", "vm")
    ip_start, ip_done = _index(rec, "running", "ip"), _index(rec, "done", "ip")
    net_start = _index(rec, "running", "network")
    group_start = _index(rec, "running", "affinity-group")
    assert len(lb_done) == 2 and len(vm_done) == 5 and len(ip_done) == len(addresses) == 6, rec.events
    assert len(net_start) == 1 and len(group_start) == 1, rec.events

    assert max(lb_done) < min(vm_start), "a VM went while a load-balancer rule still sent it traffic"
    ruled = next(i for i, e in enumerate(rec.events) if e.status == "running" and e.resource == f"ip {addresses[lb_ip]}")
    assert max(lb_done) < ruled, "the rules' address was released while its rules were being deleted"
    others = [i for i in ip_start if i != ruled]
    assert max(others) < min(lb_done), "the other addresses wait for nothing"
    assert max(vm_done + ip_done) < min(net_start + group_start), "the network or a group went before a VM or address"

    for disk in disks:  # a data disk once its VM is gone (detached by the expunge)
        owner = "demo-" + disk.split("-")[1] + "-" + disk.split("-")[2]
        done = next(i for i, e in enumerate(rec.events) if e.status == "done" and e.resource == f"vm {owner}")
        start = next(i for i, e in enumerate(rec.events) if e.status == "running" and e.resource == f"volume {disk}")
        assert done < start, (disk, owner)
    assert not any(cloud_view.everything().values()), cloud_view.everything()


async def _teardown_with(cloud: Cloud, on_submit: Any) -> OperationFailed:
    """Teardown with ``on_submit(command, params, reply)`` called on each answered call."""
    request = cloud.request

    async def watched(command: str, **params: Any) -> dict[str, Any]:
        reply = await request(command, **params)
        on_submit(command, params, reply)
        return reply

    cloud.request = watched  # type: ignore[method-assign]
    with pytest.raises(OperationFailed) as err:
        await teardown_env(cloud, "demo", Recorder())
    return err.value


async def test_a_failed_job_among_many_is_reported_with_its_vm(home: Path, cloud_view: CloudView) -> None:
    """Eleven jobs pending at once are watched with listAsyncJobs; the one that fails is still
    read for its result and reported with the VM it was destroying and CloudStack's text."""
    await create("demo", "roles.web.count=6")
    names = {v["id"]: v["name"] for v in cloud_view.vms()}
    cloud_view.add_faults("destroyVirtualMachine:job:530:1")
    submitted: list[str] = []
    async with Cloud(read_cloud_config()) as cloud:
        err = await _teardown_with(cloud, lambda c, p, r: submitted.append(p["id"]) if c == "destroyVirtualMachine" else None)
        assert cloud.calls["listAsyncJobs"] >= 1, "many pending jobs are watched with one listing"
    failed = names[submitted[0]]  # the first destroy job carries the fault
    assert f"vm {failed}: CloudStack destroyVirtualMachine failed" in str(err) and "(error 530)" in str(err)
    left = [v["name"] for v in cloud_view.vms()]
    assert left == [failed], left
    assert sum(f"vm {n}:" in str(err) for n in names.values()) == 1, str(err)


async def test_a_job_that_never_finishes_times_out_naming_its_vm(
        home: Path, sim: ThreadedSimulator, cloud_view: CloudView) -> None:
    await create("demo", "roles.web.count=4")
    names = {v["id"]: v["name"] for v in cloud_view.vms()}
    stuck: list[str] = []
    schedule = sim.sim._schedule

    def hang_first(job: dict[str, Any]) -> None:
        """In the simulator's own thread, before the job's id is answered: the first destroy's
        job is never scheduled (cancelling its timer after the answer raced a 20 ms job)."""
        if job.get("_command") == "destroyVirtualMachine" and not stuck:
            stuck.append(job["jobinstanceid"])
            return
        schedule(job)

    sim.sim._schedule = hang_first  # type: ignore[method-assign]
    async with Cloud(read_cloud_config(), job_timeout=1.5) as cloud:
        err = await asyncio.wait_for(_teardown_with(cloud, lambda *_: None), 30)
    assert f"vm {names[stuck[0]]}: CloudStack destroyVirtualMachine failed: job " in str(err)
    assert "did not finish within 2s" in str(err)
    assert [v["name"] for v in cloud_view.vms()] == [names[stuck[0]]]


async def test_the_rules_are_submitted_alone_before_the_early_releases(home: Path, cloud_view: CloudView) -> None:
    """Every VM waits for the load-balancer rules' job, so their deletion is answered before any
    release of an address without rules is sent (those releases would otherwise share the
    cloud with it and delay its answer, from which its first poll is timed). The releases
    still go while the rules' job runs."""
    await create("demo", "roles.web.count=3")
    seen: list[str] = []
    async with Cloud(read_cloud_config(), on_call=lambda command: seen.append(f"send {command}")) as cloud:
        request = cloud.request

        async def watched(command: str, **params: Any) -> dict[str, Any]:
            reply = await request(command, **params)
            seen.append(f"answer {command}")
            return reply

        cloud.request = watched  # type: ignore[method-assign]
        rec = Recorder()
        await teardown_env(cloud, "demo", rec)
    answered = [i for i, e in enumerate(seen) if e == "answer deleteLoadBalancerRule"]
    released = [i for i, e in enumerate(seen) if e == "send disassociateIpAddress"]
    assert len(answered) == 2 and released, seen
    assert max(answered) < min(released), seen
    assert min(_index(rec, "running", "ip")) < min(_index(rec, "done", "load-balancer")), rec.events
    assert not any(cloud_view.everything().values()), cloud_view.everything()
