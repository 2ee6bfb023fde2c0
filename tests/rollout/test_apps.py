"""The apps step's order without hosts: which host switches when, what goes back after a
refused switch, what the workers do. Hosts are stand-ins that record each script's purpose
and refuse the switch on the hosts a test names (the scripts themselves run under a real
/bin/sh in test_commands.py, and on real hosts in tests/e2e/test_progressive.py)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from cloudstack_deploy.errors import OperationFailed
from cloudstack_deploy.progress import Recorder
from cloudstack_deploy.rollout import apps, runs
from cloudstack_deploy.rollout.commands.facts import HostFacts
from cloudstack_deploy.rollout.deploy import Rollout
from cloudstack_deploy.rollout.hosts import HostError, Result

from .test_commands import SECRETS
from .test_strategy import blueprint, inventory

APP = "registry.lab:5000/demo-app"


class StandIn:
    def __init__(self, host: Any, pool: Pool) -> None:
        self.host = host
        self.pool = pool

    async def run(self, script: Any, *, what: str = "", check: bool = True, timeout: float = 0,
                  read_only: bool = False, input: str | None = None) -> Result:
        self.pool.log.append((self.host.name, what))
        if self.host.name in self.pool.lost:
            raise HostError(self.host.name, f"stopped answering: the SSH connection was lost ({what})")
        if what.startswith("switch web v") and self.host.name in self.pool.refuse:
            raise HostError(self.host.name, f"{what} failed at step proxy-deploy (exit 67)")
        if what == "switch web v2" and self.pool.worker_waits is not None:
            if sum(1 for _, w in self.pool.log if w == what) == self.pool.fail_worker_after:
                self.pool.worker_waits.set()
        if what.startswith("start worker") and self.pool.worker_waits is not None:
            await self.pool.worker_waits.wait()
            raise HostError(self.host.name, f"{what} failed at step wait-ready (exit 66)")
        return Result(0, "fresh\n" if what.startswith("start worker") else "", "")


class Pool:
    def __init__(self, refuse: set[str], lost: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.refuse = refuse
        self.lost = set(lost)
        self.worker_waits: asyncio.Event | None = None   # set: worker starts fail after that many switches
        self.fail_worker_after = 0
        self.log: list[tuple[str, str]] = []

    async def connect(self, host: Any) -> StandIn:
        return StandIn(host, self)


def ready_facts(r: Rollout, version_before: str) -> dict[str, HostFacts]:
    out = {}
    for h in r.inv.hosts:
        images = {f"{APP}:v2": "sha256:2", r.bp.rollout.proxy_image: "sha256:p"}
        images.update({r.bp.accessories[a].image: "sha256:a" for a in h.accessories})
        out[h.name] = HostFacts(docker=True, network=True, images=images, service_label={f"{APP}:v2": "demo"},
                                proxy="running", running={h.role: [f"demo-{h.role}-{version_before}"]})
    return out


async def deploy(refuse: set[str], *sets: str, continue_on_error: bool = False) -> tuple[Rollout, Pool, Exception]:
    r = Rollout(blueprint("roles.web.count=3", *sets), inventory(3), SECRETS, Recorder())
    targets = r.select(roles=("web", "worker"))
    facts = ready_facts(r, "v1")
    opts = runs.RolloutOptions(version="v2", continue_on_error=continue_on_error)
    pool = Pool(refuse)
    with pytest.raises(OperationFailed) as err:
        await apps.converge(r, pool, runs.rollout_plan(r, opts, "v2", facts, targets))  # type: ignore[arg-type]
    return r, pool, err.value


async def test_a_refused_switch_stops_the_batches_and_the_hosts_before_it_go_back() -> None:
    r, pool, err = await deploy({"demo-web-2"}, "rollout.batch=1")
    assert "demo-web-2" in str(err)
    switches = [(h, w) for h, w in pool.log if w.startswith("switch web")]
    assert switches == [("demo-web-1", "switch web v2"), ("demo-web-2", "switch web v2"),
                        ("demo-web-1", "switch web back to demo-web-v1")], "web-3 never switches"
    assert r.outcome.reverted == ["demo-web-1"]
    assert [(s.host, s.status) for s in r.outcome.switches] == [("demo-web-1", "switched"), ("demo-web-2", "failed")]
    assert ("demo-worker-1", "remove worker v2") in pool.log, "the new worker goes too"
    assert not any(w.startswith("stop old") for _, w in pool.log), "nothing old was stopped"


async def test_continue_on_error_keeps_the_hosts_that_switched() -> None:
    r, pool, _ = await deploy({"demo-web-2"}, "rollout.batch=1", continue_on_error=True)
    assert not any("back to" in w for _, w in pool.log) and r.outcome.reverted == []
    assert r.outcome.switched == ["demo-web-1"]


async def test_without_a_load_balancer_every_host_switches_at_once_and_all_go_back() -> None:
    r, pool, _ = await deploy({"demo-web-2"})
    firsts = [h for h, w in pool.log if w == "switch web v2"]
    assert sorted(firsts) == ["demo-web-1", "demo-web-2", "demo-web-3"]
    assert sorted(r.outcome.reverted) == ["demo-web-1", "demo-web-3"]
    assert {s.batch for s in r.outcome.switches} == {1}


async def test_a_good_rollout_stops_the_old_containers_only_after_every_switch() -> None:
    r = Rollout(blueprint("roles.web.count=3", "rollout.batch=2"), inventory(3), SECRETS, Recorder())
    targets = r.select(roles=("web", "worker"))
    facts = ready_facts(r, "v1")
    pool = Pool(set())
    await apps.converge(r, pool, runs.rollout_plan(r, runs.RolloutOptions(version="v2"), "v2", facts, targets))  # type: ignore[arg-type]
    order = [(h, w) for h, w in pool.log if w.startswith(("switch", "stop old"))]
    last_switch = max(i for i, (_, w) in enumerate(order) if w.startswith("switch"))
    first_stop = min(i for i, (_, w) in enumerate(order) if w.startswith("stop old"))
    assert last_switch < first_stop, order
    assert sorted((s.host, s.batch, s.batches) for s in r.outcome.switches) == [
        ("demo-web-1", 1, 2), ("demo-web-2", 1, 2), ("demo-web-3", 2, 2)]
    assert r.outcome.switches[-1].host == "demo-web-3", "the second batch switches after the first"
    assert {h for h, w in pool.log if w.startswith("stop old")} == {"demo-web-1", "demo-web-2", "demo-web-3",
                                                                     "demo-worker-1"}


async def test_a_worker_that_fails_switches_every_web_host_back_and_stops_nothing_old() -> None:
    """Roles are judged together: the web hosts had switched to v2 when the worker's new
    container failed to become ready; every web host goes back to v1, nothing old stops."""
    r = Rollout(blueprint("roles.web.count=3"), inventory(3), SECRETS, Recorder())
    targets = r.select(roles=("web", "worker"))
    facts = ready_facts(r, "v1")
    pool = Pool(set())
    pool.worker_waits, pool.fail_worker_after = asyncio.Event(), 3
    with pytest.raises(OperationFailed) as err:
        await apps.converge(r, pool, runs.rollout_plan(r, runs.RolloutOptions(version="v2"), "v2", facts, targets))  # type: ignore[arg-type]
    assert "demo-worker-1" in str(err.value) and "wait-ready" in str(err.value)
    assert sorted(r.outcome.reverted) == ["demo-web-1", "demo-web-2", "demo-web-3"]
    assert not any(w.startswith("stop old") for _, w in pool.log), "nothing old was stopped"


async def test_a_worker_host_that_stops_answering_is_named_and_the_web_goes_back() -> None:
    r = Rollout(blueprint("roles.web.count=3"), inventory(3), SECRETS, Recorder())
    targets = r.select(roles=("web", "worker"))
    facts = ready_facts(r, "v1")
    pool = Pool(set(), lost={"demo-worker-1"})
    with pytest.raises(OperationFailed) as err:
        await apps.converge(r, pool, runs.rollout_plan(r, runs.RolloutOptions(version="v2"), "v2", facts, targets))  # type: ignore[arg-type]
    assert "demo-worker-1: stopped answering" in str(err.value)
    assert not any(w.startswith("stop old") for _, w in pool.log)
    # whatever switched went back (the web may not have switched yet when the worker was lost)
    switched = {h for h, w in pool.log if w == "switch web v2"}
    assert set(r.outcome.reverted) == switched


async def test_a_host_lost_after_the_verdict_leaves_its_old_container_with_a_warning() -> None:
    """Every host serves v2 when the worker's host stops answering while its old container is
    being stopped: the deploy stands (a warning says what was left over), nothing goes back."""
    r = Rollout(blueprint("roles.web.count=3"), inventory(3), SECRETS, Recorder())
    targets = r.select(roles=("web", "worker"))
    facts = ready_facts(r, "v1")

    class LoseOnStop(Pool):
        async def connect(self, host: Any) -> StandIn:
            if host.name == "demo-worker-1" and any(w.startswith("stop old") for _, w in self.log):
                self.lost.add(host.name)
            return StandIn(host, self)

    pool = LoseOnStop(set())
    await apps.converge(r, pool, runs.rollout_plan(r, runs.RolloutOptions(version="v2"), "v2", facts, targets))  # type: ignore[arg-type]
    assert r.outcome.reverted == []
    assert [w for w in r.outcome.warnings if w.startswith("demo-worker-1: worker's old container was not stopped")]


class SlowAccessories(Pool):
    """The accessory hosts' preparation (a first deploy's database: pull, first boot) lasts
    until the worker's container has started elsewhere, or fails then with ``fail``."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__(set())
        self.fail = fail
        self.worker_started = asyncio.Event()

    async def connect(self, host: Any) -> StandIn:
        pool = self

        class Host(StandIn):
            async def run(self, script: Any, *, what: str = "", **kw: Any) -> Result:
                if what.startswith("prepare") and self.host.accessories:
                    await asyncio.wait_for(pool.worker_started.wait(), 5)
                    pool.log.append((self.host.name, "accessories ready"))
                    if pool.fail:
                        raise HostError(self.host.name, f"{what} failed at step accessory db (exit 66)")
                    return Result(0, "accessory|db|started\n", "")
                res = await super().run(script, what=what, **kw)
                if what == "start worker v2":
                    pool.worker_started.set()
                return res

        return Host(host, self)


