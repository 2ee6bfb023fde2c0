"""Affinity groups and root disk sizes, as CloudStack has them (memory backend, `cs` client).

Checked against apache/cloudstack: CreateAffinityGroupCmd (BaseAsyncCreateCmd),
DeleteAffinityGroupCmd, ListAffinityGroupsCmd, ListAffinityGroupTypesCmd,
AffinityGroupServiceImpl (type check, name in use, delete drops the VM mappings),
AffinityGroupResponse, HostAntiAffinityProcessor, ResourceTag.ResourceObjectType (no
AffinityGroup: groups take no tags) and UserVmManagerImpl (rootdisksize no smaller than the
template).
"""

from __future__ import annotations

from cs import CloudStack

from .cloudkit import catalog, deploy, http_error, job_error, network

GB = 1024**3


def _group(cs: CloudStack, name: str = "demo-web") -> dict:
    return cs.createAffinityGroup(name=name, type="host anti-affinity", description="d")["affinitygroup"]


def test_types_are_the_host_affinity_processors(cs: CloudStack) -> None:
    types = {t["type"] for t in cs.listAffinityGroupTypes()["affinityGroupType"]}
    assert {"host anti-affinity", "host affinity"} <= types


def test_a_group_lists_the_vms_deployed_into_it_and_loses_them_when_they_go(cs: CloudStack) -> None:
    cat = catalog(cs)
    net = network(cs, cat)
    group = _group(cs)
    vms = [deploy(cs, cat, net, f"web-{i}", affinitygroupids=group["id"]) for i in (1, 2, 3)]
    deploy(cs, cat, net, "other")
    [listed] = cs.listAffinityGroups(name="demo-web")["affinitygroup"]
    assert (listed["type"], sorted(listed["virtualmachineIds"])) == ("host anti-affinity",
                                                                     sorted(v["id"] for v in vms))
    assert [g["name"] for g in vms[0]["affinitygroup"]] == ["demo-web"]
    assert [g["id"] for g in cs.listAffinityGroups(virtualmachineid=vms[1]["id"])["affinitygroup"]] == [group["id"]]
    cs.destroyVirtualMachine(id=vms[0]["id"], expunge=True)
    [listed] = cs.listAffinityGroups(id=group["id"])["affinitygroup"]
    assert sorted(listed["virtualmachineIds"]) == sorted(v["id"] for v in vms[1:])


def test_deleting_a_group_keeps_its_vms(cs: CloudStack) -> None:
    cat = catalog(cs)
    group = _group(cs)
    vm = deploy(cs, cat, network(cs, cat), "web-1", affinitygroupnames="demo-web")
    cs.deleteAffinityGroup(id=group["id"])
    assert cs.listAffinityGroups().get("affinitygroup") is None
    [left] = cs.listVirtualMachines(id=vm["id"])["virtualmachine"]
    assert left["state"] == "Running" and not left.get("affinitygroup")


def test_bad_groups_are_refused_before_anything_is_made(cs: CloudStack) -> None:
    cat = catalog(cs)
    net = network(cs, cat)
    assert "invalid affinity group type: near" in http_error(431, cs.createAffinityGroup, name="x", type="near")
    _group(cs)
    assert "already exists" in http_error(431, cs.createAffinityGroup, name="demo-web", type="host affinity")
    assert "Unable to find affinity group by name nope" in http_error(
        431, cs.deployVirtualMachine, zoneid=cat.zone, serviceofferingid=cat.offerings["micro"],
        templateid=cat.template, networkids=net["id"], name="w", affinitygroupnames="nope")
    # DeleteAffinityGroupCmd is a plain async command: its job fails
    assert "Unable to find affinity group nope" in job_error(431, cs.deleteAffinityGroup, name="nope")
    assert cs.listVirtualMachines().get("virtualmachine") is None
    assert "Invalid resource type AffinityGroup" in job_error(431, cs.createTags, resourceids="x",
                                                              resourcetype="AffinityGroup", **{
        "tags[0].key": "k", "tags[0].value": "v"})


def test_rootdisksize_sizes_the_root_volume_and_never_below_the_template(cs: CloudStack) -> None:
    cat = catalog(cs)
    net = network(cs, cat)
    vm = deploy(cs, cat, net, "web-1", rootdisksize=20)
    [root] = cs.listVolumes(type="ROOT", virtualmachineid=vm["id"])["volume"]
    assert root["size"] == 20 * GB
    template = cs.listTemplates(templatefilter="featured", id=cat.template)["template"][0]
    assert template["size"] > GB
    assert "smaller than template size" in http_error(
        431, cs.deployVirtualMachine, zoneid=cat.zone, serviceofferingid=cat.offerings["micro"],
        templateid=cat.template, networkids=net["id"], name="w2", rootdisksize=1)
