"""How a version reaches the hosts, decided without hosts: batches, canary hosts, what a host
goes back to, where the watch probes, and the plan a run makes from the facts it read."""

from __future__ import annotations

from dataclasses import replace

import pytest

from cloudstack_deploy.blueprint import loads_blueprint
from cloudstack_deploy.errors import InvalidInput
from cloudstack_deploy.inventory import Host, Inventory, LoadBalancer
from cloudstack_deploy.progress import Recorder
from cloudstack_deploy.rollout import canary, runs, strategy
from cloudstack_deploy.rollout.commands.facts import HostFacts
from cloudstack_deploy.rollout.deploy import Rollout

from .test_commands import BLUEPRINT, INVENTORY, SECRETS, _host


def web_hosts(n: int) -> tuple[Host, ...]:
    return tuple(replace(_host(f"demo-web-{i}", "web", f"10.1.1.{10 + i}", (), True), index=i,
                         public_ip=f"127.0.0.{10 + i}") for i in range(1, n + 1))


def inventory(n: int, *, lb: bool = False) -> Inventory:
    hosts = web_hosts(n) + tuple(h for h in INVENTORY.hosts if h.role != "web")
    lbs = (LoadBalancer(role="web", public_ip="127.0.0.99", members=tuple(h.name for h in hosts[:n])),) if lb else ()
    return replace(INVENTORY, hosts=hosts, load_balancers=lbs)


def blueprint(*sets: str):  # noqa: ANN201
    text = BLUEPRINT.replace("accessories:\n  db:", "accessories:\n  db:").replace("role: web\n", "vm: {}\n")
    return loads_blueprint(text, overrides=list(sets))


# ---- batches ---------------------------------------------------------------------------------
def test_a_proxy_role_behind_a_load_balancer_switches_one_host_at_a_time() -> None:
    bp = blueprint()
    assert strategy.batch_size(bp, inventory(3, lb=True), "web", 3) == 1
    assert [[h.name for h in b] for b in strategy.batches(web_hosts(3), 1)] == [
        ["demo-web-1"], ["demo-web-2"], ["demo-web-3"]]


def test_without_a_load_balancer_every_host_switches_at_once() -> None:
    assert strategy.batch_size(blueprint(), inventory(3), "web", 3) == 3


def test_rollout_batch_applies_to_proxy_roles_too() -> None:
    bp = blueprint("rollout.batch=2")
    assert strategy.batch_size(bp, inventory(3), "web", 3) == 2
    assert strategy.batch_size(bp, inventory(3, lb=True), "web", 3) == 2
    assert [[h.index for h in b] for b in strategy.batches(web_hosts(5), 2)] == [[1, 2], [3, 4], [5]]


def test_hosts_that_serve_nothing_yet_switch_first_and_together() -> None:
    hosts = web_hosts(4)
    groups, fresh = strategy.switch_groups(hosts, {h.name for h in hosts}, 1)
    assert fresh and [[h.index for h in g] for g in groups] == [[1, 2, 3, 4]], "no capacity to keep: one batch"
    groups, fresh = strategy.switch_groups(hosts, {"demo-web-3", "demo-web-4"}, 1)
    assert fresh and [[h.index for h in g] for g in groups] == [[3, 4], [1], [2]]
    groups, fresh = strategy.switch_groups(hosts, set(), 2)
    assert not fresh and [[h.index for h in g] for g in groups] == [[1, 2], [3, 4]]


def test_workers_keep_one_at_a_time_by_default() -> None:
    assert strategy.batch_size(blueprint(), inventory(3), "worker", 4) == 1


# ---- canary -----------------------------------------------------------------------------------
@pytest.mark.parametrize("text, hosts, percent", [("1", 1, None), (" 2 ", 2, None), ("10%", None, 10),
                                                  ("99%", None, 99)])
def test_canary_specs(text: str, hosts: int | None, percent: int | None) -> None:
    spec = strategy.parse_canary(text)
    assert (spec.hosts, spec.percent) == (hosts, percent)


@pytest.mark.parametrize("text", ["0", "0%", "100%", "150%", "-1", "1.5", "half", "10 %", "%", ""])
def test_bad_canary_specs_are_invalid_input(text: str) -> None:
    with pytest.raises(InvalidInput) as err:
        strategy.parse_canary(text)
    assert err.value.exit_code == 2 and "--canary" in str(err.value)


def test_a_canary_takes_the_first_hosts_in_index_order() -> None:
    hosts = list(reversed(web_hosts(3)))
    chosen = strategy.canary_hosts("web", hosts, strategy.CanarySpec(hosts=2))
    assert [h.name for h in chosen] == ["demo-web-1", "demo-web-2"]


