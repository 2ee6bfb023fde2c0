"""Load-balancer rules: records, states, errors and conflicts as CloudStack has them.

Sources (apache/cloudstack): CreateLoadBalancerRuleCmd (create() runs synchronously, so its
checks are HTTP errors), LoadBalancingRulesManagerImpl.createPublicLoadBalancerRule /
createPublicLoadBalancer / assignToLoadBalancer / removeFromLoadBalancerInternal /
applyLoadBalancerRules / deleteLoadBalancerRule / searchForLoadBalancers /
listLoadBalancerInstances, AssignToLoadBalancerRuleCmd and RemoveFromLoadBalancerRuleCmd
(their checks run in the job), FirewallManagerImpl.detectRulesConflict and
createRuleForAllCidrs, RulesManagerImpl.isIpReadyForStaticNat, ApiResponseHelper
.createLoadBalancerResponse, VirtualRouterElement.validateLBRule.
"""

from __future__ import annotations

from typing import Any

from cs import CloudStack

from cloudstack_deploy.lab.simulator.server import ThreadedSimulator

from .cloudkit import catalog, deploy, http_error, job_error, network, wait_job


def _setup(cs: CloudStack, vms: int = 3) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    cat = catalog(cs)
    net = network(cs, cat)
    machines = [deploy(cs, cat, net, f"web-{i}") for i in range(1, vms + 1)]
    ip = cs.associateIpAddress(networkid=net["id"])["ipaddress"]
    return net, machines, ip


def _lb(cs: CloudStack, ip: dict[str, Any], port: int = 80, **kw: Any) -> dict[str, Any]:
    params = {"algorithm": "roundrobin", "name": f"web-{port}", "privateport": port, "publicport": port,
              "publicipid": ip["id"], **kw}
    return cs.createLoadBalancerRule(**params)["loadbalancer"]


def _rule(cs: CloudStack, rule_id: str) -> dict[str, Any]:
    [rule] = cs.listLoadBalancerRules(id=rule_id)["loadbalancerrule"]
    return rule


def _members(cs: CloudStack, rule_id: str) -> set[str]:
    return {vm["name"] for vm in cs.listLoadBalancerRuleInstances(id=rule_id).get("loadbalancerruleinstance", [])}


# ---- create ---------------------------------------------------------------------------------------
def test_a_new_rule_is_in_state_add_with_its_firewall_rule_open_to_all(cs: CloudStack) -> None:
    """createPublicLoadBalancer persists the rule and, with openfirewall (the default outside a
    VPC), createRuleForAllCidrs opens its public port; execute() applies only that firewall
    rule, so the LB rule stays Add until members are assigned (applyLoadBalancerRules)."""
    net, _, ip = _setup(cs, vms=0)
    rule = _lb(cs, ip, 80, privateport=8080, description="the web pool")
    assert rule["state"] == "Add"
    assert (rule["publicport"], rule["privateport"]) == ("80", "8080")  # strings, as CloudStack sends them
    assert (rule["publicipid"], rule["publicip"], rule["networkid"]) == (ip["id"], ip["ipaddress"], net["id"])
    assert rule["algorithm"] == "roundrobin" and rule["description"] == "the web pool"
    assert {"account", "domainid", "zoneid", "zonename"} <= set(rule) and rule["tags"] == []
    assert "protocol" not in rule  # null fields are left out
    assert rule["cidrlist"] == ""  # but cidrlist is the joined source CIDRs, "" for none
    assert _rule(cs, rule["id"]) == rule
    [fw] = cs.listFirewallRules(ipaddressid=ip["id"])["firewallrule"]
    assert (fw["startport"], fw["endport"], fw["cidrlist"], fw["protocol"]) == (80, 80, "0.0.0.0/0", "tcp")
    # no members: listed as an empty list, not an error
    assert cs.listLoadBalancerRuleInstances(id=rule["id"]) == {}


