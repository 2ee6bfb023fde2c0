"""`csdeploy lab simulator` as a user runs it: a real process, real signals, real files."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from cs import CloudStack

from .cloudkit import catalog, deploy, http_error, network, vm_params
from .conftest import KEY, SECRET, public_range

START_TIMEOUT = 30.0
ENDPOINT_RE = re.compile(r"listening on (http://127\.0\.0\.1:(\d+)/client/api)")


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "cloudstack_deploy.cli", "lab", "simulator", *args]


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["HOME"] = str(tmp_path)  # nothing of the test may land in the real home
    env.pop("CLOUDSTACK_CONFIG", None)
    return env


class Served:
    """A simulator process; ``endpoint`` is parsed from what it prints. Without ``ssh`` it
    serves no public addresses (--no-ssh); ``public``: its public range (default: one of its own)."""

    def __init__(self, tmp_path: Path, *args: str, ssh: bool = False, public: str | None = None) -> None:
        self.proc = subprocess.Popen(
            _command("--port", "0", *([] if ssh else ["--no-ssh"]), "--api-key", KEY, "--secret-key", SECRET,
                     "--vm-boot-seconds", "0.05", "--job-seconds", "0.02", "--public-range",
                     public or public_range(), *args),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=_env(tmp_path))
        self.stdout: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.endpoint = self._wait_for_endpoint()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _wait_for_endpoint(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=0.1)
            except queue.Empty:
                continue
            if line is None:
                break
            self.stdout.append(line)
            if m := ENDPOINT_RE.search(line):
                assert int(m.group(2)) != 0  # --port 0 picked a real port
                return m.group(1)
        self.proc.kill()
        _, err = self.proc.communicate(timeout=10)
        raise AssertionError(f"the simulator printed no endpoint; stdout={self.stdout!r} stderr={err!r}")

    def client(self) -> CloudStack:
        return CloudStack(endpoint=self.endpoint, key=KEY, secret=SECRET, poll_interval=0.02, job_timeout=30,
                          fetch_result=True)

    def stop(self, sig: int = signal.SIGINT) -> tuple[int, str]:
        """Send ``sig``, wait for the exit; (return code, stderr)."""
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        # stdout belongs to the pump thread: reading it here too (communicate) raced with it,
        # and the pump could die on the closed file without its end marker.
        assert self.proc.stderr is not None
        err = self.proc.stderr.read()
        while (line := self._lines.get(timeout=5)) is not None:
            self.stdout.append(line)
        return self.proc.returncode, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=10)


@pytest.fixture
def served(tmp_path: Path):
    started: list[Served] = []

    def start(*args: str, **kw: Any) -> Served:
        s = Served(tmp_path, *args, **kw)
        started.append(s)
        return s

    yield start
    for s in started:
        s.kill()


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_command("--port", "0", "--no-ssh", *args), capture_output=True, text=True,
                          timeout=60, cwd=tmp_path, env=_env(tmp_path))


def test_serve_limit_fault_state_and_sigint(served, tmp_path: Path) -> None:
    state = tmp_path / "lab.json"
    sim = served("--state", str(state), "--limit", "user_vm=1", "--fault", "listZones:http:530:1")
    cs = sim.client()
    http_error(530, cs.listZones)  # --fault, used up once
    cat = catalog(cs)
    assert cs.listResourceLimits(resourcetypename="user_vm")["resourcelimit"][0]["max"] == 1
    net = network(cs, cat)
    vm = deploy(cs, cat, net, "web-1")
    assert "user_vm" in http_error(535, cs.deployVirtualMachine, **vm_params(cat, net, "web-2"))

    code, err = sim.stop(signal.SIGINT)
    assert code == 0, err
    assert "simulator stopped" in err
    assert "Traceback" not in err
    printed = "".join(sim.stdout)
    assert f"export CLOUDSTACK_ENDPOINT={sim.endpoint}" in printed
    assert f"export CLOUDSTACK_KEY={KEY}" in printed
    assert f"state: {state}" in printed
    saved = json.loads(state.read_text())
    assert vm["id"] in saved["collections"]["vms"]

    # The same file, served again (SIGTERM stops it just as cleanly).
    again = served("--state", str(state))
    cs = again.client()
    assert cs.listVirtualMachines()["virtualmachine"][0]["id"] == vm["id"]
    assert cs.listNetworks(id=net["id"])["count"] == 1
    code, err = again.stop(signal.SIGTERM)
    assert code == 0, err


def test_a_signal_right_after_the_endpoint_still_saves_the_state(served, tmp_path: Path) -> None:
    state = tmp_path / "lab.json"
    code, err = served("--state", str(state)).stop(signal.SIGINT)
    assert code == 0, err
    assert "collections" in json.loads(state.read_text())


def test_a_bad_fault_is_a_usage_error_naming_the_spec(tmp_path: Path) -> None:
    result = _run(tmp_path, "--fault", "listZones:boom:530:1")
    assert result.returncode == 2
    assert "'--fault'" in result.stderr
    assert "'listZones:boom:530:1'" in result.stderr
    assert "KIND must be one of" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("limit", "why"), [("user_vm", "expected TYPE=MAX"),
                                            ("user_vm=lots", "MAX must be an integer"),
                                            ("vms=3", "unknown resource type 'vms'")])
def test_a_bad_limit_is_a_usage_error(tmp_path: Path, limit: str, why: str) -> None:
    result = _run(tmp_path, "--limit", limit)
    assert result.returncode == 2
    assert "'--limit'" in result.stderr and why in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unreadable_state_file_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "lab.json"
    state.write_text("{half a file")
    result = _run(tmp_path, "--state", str(state))
    assert result.returncode == 2
    assert str(state) in result.stderr
    assert "Traceback" not in result.stderr
    assert state.read_text() == "{half a file"


def test_a_busy_port_fails_with_a_message(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(_command("--port", str(port), "--no-ssh"), capture_output=True, text=True,
                                timeout=60, cwd=tmp_path, env=_env(tmp_path))
    assert result.returncode == 1
    assert "cannot start the simulator" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_second_simulator_on_a_held_public_range_refuses_to_start(served, tmp_path: Path) -> None:
    """Issue 20: it used to log `cannot be opened` per address and serve on, so traffic for
    its VMs reached the other lab's VMs on the same addresses."""
    held = public_range()
    first = served(ssh=True, public=held)
    second = subprocess.run(_command("--port", "0", "--public-range", held), capture_output=True, text=True,
                            timeout=60, cwd=tmp_path, env=_env(tmp_path))
    assert second.returncode == 1, second.stderr
    errors = [line for line in second.stderr.splitlines() if line.startswith("csdeploy: error:")]
    assert len(errors) == 1, second.stderr
    assert held in errors[0] and "another lab" in errors[0] and "refusing to start" in errors[0], errors
    assert "Traceback" not in second.stderr
    assert "listening on" not in second.stdout
    assert first.client().listZones()["count"] == 1  # the first one serves on
    code, err = first.stop()
    assert code == 0, err
