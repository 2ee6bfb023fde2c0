"""The API's general rules, as CloudStack applies them: envelopes, paging, parameters, jobs.

Raw signed requests (rawclient) where the exact body matters; the `cs` client elsewhere.
"""

from __future__ import annotations

import time
import uuid

import pytest
from cs import CloudStack

from .cloudkit import catalog, deploy, http_error, network, public_key, vm_params, wait_job
from .conftest import KEY, SECRET
from .rawclient import call


def raw(simulator, command: str, **params):
    return call(simulator.endpoint, command, KEY, SECRET, **params)


# ---- envelopes and paging ------------------------------------------------------------------
def test_empty_list_is_an_empty_object_without_count(simulator) -> None:
    r = raw(simulator, "listVirtualMachines")
    assert r.status == 200
    assert r.content_type.startswith("application/json")
    assert r.json == {"listvirtualmachinesresponse": {}}


def test_pages_are_one_based_disjoint_and_cover_everything(simulator, cs: CloudStack) -> None:
    names = {f"key-{i}" for i in range(7)}
    for name in sorted(names):
        cs.registerSSHKeyPair(name=name, publickey=public_key(name))
    seen: list[str] = []
    for page, size in ((1, 3), (2, 3), (3, 1)):
        body = raw(simulator, "listSSHKeyPairs", page=page, pagesize=3).body("listSSHKeyPairs")
        assert body["count"] == 7  # the total, not the page's length
        assert len(body["sshkeypair"]) == size
        seen += [k["name"] for k in body["sshkeypair"]]
    assert len(seen) == len(set(seen)) == 7
    assert set(seen) == names
    # A page past the end carries only the total.
    assert raw(simulator, "listSSHKeyPairs", page=4, pagesize=3).body("listSSHKeyPairs") == {"count": 7}
    # Unpaged, everything in one answer.
    body = raw(simulator, "listSSHKeyPairs").body("listSSHKeyPairs")
    assert body["count"] == 7 and {k["name"] for k in body["sshkeypair"]} == names


@pytest.mark.parametrize(("params", "text"), [
    ({"page": 1}, '"pagesize" parameter is required when "page" is specified'),
    ({"pagesize": 10}, '"page" parameter is required when "pagesize" is specified'),
    ({"page": 1, "pagesize": 501}, "Page size can't exceed max allowed page size value: 500"),
])
def test_bad_paging_is_431(simulator, params: dict, text: str) -> None:
    r = raw(simulator, "listZones", **params)
    assert r.status == 431
    body = r.body("listZones")
    assert body["errorcode"] == 431
    assert body["errortext"] == text


def test_pagesize_500_is_allowed_and_minus_one_means_unlimited(simulator) -> None:
    assert raw(simulator, "listZones", page=1, pagesize=500).body("listZones")["count"] == 1
    # pagesize=-1 (unlimited) is the one pagesize CloudStack accepts without page.
    assert raw(simulator, "listZones", pagesize=-1).body("listZones")["count"] == 1


def test_an_unpaged_list_returns_one_default_page_of_500(simulator) -> None:
    """Without page/pagesize CloudStack applies default.page.size (500); count stays the total."""
    def add_tags() -> None:
        for i in range(501):
            simulator.sim.add("tags", {"key": f"k{i}", "value": "v", "resourcetype": "UserVm",
                                       "resourceid": str(uuid.uuid4())})

    simulator.call(add_tags)
    body = raw(simulator, "listTags").body("listTags")
    assert body["count"] == 501
    assert len(body["tag"]) == 500
    assert len(raw(simulator, "listTags", pagesize=-1).body("listTags")["tag"]) == 501
    last = raw(simulator, "listTags", page=2, pagesize=500).body("listTags")
    assert len(last["tag"]) == 1


# ---- parameters ---------------------------------------------------------------------------
def test_missing_parameter_is_431_naming_it(simulator, cs: CloudStack) -> None:
    cat = catalog(cs)
    r = raw(simulator, "deployVirtualMachine", serviceofferingid=cat.offerings["micro"],
            templateid=cat.template)
    assert r.status == 431
    body = r.body("deployVirtualMachine")
    assert body["errortext"] == ("Unable to execute API command deployvirtualmachine due to missing "
                                 "parameter zoneid")
    assert body["cserrorcode"] == 9999


