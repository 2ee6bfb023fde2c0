"""`csdeploy lab up | status | down`, one lab per CSDEPLOY_HOME.

Each lab here lives in a temporary CSDEPLOY_HOME of its own (tests.support.lab.own_lab): its
own registry, simulator, ports, loopback range and docker labels, so the developer's lab in
~/.csdeploy, or another suite's, is never touched (this module checks that too). The first
`lab up` of a home is idempotent; two labs run side by side, each serving its own registry
(``registry.lab:5000`` inside its VMs) and API, and `lab down` of one leaves the other
answering. A new lab's registry starts from this machine's seed: it pushes nothing.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloudstack_deploy.lab.base import BASE_IMAGE
from cloudstack_deploy.lab.config import HOME_LABEL
from cloudstack_deploy.lab.manage import lab_status, lab_up, running_pid
from cloudstack_deploy.progress import Recorder
from tests.support.cli import run_cli
from tests.support.docker import docker
from tests.support.lab import Lab, lab_env, own_lab

BARE = "Debian 12 bookworm 2026-11-01"


@pytest.fixture(scope="module")
def lab_a(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with own_lab(tmp_path_factory.mktemp("lab-a")) as lab:
        yield lab


def _registry_answers(lab: Lab) -> tuple[int, str]:
    """(curl exit code, HTTP status) of the lab registry's /v2/, verified with the lab's CA."""
    proc = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10",
                           "--cacert", str(lab.home / "lab" / "ca" / "ca.crt"),
                           f"https://127.0.0.1:{lab.config.registry_port}/v2/"],
                          capture_output=True, text=True, timeout=30)
    return proc.returncode, proc.stdout.strip()


def _status(lab: Lab) -> dict[str, Any]:
    return json.loads(lab.csdeploy("lab", "status", "--json").stdout)


def _named(items: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(i for i in items if i["name"] == name)


def _vm(lab: Lab) -> tuple[str, str]:
    """A running VM of the bare template on a network of its own: (container, docker network)."""
    cs = lab.cs()
    zone = cs.listZones()["zone"][0]["id"]
    noff = _named(cs.listNetworkOfferings()["networkoffering"], "DefaultIsolatedNetworkOfferingWithSourceNatService")
    net = cs.createNetwork(name="homes", networkofferingid=noff["id"], zoneid=zone)["network"]
    vm = cs.deployVirtualMachine(zoneid=zone, networkids=net["id"], name="homes-1",
                                 serviceofferingid=_named(cs.listServiceOfferings()["serviceoffering"], "micro")["id"],
                                 templateid=_named(cs.listTemplates(templatefilter="featured")["template"], BARE)["id"],
                                 )["virtualmachine"]
    assert vm["state"] == "Running", vm
    return f"csdeploy-lab-vm-{vm['id']}", f"csdeploy-lab-net-{net['id'][:12]}"


def _registry_lab_in(container: str) -> str:
    """The address ``registry.lab`` has inside a VM."""
    out = docker("exec", container, "getent", "hosts", "registry.lab").stdout.split()
    assert out, f"registry.lab does not resolve in {container}"
    return out[0]


def _address_on(container: str, network: str) -> str:
    fmt = '{{(index .NetworkSettings.Networks "' + network + '").IPAddress}}'
    return docker("inspect", "--format", fmt, container).stdout.strip()


def _running(container: str) -> bool:
    proc = docker("inspect", "--format", "{{.State.Running}}", container, check=False)
    return proc.returncode == 0 and proc.stdout.strip() == "true"


def _other_registries(*mine: Lab) -> dict[str, str]:
    """Registry containers of labs other than ``mine`` (the developer's, another suite's):
    name -> id and start time, to show they were left alone."""
    ours = {lab.config.registry_container for lab in mine}
    names = docker("ps", "-a", "--filter", "label=csdeploy.lab=1", "--format", "{{.Names}}").stdout.split()
    return {name: docker("inspect", "--format", "{{.Id}} {{.State.StartedAt}}", name).stdout.strip()
            for name in names if name.endswith("-registry") and name not in ours}


def test_a_lab_of_its_own_home_has_its_own_ports_names_and_profile(lab_a: Lab) -> None:
    cfg = lab_a.config
    assert cfg.slot >= 1 and cfg.api_port != 8080 and cfg.registry_port != 5000, cfg
    assert cfg.registry_container == f"csdeploy-lab-{cfg.id}-registry"
    assert cfg.public_range == f"127.{200 + cfg.slot}.0.0/16"
    assert lab_a.endpoint == f"http://127.0.0.1:{cfg.api_port}/client/api"
    labels = json.loads(docker("inspect", "--format", "{{json .Config.Labels}}", cfg.registry_container).stdout)
    assert labels["csdeploy.lab.home"] == cfg.id
    assert _registry_answers(lab_a) == (0, "401")
    # The product finds the lab's secret values through the profile, not by importing the lab.
    secrets = lab_a.home / "lab" / "secrets.env"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    assert f"secrets_file = {secrets.resolve()}" in (lab_a.home / "lab" / "cloudstack.ini").read_text()
    status = _status(lab_a)
    assert status["simulator"] == "running" and status["endpoint"] == lab_a.endpoint
    assert status["lab"]["id"] == cfg.id and status["lab"]["registry_port"] == cfg.registry_port
    assert status["registry"].startswith("running (reachable)")


def test_a_second_lab_up_rebuilds_pushes_and_restarts_nothing(lab_a: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CSDEPLOY_HOME", str(lab_a.home))
    pid = running_pid()
    assert pid is not None, "lab up must leave the simulator running"
    second = Recorder()
    status = asyncio.run(lab_up(progress=second))
    builds = [e for e in second.events if e.action == "build"]
    pushes = [e for e in second.events if e.action == "push"]
    assert builds and all(e.status == "skipped" for e in builds), [(e.resource, e.status) for e in builds]
    assert pushes and all(e.status == "skipped" for e in pushes), [(e.resource, e.status) for e in pushes]
    assert not any("building" in text for _, text in second.notes), second.notes
    assert any("already running" in text for _, text in second.notes), second.notes
    assert running_pid() == pid, "the simulator must not be restarted"
    assert status.simulator == "running" and all(status.images.values()), status
    assert asyncio.run(lab_status()).endpoint == lab_a.endpoint


@pytest.fixture
def another_labs_registry() -> Iterator[str]:
    """A registry container as another home's lab has one (its name, the labels): one that
    surely exists for the whole test, whatever other labs on this machine (another shard of
    the lab tier, another suite) come and go meanwhile."""
    other = secrets.token_hex(5)
    name = f"csdeploy-lab-{other}-registry"
    docker("create", "--name", name, "--label", "csdeploy.lab=1", "--label", f"{HOME_LABEL}={other}",
           BASE_IMAGE, "true")
    try:
        yield name
    finally:
        docker("rm", "-f", name, check=False)


def test_two_labs_side_by_side_and_down_of_one_leaves_the_other(
        lab_a: Lab, tmp_path_factory: pytest.TempPathFactory, another_labs_registry: str) -> None:
    others_before = _other_registries(lab_a)
    assert another_labs_registry in others_before
    vm_a, net_a = _vm(lab_a)
    with own_lab(tmp_path_factory.mktemp("lab-b")) as lab_b:
        # Lab B's registry started from this machine's seed (what lab A, or an earlier new lab,
        # pushed): it pushed nothing, where pushing the lab's images takes ~40 s of CPU.
        assert lab_b.up is not None
        told = lab_b.up.stdout + lab_b.up.stderr
        assert "starts from this machine's seed" in told, lab_b.up.explain()
        assert "push skipped" in told and "push done" not in told and "push running" not in told, lab_b.up.explain()
        a, b = lab_a.config, lab_b.config
        assert a.id != b.id and a.slot != b.slot
        assert len({a.api_port, a.registry_port, b.api_port, b.registry_port}) == 4
        assert a.registry_container != b.registry_container and a.public_range != b.public_range
        assert a.guest_cidrs().isdisjoint(b.guest_cidrs())
        vm_b, net_b = _vm(lab_b)
        # Inside each lab's VMs, registry.lab:5000 is that lab's registry.
        assert _registry_lab_in(vm_a) == _address_on(a.registry_container, net_a)
        assert _registry_lab_in(vm_b) == _address_on(b.registry_container, net_b)
        assert _registry_answers(lab_a) == _registry_answers(lab_b) == (0, "401")
        assert [v["name"] for v in lab_a.view().vms()] == [v["name"] for v in lab_b.view().vms()] == ["homes-1"]

        lab_b.csdeploy("lab", "down", timeout=600)
        assert not _running(vm_b) and not _running(b.registry_container)
        assert docker("network", "inspect", net_b, check=False).returncode != 0
        assert lab_b.csdeploy("lab", "status", "--json").json()["simulator"] == "stopped"

        # Lab A is exactly as it was: API, VM, network, registry (reachable as registry.lab).
        assert _running(vm_a) and _running(a.registry_container)
        assert [(v["name"], v["state"]) for v in lab_a.view().vms()] == [("homes-1", "Running")]
        assert _registry_lab_in(vm_a) == _address_on(a.registry_container, net_a)
        assert _registry_answers(lab_a) == (0, "401")
        status = _status(lab_a)
        assert status["simulator"] == "running" and status["vms"] == 1, status
    # A home that never had a lab: its `lab down` finds nothing, and touches nobody else's.
    never = tmp_path_factory.mktemp("never-up")
    down = run_cli(["lab", "down"], lab_env(never), timeout=300)
    assert down.code == 0, down.explain()
    assert "0 containers, 0 networks, 0 volumes" in down.stdout
    assert not (Path(never) / "lab" / "lab.json").exists()
    assert _running(vm_a) and _running(a.registry_container)
    others_after = _other_registries(lab_a)
    assert others_after.get(another_labs_registry) == others_before[another_labs_registry], \
        "another lab's registry was touched"
    # Other labs of this machine may have come or gone meanwhile; those there all along were left alone.
    stayed = others_before.keys() & others_after.keys()
    assert {n: others_after[n] for n in stayed} == {n: others_before[n] for n in stayed}