def test_the_algorithm_is_one_of_cloudstacks_three_in_any_case(cs: CloudStack) -> None:
    """NetUtils.isValidAlgorithm lower-cases the name; anything else is 'Invalid algorithm'."""
    _, _, ip = _setup(cs, vms=0)
    assert http_error(431, cs.createLoadBalancerRule, algorithm="random", name="x", privateport=80,
                      publicport=80, publicipid=ip["id"]) == "Invalid algorithm: random"
    assert _lb(cs, ip, 80, algorithm="LeastConn")["algorithm"] == "LeastConn"
    assert _lb(cs, ip, 443, algorithm="source")["algorithm"] == "source"


def test_bad_ports_and_addresses_are_refused_before_anything_exists(cs: CloudStack) -> None:
    net, [vm], ip = _setup(cs, vms=1)
    text = http_error(431, cs.createLoadBalancerRule, algorithm="roundrobin", name="x", privateport=0,
                      publicport=80, publicipid=ip["id"])
    assert text == "privatePort is an invalid value: 0"
    text = http_error(431, cs.createLoadBalancerRule, algorithm="roundrobin", name="x", privateport=80,
                      publicport=70000, publicipid=ip["id"])
    assert text == "publicPort is an invalid value: 70000"
    # HAProxy's statistics port on the virtual router
    text = http_error(431, cs.createLoadBalancerRule, algorithm="roundrobin", name="x", privateport=80,
                      publicport=8081, publicipid=ip["id"])
    assert text == "LB service provider cannot support this rule"
    # without an address: the owner cannot be told (getEntityOwnerId)
    text = http_error(431, cs.createLoadBalancerRule, algorithm="roundrobin", name="x", privateport=80,
                      publicport=80, networkid=net["id"])
    assert text == "Can't define IP owner. Either specify account/domainId or publicIpId"
    # the source-NAT address takes LB rules, but not on the DNS port
    [snat] = cs.listPublicIpAddresses(issourcenat=True)["publicipaddress"]
    text = http_error(431, cs.createLoadBalancerRule, algorithm="roundrobin", name="x", privateport=53,
                      publicport=53, publicipid=snat["id"])
    assert "cannot add port 53" in text
    assert _lb(cs, snat, 80)["publicip"] == snat["ipaddress"]
    # a static-NAT address takes none: a rule conflict
    cs.enableStaticNat(ipaddressid=ip["id"], virtualmachineid=vm["id"])
    text = http_error(537, cs.createLoadBalancerRule, algorithm="roundrobin", name="x", privateport=80,
                      publicport=80, publicipid=ip["id"])
    assert text == f"Can't do load balance on ip address: {ip['ipaddress']}"
    assert [r["publicipid"] for r in cs.listLoadBalancerRules()["loadbalancerrule"]] == [snat["id"]]
    assert cs.listFirewallRules(ipaddressid=ip["id"]) == {}


def test_a_cidr_list_is_kept_on_the_rule_and_checked(cs: CloudStack) -> None:
    """Since 4.18 the CIDRs restrict the rule itself (stored space-separated by
    generateCidrString); the firewall rule opened with it is still for 0.0.0.0/0."""
    _, _, ip = _setup(cs, vms=0)
    text = http_error(431, cs.createLoadBalancerRule, algorithm="roundrobin", name="x", privateport=80,
                      publicport=80, publicipid=ip["id"], cidrlist="10.0.0.0/8,nonsense")
    assert text == "CIDR [nonsense] is invalid."
    rule = _lb(cs, ip, 80, cidrlist="10.0.0.0/8,192.168.1.1")
    assert rule["cidrlist"] == "10.0.0.0/8 192.168.1.1"
    [fw] = cs.listFirewallRules(ipaddressid=ip["id"])["firewallrule"]
    assert fw["cidrlist"] == "0.0.0.0/0"


