"""csdeploy build with the real Docker engine: BuildKit secrets, version, label, -dirty.

Uses `FROM` the lab's Debian base image (built by `csdeploy lab up`), so nothing is pulled.
Pushing is covered end to end on the lab (tests/e2e/test_build_and_import.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from cloudstack_deploy.blueprint import loads_blueprint
from cloudstack_deploy.errors import InvalidInput
from cloudstack_deploy.image_build import build_image, find_client, push_target
from cloudstack_deploy.progress import Recorder

BASE = "csdeploy-lab/debian:bookworm"
SECRET = "s3cret-build-value-81723"


def _docker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)


def _base_image() -> bool:
    """Whether the lab's base image is there. In the whole suite (scripts/test) the lab's images
    are built beside the fast tier: while that build runs (CSDEPLOY_LAB_IMAGES_DONE names the
    file its end writes), the image is waited for rather than the tests skipped."""
    done = os.environ.get("CSDEPLOY_LAB_IMAGES_DONE")
    deadline = time.monotonic() + 240
    while _docker("image", "inspect", BASE).returncode != 0:
        if not done or Path(done).exists() or time.monotonic() > deadline:
            return _docker("image", "inspect", BASE).returncode == 0
        time.sleep(1)
    return True


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    if not _base_image():
        pytest.skip(f"needs a Docker engine and the lab's base image {BASE} (csdeploy lab up)")
    app = tmp_path / "app"
    app.mkdir()
    (app / "Dockerfile").write_text(
        f"FROM {BASE}\nARG CSDEPLOY_VERSION\nARG GREETING\n"
        "RUN --mount=type=secret,id=API_TOKEN test \"$(sha256sum < /run/secrets/API_TOKEN | cut -d' ' -f1)\" = "
        + hashlib.sha256(SECRET.encode()).hexdigest() +
        " && echo \"$GREETING $CSDEPLOY_VERSION\" > /greeting\n")
    (tmp_path / "bp.yml").write_text(
        "service: tiny\nimage: registry.lab:5000/csdeploy-test-tiny\n"
        "cloud: {zone: z, template: t, service_offering: s, ssh: {allow_from: [127.0.0.0/8]}}\n"
        "roles: {web: {proxy: {app_port: 8000}}}\nsecrets: [API_TOKEN]\n"
        "build: {context: app, args: {GREETING: hello}, secrets: [API_TOKEN]}\n")
    # a commit of its own (the tag is its sha): two Pythons' tiers run these tests side by side
    (tmp_path / "run-id").write_text(uuid.uuid4().hex + "\n")
    for argv in (["init", "-q"], ["add", "."], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"]):
        subprocess.run(["git", *argv], cwd=tmp_path, check=True)
    return tmp_path


def _bp(project: Path):
    return loads_blueprint((project / "bp.yml").read_text(), filename="bp.yml", source=project / "bp.yml")


def test_build_tags_the_commit_labels_the_service_and_keeps_secrets_out(project: Path) -> None:
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=project, capture_output=True, text=True).stdout.strip()
    result = asyncio.run(build_image(_bp(project), version=None, push=False, secrets={"API_TOKEN": SECRET}))
    try:
        assert result.version == sha and not result.dirty and result.image == f"registry.lab:5000/csdeploy-test-tiny:{sha}"
        label = _docker("image", "inspect", "--format", '{{index .Config.Labels "service"}}', result.image)
        assert label.stdout.strip() == "tiny"
        run = _docker("run", "--rm", result.image, "cat", "/greeting")
        assert run.stdout.strip() == f"hello {sha}"
        history = _docker("image", "history", "--no-trunc", result.image).stdout
        assert SECRET not in history and SECRET not in _docker("image", "inspect", result.image).stdout
    finally:
        _docker("image", "rm", result.image)


def test_uncommitted_changes_make_a_dirty_version_with_a_warning(project: Path) -> None:
    (project / "app" / "new.txt").write_text("x")
    progress = Recorder()
    result = asyncio.run(build_image(_bp(project), version=None, push=False, secrets={"API_TOKEN": SECRET},
                                     progress=progress))
    try:
        assert result.dirty and result.version.endswith("-dirty")
        assert any("uncommitted changes" in text and level == "warning" for level, text in progress.notes)
    finally:
        _docker("image", "rm", result.image)


def test_a_wrong_build_secret_fails_the_build_without_showing_it(project: Path) -> None:
    with pytest.raises(Exception) as err:
        asyncio.run(build_image(_bp(project), version="t1", push=False, secrets={"API_TOKEN": "wrong"}))
    assert "building registry.lab:5000/csdeploy-test-tiny:t1 failed" in str(err.value)


def test_no_build_section_and_no_registry_are_input_errors(project: Path) -> None:
    text = (project / "bp.yml").read_text()
    no_build = loads_blueprint(text.replace("build:", "#build:"), source=project / "bp.yml")
    with pytest.raises(InvalidInput, match="no `build` section"):
        asyncio.run(build_image(no_build, version="v1", push=False, secrets={}))
    with pytest.raises(InvalidInput, match="no `registry` section"):
        asyncio.run(build_image(_bp(project), version="v1", push=True, secrets={"API_TOKEN": SECRET}))


@pytest.mark.parametrize("daemon", ["as configured", "unreachable"])
def test_client_and_push_address(daemon: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A client is chosen by what it is, with its daemon up or not: a daemon that cannot be
    reached is the build's error to report, not "no docker client here"."""
    if shutil.which("docker") is None:
        pytest.skip("needs a docker client on PATH")
    if daemon == "unreachable":  # the real client, pointed at a socket nobody listens on
        monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/nobody.sock")
    client = asyncio.run(find_client())
    assert client.buildx or int(client.version.split(".")[0]) < 23
    assert push_target("registry.lab:5000/demo-app", "v1", {"registry.lab:5000": "localhost:5000"}) == \
        "localhost:5000/demo-app:v1"
    assert push_target("ghcr.io/a/b", "v1", {"registry.lab:5000": "localhost:5000"}) == "ghcr.io/a/b:v1"