def test_parameter_names_are_case_insensitive(simulator, cs: CloudStack) -> None:
    cat = catalog(cs)
    r = raw(simulator, "listTemplates", templateFilter="featured", zoneId=cat.zone)
    assert r.status == 200 and r.body("listTemplates")["count"] >= 1


def test_unknown_id_on_a_list_call_is_431_not_an_empty_list(simulator, cs: CloudStack) -> None:
    missing = str(uuid.uuid4())
    text = http_error(431, cs.listVirtualMachines, id=missing)
    assert f"Invalid parameter id value={missing}" in text
    assert "entity does not exist" in text
    assert "listvirtualmachines" in text
    http_error(431, cs.listNetworks, id=missing)
    http_error(431, cs.listVolumes, virtualmachineid=missing)


def test_known_id_that_matches_no_filter_lists_empty(cs: CloudStack) -> None:
    cat = catalog(cs)
    vm = deploy(cs, cat, network(cs, cat), "web-1")
    assert cs.listVirtualMachines(id=vm["id"], state="Stopped") == {}
    assert cs.listVirtualMachines(id=vm["id"])["count"] == 1


@pytest.mark.parametrize("name", ["tags[0]key", "tags[a].key", "tags[0][1].key", "tags]0[.key"])
def test_malformed_map_parameter_is_430(simulator, name: str) -> None:
    r = raw(simulator, "listVirtualMachines", **{name: "role"})
    assert r.status == 430
    body = r.body("listVirtualMachines")
    assert body["errorcode"] == 430
    assert body["errortext"] == (f"Unable to decode parameter {name}; if specifying an object array, please "
                                 "use parameter[index].field=XXX, e.g. userGroupList[0].group=httpGroup")


def test_a_well_formed_map_parameter_is_accepted(simulator) -> None:
    r = raw(simulator, "listVirtualMachines", **{"tags[0].key": "role", "tags[0].value": "web"})
    assert r.status == 200 and r.json == {"listvirtualmachinesresponse": {}}


def test_only_a_case_insensitive_true_is_true(cs: CloudStack) -> None:
    cat = catalog(cs)
    net = network(cs, cat)
    expected = {"true": "Running", "TRUE": "Running", "True": "Running",
                "false": "Stopped", "False": "Stopped", "yes": "Stopped", "1": "Stopped"}
    for i, (value, state) in enumerate(expected.items()):
        vm = deploy(cs, cat, net, f"vm-{i}", startvm=value)
        assert vm["state"] == state, value
    assert deploy(cs, cat, net, "default-start")["state"] == "Running"  # absent means true


# ---- name / keyword / tags ----------------------------------------------------------------
def test_name_and_keyword_are_case_insensitive_substrings(cs: CloudStack) -> None:
    cat = catalog(cs)
    net = network(cs, cat)
    for name in ("web-1", "myweb", "db-1"):
        deploy(cs, cat, net, name)
    by_name = {v["name"] for v in cs.listVirtualMachines(name="WEB")["virtualmachine"]}
    assert by_name == {"web-1", "myweb"}
    by_keyword = {v["name"] for v in cs.listVirtualMachines(keyword="Web")["virtualmachine"]}
    assert by_keyword == {"web-1", "myweb"}
    assert {v["name"] for v in cs.listVirtualMachines(name="DB")["virtualmachine"]} == {"db-1"}
    assert cs.listVirtualMachines(name="nothing-like-this") == {}
    network(cs, cat, "backend-net")
    assert {n["name"] for n in cs.listNetworks(name="BACKEND")["network"]} == {"backend-net"}


