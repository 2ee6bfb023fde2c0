"""The simulator's answers have the shapes of real CloudStack answers.

apache-libcloud ships responses recorded from real CloudStack clouds
(``libcloud/test/compute/fixtures/cloudstack/<command>_<variant>.json``). For every command the
simulator implements that has such a recording, a live answer to the same command is produced
(creating whatever it needs first) and every key of the recorded object must be in ours with
the same JSON type: recursively for objects, against the first element for lists. The job
results behind the recorded ``jobid``s (``queryAsyncJobResult_<jobid>.json``) are compared
the same way, envelope (jobstatus, jobresultcode, jobresulttype, cmd, created...) included.

The recordings come from CloudStack 2.2 to 4.x; where modern CloudStack (and the reference)
legitimately differs, the difference is listed, with its reason, in ``ALLOWED`` below. Any
other missing key or type mismatch fails, naming command, fixture file, key path and types.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncssh
import libcloud
import pytest
import requests

from cloudstack_deploy.lab.simulator.registry import COMMANDS
from cloudstack_deploy.lab.simulator.server import ThreadedSimulator

try:  # tests/simulator is a package; work either way
    from .conftest import KEY, SECRET, make_config
    from .rawclient import RawResponse, call
except ImportError:
    from conftest import KEY, SECRET, make_config  # type: ignore[no-redef]
    from rawclient import RawResponse, call  # type: ignore[no-redef]

FIXTURES = Path(os.path.dirname(libcloud.__file__)) / "test" / "compute" / "fixtures" / "cloudstack"
DATE_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}$")

#: Known, justified differences between the old recordings and modern CloudStack:
#: (command, key path) -> reason. A path is dotted; ``[]`` stands for "an element of the list".
#: Keep this as small as possible: a field real CloudStack still returns is added to the
#: simulator instead of being listed here.
ALLOWED: dict[tuple[str, str], str] = {
    # CloudStack < 4.0 serialised SuccessResponse by hand as the string "true"; since 4.x it
    # goes through Gson and is a JSON boolean (the reference: "success":true).
    ("deleteSSHKeyPair", "success"): "string 'true' before 4.x, JSON boolean since",
    ("deleteVolume", "success"): "string 'true' before 4.x, JSON boolean since",
    # FirewallResponse.startPort/endPort are Integer in 4.x; the recordings (3.x) show strings.
    ("listFirewallRules", "firewallrule[].startport"): "Integer in FirewallResponse since 4.x",
    ("listFirewallRules", "firewallrule[].endport"): "Integer in FirewallResponse since 4.x",
    ("listEgressFirewallRules", "firewallrule[].startport"): "Integer in FirewallResponse since 4.x",
    ("listEgressFirewallRules", "firewallrule[].endport"): "Integer in FirewallResponse since 4.x",
    ("createFirewallRule", "jobresult.firewallrule.startport"): "Integer in FirewallResponse since 4.x",
    ("createFirewallRule", "jobresult.firewallrule.endport"): "Integer in FirewallResponse since 4.x",
    # CreateTagsCmd/DeleteTagsCmd are not create commands: CloudStack answers {"jobid"} only.
    # libcloud copied these two recordings from createVolume_default.json (same id).
    ("createTags", "id"): "recording copied from createVolume; tag commands reply with jobid only",
    ("deleteTags", "id"): "recording copied from createVolume; tag commands reply with jobid only",
    # CloudStack 2.2 networks; NetworkResponse lost these in 3.0 (isdefault is still declared
    # but createNetworkResponse no longer sets it, so it is null and omitted).
    ("listNetworks", "network[].isshared"): "2.2 field, replaced by type/acltype in 3.0",
    ("listNetworks", "network[].securitygroupenabled"): "2.2 field, a zone property since 3.0",
    ("listNetworks", "network[].startip"): "2.2 Direct network IP range, not in NetworkResponse since 3.0",
    ("listNetworks", "network[].endip"): "2.2 Direct network IP range, not in NetworkResponse since 3.0",
    ("listNetworks", "network[].isdefault"): "2.2 'default network'; never set by 4.x, so omitted",
    # Configuration the recorded clouds had and the lab's catalog does not (null -> omitted):
    ("createNetwork", "network.projectid"): "network of a project; the lab has no projects",
    ("createNetwork", "network.vpcid"): "VPC tier; the lab's networks are isolated networks",
    ("deployVirtualMachine", "jobresult.virtualmachine.projectid"): "VM of a project; no projects",
    ("deployVirtualMachine", "jobresult.virtualmachine.project"): "VM of a project; no projects",
    ("deployVirtualMachine", "jobresult.virtualmachine.password"): "only for password-enabled "
        "templates; the lab's templates take SSH keys (passwordenabled false)",
    ("deployVirtualMachine", "jobresult.virtualmachine.securitygroup"): "Basic zone with security "
        "groups; the lab is an Advanced zone, so the list is empty",
    ("listServiceOfferings", "serviceoffering[].domainid"): "offering restricted to a domain; the lab's are public",
    ("listServiceOfferings", "serviceoffering[].domain"): "offering restricted to a domain; the lab's are public",
    ("listServiceOfferings", "serviceoffering[].networkrate"): "set only when the offering has a rate",
    ("listServiceOfferings", "serviceoffering[].tags"): "storage tags; the lab's offerings have none",
    # 4.17 allowed several key pairs per VM: UserVmResponse's "keypair" became "keypairs".
    ("deployVirtualMachine", "jobresult.virtualmachine.keypair"): "renamed keypairs in 4.17",
}

#: Job recordings that libcloud borrowed from another command's test (not that command's result).
BORROWED_JOBS: dict[tuple[str, str], str] = {
    ("createEgressFirewallRule_default.json", "queryAsyncJobResult_1149341.json"):
        "createFirewallRule's job (an ingress rule, with ipaddressid); egress rules have none",
}


def _is_id_key(key: str) -> bool:
    """Id fields: old recordings show integer ids where modern CloudStack has UUID strings."""
    return key == "id" or key.endswith("id") or key == "related"


def _is_uuid(value: Any) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return isinstance(value, str)


def _jtype(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def compare(recorded: Any, live: Any, command: str, path: str = "",
            used: set[tuple[str, str]] | None = None) -> list[str]:
    """Every key of ``recorded`` must be in ``live`` with the same JSON type (problems listed).

    ``used`` collects the ``ALLOWED`` entries that excused a difference.
    """
    used = set() if used is None else used

    def allowed(at: str) -> bool:
        if (command, at) in ALLOWED:
            used.add((command, at))
            return True
        return False

    problems: list[str] = []
    rtype, ltype = _jtype(recorded), _jtype(live)
    key = path.rsplit(".", 1)[-1].removesuffix("[]")
    if rtype != ltype:
        if rtype == "number" and ltype == "string" and _is_id_key(key) and _is_uuid(live):
            return problems  # integer id of CloudStack 2.x/3.x, UUID string today
        if allowed(path):
            return problems
        return [f"{path or '<top>'}: recorded {rtype} ({recorded!r:.40}), simulator {ltype} ({live!r:.40})"]
    if rtype == "string" and DATE_RE.match(recorded) and not DATE_RE.match(live):
        problems.append(f"{path}: recorded a CloudStack date ({recorded}), simulator {live!r}")
    if rtype == "object":
        for k, v in recorded.items():
            sub = f"{path}.{k}" if path else k
            if k in live:
                problems += compare(v, live[k], command, sub, used)
            elif not allowed(sub):
                problems.append(f"{sub}: missing (recorded {_jtype(v)} {v!r:.40})")
    elif rtype == "array" and recorded:
        if live:
            problems += compare(recorded[0], live[0], command, f"{path}[]", used)
        elif not allowed(path):
            problems.append(f"{path}: simulator list is empty, recorded one has elements")
    return problems


def test_compare_finds_what_it_must() -> None:
    """The checker itself: missing keys, type changes, nested lists; old integer ids pass."""
    live = {"id": str(uuid.uuid4()), "n": 1, "nic": [{"ip": "10.0.0.1"}], "created": "2026-01-01T00:00:00+0000"}
    assert compare({"id": 7, "n": 2, "nic": [{"ip": "x"}], "created": "2011-06-23T05:06:42+0000"},
                   live, "x") == []
    assert compare({"gone": True}, live, "x") == ["gone: missing (recorded boolean True)"]
    assert compare({"n": "1"}, live, "x") == ["n: recorded string ('1'), simulator number (1)"]
    assert compare({"nic": [{"mac": "m"}]}, live, "x") == ["nic[].mac: missing (recorded string 'm')"]
    assert compare({"nic": [{"ip": "x"}]}, {"nic": []}, "x") == [
        "nic: simulator list is empty, recorded one has elements"]
    assert compare({"n": True}, {"n": 1}, "x") == ["n: recorded boolean (True), simulator number (1)"]
    assert compare({"id": 7}, {"id": "not-a-uuid"}, "x")  # an integer id needs a UUID string
    assert compare({"created": "2011-06-23T05:06:42+0000"}, {"created": "2026-01-01 00:00"}, "x")
    used: set[tuple[str, str]] = set()
    assert compare({"success": "true"}, {"success": True}, "deleteVolume", used=used) == []
    assert used == {("deleteVolume", "success")}


# ---- live answers ---------------------------------------------------------------------------

class Recorder:
    """Sends signed requests and keeps the answers under names ``<command>[_<variant>]``."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.answers: dict[str, Any] = {}

    def raw(self, command: str, **params: Any) -> RawResponse:
        return call(self.endpoint, command, KEY, SECRET, **params)

    def ok(self, command: str, record: str | None = None, **params: Any) -> Any:
        resp = self.raw(command, **params)
        assert resp.status == 200, (command, resp.text)
        body = resp.json
        if record:
            self.answers[record] = body
        return resp.body(command)

    def job(self, command: str, record: str | None = None, **params: Any) -> dict[str, Any]:
        """Submit an async command, wait for its job; keep submit reply and job result."""
        submitted = self.ok(command, record, **params)
        jobid = submitted["jobid"]
        deadline = time.monotonic() + 10
        while True:
            answer = self.raw("queryAsyncJobResult", jobid=jobid)
            assert answer.status == 200, answer.text
            result = answer.body("queryAsyncJobResult")
            if result["jobstatus"] != 0:
                break
            assert time.monotonic() < deadline, f"job of {command} still pending"
            time.sleep(0.01)
        if record:
            self.answers[f"job:{record}"] = answer.json
        return {**submitted, **result}

    def error(self, command: str, record: str, **params: Any) -> None:
        resp = self.raw(command, **params)
        assert resp.status >= 400, resp.text
        self.answers[record] = resp.json