# ---- conflicts ------------------------------------------------------------------------------------
def test_a_public_port_carries_one_lb_or_forwarding_rule(cs: CloudStack) -> None:
    """detectRulesConflict: LB and port-forwarding rules on one address may not share a port;
    firewall rules never conflict with them, and other ports are free."""
    _, [vm], ip = _setup(cs, vms=1)
    rule = _lb(cs, ip, 80)
    text = http_error(537, cs.createLoadBalancerRule, algorithm="roundrobin", name="again", privateport=81,
                      publicport=80, publicipid=ip["id"])
    assert text == f"The range specified, 80-80, conflicts with rule {rule['id']} which has 80-80"
    text = http_error(537, cs.createPortForwardingRule, ipaddressid=ip["id"], protocol="tcp", publicport=79,
                      publicendport=81, privateport=79, privateendport=81, virtualmachineid=vm["id"])
    assert f"conflicts with rule {rule['id']}" in text
    pf = cs.createPortForwardingRule(ipaddressid=ip["id"], protocol="tcp", publicport=2222, privateport=22,
                                     virtualmachineid=vm["id"])["portforwardingrule"]
    text = http_error(537, cs.createLoadBalancerRule, algorithm="roundrobin", name="ssh", privateport=22,
                      publicport=2222, publicipid=ip["id"])
    assert f"conflicts with rule {pf['id']}" in text
    assert [r["id"] for r in cs.listLoadBalancerRules()["loadbalancerrule"]] == [rule["id"]]


def test_no_static_nat_on_an_address_with_lb_rules(cs: CloudStack) -> None:
    _, [vm], ip = _setup(cs, vms=1)
    _lb(cs, ip, 80)
    text = http_error(537, cs.enableStaticNat, ipaddressid=ip["id"], virtualmachineid=vm["id"])
    assert text == f"Failed to enable static nat for the ip address id={ip['id']} as it already has " \
                   "LoadBalancing rules assigned"
    assert cs.listPublicIpAddresses(id=ip["id"])["publicipaddress"][0]["isstaticnat"] is False


def test_an_existing_firewall_rule_for_the_port_is_reused_and_outlives_the_rule(cs: CloudStack) -> None:
    """createRuleForAllCidrs returns the ingress rule for exactly that port range if there is
    one: it is not related to the LB rule, so deleting the LB rule leaves it."""
    _, _, ip = _setup(cs, vms=0)
    mine = cs.createFirewallRule(ipaddressid=ip["id"], protocol="tcp", startport=443, endport=443,
                                 cidrlist="10.0.0.0/8")["firewallrule"]
    rule = _lb(cs, ip, 443)
    assert [f["id"] for f in cs.listFirewallRules(ipaddressid=ip["id"])["firewallrule"]] == [mine["id"]]
    cs.deleteLoadBalancerRule(id=rule["id"])
    assert [f["id"] for f in cs.listFirewallRules(ipaddressid=ip["id"])["firewallrule"]] == [mine["id"]]


# ---- members --------------------------------------------------------------------------------------
def test_assigning_members_applies_the_rule_and_removing_the_last_one_unapplies_it(cs: CloudStack) -> None:
    """applyLoadBalancerRules: Add -> Active once members are applied; back to Add when the last
    mapping is revoked. One call takes several VMs."""
    _, [a, b, c], ip = _setup(cs)
    rule = _lb(cs, ip)
    assert cs.assignToLoadBalancerRule(id=rule["id"], virtualmachineids=f"{a['id']},{b['id']},{c['id']}") == \
        {"success": True}
    assert _rule(cs, rule["id"])["state"] == "Active"
    assert _members(cs, rule["id"]) == {"web-1", "web-2", "web-3"}
    assert [r["id"] for r in cs.listLoadBalancerRules(virtualmachineid=b["id"])["loadbalancerrule"]] == [rule["id"]]

    cs.removeFromLoadBalancerRule(id=rule["id"], virtualmachineids=c["id"])
    assert _members(cs, rule["id"]) == {"web-1", "web-2"}
    assert cs.listLoadBalancerRules(virtualmachineid=c["id"]) == {}
    # removing a VM that is not a member is no error (its mappings are simply none)
    assert cs.removeFromLoadBalancerRule(id=rule["id"], virtualmachineids=c["id"]) == {"success": True}
    cs.removeFromLoadBalancerRule(id=rule["id"], virtualmachineids=f"{a['id']},{b['id']}")
    assert _rule(cs, rule["id"])["state"] == "Add"
    assert cs.listLoadBalancerRuleInstances(id=rule["id"]) == {}