@pytest.mark.parametrize("n", [3, 4])
def test_a_canary_as_large_as_the_pool_is_refused(n: int) -> None:
    with pytest.raises(InvalidInput) as err:
        strategy.canary_hosts("web", web_hosts(3), strategy.CanarySpec(hosts=n))
    assert "role web has 3 hosts" in str(err.value) and "1..2" in (err.value.hint or "")


def test_a_single_host_can_only_take_a_percentage_canary() -> None:
    with pytest.raises(InvalidInput) as err:
        strategy.canary_hosts("web", web_hosts(1), strategy.CanarySpec(hosts=1))
    assert "P%" in (err.value.hint or "")


# ---- switch back and watch targets ----------------------------------------------------------------
def test_a_host_goes_back_to_the_newest_other_running_container() -> None:
    assert strategy.previous_container(["demo-web-v2", "demo-web-v1"], "demo-web-v2") == "demo-web-v1"
    assert strategy.previous_container(["demo-web-v1"], "demo-web-v2") == "demo-web-v1"
    assert strategy.previous_container([], "demo-web-v2") is None
    assert strategy.previous_container(["demo-web-v2"], "demo-web-v2") is None


def test_the_watch_probes_the_load_balancer_or_every_switched_host() -> None:
    hosts = list(web_hosts(3))
    assert strategy.watch_targets(inventory(3, lb=True), "web", hosts) == ["127.0.0.99"]
    assert strategy.watch_targets(inventory(3), "web", hosts) == ["127.0.0.11", "127.0.0.12", "127.0.0.13"]
    assert strategy.watch_targets(inventory(3), "web", hosts[1:2]) == ["127.0.0.11", "127.0.0.12"]


# ---- the plan a run makes from facts --------------------------------------------------------------
def _facts(running: dict[str, list[str]]) -> dict[str, HostFacts]:
    return {h.name: HostFacts(running={"web": running.get(h.name, [])}) for h in inventory(3).hosts}


def test_a_deploy_plan_switches_every_web_host_and_remembers_what_each_served() -> None:
    r = Rollout(blueprint("rollout.watch.duration=10"), inventory(3, lb=True), SECRETS, Recorder())
    r.select()
    facts = _facts({"demo-web-1": ["demo-web-v1"], "demo-web-2": ["demo-web-v1"]})
    plan = runs.plan(r, runs.RolloutOptions(version="v2"), "v2", facts)
    assert [h.name for h in plan.switch["web"]] == ["demo-web-1", "demo-web-2", "demo-web-3"]
    assert plan.batch == {"web": 1} and plan.commit and plan.workers and plan.split is None
    assert plan.previous == {("web", "demo-web-1"): "demo-web-v1", ("web", "demo-web-2"): "demo-web-v1",
                             ("web", "demo-web-3"): None}
    assert plan.watch is not None and plan.watch.duration == 10


def test_turning_tls_on_or_off_switches_the_hosts_that_differ_together() -> None:
    facts = _facts({h: ["demo-web-v1"] for h in ("demo-web-1", "demo-web-2", "demo-web-3")})
    tls = Rollout(blueprint("roles.web.proxy.host=demo.lab", "roles.web.proxy.ssl=true"), inventory(3, lb=True),
                  SECRETS, Recorder())
    tls.select()
    plan = runs.plan(tls, runs.RolloutOptions(version="v2"), "v2", facts)
    assert plan.unlike == {"demo-web-1", "demo-web-2", "demo-web-3"}, "v1 was served over plain HTTP"
    facts["demo-web-2"].tls.add("demo-web-v1")
    plan = runs.plan(tls, runs.RolloutOptions(version="v2"), "v2", facts)
    assert plan.unlike == {"demo-web-1", "demo-web-3"}, "demo-web-2 serves HTTPS already: it keeps its batch"
    plain = Rollout(blueprint(), inventory(3, lb=True), SECRETS, Recorder())
    plain.select()
    assert runs.plan(plain, runs.RolloutOptions(version="v2"), "v2", facts).unlike == {"demo-web-2"}, "TLS off"


def test_a_host_canary_narrows_the_run_to_its_hosts_and_never_commits() -> None:
    r = Rollout(blueprint(), inventory(3), SECRETS, Recorder())
    r.select()
    spec = strategy.CanarySpec(hosts=1)
    chosen = runs.choose_canary(r, spec)
    assert [h.name for h in chosen] == ["demo-web-1"]
    assert r.role_hosts("worker") == []           # workers wait for the promotion
    plan = runs.plan(r, runs.RolloutOptions(version="v2", canary=spec), "v2", _facts({"demo-web-1": ["demo-web-v1"]}))
    assert [h.name for h in plan.switch["web"]] == ["demo-web-1"]
    assert not plan.commit and not plan.workers
    assert plan.watch is not None                  # a canary is always watched (default watch)