def _openssh_key() -> str:
    return asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()


def build_cloud(rec: Recorder, admin: str) -> None:
    """Create one of everything, recording the answers the fixtures are compared with."""
    rec.ok("listApis", "listApis")
    rec.ok("listApis", "listApis_one", name="DEPLOYVIRTUALMACHINE")
    rec.ok("listCapabilities", "listCapabilities")
    zone = rec.ok("listZones", "listZones")["zone"][0]
    offerings = rec.ok("listServiceOfferings", "listServiceOfferings")["serviceoffering"]
    small = next(o for o in offerings if o["name"] == "small")
    large = next(o for o in offerings if o["name"] == "large")
    template = rec.ok("listTemplates", "listTemplates", templatefilter="featured")["template"][0]
    rec.ok("listTemplates", "listTemplates_notemplates", templatefilter="featured", name="no-such-template")
    netoff = rec.ok("listNetworkOfferings", "listNetworkOfferings", guestiptype="Isolated")["networkoffering"][0]
    disks = rec.ok("listDiskOfferings", "listDiskOfferings")["diskoffering"]
    fixed = next(d for d in disks if not d["iscustomized"])
    custom = next(d for d in disks if d["iscustomized"])
    rec.ok("listDiskOfferings", "listDiskOfferings_withcustomdisksize", id=custom["id"])
    rec.ok("listResourceLimits", "listResourceLimits")

    net = rec.ok("createNetwork", "createNetwork", name="web", displaytext="web",
                 networkofferingid=netoff["id"], zoneid=zone["id"])["network"]
    spare = rec.ok("createNetwork", name="spare", networkofferingid=netoff["id"], zoneid=zone["id"])["network"]

    rec.ok("listSSHKeyPairs", "listSSHKeyPairs_no_keys")
    rec.ok("registerSSHKeyPair", "registerSSHKeyPair", name="kp", publickey=_openssh_key(), method="POST")
    rec.error("registerSSHKeyPair", "registerSSHKeyPair_error", name="bad", publickey="not a key")
    rec.ok("createSSHKeyPair", "createSSHKeyPair", name="made")
    rec.ok("listSSHKeyPairs", "listSSHKeyPairs")
    rec.ok("listSSHKeyPairs", "listSSHKeyPairs_get_one_doesnt_exist", name="no-such-key")
    rec.ok("deleteSSHKeyPair", "deleteSSHKeyPair", name="made")

    base = dict(zoneid=zone["id"], serviceofferingid=small["id"], templateid=template["id"],
                networkids=net["id"])
    rec.error("deployVirtualMachine", "deployVirtualMachine_deployfail", **{
        **base, "serviceofferingid": str(uuid.uuid4())})
    vm = rec.job("deployVirtualMachine", "deployVirtualMachine", name="web-1", keypair="kp", **base)
    rec.job("deployVirtualMachine", "deployVirtualMachine_stoppedvm", name="stopped-1", startvm="false", **base)
    rec.job("deployVirtualMachine", "deployVirtualMachine_rootdisksize", name="big-1", rootdisksize=50, **base)
    requests.post(admin + "/faults", json={"faults": ["deployVirtualMachine:job:530:1"]},
                  headers={"X-Lab-Key": KEY}, timeout=10).raise_for_status()
    failed = rec.job("deployVirtualMachine", "deployVirtualMachine_deployfail2", name="doomed-1", **base)
    assert failed["jobstatus"] == 2 and failed["jobresultcode"] == 530
    vm_id = vm["id"]
    rec.job("createTags", "createTags", resourceids=vm_id, resourcetype="UserVm",
            **{"tags[0].key": "testkey", "tags[0].value": "testvalue"})
    rec.ok("listVirtualMachines", "listVirtualMachines", id=vm_id)
    group = rec.job("createAffinityGroup", "createAffinityGroup", name="spread",
                    type="host anti-affinity")["jobresult"]["affinitygroup"]
    rec.ok("listAffinityGroups", "listAffinityGroups", id=group["id"])
    rec.ok("listAffinityGroupTypes", "listAffinityGroupTypes")
    rec.job("deleteAffinityGroup", "deleteAffinityGroup", id=group["id"])
    rec.ok("listNetworks", "listNetworks", id=net["id"])

    # public IPs: one for static NAT (+ firewall, IP forwarding), one for port forwarding
    nat = rec.job("associateIpAddress", "associateIpAddress", networkid=net["id"])["jobresult"]["ipaddress"]
    rec.ok("enableStaticNat", ipaddressid=nat["id"], virtualmachineid=vm_id)
    rec.ok("listPublicIpAddresses", "listPublicIpAddresses", isstaticnat="true")
    fw = rec.job("createFirewallRule", "createFirewallRule", ipaddressid=nat["id"], protocol="tcp",
                 startport=33, endport=34, cidrlist="192.168.0.0/16")["jobresult"]["firewallrule"]
    icmp = rec.job("createFirewallRule", "createFirewallRule_firewallicmp", ipaddressid=nat["id"],
                   protocol="icmp", icmptype=8, icmpcode=0, cidrlist="192.168.0.0/16")
    rec.ok("listFirewallRules", "listFirewallRules", id=fw["id"])
    rec.ok("listFirewallRules", "listFirewallRules_firewallicmp", id=icmp["id"])
    rec.job("createIpForwardingRule", ipaddressid=nat["id"], protocol="tcp", startport=33, endport=34,
            openfirewall="false")
    rec.ok("listIpForwardingRules", "listIpForwardingRules")
    rec.job("deleteFirewallRule", "deleteFirewallRule", id=fw["id"])

    pf_ip = rec.job("associateIpAddress", networkid=net["id"])["jobresult"]["ipaddress"]
    pf = rec.job("createPortForwardingRule", "createPortForwardingRule", ipaddressid=pf_ip["id"],
                 privateport=33, privateendport=34, publicport=33, publicendport=34, protocol="tcp",
                 virtualmachineid=vm_id)
    rec.ok("listPortForwardingRules", "listPortForwardingRules", id=pf["id"])
    rec.job("deletePortForwardingRule", "deletePortForwardingRule", id=pf["id"])
    rec.job("disassociateIpAddress", "disassociateIpAddress", id=pf_ip["id"])

    egress = rec.job("createEgressFirewallRule", "createEgressFirewallRule", networkid=net["id"],
                     protocol="tcp", startport=80, endport=80, cidrlist=net["cidr"])
    rec.ok("listEgressFirewallRules", "listEgressFirewallRules", id=egress["id"])
    rec.job("deleteEgressFirewallRule", "deleteEgressFirewallRule", id=egress["id"])

    # volumes and snapshots
    vol = rec.job("createVolume", "createVolume", name="vol-0", diskofferingid=fixed["id"],
                  zoneid=zone["id"])["jobresult"]["volume"]
    rec.job("createVolume", "createVolume_withcustomdisksize", name="vol-1", diskofferingid=custom["id"],
            size=10, zoneid=zone["id"])
    rec.job("attachVolume", "attachVolume", id=vol["id"], virtualmachineid=vm_id)
    rec.ok("listVolumes", "listVolumes", virtualmachineid=vm_id, type="ROOT")
    rec.job("detachVolume", "detachVolume", id=vol["id"])
    rec.ok("deleteVolume", "deleteVolume", id=vol["id"])
    root = rec.ok("listVolumes", virtualmachineid=vm_id, type="ROOT")["volume"][0]
    snap = rec.job("createSnapshot", "createSnapshot", volumeid=root["id"])
    rec.ok("listSnapshots", "listSnapshots", id=snap["id"])
    rec.job("deleteSnapshot", "deleteSnapshot", id=snap["id"])

    # the VM's life
    rec.job("rebootVirtualMachine", "rebootVirtualMachine", id=vm_id)
    rec.job("stopVirtualMachine", "stopVirtualMachine", id=vm_id)
    rec.job("scaleVirtualMachine", "scaleVirtualMachine", id=vm_id, serviceofferingid=large["id"])
    rec.job("startVirtualMachine", "startVirtualMachine", id=vm_id)
    rec.job("deleteTags", "deleteTags", resourceids=vm_id, resourcetype="UserVm", **{"tags[0].key": "testkey"})
    rec.job("destroyVirtualMachine", "destroyVirtualMachine", id=vm_id)
    rec.job("deleteNetwork", "deleteNetwork", id=spare["id"])


