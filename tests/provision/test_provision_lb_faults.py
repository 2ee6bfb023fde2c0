"""A load-balanced role when things go wrong: killed runs, untagged leftovers, failing
member changes, dropped creates. Every outcome is checked with `cs`: one address, one rule
per port, the right members, no VM destroyed while it is still a member."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cloudstack_deploy.lab.simulator.faults import parse_fault

from .conftest import CloudView, cli, cli_argv, create_args, wait_until

WEBS = ["demo-web-1", "demo-web-2", "demo-web-3"]


def assert_balanced(cloud_view: CloudView, members: list[str] = WEBS) -> dict[str, Any]:
    """One load-balancer address, rules for 80 and 443 on it, each with exactly ``members``."""
    rules = cloud_view.lb_rules()
    assert sorted(int(r["publicport"]) for r in rules) == [80, 443], rules
    assert len({r["publicipid"] for r in rules}) == 1
    assert all(cloud_view.lb_members(r["id"]) == members for r in rules)
    balanced = [i for i in cloud_view.public_ips() if not i.get("isstaticnat")]
    assert [i["id"] for i in balanced] == [rules[0]["publicipid"]], balanced  # no second address
    assert cloud_view.vm_names() == {n: 1 for n in [*members, "demo-worker-1", "demo-db-1"]}
    return rules[0]


def up_to_date(*overrides: str) -> bool:
    return "up to date" in cli("plan", *create_args("demo", *overrides)[1:4],
                               *[w for o in overrides for w in ("--set", o)]).stdout


@pytest.mark.simulator(vm_boot_seconds=1.5)
def test_a_run_killed_while_the_load_balancer_is_made_is_finished_by_the_next(home: Path,
                                                                             cloud_view: CloudView) -> None:
    proc = subprocess.Popen(cli_argv(*create_args("demo", "roles.web.count=3")), env=dict(os.environ),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(cloud_view.lb_rules, timeout=30, what="the first load-balancer rule")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert not all(cloud_view.lb_members(r["id"]) for r in cloud_view.lb_rules())  # killed before the members

    res = cli(*create_args("demo", "roles.web.count=3"))
    assert res.exit_code == 0, res.stderr
    assert_balanced(cloud_view)
    assert up_to_date("roles.web.count=3")


def test_an_untagged_address_and_rules_are_adopted_not_made_again(home: Path, cloud_view: CloudView) -> None:
    """What a run killed between a create and its tags leaves: found by the rules' names."""
    assert cli(*create_args("demo", "roles.web.count=3")).exit_code == 0
    rule = assert_balanced(cloud_view)
    for r in cloud_view.lb_rules():
        cloud_view.cs.deleteTags(resourceids=r["id"], resourcetype="LoadBalancer")
    cloud_view.cs.deleteTags(resourceids=rule["publicipid"], resourcetype="PublicIpAddress")
    res = cli("plan", *create_args("demo")[1:4], "--set", "roles.web.count=3")
    assert "~ adopt   ip" in res.stdout and "~ adopt   load-balancer demo-web-80" in res.stdout, res.stdout
    assert cli(*create_args("demo", "roles.web.count=3")).exit_code == 0
    assert assert_balanced(cloud_view)["publicipid"] == rule["publicipid"]
    assert all(t["value"] == "demo" for r in cloud_view.lb_rules() for t in r["tags"] if t["key"] == "csdeploy:env")
    assert up_to_date("roles.web.count=3")


@pytest.mark.simulator(faults=[parse_fault("assignToLoadBalancerRule:job:530:1")])
def test_a_failed_assign_is_reported_and_a_rerun_adds_the_members(home: Path, cloud_view: CloudView) -> None:
    res = cli(*create_args("demo", "roles.web.count=3"))
    assert res.exit_code == 1
    assert "lb-member demo-web-" in res.stderr and "assignToLoadBalancerRule" in res.stderr
    res = cli(*create_args("demo", "roles.web.count=3"))
    assert res.exit_code == 0, res.stderr
    assert_balanced(cloud_view)


def test_a_vm_that_could_not_leave_its_pool_is_not_destroyed(home: Path, cloud_view: CloudView) -> None:
    assert cli(*create_args("demo", "roles.web.count=3")).exit_code == 0
    cloud_view.add_faults("removeFromLoadBalancerRule:job:530:always")
    res = cli(*create_args("demo", "roles.web.count=2"))
    assert res.exit_code == 1
    assert "lb-member demo-web-3 (remove)" in res.stderr
    assert cloud_view.vm("demo-web-3")["state"] == "Running"  # still serving: it stays
    assert_balanced(cloud_view)
    cloud_view.clear_faults()
    res = cli(*create_args("demo", "roles.web.count=2"))
    assert res.exit_code == 0, res.stderr
    assert_balanced(cloud_view, WEBS[:2])


@pytest.mark.simulator(faults=[parse_fault("createLoadBalancerRule:drop:0:1")])
def test_a_dropped_rule_create_is_not_resent_and_a_rerun_converges(home: Path, cloud_view: CloudView) -> None:
    res = cli(*create_args("demo", "roles.web.count=3"))
    assert res.exit_code == 1
    assert "createLoadBalancerRule" in res.stderr and "no answer" in res.stderr
    assert len(cloud_view.lb_rules()) == 1  # the other port's rule; the dropped one was not sent again
    res = cli(*create_args("demo", "roles.web.count=3"))
    assert res.exit_code == 0, res.stderr
    assert_balanced(cloud_view)
