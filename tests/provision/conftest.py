"""Fixtures for the provisioner's tests: a simulator per test, the environment pointing at it,
and checks made with the `cs` client directly (never with our own code).

Every simulator gets a loopback /24 of its own (127.100-199.x.0/24: away from the simulator
tests' 127.2xx ranges) and an ephemeral API port, so tests never share listeners.
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner, Result
from cs import CloudStack

from cloudstack_deploy.blueprint import Blueprint, load_blueprint
from cloudstack_deploy.cli import main
from cloudstack_deploy.cloud import Cloud, read_cloud_config
from cloudstack_deploy.lab.simulator.server import SimulatorConfig, ThreadedSimulator
from cloudstack_deploy.progress import Recorder
from cloudstack_deploy.provision.desired import TAG_ENV
from cloudstack_deploy.provision.run import CreateOptions, CreateResult, create_env
from cloudstack_deploy.state import EnvState

KEY = "prov-api-key"
SECRET = "prov-secret-key"
REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "blueprints" / "demo.yml"
CREATE_COMMANDS = ("createNetwork", "deployVirtualMachine", "associateIpAddress", "createFirewallRule",
                   "createVolume", "createPortForwardingRule", "registerSSHKeyPair", "enableStaticNat")
SSH_TIMEOUT = 20.0

_used_ranges: set[str] = set()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "lab(**kwargs): SimulatorConfig fields for the `sim` fixture")


def public_range() -> str:
    """A loopback /24 that no other simulator of this run uses."""
    while True:
        cidr = f"127.{random.randint(100, 199)}.{random.randint(0, 255)}.0/24"
        if cidr not in _used_ranges:
            _used_ranges.add(cidr)
            return cidr


def make_config(**kw: Any) -> SimulatorConfig:
    base: dict[str, Any] = dict(port=0, api_key=KEY, secret_key=SECRET, vm_boot_seconds=0.05,
                                job_seconds=0.02, public_range=public_range())
    base.update(kw)
    return SimulatorConfig(**base)


@pytest.fixture
def sim(request: pytest.FixtureRequest) -> Iterator[ThreadedSimulator]:
    marker = request.node.get_closest_marker("lab")
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


# ---- looking at the cloud with `cs` directly --------------------------------------------------
@dataclass
class CloudView:
    """What a user with `cs` (not csdeploy) sees in the simulator."""

    sim: ThreadedSimulator
    cs: CloudStack

    def _list(self, command: str, response_key: str, /, **params: Any) -> list[dict[str, Any]]:
        return getattr(self.cs, command)(**params).get(response_key, [])

    def networks(self) -> list[dict[str, Any]]:
        return self._list("listNetworks", "network", listall=True)

    def vms(self) -> list[dict[str, Any]]:
        """Every VM, Destroyed and Error ones included (the caller is an admin)."""
        return self._list("listVirtualMachines", "virtualmachine", listall=True)

    def vm(self, name: str) -> dict[str, Any]:
        found = [v for v in self.vms() if v["name"] == name]
        assert len(found) == 1, f"{len(found)} VMs named {name}: {found}"
        return found[0]

    def vm_names(self) -> Counter[str]:
        return Counter(v["name"] for v in self.vms())

    def public_ips(self) -> list[dict[str, Any]]:
        """Allocated public IPs other than source NAT."""
        return [i for i in self._list("listPublicIpAddresses", "publicipaddress", listall=True)
                if not i.get("issourcenat")]

    def all_ips(self) -> list[dict[str, Any]]:
        return self._list("listPublicIpAddresses", "publicipaddress", listall=True)

    def volumes(self) -> list[dict[str, Any]]:
        return self._list("listVolumes", "volume", type="DATADISK", listall=True)

    def keypairs(self) -> list[dict[str, Any]]:
        return self._list("listSSHKeyPairs", "sshkeypair", listall=True)

    def env_tags(self, env: str | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"key": TAG_ENV, "listall": True}
        if env:
            params["value"] = env
        return self._list("listTags", "tag", **params)

    def firewall(self, ip_id: str) -> list[dict[str, Any]]:
        return self._list("listFirewallRules", "firewallrule", ipaddressid=ip_id)

    def port_forwards(self) -> list[dict[str, Any]]:
        return self._list("listPortForwardingRules", "portforwardingrule", listall=True)

    def everything(self) -> dict[str, list[str]]:
        """A summary of all a tenant has; empty lists mean a clean cloud."""
        return {
            "networks": [n["name"] for n in self.networks()],
            "vms": [f"{v['name']} ({v['state']})" for v in self.vms()],
            "ips": [i["ipaddress"] for i in self.all_ips()],
            "volumes": [v["name"] for v in self.volumes()],
            "keypairs": [k["name"] for k in self.keypairs()],
            "tags": [f"{t['resourcetype']} {t['key']}={t['value']}" for t in self.env_tags()],
        }

    def add_faults(self, *specs: str) -> None:
        """Inject faults the way an operator would: POST /admin/faults with the lab key."""
        admin = self.sim.endpoint.replace("/client/api", "/admin/faults")
        resp = requests.post(admin, data=" ".join(specs), headers={"X-Lab-Key": KEY}, timeout=10)
        assert resp.status_code == 200, resp.text

    def clear_faults(self) -> None:
        admin = self.sim.endpoint.replace("/client/api", "/admin/faults")
        assert requests.delete(admin, headers={"X-Lab-Key": KEY}, timeout=10).status_code == 200


@pytest.fixture
def cloud_view(sim: ThreadedSimulator) -> CloudView:
    cs = CloudStack(endpoint=sim.endpoint, key=KEY, secret=SECRET, poll_interval=0.02, job_timeout=30,
                    fetch_result=True)
    return CloudView(sim, cs)


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


def cli(*args: str) -> Result:
    """The CLI in process (click's runner); stderr separate from stdout."""
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def cli_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "cloudstack_deploy.cli", *args]


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

