"""teardown proves its many deletions by listing what is left, not by one job query each.

Checked against CloudStack's source: listAsyncJobs lists pending jobs only
(AsyncJobManagerImpl.completeAsyncJob sets the finished job's ``removed``, and
QueryManagerImpl.searchForAsyncJobsInternal searches AsyncJobJoinDaoImpl's view without removed
rows), so a job that left the listing has finished, but its result is only in
queryAsyncJobResult. Whether a deletion worked shows in a listing, though: ListVMsCmd takes
``ids`` (since 4.4; an expunged VM is not listed), and listPublicIpAddresses by
``associatednetworkid`` lists allocated addresses only (ListPublicIpAddressesCmd's
``allocatedonly`` defaults to true; IpAddressManagerImpl.disassociatePublicIpAddress frees the
address). Anything still listed has its job's result read, so a failure keeps CloudStack's text.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from cloudstack_deploy.cloud import Cloud, CloudError, StillListed, read_cloud_config
from cloudstack_deploy.errors import OperationFailed
from cloudstack_deploy.progress import Recorder
from cloudstack_deploy.provision.teardown import teardown_env

from .conftest import CloudView, create


def _watch(cloud: Cloud, on_reply: Any) -> None:
    """Call ``on_reply(command, params)`` on each answered call of ``cloud``."""
    request = cloud.request

    async def watched(command: str, **params: Any) -> dict[str, Any]:
        reply = await request(command, **params)
        on_reply(command, params)
        return reply

    cloud.request = watched  # type: ignore[method-assign]


async def test_many_deletions_cost_listings_not_one_job_query_each(home: Path, cloud_view: CloudView) -> None:
    """Eight web VMs and their addresses: 16+ destroy and release jobs, yet only the few jobs
    that are not proven by a listing (the load-balancer rules, the network) are queried."""
    await create("demo", "roles.web.count=8")
    async with Cloud(read_cloud_config()) as cloud:
        await teardown_env(cloud, "demo", Recorder())
        jobs = cloud.calls["destroyVirtualMachine"] + cloud.calls["disassociateIpAddress"]
        queries = cloud.calls["queryAsyncJobResult"]
    assert jobs >= 16, cloud.calls
    assert queries <= 8, f"{queries} job queries for {jobs} destroy/release jobs: {cloud.calls}"
    assert not any(cloud_view.everything().values()), cloud_view.everything()


async def test_the_network_is_asked_for_only_once_every_vm_and_address_is_gone(
        home: Path, cloud_view: CloudView) -> None:
    """The order that matters (NetworkOrchestrator.destroyNetwork refuses a network whose VMs
    are not expunged): a destroy taken as done by the listing really is done, so when
    deleteNetwork is sent the cloud holds no VM of the environment and no address but the
    network's source NAT, though hardly any job was read."""
    await create("demo", "roles.web.count=6")
    at_network: list[tuple[int, int]] = []

    def on_call(command: str) -> None:  # before the call is sent (the simulator has its own thread)
        if command == "deleteNetwork":
            at_network.append((len(cloud_view.vms()),
                               sum(not ip.get("issourcenat") for ip in cloud_view.public_ips())))

    async with Cloud(read_cloud_config(), on_call=on_call) as cloud:
        await teardown_env(cloud, "demo", Recorder())
        assert cloud.calls["queryAsyncJobResult"] < cloud.calls["destroyVirtualMachine"], cloud.calls
    assert at_network == [(0, 0)]
    assert not any(cloud_view.everything().values()), cloud_view.everything()


async def test_teardown_reads_no_firewall_or_port_forwarding_rules(home: Path, cloud_view: CloudView) -> None:
    """Releasing an address takes its firewall and port-forwarding rules (CloudStack's
    IpAddressManagerImpl.cleanupIpResources revokes them when the address is released), so
    a teardown does not list them (400 of them for 200 VMs): they are gone all the same."""
    await create("demo", "cloud.public_access=port_forwarding", "roles.web.count=3")
    assert cloud_view.port_forwards() and cloud_view.firewall()
    async with Cloud(read_cloud_config()) as cloud:
        await teardown_env(cloud, "demo", Recorder())
        assert cloud.calls["listFirewallRules"] == cloud.calls["listPortForwardingRules"] == 0, cloud.calls
    assert cloud_view.port_forwards() == [] and cloud_view.firewall() == []
    assert not any(cloud_view.everything().values()), cloud_view.everything()


async def test_a_failed_release_among_many_is_reported_with_its_address(home: Path, cloud_view: CloudView) -> None:
    """The address whose release job fails is still listed, so its job is read: the error
    names it with CloudStack's text, and no other address is reported."""
    await create("demo", "roles.web.count=6")
    addresses = {ip["id"]: ip["ipaddress"] for ip in cloud_view.public_ips() if not ip.get("issourcenat")}
    cloud_view.add_faults("disassociateIpAddress:job:530:1")
    released: list[str] = []
    async with Cloud(read_cloud_config()) as cloud:
        _watch(cloud, lambda c, p: released.append(p["id"]) if c == "disassociateIpAddress" else None)
        with pytest.raises(OperationFailed) as err:
            await teardown_env(cloud, "demo", Recorder())
    failed = addresses[released[0]]  # the first release job carries the fault
    assert f"ip {failed}: CloudStack disassociateIpAddress failed" in str(err.value), str(err.value)
    assert "(error 530)" in str(err.value)
    assert sum(f"ip {a}:" in str(err.value) for a in addresses.values()) == 1, str(err.value)
    assert not cloud_view.vms()