def test_a_member_that_cannot_be_assigned_fails_the_job_and_changes_nothing(cs: CloudStack) -> None:
    """assignToLoadBalancer throws InvalidParameterValueException (a CloudRuntimeException) for a
    VM already mapped, destroyed or in another network; AssignToLoadBalancerRuleCmd catches it as
    'Failed to assign load balancer rule' (530). An unknown id is a 431 at the submit."""
    cat = catalog(cs)
    _, [a, b], ip = _setup(cs, vms=2)
    rule = _lb(cs, ip)
    cs.assignToLoadBalancerRule(id=rule["id"], virtualmachineids=a["id"])
    assert job_error(530, cs.assignToLoadBalancerRule, id=rule["id"],
                     virtualmachineids=f"{b['id']},{a['id']}") == "Failed to assign load balancer rule"
    elsewhere = deploy(cs, cat, network(cs, cat, "net-2"), "other")
    job_error(530, cs.assignToLoadBalancerRule, id=rule["id"], virtualmachineids=elsewhere["id"])
    job_error(530, cs.assignToLoadBalancerRule, id=rule["id"])  # neither ids nor vmidipmap
    text = http_error(431, cs.assignToLoadBalancerRule, id=rule["id"],
                      virtualmachineids="11111111-2222-3333-4444-555555555555")
    assert "virtualmachineids" in text
    assert _members(cs, rule["id"]) == {"web-1"}
    assert job_error(431, cs.removeFromLoadBalancerRule, id=rule["id"]) == \
        "Failed to remove Instance from load balancer rule"


def test_vmidipmap_names_members_by_their_address(cs: CloudStack) -> None:
    _, [a, b], ip = _setup(cs, vms=2)
    rule = _lb(cs, ip)
    cs.assignToLoadBalancerRule(id=rule["id"], vmidipmap=[{"vmid": a["id"], "vmip": a["nic"][0]["ipaddress"]}])
    text = job_error(431, cs.assignToLoadBalancerRule, id=rule["id"], vmidipmap=[{"vmid": b["id"], "vmip": "x"}])
    assert text == f"Invalid ip address x passed in vmidipmap for vmid {b['id']}"
    listed = cs.listLoadBalancerRuleInstances(id=rule["id"], lbvmips=True)["lbrulevmidip"]
    assert [(i["loadbalancerruleinstance"]["name"], i["lbvmipaddresses"]) for i in listed] == \
        [("web-1", [a["nic"][0]["ipaddress"]])]
    # applied=false: the VMs of the rule's network that are not members (listLoadBalancerInstances)
    unapplied = cs.listLoadBalancerRuleInstances(id=rule["id"], applied=False)["loadbalancerruleinstance"]
    assert [v["id"] for v in unapplied] == [b["id"]]


def test_a_destroyed_member_leaves_the_rule(cs: CloudStack) -> None:
    _, [a, b], ip = _setup(cs, vms=2)
    rule = _lb(cs, ip)
    cs.assignToLoadBalancerRule(id=rule["id"], virtualmachineids=f"{a['id']},{b['id']}")
    cs.destroyVirtualMachine(id=b["id"], expunge=True)
    assert _members(cs, rule["id"]) == {"web-1"}
    assert _rule(cs, rule["id"])["state"] == "Active"
    cs.destroyVirtualMachine(id=a["id"], expunge=True)
    assert _rule(cs, rule["id"])["state"] == "Add"