@pytest.fixture(scope="module")
def answers() -> Iterator[dict[str, Any]]:
    with ThreadedSimulator(make_config(ssh=False)) as sim:
        rec = Recorder(sim.endpoint)
        build_cloud(rec, sim.endpoint.replace("/client/api", "/admin"))
        yield rec.answers


# ---- which recordings to compare ------------------------------------------------------------

def _split(path: Path) -> tuple[str, str]:
    command, _, variant = path.stem.partition("_")
    return command, variant


def _recordings() -> list[Path]:
    return sorted(p for p in FIXTURES.glob("*.json")
                  if _split(p)[0].lower() in COMMANDS and _split(p)[0] != "queryAsyncJobResult")


def _job_recordings() -> list[tuple[Path, Path]]:
    """(submit recording, job result recording) for every recorded jobid of ours."""
    pairs = []
    for path in _recordings():
        body = next(iter(json.loads(path.read_text()).values()))
        job = FIXTURES / f"queryAsyncJobResult_{body.get('jobid')}.json"
        if "jobid" in body and job.exists() and (path.name, job.name) not in BORROWED_JOBS:
            pairs.append((path, job))
    return pairs


def _live(answers: dict[str, Any], path: Path, prefix: str = "") -> Any:
    command, variant = _split(path)
    for name in (f"{prefix}{command}_{variant}", f"{prefix}{command}"):
        if name in answers:
            return answers[name]
    pytest.fail(f"{path.name}: the scenario produced no live {prefix}{command} answer to compare with")


