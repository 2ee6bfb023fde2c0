"""Backend effects in the engine: run when the job is due, before the finisher; a failing
effect fails the job (530, its message); pending effects survive a simulator restart.

The backend here is a small recording HostBackend (no Docker needed): it notes each effect
with the VM's state at that moment, and can fail or hold an effect until the test lets go.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cs import CloudStack, CloudStackApiException

from cloudstack_deploy.lab.simulator import backend as backend_mod
from cloudstack_deploy.lab.simulator.backend import HostBackend
from cloudstack_deploy.lab.simulator.server import SimulatorConfig, ThreadedSimulator
from tests.support.sim import cs_client, make_config

KEY, SECRET = "effects-key", "effects-secret"


class Recorder(HostBackend):
    """Notes (effect, args, VM state then); ``fail`` raises, ``hold`` waits for ``release``."""

    name = "recorder"
    has_effects = True

    def __init__(self, fail: str | None = None, hold: str | None = None) -> None:
        self.calls: list[tuple[str, dict[str, Any], str | None]] = []
        self.fail, self.hold = fail, hold
        self.release = asyncio.Event()
        self.sim: Any = None

    async def run(self, effect: str, args: dict[str, Any]) -> None:
        vm = self.sim.get("vms", args.get("id", "")) if self.sim else None
        self.calls.append((effect, args, vm["state"] if vm else None))
        if effect == self.hold:
            await self.release.wait()
        if effect == self.fail:
            raise RuntimeError("the hypervisor said no")


def _config(tmp_path: Path, **kw: Any) -> SimulatorConfig:
    return make_config(**{"api_key": KEY, "secret_key": SECRET, "ssh": False, **kw})


def _start(config: SimulatorConfig, recorder: Recorder) -> ThreadedSimulator:
    server = ThreadedSimulator(config)
    recorder.sim = server.sim
    server.sim.backend = recorder
    return server.__enter__()


def _client(server: ThreadedSimulator, fetch: bool = True) -> CloudStack:
    return cs_client(server.endpoint, KEY, SECRET, wait=fetch, job_timeout=20)


def _wait_job(cs: CloudStack, jobid: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = cs.queryAsyncJobResult(jobid=jobid)
        if job["jobstatus"] != 0:
            return job
        time.sleep(0.02)
    raise AssertionError(f"job {jobid} still pending after {timeout}s")


def _eventually(check: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def _deploy(cs: CloudStack, **kw: Any) -> dict[str, Any]:
    zone = cs.listZones()["zone"][0]["id"]
    noff = next(o for o in cs.listNetworkOfferings()["networkoffering"] if o["guestiptype"] == "Isolated")
    net = cs.createNetwork(name="n", networkofferingid=noff["id"], zoneid=zone)["network"]
    tpl = cs.listTemplates(templatefilter="featured")["template"][0]["id"]
    so = cs.listServiceOfferings()["serviceoffering"][0]["id"]
    return cs.deployVirtualMachine(zoneid=zone, serviceofferingid=so, templateid=tpl,
                                   networkids=net["id"], name="vm-1", **kw)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def server(tmp_path: Path, recorder: Recorder) -> Iterator[ThreadedSimulator]:
    srv = _start(_config(tmp_path), recorder)
    try:
        yield srv
    finally:
        srv.__exit__(None, None, None)


def test_the_effect_runs_before_the_finisher(server: ThreadedSimulator, recorder: Recorder) -> None:
    vm = _deploy(_client(server))["virtualmachine"]
    assert vm["state"] == "Running"
    assert recorder.calls == [("create_vm", {"id": vm["id"], "start": True}, "Starting")]
    _client(server).stopVirtualMachine(id=vm["id"])
    assert recorder.calls[-1] == ("stop_vm", {"id": vm["id"]}, "Stopping")


def test_a_failing_effect_fails_the_job_with_530_and_runs_on_failure(tmp_path: Path) -> None:
    recorder = Recorder(fail="create_vm")
    srv = _start(_config(tmp_path), recorder)
    try:
        cs = _client(srv)
        with pytest.raises(CloudStackApiException) as err:
            _deploy(cs)
        assert err.value.error["errorcode"] == 530
        assert "the hypervisor said no" in err.value.error["errortext"]
        assert cs.listVirtualMachines(name="vm-1")["virtualmachine"][0]["state"] == "Error"
    finally:
        srv.__exit__(None, None, None)


def test_a_job_stays_pending_while_its_effect_runs(tmp_path: Path) -> None:
    recorder = Recorder(hold="create_vm")
    srv = _start(_config(tmp_path), recorder)
    try:
        cs = _client(srv, fetch=False)
        reply = _deploy(cs)
        srv.call(lambda: None)
        assert cs.queryAsyncJobResult(jobid=reply["jobid"])["jobstatus"] == 0
        srv.call(recorder.release.set)
        job = _wait_job(cs, reply["jobid"])
        assert job["jobstatus"] == 1 and job["jobresult"]["virtualmachine"]["state"] == "Running"
    finally:
        srv.__exit__(None, None, None)


def test_pending_effects_run_again_after_a_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backend_mod, "EFFECT_GRACE_SECONDS", 0.2)
    state = tmp_path / "state.json"
    first = Recorder(hold="create_vm")
    srv = _start(_config(tmp_path, state_file=str(state)), first)
    cs = _client(srv, fetch=False)
    reply = _deploy(cs)
    _eventually(lambda: len(first.calls) == 1)  # create_vm runs (and is held)
    zone = cs.listZones()["zone"][0]["id"]
    disk = next(o for o in cs.listDiskOfferings()["diskoffering"] if o["disksize"] == 5)
    vol = _client(srv).createVolume(name="d", diskofferingid=disk["id"], zoneid=zone)["volume"]
    srv.call(lambda: setattr(first, "hold", "delete_volume"))
    cs.deleteVolume(id=vol["id"])  # sync: its delete_volume effect runs in the background
    srv.__exit__(None, None, None)  # both effects still held: cancelled, left in the state file
    assert [c[0] for c in first.calls] == ["create_vm", "create_volume", "delete_volume"]

    second = Recorder()
    srv = _start(_config(tmp_path, state_file=str(state)), second)
    try:
        job = _wait_job(_client(srv, fetch=False), reply["jobid"])
        assert job["jobstatus"] == 1 and job["jobresult"]["virtualmachine"]["state"] == "Running"
        _eventually(lambda: srv.call(lambda: srv.sim.state.get("effects")) == [])
        assert sorted(c[0] for c in second.calls) == ["create_vm", "delete_volume"]
    finally:
        srv.__exit__(None, None, None)