def first_deploy(pool: Pool) -> tuple[Rollout, Any]:
    r = Rollout(blueprint(), inventory(1), SECRETS, Recorder())
    targets = r.select()
    facts = {name: replace(f, running={}) for name, f in ready_facts(r, "v1").items()}  # nothing ran before
    return r, runs.rollout_plan(r, runs.RolloutOptions(version="v2"), "v2", facts, targets)


async def test_a_first_deploys_worker_starts_while_its_accessories_are_still_starting() -> None:
    """The worker's readiness_delay runs while the database boots, not after it: its
    container starts once its own host is ready; it is judged, and the web switches, only
    once every accessory is ready."""
    pool = SlowAccessories()
    r, rp = first_deploy(pool)
    await apps.converge(r, pool, rp)  # type: ignore[arg-type]
    order = [w for _, w in pool.log]
    assert order.index("start worker v2") < order.index("accessories ready") < order.index(
        "wait until ready worker v2"), order
    assert order.index("accessories ready") < order.index("switch web v2"), "no traffic before the database"


async def test_accessories_that_fail_remove_the_worker_that_started_meanwhile() -> None:
    pool = SlowAccessories(fail=True)
    r, rp = first_deploy(pool)
    with pytest.raises(OperationFailed) as err:
        await apps.converge(r, pool, rp)  # type: ignore[arg-type]
    assert "accessory db" in str(err.value)
    assert ("demo-worker-1", "remove worker v2") in pool.log, "the worker started early does not linger"
    assert not any(w.startswith(("wait until ready", "switch web")) for _, w in pool.log), pool.log


async def test_a_redeploy_runs_the_worker_start_as_one_exec() -> None:
    """With no accessory starting, the worker's start and its readiness stay one exec."""
    r = Rollout(blueprint(), inventory(1), SECRETS, Recorder())
    pool = Pool(set())
    facts = ready_facts(r, "v1")   # the app roles only (--roles): no accessory is started
    await apps.converge(r, pool, runs.rollout_plan(r, runs.RolloutOptions(version="v2"), "v2", facts,  # type: ignore[arg-type]
                                                   r.select(roles=("web", "worker"))))
    assert ("demo-worker-1", "start worker v2") in pool.log
    assert not any(w.startswith("wait until ready") for _, w in pool.log)
