"""What outside clients (the OpenTofu/Terraform CloudStack provider, CloudMonkey users) found
missing or different from CloudStack in the simulator; each checked in CloudStack's source."""

from __future__ import annotations

from cs import CloudStack

from .cloudkit import catalog, deploy, http_error, network, vm_params
from .conftest import KEY, SECRET
from .rawclient import call


def _lb_rule(cs: CloudStack, net: dict, **kw) -> dict:
    ip = cs.associateIpAddress(networkid=net["id"])["ipaddress"]
    return cs.createLoadBalancerRule(algorithm="roundrobin", name="web", privateport=80, publicport=80,
                                     publicipid=ip["id"], **kw)["loadbalancer"]


def test_autoscale_vm_groups_list_empty(simulator, cs: CloudStack) -> None:
    """ListAutoScaleVmGroupsCmd (listautoscalevmgroupsresponse, items ``autoscalevmgroup``):
    the provider reads the groups of every load-balancer rule (lbruleid); the lab has none, so
    the answer is CloudStack's empty list; ids of groups, profiles or policies that do not
    exist are the parameter's 431."""
    cat = catalog(cs)
    net = network(cs, cat)
    rule = _lb_rule(cs, net)
    raw = call(simulator.endpoint, "listAutoScaleVmGroups", KEY, SECRET, lbruleid=rule["id"])
    assert raw.status == 200 and raw.json == {"listautoscalevmgroupsresponse": {}}
    assert cs.listAutoScaleVmGroups(listall=True, zoneid=cat.zone) == {}
    assert "lbruleid" in http_error(431, cs.listAutoScaleVmGroups, lbruleid="3f7e0e1c-0000-4000-8000-000000000000")
    assert "policyid" in http_error(431, cs.listAutoScaleVmGroups, policyid="3f7e0e1c-0000-4000-8000-000000000001")
    apis = {a["name"]: a for a in cs.listApis(name="listAutoScaleVmGroups")["api"]}
    assert {"lbruleid", "id", "vmprofileid", "policyid", "zoneid"} <= {p["name"] for p in
                                                                      apis["listAutoScaleVmGroups"]["params"]}


def test_the_isolated_offering_is_required_and_deploys_without_networkids(cs: CloudStack) -> None:
    """The default isolated source-NAT offering has availability Required, the shared one
    Optional (ConfigurationServerImpl's default offerings). deployVirtualMachine without
    networkids (getDefaultNetwork): no isolated network yet -> one of the Required offering,
    "<account>-network", is created and used; exactly one -> that one."""
    cat = catalog(cs)
    offerings = {o["name"]: o["availability"] for o in cs.listNetworkOfferings()["networkoffering"]}
    assert offerings == {"DefaultIsolatedNetworkOfferingWithSourceNatService": "Required",
                         "DefaultSharedNetworkOffering": "Optional"}
    params = vm_params(cat, {"id": "unused"}, "first")
    del params["networkids"]
    vm = cs.deployVirtualMachine(**params)["virtualmachine"]
    nets = cs.listNetworks()["network"]
    assert [(n["name"], n["networkofferingid"]) for n in nets] == [("admin-network", cat.isolated)]
    assert vm["nic"][0]["networkid"] == nets[0]["id"] and vm["nic"][0]["isdefault"] is True
    second = cs.deployVirtualMachine(**(params | {"name": "second"}))["virtualmachine"]
    assert second["nic"][0]["networkid"] == nets[0]["id"]
    assert cs.listNetworks()["count"] == 1


def test_with_several_isolated_networks_deploy_needs_networkids(cs: CloudStack) -> None:
    """getDefaultNetwork: more than one isolated network of the account is a 431 asking for
    networkIds; a bad request creates no network."""
    cat = catalog(cs)
    params = vm_params(cat, {"id": "unused"}, "vm")
    del params["networkids"]
    assert "A key pair with name 'nope' was not found." in http_error(431, cs.deployVirtualMachine,
                                                                      **(params | {"keypair": "nope"}))
    assert cs.listNetworks() == {}
    network(cs, cat, "a")
    network(cs, cat, "b")
    text = http_error(431, cs.deployVirtualMachine, **params)
    assert text.startswith("More than 1 default Isolated networks are found for Account")
    assert text.endswith("please specify networkIds")


def test_rule_instances_applied_false_are_the_vms_that_could_join(cs: CloudStack) -> None:
    """LoadBalancingRulesManagerImpl.listLoadBalancerInstances: applied=false lists the
    account's VMs in the rule's network that are not members (Destroyed ones left out);
    applied (default true) the members."""
    cat = catalog(cs)
    net, other = network(cs, cat, "app"), network(cs, cat, "other")
    a, b, c = (deploy(cs, cat, net, name) for name in ("a", "b", "c"))
    deploy(cs, cat, other, "elsewhere")
    gone = deploy(cs, cat, net, "gone")
    cs.destroyVirtualMachine(id=gone["id"])
    rule = _lb_rule(cs, net)
    cs.assignToLoadBalancerRule(id=rule["id"], virtualmachineids=a["id"])

    def names(**kw) -> list[str]:
        return sorted(v["name"] for v in cs.listLoadBalancerRuleInstances(id=rule["id"], **kw)
                      .get("loadbalancerruleinstance", []))

    assert names() == names(applied=True) == ["a"]
    assert names(applied=False) == ["b", "c"]


def test_load_balancer_rules_always_carry_cidrlist(cs: CloudStack) -> None:
    """ApiResponseHelper.createLoadBalancerResponse sets cidrlist to the joined source CIDRs:
    an empty string when the rule has none (the provider reads it unconditionally)."""
    cat = catalog(cs)
    net = network(cs, cat)
    rule = _lb_rule(cs, net)
    assert rule["cidrlist"] == ""
    assert cs.listLoadBalancerRules(id=rule["id"])["loadbalancerrule"][0]["cidrlist"] == ""
    updated = cs.updateLoadBalancerRule(id=rule["id"], name="renamed")["loadbalancer"]
    assert updated["cidrlist"] == ""


def test_tag_filters_ignore_case_as_mysql_does(cs: CloudStack) -> None:
    """BaseListTaggedResourcesCmd tags and ListTagsCmd key/value end in SQL equality on
    resource_tags, whose default collation (utf8_general_ci) ignores case."""
    cat = catalog(cs)
    vm = deploy(cs, cat, network(cs, cat), "web-1")
    cs.createTags(resourcetype="UserVm", resourceids=vm["id"], tags=[{"key": "Env", "value": "Prod"}])
    found = cs.listVirtualMachines(tags=[{"key": "env", "value": "PROD"}])["virtualmachine"]
    assert [v["id"] for v in found] == [vm["id"]]
    assert cs.listVirtualMachines(tags=[{"key": "env", "value": "staging"}]) == {}
    tags = cs.listTags(key="ENV", value="prod")["tag"]
    assert [(t["key"], t["value"], t["resourceid"]) for t in tags] == [("Env", "Prod", vm["id"])]
    assert cs.listTags(key="env", value="test") == {}
