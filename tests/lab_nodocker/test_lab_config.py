"""One lab per CSDEPLOY_HOME: its lab.json, slots claimed machine-wide, ports, the profile's
secrets_file, and the docker backend's guest subnets. No Docker needed: the claims live in a
directory of the test's own (``CSDEPLOY_LAB_CLAIMS``)."""

from __future__ import annotations

import asyncio
import configparser
import json
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudstack_deploy.lab import config as labconfig
from cloudstack_deploy.lab.config import (
    DEFAULT_API_PORT,
    DEFAULT_REGISTRY_PORT,
    current_lab_config,
    ensure_lab_config,
    lab_id,
    load_lab_config,
    other_labs,
    release_lab_config,
)
from cloudstack_deploy.lab.profile import add_secrets_file
from cloudstack_deploy.lab.simulator.engine import Settings, Simulator
from cloudstack_deploy.progress import Recorder


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A machine of the test's own: a user home and a claims directory."""
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.setenv("CSDEPLOY_LAB_CLAIMS", str(tmp_path / "claims"))
    monkeypatch.delenv("CSDEPLOY_HOME", raising=False)
    return tmp_path


@pytest.fixture
def free_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every port counts as free (the machine's real 8080/5000 may be in use)."""
    monkeypatch.setattr(labconfig, "port_free", lambda port: True)


def use_home(monkeypatch: pytest.MonkeyPatch, home: Path) -> Path:
    monkeypatch.setenv("CSDEPLOY_HOME", str(home))
    return home


def test_the_default_home_keeps_the_well_known_ports_and_names(
        machine: Path, free_defaults: None) -> None:
    cfg = ensure_lab_config()
    assert (cfg.slot, cfg.api_port, cfg.registry_port) == (0, DEFAULT_API_PORT, DEFAULT_REGISTRY_PORT)
    assert (cfg.registry_container, cfg.registry_volume) == ("csdeploy-lab-registry", "csdeploy-lab-registry-data")
    assert cfg.public_range == "127.200.0.0/16"
    assert cfg.endpoint == "http://127.0.0.1:8080/client/api"
    written = json.loads((machine / "user" / ".csdeploy" / "lab" / "lab.json").read_text())
    assert written["id"] == cfg.id == lab_id() and written["home"] == str(machine / "user" / ".csdeploy")


def test_another_home_gets_its_own_slot_ports_names_and_ranges(
        machine: Path, free_defaults: None, monkeypatch: pytest.MonkeyPatch) -> None:
    default = ensure_lab_config()
    use_home(monkeypatch, machine / "a")
    a = ensure_lab_config()
    use_home(monkeypatch, machine / "b")
    b = ensure_lab_config()
    assert len({default.id, a.id, b.id}) == 3
    assert (a.slot, b.slot) == (1, 2)
    assert (a.api_port, a.registry_port, b.api_port, b.registry_port) == (8081, 5001, 8082, 5002)
    assert a.registry_container == f"csdeploy-lab-{a.id}-registry" != b.registry_container
    assert a.registry_volume == f"csdeploy-lab-{a.id}-registry-data"
    assert (a.public_range, b.public_range) == ("127.201.0.0/16", "127.202.0.0/16")
    blocks = [default.guest_cidrs(), a.guest_cidrs(), b.guest_cidrs()]
    assert all(x.isdisjoint(y) for i, x in enumerate(blocks) for y in blocks[i + 1:])
    assert ensure_lab_config() == b  # a second call changes nothing
    assert sorted(c.id for c in other_labs()) == sorted([default.id, a.id])


def test_lab_up_replaces_a_port_something_else_took_and_keeps_one_its_own_lab_holds(
        machine: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cloudstack_deploy.lab import manage

    use_home(monkeypatch, machine / "other")
    other = ensure_lab_config()
    use_home(monkeypatch, machine / "a")
    a = ensure_lab_config()
    busy = {a.api_port, a.registry_port, 8080, 5000, other.api_port + 100}
    monkeypatch.setattr(labconfig, "port_free", lambda port: port not in busy)
    monkeypatch.setattr(manage, "port_free", labconfig.port_free)
    monkeypatch.setattr(manage, "running_pid", lambda: None)
    progress = Recorder()

    async def registry_holds(name: str) -> int | None:
        return a.registry_port  # this lab's own registry publishes its port: keep it

    monkeypatch.setattr(manage, "_registry_port_of", registry_holds)
    settled = asyncio.run(manage._settle_ports(a, None, None, progress))
    assert settled.registry_port == a.registry_port
    assert settled.api_port not in busy | {other.api_port} and settled.api_port > 8080 + labconfig.MAX_SLOT
    assert load_lab_config() == settled  # recorded
    assert any(f"port {a.api_port} (api) is taken" in text for _, text in progress.notes), progress.notes
    with pytest.raises(manage.LabError) as err:  # asked for a port something else holds
        asyncio.run(manage._settle_ports(settled, 8080, None, progress))
    assert "8080" in str(err.value) and "--port" in str(err.value)
    assert asyncio.run(manage._settle_ports(settled, 7999, None, progress)).api_port == 7999


def test_a_released_or_abandoned_slot_is_taken_again(
        machine: Path, free_defaults: None, monkeypatch: pytest.MonkeyPatch) -> None:
    use_home(monkeypatch, machine / "a")
    a = ensure_lab_config()
    release_lab_config()
    assert load_lab_config() is None and current_lab_config().id == a.id  # names stay derivable
    use_home(monkeypatch, machine / "b")
    assert ensure_lab_config().slot == a.slot  # released: free again
    use_home(monkeypatch, machine / "c")
    c = ensure_lab_config()
    (machine / "c" / "lab" / "lab.json").unlink()  # a home removed without `lab down --purge`
    use_home(monkeypatch, machine / "d")
    assert ensure_lab_config().slot == c.slot


def test_a_home_whose_slot_went_to_another_lab_is_told_so(
        machine: Path, free_defaults: None, monkeypatch: pytest.MonkeyPatch) -> None:
    use_home(monkeypatch, machine / "a")
    a = ensure_lab_config()
    saved = (machine / "a" / "lab" / "lab.json").read_text()
    release_lab_config()
    use_home(monkeypatch, machine / "b")
    ensure_lab_config()
    use_home(monkeypatch, machine / "a")
    (machine / "a" / "lab" / "lab.json").write_text(saved)
    with pytest.raises(labconfig.LabConfigError) as err:
        ensure_lab_config()
    assert f"slot {a.slot}" in str(err.value) and str(machine / "b") in str(err.value)
    assert err.value.hint and "lab down --purge" in err.value.hint


def test_the_profile_names_the_lab_secrets_file_only_when_it_exists(
        machine: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = use_home(monkeypatch, machine / "a")
    profile = home / "lab" / "cloudstack.ini"
    profile.parent.mkdir(parents=True)
    profile.write_text("[lab]\nendpoint = http://127.0.0.1:1/client/api\nkey = k\nsecret = s\n")
    profile.chmod(0o600)
    assert add_secrets_file(profile) is False  # no secrets.env (yet)
    assert "secrets_file" not in profile.read_text()
    secrets = home / "lab" / "secrets.env"
    secrets.write_text("REGISTRY_PASSWORD=x\n")
    assert add_secrets_file(profile) is True
    parser = configparser.ConfigParser()
    parser.read(profile)
    assert parser["lab"]["secrets_file"] == str(secrets.resolve())
    assert parser["lab"]["secret"] == "s"
    assert stat.S_IMODE(profile.stat().st_mode) == 0o600
    assert add_secrets_file(profile) is False  # already there


def test_the_docker_backend_hands_out_only_its_labs_guest_subnets(
        machine: Path, free_defaults: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from cloudstack_deploy.lab.simulator.docker_backend import DockerHost

    use_home(monkeypatch, machine / "a")
    sim = Simulator(Settings(), None)
    host = DockerHost(sim, ephemeral=True)
    sim.backend = host
    reserved = host.reserved_subnets()
    mine = host.lab.guest_cidrs()
    assert mine and mine.isdisjoint(reserved)
    assert "10.1.1.0/24" in reserved  # the default home's
    sim.add("networks", {"name": "n", "cidr": sorted(mine)[0]})
    assert sorted(mine)[0] in host.reserved_subnets()  # a live network is never handed out twice


@pytest.fixture
def listening() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_port_free_sees_a_listener(listening: int) -> None:
    assert labconfig.port_free(listening) is False


def test_a_port_whose_listener_just_stopped_is_free_but_a_listening_one_is_not() -> None:
    """After `lab down`, the old registry's connections linger in TIME_WAIT; the lab must keep
    its port on the next `lab up` (it moved the default lab off 5000 once)."""
    import socket

    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as docker-proxy's listeners do
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    assert not labconfig.port_free(port)
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = server.accept()
    conn.close()  # the side that closes first keeps TIME_WAIT on the listener's port
    client.close()
    server.close()
    import time

    deadline = time.monotonic() + 5  # until the FIN exchange has settled into TIME_WAIT
    while not labconfig.port_free(port) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert labconfig.port_free(port)