def test_every_allowance_is_still_needed(answers: dict[str, Any]) -> None:
    """An ALLOWED entry that excuses nothing any more must go (the list stays minimal)."""
    used: set[tuple[str, str]] = set()
    for path in _recordings():
        command, _ = _split(path)
        key = f"{command.lower()}response"
        compare(json.loads(path.read_text())[key], _live(answers, path)[key], command, used=used)
    for submit, job in _job_recordings():
        recorded = json.loads(job.read_text())["queryasyncjobresultresponse"]
        live = _live(answers, submit, prefix="job:")["queryasyncjobresultresponse"]
        compare(recorded, live, _split(submit)[0], used=used)
    assert set(ALLOWED) - used == set()


def test_the_recordings_are_there() -> None:
    """Guards the parametrisation below against an empty fixtures directory."""
    assert len(_recordings()) > 60
    assert len(_job_recordings()) > 25


@pytest.mark.parametrize("path", _recordings(), ids=lambda p: p.stem)
def test_response_has_the_recorded_shape(answers: dict[str, Any], path: Path) -> None:
    command, _ = _split(path)
    recorded = json.loads(path.read_text())
    live = _live(answers, path)
    key = f"{command.lower()}response"
    assert list(live) == [key], f"{command} ({path.name}): envelope keys {list(live)}"
    problems = compare(recorded[key], live[key], command)
    assert not problems, f"{command} vs {path.name}:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("submit,job", _job_recordings(), ids=lambda p: p.stem)
