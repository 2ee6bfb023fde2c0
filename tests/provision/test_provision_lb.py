"""Roles behind a CloudStack load balancer, provisioned on the simulator and checked with `cs`.

A proxy role with more than one VM (or `proxy.load_balancer: true`) gets one public address
with a load-balancer rule per port (80, 443) whose members are its VMs; its VMs' own
addresses open SSH only. Scaling moves members in and out around the VMs' lives; teardown
removes the rules and proves it.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from cloudstack_deploy.progress import Recorder
from cloudstack_deploy.provision.desired import TAG_ENV, TAG_KIND, TAG_ROLE
from cloudstack_deploy.provision.run import CreateOptions, create_env, join_deferred
from cloudstack_deploy.state import EnvState, inventory_to_dict

from .conftest import SSH_TIMEOUT, CloudView, blueprint, cli, cloud_session, create, create_args

WEBS = ("demo-web-1", "demo-web-2", "demo-web-3")


def tags_of(resource: dict[str, Any]) -> dict[str, str]:
    return {t["key"]: t["value"] for t in resource.get("tags") or []}


def lb_view(cloud_view: CloudView) -> dict[str, Any]:
    """The load balancer as `cs` lists it: address, rules by port, members by port."""
    rules = {int(r["publicport"]): r for r in cloud_view.lb_rules()}
    return {"ips": {r["publicip"] for r in rules.values()}, "rules": rules,
            "members": {port: cloud_view.lb_members(r["id"]) for port, r in rules.items()}}


def finished(events: list[Any], resource: str, action: str) -> int:
    """Index of the event that finished ``action`` on ``resource`` (done or skipped)."""
    return next(i for i, e in enumerate(events) if e.resource == resource and e.action == action
                and e.status in ("done", "skipped"))


def started(events: list[Any], resource: str, action: str) -> int:
    return next(i for i, e in enumerate(events) if e.resource == resource and e.action == action
                and e.status == "running")


# ---- create ---------------------------------------------------------------------------------------
async def test_three_web_vms_get_one_balanced_address_and_ssh_only_on_their_own(home: Path,
                                                                              cloud_view: CloudView) -> None:
    result, cloud = await create("demo", "roles.web.count=3")
    lb = lb_view(cloud_view)
    assert sorted(lb["rules"]) == [80, 443]
    [address] = lb["ips"]
    [ip] = [i for i in cloud_view.public_ips() if i["ipaddress"] == address]
    assert not ip.get("isstaticnat")
    assert {k: tags_of(ip)[k] for k in (TAG_ENV, TAG_ROLE, TAG_KIND)} == {TAG_ENV: "demo", TAG_ROLE: "web",
                                                                         TAG_KIND: "lb-ip"}
    for port, rule in lb["rules"].items():
        assert (rule["name"], rule["algorithm"], rule["state"]) == (f"demo-web-{port}", "roundrobin", "Active")
        assert rule["privateport"] == str(port)
        assert tags_of(rule)[TAG_ENV] == "demo" and tags_of(rule)[TAG_KIND] == "lb-rule"
        assert lb["members"][port] == list(WEBS)
    # the balanced address is open to everyone on 80/443; each web VM's own address on 22 only
    assert {(int(r["startport"]), r["cidrlist"]) for r in cloud_view.firewall(ip["id"])} == \
        {(80, "0.0.0.0/0"), (443, "0.0.0.0/0")}
    for name in WEBS:
        vm = cloud_view.vm(name)
        [own] = [i for i in cloud_view.public_ips() if i.get("virtualmachineid") == vm["id"]]
        assert {int(r["startport"]) for r in cloud_view.firewall(own["id"])} == {22}
    # few API calls for it: one assign per rule with all three VMs
    assert cloud.calls["assignToLoadBalancerRule"] == 2 and cloud.calls["createLoadBalancerRule"] == 2
    assert cloud.calls["createFirewallRule"] == 5  # SSH of the five VMs; 80/443 came with the rules
    # the inventory carries it, and the app's URL is the balanced address
    inv = inventory_to_dict(result.inventory)
    assert inv["load_balancers"] == [{"role": "web", "public_ip": address, "ports": [80, 443],
                                      "members": list(WEBS)}]
    assert result.inventory.app_url == f"http://{address}/"
    assert EnvState("demo").read_inventory() == result.inventory

    again, cloud = await create("demo", "roles.web.count=3")
    assert again.plan.empty
    assert not {c for c in cloud.calls if c.startswith(("create", "assign", "remove", "associate", "update"))
                and c != "createTags"}  # createTags: the run's lock on the network


def test_create_env_prints_the_balanced_address(home: Path, cloud_view: CloudView) -> None:
    res = cli(*create_args("demo", "roles.web.count=2"))
    assert res.exit_code == 0, res.stderr
    [address] = lb_view(cloud_view)["ips"]
    assert f"load balancer web: {address} (80/443) -> demo-web-1, demo-web-2" in res.stdout


def test_plan_shows_the_load_balancer(home: Path, cloud_view: CloudView) -> None:
    res = cli("plan", *create_args("demo", "roles.web.count=3")[1:4], "--set", "roles.web.count=3")
    assert res.exit_code == 0, res.stderr
    lines = res.stdout.splitlines()
    assert "  + create  ip           load balancer of web  (associateIpAddress)" in lines
    assert "  + create  load-balancer demo-web-80  (roundrobin, public 80 -> 80 on the web VMs)" in lines
    assert "  + create  load-balancer demo-web-443  (roundrobin, public 443 -> 443 on the web VMs)" in lines
    for name in WEBS:
        assert f"  + assign  lb-member    {name}  (joins web:80, web:443 once it runs)" in lines
    assert "demo-web-1:80" not in res.stdout  # no HTTP on the VMs' own addresses
    assert cloud_view.lb_rules() == []


# ---- scaling --------------------------------------------------------------------------------------
async def test_scaling_moves_members_out_before_vms_go_and_in_once_they_run(home: Path,
                                                                           cloud_view: CloudView) -> None:
    await create("demo", "roles.web.count=3")
    [address] = lb_view(cloud_view)["ips"]

    down = Recorder()
    result, cloud = await create("demo", "roles.web.count=2", progress=down)
    assert [(a.op, a.kind, a.name) for a in result.plan.actions if a.kind == "lb-member"] == \
        [("remove", "lb-member", "demo-web-3")]
    assert finished(down.events, "lb-member demo-web-3", "remove") < started(down.events, "vm demo-web-3", "delete")
    assert cloud.calls["removeFromLoadBalancerRule"] == 2  # one per rule
    lb = lb_view(cloud_view)
    assert lb["ips"] == {address} and lb["members"] == {80: list(WEBS[:2]), 443: list(WEBS[:2])}
    assert "demo-web-3" not in cloud_view.vm_names()
    assert inventory_to_dict(result.inventory)["load_balancers"][0]["members"] == list(WEBS[:2])

    up = Recorder()
    result, cloud = await create("demo", "roles.web.count=3", progress=up)
    assert finished(up.events, "vm demo-web-3", "create") < started(up.events, "lb-member demo-web-3", "assign")
    assert cloud.calls["assignToLoadBalancerRule"] == 2
    lb = lb_view(cloud_view)
    assert lb["ips"] == {address}  # the address stays through scaling
    assert lb["members"] == {80: list(WEBS), 443: list(WEBS)}


async def test_a_vm_joining_a_serving_pool_can_wait_for_its_rollout(home: Path, cloud_view: CloudView) -> None:
    """create-env leaves a new VM out of a pool that already has members until the rollout on
    it is done (CreateOptions.defer_joins), then join_deferred adds it."""
    await create("demo", "roles.web.count=2")
    bp, state = blueprint("roles.web.count=3"), EnvState("demo")
    async with cloud_session() as cloud:
        result = await create_env(cloud, bp, "demo", state, Recorder(),
                                  CreateOptions(ssh_timeout=SSH_TIMEOUT, defer_joins=True))
    assert result.deferred == {"web": ["demo-web-3"]}
    assert cloud_view.vm("demo-web-3")["state"] == "Running"
    assert lb_view(cloud_view)["members"] == {80: list(WEBS[:2]), 443: list(WEBS[:2])}
    assert result.inventory.load_balancer("web").members == WEBS[:2]  # type: ignore[union-attr]
    assert [h.name for h in result.inventory.role_hosts("web")] == list(WEBS)  # the rollout reaches it
    plan = json.loads((await asyncio.to_thread(cli, "plan", *create_args("demo")[1:4], "--json", "--set",
                                               "roles.web.count=3")).stdout)
    assert plan["changes"][0]["op"] == "assign" and plan["changes"][0]["name"] == "demo-web-3"

    async with cloud_session() as cloud:
        joined = await join_deferred(cloud, bp, "demo", state, Recorder(), result.deferred)
        assert cloud.calls["assignToLoadBalancerRule"] == 2
    assert joined is not None and joined.load_balancer("web").members == WEBS  # type: ignore[union-attr]
    assert state.read_inventory() == joined
    assert lb_view(cloud_view)["members"] == {80: list(WEBS), 443: list(WEBS)}
    assert (await create("demo", "roles.web.count=3"))[0].plan.empty


async def test_a_new_pool_takes_its_vms_at_once_even_when_joins_wait(home: Path, cloud_view: CloudView) -> None:
    async with cloud_session() as cloud:
        result = await create_env(cloud, blueprint("roles.web.count=2"), "demo", EnvState("demo"), Recorder(),
                                  CreateOptions(ssh_timeout=SSH_TIMEOUT, defer_joins=True))
    assert result.deferred == {}
    assert lb_view(cloud_view)["members"] == {80: list(WEBS[:2]), 443: list(WEBS[:2])}


# ---- changes -----------------------------------------------------------------------------------------
async def test_changing_the_algorithm_updates_the_rules(home: Path, cloud_view: CloudView) -> None:
    await create("demo", "roles.web.count=2")
    result, _ = await create("demo", "roles.web.count=2", "roles.web.proxy.lb_algorithm=leastconn")
    assert sorted((a.op, a.kind, a.name) for a in result.plan.actions) == [
        ("update", "load-balancer", "demo-web-443"), ("update", "load-balancer", "demo-web-80")]
    assert {r["algorithm"] for r in cloud_view.lb_rules()} == {"leastconn"}


async def test_one_vm_with_load_balancer_true_and_back_to_its_own_address(home: Path, cloud_view: CloudView) -> None:
    result, _ = await create("demo", "roles.web.proxy.load_balancer=true")
    assert lb_view(cloud_view)["members"] == {80: ["demo-web-1"], 443: ["demo-web-1"]}
    [address] = lb_view(cloud_view)["ips"]
    assert result.inventory.app_url == f"http://{address}/"

    result, _ = await create("demo")  # count 1, the default: no load balancer
    assert any("no longer load balanced" in w for w in result.plan.warnings)
    assert cloud_view.lb_rules() == []
    assert address not in {i["ipaddress"] for i in cloud_view.public_ips()}
    web = cloud_view.vm("demo-web-1")
    [own] = [i for i in cloud_view.public_ips() if i.get("virtualmachineid") == web["id"]]
    assert {int(r["startport"]) for r in cloud_view.firewall(own["id"])} == {22, 80, 443}
    assert result.inventory.load_balancers == () and result.inventory.app_url == f"http://{own['ipaddress']}/"


async def test_a_rule_deleted_by_hand_is_made_again_and_a_stray_one_removed(home: Path,
                                                                           cloud_view: CloudView) -> None:
    await create("demo", "roles.web.count=2")
    rules = lb_view(cloud_view)["rules"]
    cloud_view.cs.deleteLoadBalancerRule(id=rules[443]["id"])
    stray = cloud_view.cs.createLoadBalancerRule(algorithm="source", name="by-hand", privateport=8080,
                                                 publicport=8080, publicipid=rules[80]["publicipid"])
    result, _ = await create("demo", "roles.web.count=2")
    assert sorted((a.op, a.kind, a.name) for a in result.plan.actions if a.kind != "lb-member") == [
        ("create", "load-balancer", "demo-web-443"), ("delete", "load-balancer", "by-hand")]
    lb = lb_view(cloud_view)
    assert sorted(lb["rules"]) == [80, 443] and stray["loadbalancer"]["id"] not in {r["id"] for r in cloud_view.lb_rules()}
    assert lb["members"][443] == list(WEBS[:2])


# ---- port forwarding ----------------------------------------------------------------------------------
async def test_port_forwarding_balances_on_the_source_nat_address(home: Path, cloud_view: CloudView) -> None:
    mode = "cloud.public_access=port_forwarding"
    result, _ = await create("demo", mode)  # one web VM: 80/443 forwarded to it
    assert {int(r["publicport"]) for r in cloud_view.port_forwards()} >= {80, 443}

    result, _ = await create("demo", mode, "roles.web.count=2")
    assert cloud_view.public_ips() == []
    [snat] = [i for i in cloud_view.all_ips() if i.get("issourcenat")]
    lb = lb_view(cloud_view)
    assert lb["ips"] == {snat["ipaddress"]} and lb["members"] == {80: list(WEBS[:2]), 443: list(WEBS[:2])}
    assert {int(r["publicport"]) for r in cloud_view.port_forwards()} == {2201, 2202, 2203, 2204}  # SSH only
    assert {(int(r["startport"]), r["cidrlist"]) for r in cloud_view.firewall(snat["id"])
            if int(r["startport"]) in (80, 443)} == {(80, "0.0.0.0/0"), (443, "0.0.0.0/0")}
    assert result.inventory.app_url == f"http://{snat['ipaddress']}/"
    assert (await create("demo", mode, "roles.web.count=2"))[0].plan.empty

    await create("demo", mode)  # back to one VM: the rules go before 80/443 are forwarded again
    assert cloud_view.lb_rules() == []
    vms = {v["id"]: v["name"] for v in cloud_view.vms()}
    assert {(int(r["publicport"]), vms[r["virtualmachineid"]]) for r in cloud_view.port_forwards()
            if int(r["publicport"]) in (80, 443)} == {(80, "demo-web-1"), (443, "demo-web-1")}
    await create("demo", mode, "roles.web.count=2")

    res = await asyncio.to_thread(cli, "teardown", "--env", "demo", "--yes", "--progress", "plain")
    assert res.exit_code == 0, res.stderr
    assert "load-balancer demo-web-80: delete done" in res.stderr
    everything = cloud_view.everything()
    assert not any(everything.values()), everything


def test_teardown_removes_the_rules_and_proves_it(home: Path, cloud_view: CloudView) -> None:
    assert cli(*create_args("demo", "roles.web.count=3")).exit_code == 0
    res = cli("teardown", "--env", "demo", "--yes", "--progress", "plain")
    assert res.exit_code == 0, res.stderr
    for port in (80, 443):
        assert f"load-balancer demo-web-{port}: delete done" in res.stderr
    assert cloud_view.lb_rules() == []
    everything = cloud_view.everything()
    assert not any(everything.values()), everything