def test_a_role_with_a_build_of_its_own_gets_its_image_with_the_same_version(project: Path) -> None:
    """Several images: the app's and the admin role's own, both built and tagged with one version
    (a deploy runs them together)."""
    admin = project / "admin"
    admin.mkdir()
    (admin / "Dockerfile").write_text(f"FROM {BASE}\nARG CSDEPLOY_VERSION\nRUN echo admin $CSDEPLOY_VERSION > /who\n")
    text = (project / "bp.yml").read_text().replace(
        "roles: {web: {proxy: {app_port: 8000}}}",
        "roles: {web: {proxy: {app_port: 8000}}, admin: {image: registry.lab:5000/csdeploy-test-admin, "
        "proxy: {app_port: 80}, build: {context: admin}}}")
    (project / "bp.yml").write_text(text)
    # a version of this run's own: the fast tiers of two Pythons run this test at the same time
    # on one Docker engine, and one's clean-up removed the other's image (CI, 3.12 beside 3.13)
    version = f"v7-{uuid.uuid4().hex[:8]}"
    result = asyncio.run(build_image(_bp(project), version=version, push=False, secrets={"API_TOKEN": SECRET}))
    try:
        assert result.image == f"registry.lab:5000/csdeploy-test-tiny:{version}"
        assert [one.image for one in result.also] == [f"registry.lab:5000/csdeploy-test-admin:{version}"]
        assert _docker("run", "--rm", result.also[0].image, "cat", "/who").stdout.strip() == f"admin {version}"
        label = _docker("image", "inspect", "--format", '{{index .Config.Labels "service"}}', result.also[0].image)
        assert label.stdout.strip() == "tiny"
    finally:
        _docker("image", "rm", result.image, *(one.image for one in result.also))


def test_a_missing_role_build_context_is_named_before_anything_builds(project: Path) -> None:
    text = (project / "bp.yml").read_text().replace(
        "roles: {web: {proxy: {app_port: 8000}}}",
        "roles: {web: {proxy: {app_port: 8000}}, admin: {image: registry.lab:5000/x, build: {context: nowhere}}}")
    (project / "bp.yml").write_text(text)
    with pytest.raises(InvalidInput, match=r"bp.yml: roles.admin.build.context: .*nowhere is not a directory"):
        asyncio.run(build_image(_bp(project), version="v7", push=False, secrets={"API_TOKEN": SECRET}))
