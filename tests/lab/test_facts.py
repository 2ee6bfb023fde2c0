"""The rollout's facts script against a real Docker engine: what it reports is what is there."""

from __future__ import annotations

import secrets
import subprocess

import pytest

from cloudstack_deploy.rollout.commands import facts

BASE = "csdeploy-lab/debian:bookworm"  # built by every lab; the facts only read


def docker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture
def container(docker_engine: None) -> str:
    if docker("image", "inspect", BASE).returncode != 0:
        pytest.skip(f"{BASE} is not built here (csdeploy lab up builds it)")
    name = f"csdeploy-facts-{secrets.token_hex(4)}"
    run = docker("run", "-d", "--name", name, "--label", "csdeploy.config=feedbeef", BASE, "sleep", "120")
    assert run.returncode == 0, run.stderr
    yield name
    docker("rm", "-f", name)


def test_the_facts_report_present_and_missing_images_and_containers(container: str) -> None:
    missing_image = f"{BASE}-missing-{secrets.token_hex(3)}"
    script = facts.script(images=[BASE, missing_image], accessories=[container],
                          containers=[f"{container}-absent"], mounts=["/", "/nonexistent-mount"])
    res = subprocess.run(["sh", "-s"], input=script.text(), capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    f = facts.parse(res.stdout, accessories=[container])
    assert f.docker
    assert f.has_image(BASE) and not f.has_image(missing_image)
    assert f.accessories[container] == ("feedbeef", "running")
    assert f"{container}-absent" not in f.containers
    assert f.mounts == {"/": True}
