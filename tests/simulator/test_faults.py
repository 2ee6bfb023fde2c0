"""Fault injection: failures on purpose, the way a real cloud fails (by config and at runtime)."""

from __future__ import annotations

import threading
import time

import pytest
import requests
from cs import CloudStack

from cloudstack_deploy.lab.simulator.faults import FaultSpecError, parse_fault
from cloudstack_deploy.lab.simulator.server import ThreadedSimulator
from tests.support.sim import cs_client, make_config, public_range

from .cloudkit import catalog, deploy, http_error, job_error, network, vm_params
from .conftest import KEY, SECRET
from .rawclient import call


# ---- specs --------------------------------------------------------------------------------
@pytest.mark.parametrize(("spec", "command", "kind", "code", "times"), [
    ("deployVirtualMachine:job:533:1", "deployvirtualmachine", "job", 533, 1),
    ("listZones:http:530:2", "listzones", "http", 530, 2),
    ("*:http:429:always", "*", "http", 429, None),
    ("listZones:slow:1.5:3", "listzones", "slow", 1.5, 3),
    ("listZones:DROP:0:1", "listzones", "drop", 0, 1),
])
def test_valid_specs(spec: str, command: str, kind: str, code: float, times: int | None) -> None:
    fault = parse_fault(spec)
    assert (fault.command, fault.kind, fault.code, fault.times) == (command, kind, code, times)


@pytest.mark.parametrize(("spec", "why"), [
    ("listZones:http:530", "expected COMMAND:KIND:CODE:TIMES"),
    ("listZones:boom:530:1", "KIND must be one of http, job, drop, slow"),
    ("listZones:http:abc:1", "CODE must be a number"),
    ("listZones:http:200:1", "CODE for http must be an HTTP/CloudStack error code"),
    ("listZones:job:99:1", "CODE for job must be"),
    ("listZones:slow:-1:1", "must be >= 0"),
    ("listZones:http:530:0", "TIMES must be at least 1"),
    ("listZones:http:530:often", "TIMES must be a count or 'always'"),
    (":http:530:1", "COMMAND is empty"),
])
def test_invalid_specs_say_what_is_wrong(spec: str, why: str) -> None:
    with pytest.raises(FaultSpecError) as info:
        parse_fault(spec)
    assert why in str(info.value)
    assert repr(spec) in str(info.value)  # the message names the spec it refuses


# ---- kinds --------------------------------------------------------------------------------
@pytest.mark.simulator(faults=[parse_fault("deployVirtualMachine:job:533:1")])
def test_job_fault_fails_the_first_deploy_and_leaves_the_vm_in_error(cs: CloudStack) -> None:
    cat = catalog(cs)
    net = network(cs, cat)
    text = job_error(533, cs.deployVirtualMachine, **vm_params(cat, net, "web-1"))
    assert "insufficient capacity" in text
    [failed] = cs.listVirtualMachines(name="web-1")["virtualmachine"]
    assert failed["state"] == "Error"
    assert deploy(cs, cat, net, "web-2")["state"] == "Running"  # used up: the next one works
    assert cs.listVirtualMachines(id=failed["id"])["virtualmachine"][0]["state"] == "Error"


