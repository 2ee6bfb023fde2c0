"""Waiting for SSH against the simulator's memory VMs: real asyncssh, real sockets, no mocks.

Host keys reach the VMs the way they will in a real cloud: in user data from build_userdata,
installed by the simulator as cloud-init would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from cloudstack_deploy.errors import CsdeployError
from cloudstack_deploy.provision.hostkeys import HostKey, generate_host_key
from cloudstack_deploy.provision.ssh_wait import (
    SSHTarget,
    SSHWaitError,
    combined_error,
    wait_for_ssh,
)
from cloudstack_deploy.provision.userdata import build_userdata, host_public_key_from_userdata
from cloudstack_deploy.state import EnvState
from tests.support.netlab import NetLab

KEYPAIR = "csdeploy-demo"


@pytest.fixture
async def lab() -> AsyncIterator[NetLab]:
    async with NetLab() as lab:
        yield lab


@pytest.fixture
def client_key(lab: NetLab, tmp_path: Path) -> Path:
    """The env's key made by EnvState, registered as the VMs' keypair."""
    path, public = EnvState("demo", root=tmp_path).ensure_keypair()
    lab.sim.add("keypairs", {"name": KEYPAIR, "fingerprint": "fp", "_publickey": public})
    return path


def add_vm(lab: NetLab, name: str, *, rule: bool = True, userdata_key: HostKey | None = None,
           pinned_key: HostKey | None = None) -> tuple[SSHTarget, dict[str, Any]]:
    """A Running VM whose user data carries ``userdata_key``; the target pins ``pinned_key``."""
    key = userdata_key or generate_host_key()
    vm = lab.vm(name, keypair=KEYPAIR,
                userdata=build_userdata(hostname=name, host_key=key))
    ip = lab.public_ip(vm)
    if rule:
        lab.firewall(ip, 22)
    target = SSHTarget(name=name, host=ip["ipaddress"], port=22, user="root",
                       host_key=(pinned_key or key).public_line)
    return target, ip


class Progress:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    def __call__(self, name: str, status: str, detail: str) -> None:
        self.events.append((name, status, detail))

    def last(self, name: str) -> tuple[str, str]:
        status, detail = [(s, d) for n, s, d in self.events if n == name][-1]
        return status, detail


async def test_all_hosts_answer(lab: NetLab, client_key: Path) -> None:
    targets = [add_vm(lab, f"demo-web-{i}")[0] for i in (1, 2, 3)]
    await lab.settle()
    progress = Progress()
    timings = await wait_for_ssh(targets, client_key=client_key, timeout=10,
                                 on_progress=progress)
    assert set(timings) == {"demo-web-1", "demo-web-2", "demo-web-3"}
    assert all(0 <= t < 10 for t in timings.values())
    for t in targets:
        assert progress.events[0][1] == "running"
        assert progress.last(t.name)[0] == "done"
    # every connection was closed
    await asyncio.sleep(0.1)
    assert all(not g.connections for g in lab.network.guests.values())


async def test_no_targets(client_key: Path) -> None:
    assert await wait_for_ssh([], client_key=client_key, timeout=1) == {}


async def test_firewall_rule_added_later(lab: NetLab, client_key: Path) -> None:
    target, ip = add_vm(lab, "demo-web-1", rule=False)
    await lab.settle()

    async def open_later() -> None:
        await asyncio.sleep(1.0)
        lab.firewall(ip, 22)
        await lab.settle()

    opener = asyncio.create_task(open_later())
    timings = await wait_for_ssh([target], client_key=client_key, timeout=10)
    await opener
    assert 1.0 <= timings["demo-web-1"] < 5


async def test_host_without_rule_is_named_at_the_deadline(lab: NetLab, client_key: Path) -> None:
    good, _ = add_vm(lab, "demo-web-1")
    closed, _ = add_vm(lab, "demo-worker-1", rule=False)
    await lab.settle()
    progress = Progress()
    started = time.monotonic()
    with pytest.raises(SSHWaitError) as err:
        await wait_for_ssh([good, closed], client_key=client_key, timeout=2,
                           on_progress=progress)
    elapsed = time.monotonic() - started
    assert 1.9 <= elapsed < 3.5
    e = err.value
    assert isinstance(e, CsdeployError)
    assert e.pending == ["demo-worker-1"] and e.mismatched == {}
    message = str(e)
    assert "SSH did not answer within 2 s on 1 of 2 hosts" in message
    assert (f"demo-worker-1 ({closed.host}:22): connection refused: is the firewall rule for "
            "port 22 in place and does allow_from include this machine?") in message
    assert "demo-web-1" not in message
    assert "firewall" in (e.hint or "")
    assert progress.last("demo-web-1")[0] == "done"
    assert progress.last("demo-worker-1")[0] == "failed"


async def test_host_key_mismatch_fails_fast(lab: NetLab, client_key: Path) -> None:
    good, _ = add_vm(lab, "demo-web-1")
    impostor, _ = add_vm(lab, "demo-web-2", pinned_key=generate_host_key())
    await lab.settle()
    progress = Progress()
    started = time.monotonic()
    with pytest.raises(SSHWaitError) as err:
        await wait_for_ssh([good, impostor], client_key=client_key, timeout=30,
                           on_progress=progress)
    assert time.monotonic() - started < 5
    e = err.value
    assert list(e.mismatched) == ["demo-web-2"]
    assert e.mismatched["demo-web-2"] == (
        f"host key of demo-web-2 ({impostor.host}:22) does not match the key csdeploy gave "
        "it: refusing to connect (possible man-in-the-middle or a VM that was replaced)")
    assert e.mismatched["demo-web-2"] in str(e)
    assert progress.last("demo-web-2")[0] == "failed"


async def test_mismatch_does_not_wait_for_unreachable_hosts(lab: NetLab, client_key: Path) -> None:
    impostor, _ = add_vm(lab, "demo-web-1", pinned_key=generate_host_key())
    closed, _ = add_vm(lab, "demo-web-2", rule=False)
    await lab.settle()
    started = time.monotonic()
    with pytest.raises(SSHWaitError) as err:
        await wait_for_ssh([impostor, closed], client_key=client_key, timeout=30)
    assert time.monotonic() - started < 5
    assert list(err.value.mismatched) == ["demo-web-1"]
    assert err.value.pending == ["demo-web-2"]
    assert "SSH not reached on 1 of 2 hosts" in str(err.value)


async def test_errors_of_waits_over_parts_read_as_one_wait_over_all(lab: NetLab, client_key: Path) -> None:
    """create-env waits for the VMs it made as each is ready, and for the others afterwards:
    their errors together say what one wait over every host says."""
    impostor, _ = add_vm(lab, "demo-web-1", pinned_key=generate_host_key())
    closed, _ = add_vm(lab, "demo-web-2", rule=False)
    await lab.settle()
    errors = []
    for part in ([impostor], [closed]):
        with pytest.raises(SSHWaitError) as err:
            await wait_for_ssh(part, client_key=client_key, timeout=2)
        errors.append(err.value)
    combined = combined_error([impostor, closed], errors, 2)
    assert list(combined.mismatched) == ["demo-web-1"] and combined.pending == ["demo-web-2"]
    assert "SSH not reached on 1 of 2 hosts" in str(combined)
    assert combined.mismatched["demo-web-1"] in str(combined)
    assert f"demo-web-2 ({closed.host}:22): connection refused" in str(combined)
    assert "replacement" in (combined.hint or "")


async def test_concurrency_bound(lab: NetLab, client_key: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    targets = [add_vm(lab, f"demo-web-{i}")[0] for i in range(1, 7)]
    await lab.settle()
    real_connect = asyncssh.connect
    active = peak = 0

    async def counting_connect(*args: Any, **kwargs: Any) -> asyncssh.SSHClientConnection:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        try:
            await asyncio.sleep(0.05)  # make overlap visible
            return await real_connect(*args, **kwargs)
        finally:
            active -= 1

    monkeypatch.setattr(asyncssh, "connect", counting_connect)
    timings = await wait_for_ssh(targets, client_key=client_key, timeout=10, concurrency=2)
    assert len(timings) == 6
    assert peak == 2

    # waits side by side (create-env's early logins and the rest) share one bound
    peak = 0
    shared = asyncio.Semaphore(2)
    both = await asyncio.gather(
        wait_for_ssh(targets[:3], client_key=client_key, timeout=10, semaphore=shared),
        wait_for_ssh(targets[3:], client_key=client_key, timeout=10, semaphore=shared))
    assert sum(map(len, both)) == 6
    assert peak == 2


async def test_wrong_client_key_is_retried_then_reported(lab: NetLab, client_key: Path,
                                                         tmp_path: Path) -> None:
    target, _ = add_vm(lab, "demo-web-1")
    await lab.settle()
    other, _ = EnvState("other", root=tmp_path).ensure_keypair()  # not the VM's keypair
    with pytest.raises(SSHWaitError) as err:
        await wait_for_ssh([target], client_key=other, timeout=12)  # two full attempts even on a loaded machine
    assert err.value.pending == ["demo-web-1"]
    assert "login as 'root' with csdeploy's key refused" in str(err.value)


async def test_pin_rebuilt_from_the_clouds_userdata(lab: NetLab, client_key: Path,
                                                    tmp_path: Path) -> None:
    """With the state dir gone, the pin comes back from the VM's user data and still works."""
    target, _ = add_vm(lab, "demo-web-1")
    await lab.settle()
    vm = next(v for v in lab.sim.col("vms").values() if v["name"] == "demo-web-1")
    recovered = host_public_key_from_userdata(vm["_userdata"])
    assert recovered == target.host_key
    state = EnvState("demo", root=tmp_path)
    state.write_known_hosts({target.host: recovered})
    known = state.known_hosts()
    async with asyncssh.connect(target.host, 22, username="root", known_hosts=known,
                                client_keys=[str(client_key)], agent_path=None,
                                config=None) as conn:
        assert conn.get_server_host_key().export_public_key().decode().strip() == recovered


async def test_bad_pin_is_refused_before_waiting(client_key: Path) -> None:
    target = SSHTarget("demo-web-1", "127.0.0.1", 22, "root", "not a key")
    with pytest.raises(CsdeployError, match="pinned host key of demo-web-1"):
        await wait_for_ssh([target], client_key=client_key, timeout=1)
