"""The lab registry, for real: TLS from the lab CA, basic auth, pushes, idempotent start.

Each module run gets its own registry (container, port, volume, CA and password under a
temporary CSDEPLOY_HOME-like directory), so the user's lab registry is never touched.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudstack_deploy.lab import registry as lab_registry
from cloudstack_deploy.lab.registry import (
    CERTS_D,
    REGISTRY_IMAGE,
    SEED_COMPLETE,
    RegistryInfo,
    connect_network,
    ensure_registry,
    push,
    registry_status,
    remove_registry,
    save_seed,
    seed_into,
)
from cloudstack_deploy.progress import Recorder

from .images_helpers import (
    Scratch,
    catalog_json,
    curl,
    docker,
    free_port,
    own_registry,
    scratch,
)

pytestmark = pytest.mark.usefixtures("docker_engine")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def registry(home: Path) -> Iterator[RegistryInfo]:
    with own_registry(home) as info:
        yield info


@pytest.fixture
def lab() -> Iterator[Scratch]:
    with scratch() as s:
        yield s


def _login(info: RegistryInfo, password: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    """docker login with the password on stdin, into a throwaway docker config."""
    return docker("--config", str(tmp), "login", info.local_server, "--username", info.username,
                  "--password-stdin", input=password, check=False)


def test_secrets_are_private_and_the_ca_is_where_documented(registry: RegistryInfo, home: Path) -> None:
    assert registry.ca_path == home / "lab" / "ca" / "ca.crt"
    assert registry.password_path == home / "lab" / "registry" / "password"
    for private in (registry.password_path, home / "lab" / "ca" / "ca.key",
                    registry.state_dir / "files" / "server.key", registry.state_dir / "files" / "htpasswd"):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600, private
    assert len(registry.password()) >= 24
    assert registry.password() not in (registry.state_dir / "files" / "htpasswd").read_text()
    if os.geteuid() == 0:
        assert (CERTS_D / registry.local_server / "ca.crt").read_bytes() == registry.ca_path.read_bytes()


def test_login_with_the_password_works_and_a_wrong_one_gets_401(registry: RegistryInfo, tmp_path: Path) -> None:
    ok = _login(registry, registry.password(), tmp_path / "ok")
    assert ok.returncode == 0, ok.stderr
    assert "Login Succeeded" in ok.stdout
    bad = _login(registry, "not-" + registry.password(), tmp_path / "bad")
    assert bad.returncode != 0
    assert "401" in bad.stderr or "unauthorized" in bad.stderr.lower(), bad.stderr


def test_tls_verifies_with_the_lab_ca_for_every_name_in_the_certificate(registry: RegistryInfo) -> None:
    port, ca = registry.host_port, str(registry.ca_path)
    auth = f'user = "{registry.username}:{registry.password()}"\n'
    assert curl("--cacert", ca, f"https://127.0.0.1:{port}/v2/") == (0, "401")
    assert curl("--cacert", ca, f"https://127.0.0.1:{port}/v2/", config=auth) == (0, "200")
    assert curl("--cacert", ca, f"https://localhost:{port}/v2/") == (0, "401")
    assert curl("--cacert", ca, "--resolve", f"registry.lab:{port}:127.0.0.1",
                f"https://registry.lab:{port}/v2/", config=auth) == (0, "200")
    code, _ = curl(f"https://127.0.0.1:{port}/v2/")  # the system CAs do not know ours
    assert code == 60


def test_push_lists_the_image_and_skips_an_unchanged_one(registry: RegistryInfo, lab: Scratch) -> None:
    image = lab.import_tiny_image()
    repo = f"{lab.prefix}/tiny"
    first = asyncio.run(push(image, f"registry.lab:5000/{repo}:1", registry=registry))
    assert first.pushed and first.digest.startswith("sha256:")
    assert first.ref == f"registry.lab:5000/{repo}:1"
    assert repo in catalog_json(registry)["repositories"]  # type: ignore[operator]
    recorder = Recorder()
    again = asyncio.run(push(image, f"{repo}:1", registry=registry, progress=recorder))
    assert not again.pushed and again.digest == first.digest
    assert [(e.action, e.status) for e in recorder.events] == [("push", "skipped")]
    tags = docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    assert f"{registry.local_server}/{repo}:1" not in tags  # no leftover push tag here
    status = asyncio.run(registry_status(name=registry.name, state_dir=registry.state_dir))
    assert status.state == "running" and status.reachable and status.host_port == registry.host_port
    assert status.repositories[repo] == ["1"]


def test_ensure_is_idempotent_and_recreates_on_a_new_password_keeping_the_data(
        registry: RegistryInfo, lab: Scratch) -> None:
    image = lab.import_tiny_image()
    repo = f"{lab.prefix}/kept"
    asyncio.run(push(image, f"{repo}:1", registry=registry))
    container_id = docker("inspect", "--format", "{{.Id}}", registry.name).stdout.strip()
    kwargs = {"name": registry.name, "host_port": registry.host_port, "volume": registry.volume,
              "state_dir": registry.state_dir}
    assert asyncio.run(ensure_registry(**kwargs)) == registry  # type: ignore[arg-type]
    assert docker("inspect", "--format", "{{.Id}}", registry.name).stdout.strip() == container_id

    asyncio.run(connect_network(lab.net, name=registry.name))  # as the docker backend does
    old = registry.password()
    registry.password_path.unlink()
    (registry.state_dir / "files" / "htpasswd").unlink()
    asyncio.run(ensure_registry(**kwargs))  # type: ignore[arg-type]
    assert docker("inspect", "--format", "{{.Id}}", registry.name).stdout.strip() != container_id
    assert registry.password() != old
    auth = f'user = "{registry.username}:{old}"\n'
    assert curl("--cacert", str(registry.ca_path), f"{registry.url}/v2/", config=auth) == (0, "401")
    assert repo in catalog_json(registry)["repositories"]  # type: ignore[operator]
    labels = docker("inspect", "--format", '{{index .Config.Labels "csdeploy.lab"}} {{.HostConfig.RestartPolicy.Name}}',
                    registry.name).stdout.split()
    assert labels == ["1", "unless-stopped"]
    # The recreated container is back on the lab network, reachable as registry.lab.
    fmt = '{{json (index .NetworkSettings.Networks "' + lab.net + '").Aliases}}'
    assert "registry.lab" in docker("inspect", "--format", fmt, registry.name).stdout
    lookup = docker("run", "--rm", "--network", lab.net, REGISTRY_IMAGE, "getent", "hosts", "registry.lab")
    assert lookup.stdout.split()[0] == docker("inspect", "--format", fmt.replace(".Aliases", ".IPAddress"),
                                              registry.name).stdout.strip().strip('"')


def test_remove_keeps_the_volume_unless_purged(home: Path) -> None:
    tag = secrets.token_hex(3)
    kwargs = {"name": f"csdt-registry-{tag}", "volume": f"csdt-registry-{tag}-data",
              "state_dir": home / "other" / "registry"}
    port = free_port()
    try:
        info = asyncio.run(ensure_registry(host_port=port, **kwargs))  # type: ignore[arg-type]
        assert info.local_server == f"localhost:{port}"
        asyncio.run(remove_registry(**kwargs))  # type: ignore[arg-type]
        assert docker("volume", "inspect", kwargs["volume"], check=False).returncode == 0  # type: ignore[arg-type]
        status = asyncio.run(registry_status(name=kwargs["name"]))  # type: ignore[arg-type]
        assert status.state == "missing"
    finally:
        asyncio.run(remove_registry(purge=True, **kwargs))  # type: ignore[arg-type]
    assert docker("volume", "inspect", kwargs["volume"], check=False).returncode != 0  # type: ignore[arg-type]
    assert not (CERTS_D / f"localhost:{port}").exists()


@pytest.fixture
def seed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """A seed volume and two registry volumes of this test's own (never the machine's seed),
    and a lock of its own: (seed, a fresh registry's volume, the next new registry's volume)."""
    tag = secrets.token_hex(4)
    names = (f"csdt-seed-{tag}", f"csdt-reg-a-{tag}", f"csdt-reg-b-{tag}")
    monkeypatch.setattr(lab_registry, "SEED_VOLUME", names[0])
    monkeypatch.setenv("CSDEPLOY_LAB_CLAIMS", str(tmp_path / "claims"))
    for name in names[1:]:
        docker("volume", "create", "--label", "csdeploy.test=1", name)
    try:
        yield names
    finally:
        docker("volume", "rm", "--force", *names, check=False)


def _files(volume: str) -> list[str]:
    out = docker("run", "--rm", "--network", "none", "--volume", f"{volume}:/v:ro", "--entrypoint", "sh",
                 REGISTRY_IMAGE, "-c", "cd /v && find . -type f | sort").stdout
    return out.split()


def test_a_new_registry_starts_from_a_complete_seed_only(
        seed: tuple[str, str, str], registry: RegistryInfo) -> None:
    """No seed: nothing copied. A seed taken from a fresh registry holds its data and the mark
    written last; the next new registry starts as a copy of it (without the mark). A seed whose
    mark is missing (its writer died half-way) is never used, and leaves the new volume empty."""
    seed_volume, fresh, new = seed
    assert asyncio.run(seed_into(new)) is False, "there is no seed yet"
    docker("run", "--rm", "--network", "none", "--volume", f"{fresh}:/v", "--entrypoint", "sh", REGISTRY_IMAGE,
           "-c", "mkdir -p /v/docker/registry/v2/blobs && echo layer > /v/docker/registry/v2/blobs/data")
    asyncio.run(save_seed(dataclasses.replace(registry, volume=fresh)))  # not made by this call: no seed
    assert docker("volume", "inspect", seed_volume, check=False).returncode != 0
    recorder = Recorder()
    asyncio.run(save_seed(dataclasses.replace(registry, volume=fresh, fresh=True), recorder))
    assert _files(seed_volume) == [f"./{SEED_COMPLETE}", "./docker/registry/v2/blobs/data"]
    assert any("now holds the lab's images" in text for _, text in recorder.notes), recorder.notes

    assert asyncio.run(seed_into(new)) is True
    assert _files(new) == ["./docker/registry/v2/blobs/data"]

    docker("run", "--rm", "--network", "none", "--volume", f"{seed_volume}:/v", "--entrypoint", "rm",
           REGISTRY_IMAGE, f"/v/{SEED_COMPLETE}")  # a writer that died before its mark
    docker("volume", "rm", new)
    docker("volume", "create", "--label", "csdeploy.test=1", new)
    assert asyncio.run(seed_into(new)) is False
    assert _files(new) == []


def _blob(digest: str) -> str:
    hexa = digest.removeprefix("sha256:")
    return f"./docker/registry/v2/blobs/sha256/{hexa[:2]}/{hexa}/data"


def test_a_seed_taken_after_a_stale_seed_keeps_only_what_a_tag_names(
        seed: tuple[str, str, str], registry: RegistryInfo, lab: Scratch) -> None:
    """A lab's registry that started from an older seed (images on an older base image) and
    then got the current images pushed under the same tags holds both; the seed taken from it
    holds what the tags name (garbage-collect --delete-untagged on the copy, never on the
    registry itself), so seeds do not grow with every rebuild of the images."""
    seed_volume = seed[0]
    repo = f"{lab.prefix}/app"
    old = asyncio.run(push(lab.import_tiny_image("old"), f"{repo}:1", registry=registry))
    new = asyncio.run(push(lab.import_tiny_image("new"), f"{repo}:1", registry=registry))
    assert old.digest != new.digest and new.pushed
    live = _files(registry.volume)
    assert _blob(old.digest) in live and _blob(new.digest) in live

    asyncio.run(save_seed(dataclasses.replace(registry, fresh=True, seeded=True)))
    files = _files(seed_volume)
    assert f"./{SEED_COMPLETE}" in files
    assert _blob(new.digest) in files and _blob(old.digest) not in files
    assert _files(registry.volume) == live  # the registry in use is left as it is

