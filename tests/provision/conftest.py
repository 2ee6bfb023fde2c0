"""Fixtures for the provisioner's tests: a simulator per test, the environment pointing at it,
and checks made with the `cs` client directly (never with our own code).

Every simulator gets a loopback /24 of its own and an ephemeral API port (tests.support.sim),
so tests never share listeners.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from cloudstack_deploy.blueprint import Blueprint, load_blueprint
from cloudstack_deploy.cloud import Cloud, read_cloud_config
from cloudstack_deploy.lab.simulator.server import ThreadedSimulator
from cloudstack_deploy.progress import Recorder
from cloudstack_deploy.provision.run import CreateOptions, CreateResult, create_env
from cloudstack_deploy.state import EnvState
from tests.dns.conftest import dns_zone, pdns  # noqa: F401  (fixtures: a real PowerDNS for DNS tests)
from tests.support.cli import REPO, cli, cli_argv
from tests.support.cloud import CloudView
from tests.support.sim import KEY, SECRET, cs_client, make_config

__all__ = ["KEY", "SECRET", "CloudView", "cli", "cli_argv"]  # what this package's tests import from here

DEMO = REPO / "blueprints" / "demo.yml"
CREATE_COMMANDS = ("createNetwork", "deployVirtualMachine", "associateIpAddress", "createFirewallRule",
                   "createVolume", "createPortForwardingRule", "registerSSHKeyPair", "enableStaticNat")
SSH_TIMEOUT = 20.0


@pytest.fixture
def sim(request: pytest.FixtureRequest) -> Iterator[ThreadedSimulator]:
    """A simulator per test; ``@pytest.mark.simulator(**SimulatorConfig fields)`` configures it."""
    marker = request.node.get_closest_marker("simulator")
    with ThreadedSimulator(make_config(**(dict(marker.kwargs) if marker else {}))) as simulator:
        yield simulator


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No cloud configured anywhere: empty HOME, cwd and CSDEPLOY_HOME; no CLOUDSTACK_* vars."""
    for var in list(os.environ):
        if var.startswith("CLOUDSTACK_") or var.startswith("CSDEPLOY_"):
            monkeypatch.delenv(var)
    home = tmp_path / "csdeploy-home"
    monkeypatch.setenv("CSDEPLOY_HOME", str(home))
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    (tmp_path / "user").mkdir()
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    return home


@pytest.fixture
def home(clean_env: Path, sim: ThreadedSimulator, monkeypatch: pytest.MonkeyPatch) -> Path:
    """CSDEPLOY_HOME in tmp_path and CLOUDSTACK_* pointing at ``sim`` (fast polling)."""
    monkeypatch.setenv("CLOUDSTACK_ENDPOINT", sim.endpoint)
    monkeypatch.setenv("CLOUDSTACK_KEY", KEY)
    monkeypatch.setenv("CLOUDSTACK_SECRET", SECRET)
    monkeypatch.setenv("CLOUDSTACK_POLL_INTERVAL", "0.05")
    return clean_env


@pytest.fixture
def cloud_view(sim: ThreadedSimulator) -> CloudView:
    """The simulator as a user with `cs` sees it (and the lab's admin API, for faults)."""
    return CloudView(cs_client(sim.endpoint), sim.endpoint, KEY)


# ---- running csdeploy ---------------------------------------------------------------------------
def blueprint(*overrides: str, path: Path = DEMO) -> Blueprint:
    return load_blueprint(path, overrides=list(overrides))


@asynccontextmanager
async def cloud_session() -> Any:
    async with Cloud(read_cloud_config()) as cloud:
        yield cloud


async def create(env: str = "demo", *overrides: str, ttl: timedelta | None = None,
                 progress: Recorder | None = None, bp: Blueprint | None = None) -> tuple[CreateResult, Cloud]:
    """create-env --skip-rollout through the library, as the CLI does; returns the session too."""
    bp = bp or blueprint(*overrides)
    async with Cloud(read_cloud_config()) as cloud:
        result = await create_env(cloud, bp, env, EnvState(env), progress or Recorder(),
                                  CreateOptions(ttl=ttl, ssh_timeout=SSH_TIMEOUT))
    return result, cloud


def create_args(env: str = "demo", *overrides: str, extra: Sequence[str] = ()) -> list[str]:
    args = ["create-env", str(DEMO), "--env", env, "--skip-rollout", "--progress", "plain",
            "--ssh-timeout", str(SSH_TIMEOUT), *extra]
    for o in overrides:
        args += ["--set", o]
    return args


def wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.02, what: str = "condition") -> Any:
    """Bounded polling: the predicate's first truthy value, or a failed assertion."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(interval)