def test_job_result_has_the_recorded_shape(answers: dict[str, Any], submit: Path, job: Path) -> None:
    command, _ = _split(submit)
    recorded = json.loads(job.read_text())["queryasyncjobresultresponse"]
    live = _live(answers, submit, prefix="job:")
    assert list(live) == ["queryasyncjobresultresponse"]
    problems = compare(recorded, live["queryasyncjobresultresponse"], command)
    assert not problems, f"{command} job vs {job.name} (jobid of {submit.name}):\n  " + "\n  ".join(problems)


# ---- listApis / listCapabilities ------------------------------------------------------------------

#: The reference's async commands (cloudstack-api.md, "Async jobs"), plus the other async
#: commands the simulator serves (their CloudStack command classes are BaseAsyncCmd).
ASYNC = {
    "deployVirtualMachine", "startVirtualMachine", "stopVirtualMachine", "rebootVirtualMachine",
    "destroyVirtualMachine", "expungeVirtualMachine", "scaleVirtualMachine", "deleteNetwork",
    "associateIpAddress", "disassociateIpAddress", "disableStaticNat", "createFirewallRule",
    "deleteFirewallRule", "createEgressFirewallRule", "deleteEgressFirewallRule",
    "createPortForwardingRule", "deletePortForwardingRule", "createTags", "deleteTags", "createVolume",
    "attachVolume", "detachVolume", "resizeVolume", "createLoadBalancerRule", "deleteLoadBalancerRule",
    "assignToLoadBalancerRule",
    # not in the reference's list
    "removeFromLoadBalancerRule", "updateLoadBalancerRule", "createIpForwardingRule", "deleteIpForwardingRule",
    "createSnapshot",
    "deleteSnapshot", "updateNetwork", "resetSSHKeyForVirtualMachine", "updateSnapshotPolicy",
    "createAffinityGroup", "deleteAffinityGroup",
}
#: The reference's sync commands (every list* too), plus the other sync ones served.
SYNC = {
    "createNetwork", "enableStaticNat", "registerSSHKeyPair", "createSSHKeyPair", "deleteSSHKeyPair",
    "deleteVolume", "queryAsyncJobResult", "listCapabilities", "listApis",
    # not in the reference's list
    "recoverVirtualMachine", "changeServiceForVirtualMachine", "updateVirtualMachine",
    "getVirtualMachineUserData", "createSnapshotPolicy", "deleteSnapshotPolicies", "updateResourceLimit",
}
#: Required parameters, as the reference marks them in bold.
REQUIRED = {
    "listTemplates": {"templatefilter"},
    "createNetwork": {"name", "networkofferingid", "zoneid"},
    "deleteNetwork": {"id"},
    "deployVirtualMachine": {"zoneid", "serviceofferingid", "templateid"},
    "destroyVirtualMachine": {"id"},
    "scaleVirtualMachine": {"id", "serviceofferingid"},
    "disassociateIpAddress": {"id"},
    "enableStaticNat": {"ipaddressid", "virtualmachineid"},
    "disableStaticNat": {"ipaddressid"},
    "createFirewallRule": {"ipaddressid", "protocol"},
    "createPortForwardingRule": {"ipaddressid", "privateport", "publicport", "protocol", "virtualmachineid"},
    "createEgressFirewallRule": {"networkid", "protocol"},
    "createLoadBalancerRule": {"algorithm", "name", "privateport", "publicport"},
    "assignToLoadBalancerRule": {"id"},
    "createTags": {"resourceids", "resourcetype", "tags"},
    "registerSSHKeyPair": {"name", "publickey"},
    "createSSHKeyPair": {"name"},
    "deleteSSHKeyPair": {"name"},
    "attachVolume": {"id", "virtualmachineid"},
    "deleteVolume": {"id"},
    "resizeVolume": {"id"},
    "createSnapshotPolicy": {"volumeid", "intervaltype", "schedule", "maxsnaps", "timezone"},
    "queryAsyncJobResult": {"jobid"},
}
PARAM_TYPES = {"string", "uuid", "boolean", "integer", "long", "short", "map", "list", "date"}