async def test_a_listing_that_fails_proves_nothing_and_each_job_is_read(home: Path, cloud_view: CloudView) -> None:
    """When the listing that should show the VMs gone fails, no VM is taken for gone: each
    destroy job's result is read instead, and the teardown still completes."""
    await create("demo", "roles.web.count=6")
    async with Cloud(read_cloud_config()) as cloud:
        listing = cloud.list

        async def failing(command: str, **params: Any) -> list[dict[str, Any]]:
            if command == "listVirtualMachines" and "ids" in params:
                raise CloudError(command, 530, "the listing failed")
            return await listing(command, **params)

        cloud.list = failing  # type: ignore[method-assign]
        await teardown_env(cloud, "demo", Recorder())
        assert cloud.calls["queryAsyncJobResult"] >= cloud.calls["destroyVirtualMachine"] >= 6, cloud.calls
    assert not any(cloud_view.everything().values()), cloud_view.everything()


async def test_still_listed_asks_once_for_all_that_ask_together() -> None:
    """Callers whose jobs finish in one poll round share one listing; a later caller gets a
    listing of its own (it may have been deleted since); a failed listing says 'not gone'."""
    calls: list[list[str]] = []
    present = {"b"}

    async def listing(ids: list[str]) -> set[str]:
        calls.append(ids)
        await asyncio.sleep(0)
        if "boom" in ids:
            raise CloudError("listVirtualMachines", 530, "no")
        return present & set(ids)

    still = StillListed(listing)
    assert await asyncio.gather(still.gone("a"), still.check("b")(), still.gone("c")) == [True, False, True]
    assert calls == [["a", "b", "c"]]
    present.clear()
    assert await still.gone("b") is True
    assert calls[1:] == [["b"]]
    assert await asyncio.gather(still.gone("boom"), still.gone("d")) == [False, False]


async def test_background_calls_go_after_every_other_waiting_call() -> None:
    """A teardown's address releases that nothing waits for yet are queued in the background:
    a VM destroy asked for later (the critical path) goes before those still waiting, a job
    poll before both; background calls keep their order, and a background task's job poll
    stays urgent."""
    from cloudstack_deploy.cloud.client import AdaptiveLimit

    limit = AdaptiveLimit(1)
    order: list[str] = []

    async def call(name: str, urgent: bool = False, background: bool = False) -> None:
        await limit.acquire(urgent=urgent, background=background)
        try:
            order.append(name)
            await asyncio.sleep(0)
        finally:
            limit.release(background=background and not urgent)

    await limit.acquire()  # the one slot is busy
    releases = [asyncio.create_task(call(f"release {i}", background=True)) for i in range(3)]
    await asyncio.sleep(0)
    destroys = [asyncio.create_task(call(f"destroy {i}")) for i in range(2)]
    poll = asyncio.create_task(call("poll", urgent=True, background=True))
    await asyncio.sleep(0)
    limit.release()
    await asyncio.gather(*releases, *destroys, poll)
    assert order == ["poll", "destroy 0", "destroy 1", "release 0", "release 1", "release 2"]
    assert limit._in_use == 0 and not limit._background and limit._background_in_use == 0


async def test_background_calls_hold_at_most_a_quarter_of_the_slots() -> None:
    """With 8 slots free, 20 background calls take 2 at a time: the rest stay free for the
    calls that come later on the critical path, which go at once."""
    from cloudstack_deploy.cloud.client import AdaptiveLimit

    limit = AdaptiveLimit(8)
    gate = asyncio.Event()
    running = 0
    most = 0

    async def release_ip() -> None:
        nonlocal running, most
        await limit.acquire(background=True)
        running += 1
        most = max(most, running)
        try:
            await gate.wait()
        finally:
            running -= 1
            limit.release(background=True)

    releases = [asyncio.create_task(release_ip()) for _ in range(20)]
    await asyncio.sleep(0)
    assert running == 2
    await asyncio.wait_for(limit.acquire(), 1)  # a destroy goes at once, not behind 18 releases
    limit.release()
    gate.set()
    await asyncio.gather(*releases)
    assert most == 2 and limit._in_use == 0 and limit._background_in_use == 0


async def test_cloud_background_marks_the_tasks_made_inside_it(home: Path) -> None:
    """``Cloud.background()`` reaches the calls of tasks made inside it, not those made after."""
    from cloudstack_deploy.cloud import client as client_module

    async with Cloud(read_cloud_config()) as cloud:
        seen: list[bool] = []

        async def probe() -> None:
            seen.append(client_module._BACKGROUND.get())

        with cloud.background():
            inside = asyncio.gather(probe())
        after = asyncio.gather(probe())
        await asyncio.gather(inside, after)
    assert seen == [True, False]