# ---- update, delete, release -----------------------------------------------------------------------
def test_update_changes_the_algorithm_and_name(cs: CloudStack) -> None:
    _, _, ip = _setup(cs, vms=0)
    rule = _lb(cs, ip)
    done = cs.updateLoadBalancerRule(id=rule["id"], algorithm="leastconn", name="renamed")["loadbalancer"]
    assert (done["algorithm"], done["name"], done["id"]) == ("leastconn", "renamed", rule["id"])
    assert _rule(cs, rule["id"])["algorithm"] == "leastconn"
    job_error(431, cs.updateLoadBalancerRule, id=rule["id"], algorithm="fastest")
    assert _rule(cs, rule["id"])["algorithm"] == "leastconn"


def test_delete_shows_deleting_then_removes_rule_firewall_and_members(simulator: ThreadedSimulator, cs: CloudStack,
                                                                     cs_raw: CloudStack) -> None:
    """deleteLoadBalancerRule marks the rule Revoke (shown as 'Deleting') and its mappings revoked,
    then removes them; DeleteLoadBalancerRuleCmd first revokes the related firewall rule."""
    _, [a], ip = _setup(cs, vms=1)
    rule = _lb(cs, ip)
    cs.assignToLoadBalancerRule(id=rule["id"], virtualmachineids=a["id"])
    cs.createTags(resourceids=rule["id"], resourcetype="LoadBalancer", tags=[{"key": "k", "value": "v"}])
    assert [(t["key"], t["value"]) for t in _rule(cs, rule["id"])["tags"]] == [("k", "v")]
    # the delete's job long enough to be seen pending on a busy machine (it ended before the
    # listing at load 20 with the suite's 0.02 s jobs)
    simulator.server.sim.settings.job_seconds = 3.0
    job = cs_raw.deleteLoadBalancerRule(id=rule["id"])
    assert _rule(cs, rule["id"])["state"] == "Deleting"
    assert wait_job(cs_raw, job["jobid"])["jobstatus"] == 1
    assert cs.listLoadBalancerRules() == {}
    assert cs.listFirewallRules(ipaddressid=ip["id"]) == {}
    assert cs.listTags(resourcetype="LoadBalancer") == {}
    assert cs.listLoadBalancerRules(virtualmachineid=a["id"]) == {}


def test_releasing_the_address_takes_its_lb_rules(cs: CloudStack) -> None:
    _, [a], ip = _setup(cs, vms=1)
    rule = _lb(cs, ip)
    cs.assignToLoadBalancerRule(id=rule["id"], virtualmachineids=a["id"])
    cs.disassociateIpAddress(id=ip["id"])
    assert cs.listLoadBalancerRules() == {}
    assert cs.listFirewallRules() == {}


# ---- lists -----------------------------------------------------------------------------------------
def test_list_filters_name_exactly_keyword_by_substring_and_tags(cs: CloudStack) -> None:
    """searchForLoadBalancers: name is an EQ condition, keyword a LIKE on name or description."""
    _, _, ip = _setup(cs, vms=0)
    web = _lb(cs, ip, 80, name="demo-web-80")
    tls = _lb(cs, ip, 443, name="demo-web-443", description="tls pool")
    listed = lambda **kw: sorted(r["name"] for r in cs.listLoadBalancerRules(**kw).get("loadbalancerrule", []))  # noqa: E731
    assert listed(name="demo-web") == []
    assert listed(name="demo-web-80") == ["demo-web-80"]
    assert listed(keyword="demo-web") == ["demo-web-443", "demo-web-80"]
    assert listed(keyword="TLS") == ["demo-web-443"]
    assert listed(publicipid=ip["id"]) == ["demo-web-443", "demo-web-80"]
    cs.createTags(resourceids=web["id"], resourcetype="LoadBalancer", tags=[{"key": "csdeploy:env", "value": "demo"}])
    assert listed(tags=[{"key": "csdeploy:env", "value": "demo"}]) == ["demo-web-80"]
    assert tls["id"] != web["id"]
