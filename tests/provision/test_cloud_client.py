"""The Cloud session: what it retries, what it never resends, and the errors it raises."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncssh
import pytest

from cloudstack_deploy.cloud import Cloud, CloudConfig, CloudError, CloudUnavailable, JobFailed
from cloudstack_deploy.cloud import client as client_module
from cloudstack_deploy.lab.simulator.faults import parse_fault
from cloudstack_deploy.lab.simulator.server import ThreadedSimulator

from .conftest import KEY, SECRET, CloudView


def config(endpoint: str, key: str = KEY, secret: str = SECRET) -> CloudConfig:
    return CloudConfig(endpoint=endpoint, key=key, secret=secret, source="test", poll_interval=0.02,
                       timeout=5)


async def ids(cloud: Cloud) -> dict[str, Any]:
    zone = (await cloud.list("listZones"))[0]
    offering = next(o for o in await cloud.list("listNetworkOfferings", zoneid=zone["id"])
                    if o["name"] == "DefaultIsolatedNetworkOfferingWithSourceNatService")
    return {"zoneid": zone["id"], "networkofferingid": offering["id"]}


@pytest.mark.simulator(faults=[parse_fault("listZones:http:530:2")])
async def test_a_list_is_retried_on_530(sim: ThreadedSimulator) -> None:
    async with Cloud(config(sim.endpoint)) as cloud:
        zones = await cloud.list("listZones")
    assert [z["name"] for z in zones] == ["lab-zone-1"]
    assert cloud.calls["listZones"] == 3


@pytest.mark.simulator(faults=[parse_fault("listZones:drop:0:1")])
async def test_a_list_is_retried_after_a_dropped_connection(sim: ThreadedSimulator) -> None:
    async with Cloud(config(sim.endpoint)) as cloud:
        zones = await cloud.list("listZones")
    assert [z["name"] for z in zones] == ["lab-zone-1"]


@pytest.mark.simulator(faults=[parse_fault("listZones:drop:0:3"), parse_fault("listZones:http:429:1")])
async def test_a_list_is_retried_after_drops_and_429(sim: ThreadedSimulator) -> None:
    async with Cloud(config(sim.endpoint)) as cloud:
        zones = await cloud.list("listZones")
    assert [z["name"] for z in zones] == ["lab-zone-1"]
    assert cloud.calls["listZones"] >= 3  # at least two of the four failures were retried by us


async def test_a_create_is_never_resent_after_a_drop(sim: ThreadedSimulator, cloud_view: CloudView) -> None:
    async with Cloud(config(sim.endpoint)) as cloud:
        params = await ids(cloud)
        cloud_view.add_faults("createNetwork:drop:0:1")
        with pytest.raises(CloudUnavailable) as err:
            await cloud.request("createNetwork", name="net-a", displaytext="a", **params)
    assert cloud.calls["createNetwork"] == 1
    assert "createNetwork" in str(err.value)
    # The simulator drops the connection before executing: any network would be a resend.
    assert cloud_view.networks() == []


async def test_a_create_is_not_resent_after_a_530(sim: ThreadedSimulator, cloud_view: CloudView) -> None:
    async with Cloud(config(sim.endpoint)) as cloud:
        params = await ids(cloud)
        cloud_view.add_faults("createNetwork:http:530:1")
        with pytest.raises(CloudError) as err:
            await cloud.request("createNetwork", name="net-a", displaytext="a", **params)
    assert err.value.code == 530
    assert cloud.calls["createNetwork"] == 1
    assert cloud_view.networks() == []


async def test_a_rate_limited_create_is_retried_once_it_executed_nothing(
        sim: ThreadedSimulator, cloud_view: CloudView) -> None:
    async with Cloud(config(sim.endpoint)) as cloud:
        params = await ids(cloud)
        cloud_view.add_faults("createNetwork:http:429:1")
        await cloud.request("createNetwork", name="net-a", displaytext="a", **params)
    assert cloud.calls["createNetwork"] == 2
    assert [n["name"] for n in cloud_view.networks()] == ["net-a"]


async def test_a_failed_job_raises_job_failed_with_code_and_text(
        sim: ThreadedSimulator, cloud_view: CloudView) -> None:
    async with Cloud(config(sim.endpoint)) as cloud:
        params = await ids(cloud)
        net = (await cloud.request("createNetwork", name="net-a", displaytext="a", **params))["network"]
        cloud_view.add_faults("deleteNetwork:job:530:1")
        with pytest.raises(JobFailed) as err:
            await cloud.job("deleteNetwork", id=net["id"])
    assert err.value.code == 530
    assert err.value.command == "deleteNetwork"
    assert "Internal error executing command" in err.value.text
    assert "deleteNetwork" in str(err.value) and "error 530" in str(err.value)
    assert [n["name"] for n in cloud_view.networks()] == ["net-a"]


async def test_a_capacity_error_carries_a_hint(sim: ThreadedSimulator, cloud_view: CloudView) -> None:
    async with Cloud(config(sim.endpoint)) as cloud:
        params = await ids(cloud)
        net = (await cloud.request("createNetwork", name="net-a", displaytext="a", **params))["network"]
        template = (await cloud.list("listTemplates", templatefilter="executable"))[0]
        offering = (await cloud.list("listServiceOfferings"))[0]
        cloud_view.add_faults("deployVirtualMachine:job:533:1")
        with pytest.raises(JobFailed) as err:
            await cloud.job("deployVirtualMachine", name="vm-a", zoneid=params["zoneid"], templateid=template["id"],
                            serviceofferingid=offering["id"], networkids=[net["id"]])
    assert err.value.code == 533
    assert "insufficient capacity" in str(err.value)
    assert "capacity" in (err.value.hint or "") and "re-run" in (err.value.hint or "")


async def test_a_resource_limit_error_carries_a_hint(sim: ThreadedSimulator, cloud_view: CloudView) -> None:
    async with Cloud(config(sim.endpoint)) as cloud:
        params = await ids(cloud)
        cloud_view.add_faults("createNetwork:http:535:1")
        with pytest.raises(CloudError) as err:
            await cloud.request("createNetwork", name="net-a", displaytext="a", **params)
    assert err.value.code == 535
    msg = str(err.value)
    assert "createNetwork" in msg and "Maximum number of resources has been exceeded" in msg and "535" in msg
    assert "resource limit" in (err.value.hint or "")


async def test_a_refused_parameter_is_reported_with_cloudstacks_text(sim: ThreadedSimulator) -> None:
    async with Cloud(config(sim.endpoint)) as cloud:
        with pytest.raises(CloudError) as err:
            await cloud.request("deleteNetwork", id="not-a-uuid")
    assert err.value.code == 431
    assert cloud.calls["deleteNetwork"] == 1  # a refusal is an answer: nothing to retry
    assert "deleteNetwork" in str(err.value) and err.value.text in str(err.value)
    assert err.value.hint


async def test_bad_credentials_say_what_to_check(sim: ThreadedSimulator) -> None:
    async with Cloud(config(sim.endpoint, secret="wrong")) as cloud:
        with pytest.raises(CloudError) as err:
            await cloud.list("listZones")
    assert err.value.code == 401
    assert cloud.calls["listZones"] == 1
    assert "CLOUDSTACK_SECRET" in (err.value.hint or "")
    assert "wrong" not in str(err.value)


async def test_an_unreachable_endpoint_is_cloud_unavailable(sim: ThreadedSimulator) -> None:
    dead = sim.endpoint.replace(f":{sim.server.port}/", ":9/")  # discard port: nothing listens
    async with Cloud(config(dead), retries=1) as cloud:
        with pytest.raises(CloudUnavailable) as err:
            await cloud.list("listZones")
    assert cloud.calls["listZones"] == 2
    assert dead in str(err.value)
    assert "running" in (err.value.hint or "")


async def test_list_walks_every_page(sim: ThreadedSimulator, cloud_view: CloudView,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(5):
        cloud_view.cs.registerSSHKeyPair(name=f"k{i}", publickey=_public_key(i))
    monkeypatch.setattr(client_module, "PAGE_SIZE", 2)
    async with Cloud(config(sim.endpoint)) as cloud:
        keys = await cloud.list("listSSHKeyPairs")
    assert sorted(k["name"] for k in keys) == [f"k{i}" for i in range(5)]
    assert cloud.calls["listSSHKeyPairs"] == 3


def _public_key(i: int) -> str:
    return asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip() + f" k{i}"


async def _tag_jobs(cloud: Cloud, count: int) -> list[dict[str, Any]]:
    """Start ``count`` async jobs at once (tagging one network) and wait for all of them."""
    import asyncio

    net = await cloud.request("createNetwork", name="jobs", displaytext="jobs", **await ids(cloud))
    nid = net["network"]["id"]
    return await asyncio.gather(*(cloud.job("createTags", resourceids=[nid], resourcetype="Network",
                                            tags=[{"key": f"k{i}", "value": "v"}]) for i in range(count)))


@pytest.mark.simulator(job_seconds=0.5)
async def test_many_pending_jobs_are_watched_with_one_listing_per_interval(sim: ThreadedSimulator) -> None:
    """CloudStack lists pending jobs only (a finished job is marked removed:
    AsyncJobManagerImpl.completeAsyncJob), so a job is queried once, when it left the listing:
    one listing per interval for all, not one query per job per interval."""
    async with Cloud(config(sim.endpoint)) as cloud:
        results = await _tag_jobs(cloud, 12)
    assert all(r == {"success": True} for r in results)
    assert cloud.calls["listAsyncJobs"] >= 1
    assert cloud.calls["queryAsyncJobResult"] <= 12 + 3, cloud.calls


@pytest.mark.simulator(job_seconds=0.5)
async def test_job_polls_grow_by_one_query_per_job_not_per_interval(sim: ThreadedSimulator) -> None:
    """The listings follow the poll interval, not the jobs: however many jobs are pending, one
    listing per interval (here 0.2 s), as the cloud sees them. Checked on the gaps between
    listings, which a loaded machine only widens (this test used to compare listings per second
    of two runs, which load skewed); a listing per job would come microseconds apart."""
    import time

    for count in (6, 36):
        listed: list[float] = []

        def seen(command: str, listed: list[float] = listed) -> None:
            if command == "listAsyncJobs":
                listed.append(time.monotonic())

        async with Cloud(config(sim.endpoint), poll_interval=0.2, on_call=seen) as cloud:
            await _tag_jobs(cloud, count)
        gaps = [round(b - a, 3) for a, b in zip(listed, listed[1:], strict=False)]
        # half the interval: what passes between waking and listing may take longer one round
        assert listed and all(gap >= 0.1 for gap in gaps), (count, gaps)  # one listing per interval
        assert cloud.calls["listAsyncJobs"] == len(listed) < 36, (count, cloud.calls)  # never one per job
        # one query per job (for its result), no more
        assert cloud.calls["queryAsyncJobResult"] <= count + 3, (count, cloud.calls)


@pytest.mark.simulator(job_seconds=0.3, faults=[parse_fault("listAsyncJobs:http:531:always")])
async def test_jobs_still_finish_when_listing_jobs_is_refused(sim: ThreadedSimulator) -> None:
    async with Cloud(config(sim.endpoint)) as cloud:
        results = await _tag_jobs(cloud, 5)
    assert all(r == {"success": True} for r in results)
    assert cloud.calls["listAsyncJobs"] == 1, "after one refusal the watcher polls each job itself"


@pytest.mark.simulator(job_seconds=0.3)
async def test_a_failed_job_among_many_raises_its_error(sim: ThreadedSimulator, cloud_view: CloudView) -> None:
    import asyncio

    async with Cloud(config(sim.endpoint)) as cloud:
        params = await ids(cloud)
        cloud_view.add_faults("createTags:job:530:1")
        net = await cloud.request("createNetwork", name="jobs", displaytext="jobs", **params)
        nid = net["network"]["id"]
        outcomes = await asyncio.gather(*(cloud.job("createTags", resourceids=[nid], resourcetype="Network",
                                                    tags=[{"key": f"k{i}", "value": "v"}]) for i in range(6)),
                                        return_exceptions=True)
    failed = [o for o in outcomes if isinstance(o, JobFailed)]
    assert len(failed) == 1 and failed[0].code == 530
    assert sum(1 for o in outcomes if o == {"success": True}) == 5


@pytest.mark.simulator(job_seconds=5)
async def test_leaving_the_session_stops_polling_jobs_nobody_waits_for(sim: ThreadedSimulator) -> None:
    import asyncio

    async with Cloud(config(sim.endpoint)) as cloud:
        params = await ids(cloud)
        net = await cloud.request("createNetwork", name="n", displaytext="n", **params)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(cloud.job("createTags", resourceids=[net["network"]["id"]],
                                             resourcetype="Network", tags=[{"key": "k", "value": "v"}]), 0.3)
    calls = cloud.total_calls
    await asyncio.sleep(0.3)
    assert cloud.total_calls == calls, "the job watcher kept polling after the session closed"
    assert not [t for t in asyncio.all_tasks() if "_JobWatcher" in repr(t.get_coro())]


@pytest.mark.simulator(faults=[parse_fault("listZones:http:429:2"), parse_fault("listTemplates:http:503:1")])
async def test_throttling_is_retried_and_lowers_the_calls_in_flight(sim: ThreadedSimulator) -> None:
    """CloudStack's api.throttling answers 429 (a proxy in front of it, 503): nothing ran, so
    every command is retried, and fewer calls are sent at once until calls succeed again."""
    async with Cloud(config(sim.endpoint), max_in_flight=16) as cloud:
        zones = await cloud.list("listZones")
        assert zones and cloud.calls["listZones"] == 3
        assert cloud._sem.limit == 4, "halved twice by the two 429s"
        await cloud.list("listTemplates", templatefilter="executable")
        assert cloud._sem.limit == 2
        for _ in range(6):
            await cloud.list("listServiceOfferings")
        assert cloud._sem.limit > 2, "grown back as calls succeed"


async def test_job_polls_go_before_queued_submissions_and_a_free_slot_wakes_one_caller() -> None:
    """Hundreds of submissions queued (a teardown of 200 VMs): a poll for a job already
    running is let through first, so a job on the critical path is seen when it finishes, not
    after every queued submission; the others keep their order; a caller cancelled while it
    waits gives its slot on."""
    import asyncio

    limit = client_module.AdaptiveLimit(1)
    order: list[str] = []

    async def call(name: str, urgent: bool = False) -> None:
        await limit.acquire(urgent=urgent)
        try:
            order.append(name)
            await asyncio.sleep(0)
        finally:
            limit.release()

    await limit.acquire()  # the one slot is busy
    submits = [asyncio.create_task(call(f"submit {i}")) for i in range(5)]
    cancelled = asyncio.create_task(call("cancelled"))
    poll = asyncio.create_task(call("poll", urgent=True))
    await asyncio.sleep(0)
    cancelled.cancel()
    limit.release()
    await asyncio.gather(*submits, poll)
    assert order == ["poll", *(f"submit {i}" for i in range(5))]
    assert limit._in_use == 0 and not limit._waiters and not limit._urgent


async def test_a_caller_that_gave_up_waiting_does_not_hold_back_the_next() -> None:
    """A call cancelled while it waited (a command interrupted) leaves no place in the line
    behind which a later call would wait for a release that never comes."""
    import asyncio

    limit = client_module.AdaptiveLimit(1)
    await limit.acquire()
    waiting = asyncio.create_task(limit.acquire())
    await asyncio.sleep(0)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    assert not limit._waiters, "a caller that gave up keeps no place in the line"
    limit.release()
    await asyncio.wait_for(limit.acquire(), 1)  # the slot is free: taken at once
    limit.release()
    assert limit._in_use == 0


async def test_a_call_that_gets_no_answer_times_out_after_a_fraction_of_a_second_set() -> None:
    """``timeout = 0.5`` in the profile is half a second. The session used to take whole
    seconds: 0.5 became 0, which aiohttp reads as no timeout at all, and a call to an endpoint
    that accepts and never answers hung."""
    import socket
    import time

    with socket.create_server(("127.0.0.1", 0)) as server:   # accepts (the kernel's backlog), never answers
        endpoint = f"http://127.0.0.1:{server.getsockname()[1]}/client/api"
        config = CloudConfig(endpoint=endpoint, key="k", secret="s", source="test", poll_interval=0.02, timeout=0.5)
        started = time.monotonic()
        async with Cloud(config, retries=0) as cloud:
            with pytest.raises(CloudUnavailable) as err:
                await asyncio.wait_for(cloud.list("listZones"), 20)
        assert time.monotonic() - started < 10
        assert "listZones" in str(err.value)