def test_tag_filters_select_only_tagged_resources(cs: CloudStack) -> None:
    cat = catalog(cs)
    net_a, net_b = network(cs, cat, "net-a"), network(cs, cat, "net-b")
    vm_a, _ = deploy(cs, cat, net_a, "vm-a"), deploy(cs, cat, net_b, "vm-b")
    ip_a = cs.associateIpAddress(networkid=net_a["id"])["ipaddress"]
    cs.associateIpAddress(networkid=net_b["id"])
    vol_a = cs.createVolume(name="vol-a", diskofferingid=cat.disks["Small"], zoneid=cat.zone)["volume"]
    cs.createVolume(name="vol-b", diskofferingid=cat.disks["Small"], zoneid=cat.zone)
    tag = [{"key": "env", "value": "prod"}]
    for rtype, rid in (("UserVm", vm_a["id"]), ("Network", net_a["id"]),
                       ("PublicIpAddress", ip_a["id"]), ("Volume", vol_a["id"])):
        cs.createTags(resourcetype=rtype, resourceids=rid, tags=tag)

    cases = [(cs.listVirtualMachines, "virtualmachine", vm_a["id"]),
             (cs.listNetworks, "network", net_a["id"]),
             (cs.listPublicIpAddresses, "publicipaddress", ip_a["id"]),
             (cs.listVolumes, "volume", vol_a["id"])]
    for fn, key, wanted in cases:
        assert len(fn()[key]) >= 2, key  # there are untagged ones too
        tagged = fn(tags=tag)
        assert [r["id"] for r in tagged[key]] == [wanted], key
        assert {"key": "env", "value": "prod"}.items() <= tagged[key][0]["tags"][0].items()
        assert fn(tags=[{"key": "env", "value": "dev"}]) == {}, key


# ---- async jobs ---------------------------------------------------------------------------
@pytest.mark.simulator(vm_boot_seconds=0.5)
def test_deploy_job_goes_from_pending_to_done(cs_raw: CloudStack) -> None:
    cat = catalog(cs_raw)
    net = network(cs_raw, cat)
    reply = cs_raw.deployVirtualMachine(**vm_params(cat, net, "web-1"))
    assert set(reply) == {"id", "jobid"}
    # The VM is listable at once, Starting.
    assert cs_raw.listVirtualMachines(id=reply["id"])["virtualmachine"][0]["state"] == "Starting"
    pending = cs_raw.queryAsyncJobResult(jobid=reply["jobid"])
    assert pending["jobstatus"] == 0 and pending["jobresultcode"] == 0
    assert "jobresult" not in pending
    assert pending["jobinstanceid"] == reply["id"]
    jobs = cs_raw.listAsyncJobs()["asyncjobs"]
    assert reply["jobid"] in {j["jobid"] for j in jobs}

    done = wait_job(cs_raw, reply["jobid"])
    assert done["jobstatus"] == 1 and done["jobresultcode"] == 0
    assert done["jobresulttype"] == "object"
    assert done["jobresult"]["virtualmachine"]["id"] == reply["id"]
    assert done["jobresult"]["virtualmachine"]["state"] == "Running"
    assert "completed" in done
    assert cs_raw.listVirtualMachines(id=reply["id"])["virtualmachine"][0]["state"] == "Running"


def test_unknown_jobid_is_431(cs_raw: CloudStack) -> None:
    text = http_error(431, cs_raw.queryAsyncJobResult, jobid=str(uuid.uuid4()))
    assert "Invalid parameter jobid" in text


def test_async_parameter_errors_fail_the_request_not_a_job(cs_raw: CloudStack) -> None:
    """A refused create returns no job at all: nothing shows up in listAsyncJobs."""
    cat = catalog(cs_raw)
    net = network(cs_raw, cat)
    before = cs_raw.listAsyncJobs().get("count", 0)
    http_error(431, cs_raw.deployVirtualMachine, **vm_params(cat, net, "1-bad-name"))
    time.sleep(0.05)
    assert cs_raw.listAsyncJobs().get("count", 0) == before
    assert cs_raw.listVirtualMachines() == {}


@pytest.mark.simulator(job_seconds=30)  # still pending when listed, however slow the machine
def test_list_async_jobs_filters_by_startdate(cs_raw: CloudStack) -> None:
    cat = catalog(cs_raw)
    net = network(cs_raw, cat)
    reply = cs_raw.deployVirtualMachine(**vm_params(cat, net, "web-1"))
    created = cs_raw.queryAsyncJobResult(jobid=reply["jobid"])["created"]
    assert reply["jobid"] in {j["jobid"] for j in cs_raw.listAsyncJobs(startdate=created)["asyncjobs"]}
    later = cs_raw.listAsyncJobs(startdate="2999-01-01T00:00:00+0000")
    assert later == {}, "no job was created after the start date"
    assert "startdate" in http_error(431, cs_raw.listAsyncJobs, startdate="yesterday")