def test_promoting_a_host_canary_switches_the_rest_and_judges_all() -> None:
    r = Rollout(blueprint(), inventory(3), SECRETS, Recorder())
    r.select()
    paused = canary.CanaryState(version="v2", mode="hosts", hosts=["demo-web-1"])
    facts = _facts({"demo-web-1": ["demo-web-v2", "demo-web-v1"], "demo-web-2": ["demo-web-v1"],
                    "demo-web-3": ["demo-web-v1"]})
    plan = runs.plan(r, runs.RolloutOptions(version="v2", kind="promote", paused=paused), "v2", facts)
    assert [h.name for h in plan.switch["web"]] == ["demo-web-2", "demo-web-3"]
    assert [h.name for h in plan.already["web"]] == ["demo-web-1"]
    assert plan.previous[("web", "demo-web-1")] == "demo-web-v1" and plan.commit and plan.workers


def test_a_percentage_canary_needs_a_version_to_split_against_on_every_host() -> None:
    r = Rollout(blueprint(), inventory(3), SECRETS, Recorder())
    r.select()
    spec = strategy.CanarySpec(percent=10)
    runs.choose_canary(r, spec)
    opts = runs.RolloutOptions(version="v2", canary=spec)
    with pytest.raises(InvalidInput) as err:
        runs.plan(r, opts, "v2", _facts({"demo-web-1": ["demo-web-v1"], "demo-web-2": ["demo-web-v1"]}))
    assert "demo-web-3" in str(err.value)
    plan = runs.plan(r, opts, "v2", _facts({h: ["demo-web-v1"] for h in ("demo-web-1", "demo-web-2", "demo-web-3")}))
    assert plan.split is not None and plan.split[0] == 10 and plan.cookie == plan.split[1]
    assert len(plan.switch["web"]) == 3 and not plan.commit


def test_the_paused_canary_round_trips_and_is_named_when_it_refuses_a_deploy() -> None:
    state = canary.new_state("v2", strategy.CanarySpec(hosts=1), ["demo-web-1"], ("web",), (), "ann", "now", None)
    again = canary.CanaryState.parse(state.to_json())
    assert again == state and again.spec == strategy.CanarySpec(hosts=1)
    err = canary.refused("demo", state.to_json())
    assert "paused canary of v2 on demo-web-1 by ann" in str(err) and "--promote" in (err.hint or "")
    assert canary.CanaryState.parse("") is None and canary.CanaryState.parse("{broken") is None


def test_rolled_back_and_paused_records_never_count_as_the_running_version() -> None:
    from cloudstack_deploy.rollout import history

    def rec(version: str, status: str, kind: str = "deploy") -> history.DeployRecord:
        return history.DeployRecord(version=version, kind=kind, status=status)

    records = [rec("v1", "ok"), rec("v2", "ok"), rec("degrading", "rolled_back"), rec("v3", "paused"),
               rec("v3", "rolled_back", "abort")]
    assert history.previous_version(records) == "v1"
    promoted = [*records, rec("v3", "ok", "promote")]
    assert history.previous_version(promoted) == "v2"
    line = rec("v2", "rolled_back")
    line.switched, line.reverted, line.error = ["a", "b"], ["b", "a"], "watch failed"
    (again,) = history.parse(line.to_json())
    assert again == line


def test_a_canary_within_hosts_takes_the_first_selected_host_and_batches_follow_the_selection() -> None:
    r = Rollout(blueprint(), inventory(3, lb=True), SECRETS, Recorder())
    r.select(hosts=("demo-web-2", "demo-web-3"))
    chosen = runs.choose_canary(r, strategy.CanarySpec(hosts=1))
    assert [h.name for h in chosen] == ["demo-web-2"]
    r = Rollout(blueprint(), inventory(3, lb=True), SECRETS, Recorder())
    r.select(hosts=("demo-web-2", "demo-web-3"))
    with pytest.raises(InvalidInput, match="role web has 2 hosts here"):
        runs.choose_canary(r, strategy.CanarySpec(hosts=2))
    plan = runs.plan(r, runs.RolloutOptions(version="v2", hosts=("demo-web-2", "demo-web-3")), "v2", _facts({}))
    assert [h.name for h in plan.switch["web"]] == ["demo-web-2", "demo-web-3"] and plan.batch == {"web": 1}


def test_roles_without_a_proxy_cannot_take_a_canary() -> None:
    r = Rollout(blueprint(), inventory(3), SECRETS, Recorder())
    r.select(roles=("worker",))
    with pytest.raises(InvalidInput, match="needs a proxy role"):
        runs.choose_canary(r, strategy.CanarySpec(hosts=1))