def test_async_and_sync_lists_cover_every_command() -> None:
    assert not ASYNC & SYNC
    names = {c.name for c in COMMANDS.values()}
    unclassified = {n for n in names if n not in ASYNC | SYNC and not n.startswith("list")}
    assert not unclassified, f"classify these as async or sync: {sorted(unclassified)}"
    assert (ASYNC | SYNC) <= names


def test_list_apis_lists_every_command_with_its_parameters(answers: dict[str, Any]) -> None:
    body = answers["listApis"]["listapisresponse"]
    apis = {a["name"]: a for a in body["api"]}
    assert body["count"] == len(body["api"]) == len(apis) == len(COMMANDS)
    assert set(apis) == {c.name for c in COMMANDS.values()}
    for name, api in apis.items():
        assert api["isasync"] is (name in ASYNC), f"{name}: isasync={api['isasync']}"
        assert isinstance(api["description"], str) and api["description"], name
        for p in api["params"]:
            assert isinstance(p["name"], str) and p["name"] == p["name"].lower(), (name, p)
            assert p["type"] in PARAM_TYPES, (name, p)
            assert isinstance(p["required"], bool), (name, p)
        assert len({p["name"] for p in api["params"]}) == len(api["params"]), f"{name}: duplicate params"
    for name, required in REQUIRED.items():
        assert {p["name"] for p in apis[name]["params"] if p["required"]} == required, name
    listing = {p["name"] for p in apis["listVirtualMachines"]["params"]}
    assert {"page", "pagesize", "keyword", "listall", "tags", "id", "name", "state", "networkid"} <= listing
    [one] = answers["listApis_one"]["listapisresponse"]["api"]
    assert (one["name"], one["isasync"]) == ("deployVirtualMachine", True)


def test_list_capabilities_is_one_capability_object(answers: dict[str, Any]) -> None:
    body = answers["listCapabilities"]
    assert list(body) == ["listcapabilitiesresponse"] and list(body["listcapabilitiesresponse"]) == ["capability"]
    capability = body["listcapabilitiesresponse"]["capability"]
    assert isinstance(capability, dict)
    assert re.fullmatch(r"4\.\d+\.\d+(\.\d+)?", capability["cloudstackversion"])
    assert capability["securitygroupsenabled"] is False  # an Advanced zone without security groups