@pytest.mark.simulator(faults=[parse_fault("deployVirtualMachine:job:533:1")])
def test_job_fault_reports_through_query_async_job_result(cs_raw: CloudStack) -> None:
    cat = catalog(cs_raw)
    reply = cs_raw.deployVirtualMachine(**vm_params(cat, network(cs_raw, cat), "web-1"))
    assert set(reply) == {"id", "jobid"}  # the submit itself succeeds
    deadline = time.monotonic() + 10
    while (job := cs_raw.queryAsyncJobResult(jobid=reply["jobid"]))["jobstatus"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert job["jobstatus"] == 2 and job["jobresultcode"] == 533
    assert job["jobresult"]["errorcode"] == 533


@pytest.mark.simulator(faults=[parse_fault("listZones:http:530:2")])
def test_http_fault_twice_then_success(simulator, cs: CloudStack) -> None:
    r = call(simulator.endpoint, "listZones", KEY, SECRET)
    assert r.status == 530
    assert r.json == {"listzonesresponse": {
        "uuidList": [], "errorcode": 530, "cserrorcode": 4250,
        "errortext": "Internal error executing command, please contact your system administrator"}}
    http_error(530, cs.listZones)
    assert cs.listZones()["count"] == 1
    assert cs.listZones()["count"] == 1
    assert cs.listNetworks() == {}  # other commands were never affected


@pytest.mark.simulator(faults=[parse_fault("LISTZONES:drop:0:1")])
def test_drop_fault_closes_the_connection_once(cs: CloudStack) -> None:
    with pytest.raises(requests.exceptions.ConnectionError):
        cs.listZones()
    assert cs.listZones()["count"] == 1


@pytest.mark.simulator(faults=[parse_fault("listZones:slow:1:1")])
def test_slow_fault_delays_the_answer(cs: CloudStack) -> None:
    start = time.monotonic()
    assert cs.listZones()["count"] == 1
    assert time.monotonic() - start >= 1.0
    start = time.monotonic()
    cs.listZones()
    assert time.monotonic() - start < 1.0  # not delayed again (a delay is 1 s; a loaded machine's call is not)


# ---- the admin endpoint -------------------------------------------------------------------
def _faults_url(simulator) -> str:
    return simulator.endpoint.replace("/client/api", "/admin/faults")


def test_admin_faults_need_the_lab_key(simulator) -> None:
    url = _faults_url(simulator)
    for method in ("GET", "POST", "DELETE"):
        assert requests.request(method, url, data="listZones:http:530:1", timeout=10).status_code == 401
        r = requests.request(method, url, headers={"X-Lab-Key": "wrong"}, timeout=10)
        assert r.status_code == 401
    assert requests.get(url, headers={"X-Lab-Key": KEY}, timeout=10).json() == {"faults": []}


def test_admin_fault_always_until_deleted(simulator, cs: CloudStack) -> None:
    url, auth = _faults_url(simulator), {"X-Lab-Key": KEY}
    r = requests.post(url, data="*:http:429:always", headers=auth, timeout=10)
    assert r.status_code == 200
    assert [f["spec"] for f in r.json()["faults"]] == ["*:http:429:always"]
    for command in (cs.listZones, cs.listNetworks, cs.listVirtualMachines, cs.listZones):
        assert "rate limit" in http_error(429, command)
    assert [f["spec"] for f in requests.get(url, headers=auth, timeout=10).json()["faults"]] == [
        "*:http:429:always"]  # "always" is never used up

    assert requests.delete(url, headers=auth, timeout=10).json() == {"faults": []}
    assert cs.listZones()["count"] == 1


def test_admin_faults_accept_json_and_count_down(simulator, cs: CloudStack) -> None:
    url, auth = _faults_url(simulator), {"X-Lab-Key": KEY}
    r = requests.post(url, json={"faults": ["listZones:http:534:2"]}, headers=auth, timeout=10)
    assert r.json()["faults"][0]["times"] == 2
    http_error(534, cs.listZones)
    assert requests.get(url, headers=auth, timeout=10).json()["faults"][0]["times"] == 1
    http_error(534, cs.listZones)
    assert requests.get(url, headers=auth, timeout=10).json() == {"faults": []}
    assert cs.listZones()["count"] == 1


def test_admin_refuses_an_invalid_spec_and_adds_nothing(simulator, cs: CloudStack) -> None:
    url, auth = _faults_url(simulator), {"X-Lab-Key": KEY}
    r = requests.post(url, data="listZones:http:530:1 listZones:oops:530:1", headers=auth, timeout=10)
    assert r.status_code == 400
    assert "'listZones:oops:530:1'" in r.json()["error"]
    assert "KIND must be one of" in r.json()["error"]
    assert requests.get(url, headers=auth, timeout=10).json() == {"faults": []}
    assert cs.listZones()["count"] == 1


def test_a_stop_drops_a_held_answer_instead_of_waiting_it_out(tmp_path) -> None:
    """A ``slow`` fault holds an answer; a simulator stopped meanwhile stops at once (it used to
    wait out the hold: 12 s of a snapshot test's teardown) and the held call is dropped, never
    carried out: its client sees the connection closed, and the state saved has no trace of it
    (the network it asked for is not there after a restart)."""
    state = tmp_path / "sim.json"
    rng = public_range()
    outcome: dict[str, object] = {}
    with ThreadedSimulator(make_config(state_file=str(state), public_range=rng,
                                       faults=[parse_fault("createNetwork:slow:60:1")])) as sim:
        cs = cs_client(sim.endpoint)
        cat = catalog(cs)

        def create() -> None:
            try:
                outcome["answer"] = network(cs, cat)
            except requests.exceptions.RequestException as exc:
                outcome["error"] = exc

        caller = threading.Thread(target=create)
        caller.start()
        deadline = time.monotonic() + 10
        while sim.call(lambda: bool(sim.sim.faults.faults)):  # the fault is taken: the answer is held
            assert time.monotonic() < deadline, "the held call never arrived"
            time.sleep(0.01)
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 5
    caller.join(10)
    assert not caller.is_alive() and "answer" not in outcome and "error" in outcome
    with ThreadedSimulator(make_config(state_file=str(state), public_range=rng)) as again:
        assert cs_client(again.endpoint).listNetworks() == {}
