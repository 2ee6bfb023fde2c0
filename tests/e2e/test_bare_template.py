"""A VM from the bare template (no Docker): csdeploy installs Docker itself, then deploys.

One environment (e2e-bare) from tests/e2e/blueprints/bare.yml, one web VM, no accessories,
created with ``--set 'cloud.template=Debian 12 bookworm 2026-11-01'``. The rollout's prepare
stage finds no docker and installs Debian's docker.io (``rollout.docker_install: apt``), so
the VM must reach deb.debian.org through the lab's network (a failure shows apt's error).
Steps depend on each other (see conftest: a failed step skips the rest).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import Lab, cloud_leftovers, docker_leftovers, environment, http, page_version, ssh

ENV = "e2e-bare"
BLUEPRINT = str(Path(__file__).parent / "blueprints" / "bare.yml")
BARE = "Debian 12 bookworm 2026-11-01"
SETS = ("--set", f"cloud.template={BARE}")
NO_DOCKER = "command -v docker && exit 1; dpkg-query -W docker.io && exit 1; exit 0"

pytestmark = pytest.mark.story


class State:
    inventory: dict[str, Any] = {}


@pytest.fixture(scope="module")
def bare(lab: Lab) -> Iterator[Lab]:
    with environment(lab, ENV):
        yield lab


def test_a_the_bare_template_has_no_docker(bare: Lab) -> None:
    from cloudstack_deploy.lab.templates import image_name

    image = image_name("debian-12")
    proc = subprocess.run(["docker", "run", "--rm", "--entrypoint", "/bin/sh", image, "-c", NO_DOCKER],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{image} (template {BARE!r}) already has Docker: {proc.stdout}{proc.stderr}"


def test_b_create_env_installs_docker_and_serves_v1(bare: Lab) -> None:
    run = bare.csdeploy("create-env", BLUEPRINT, "--env", ENV, "--version", "v1", "--progress", "plain", *SETS,
                        timeout=600)
    bare.record("bare", create_env_seconds=round(run.seconds, 1))
    State.inventory = bare.inventory(ENV)
    assert State.inventory["template"] == BARE, State.inventory["template"]
    web = State.inventory["hosts"][0]
    url = f"http://{web['public_ip']}/"
    status, body = http("GET", url)
    assert status == 200 and page_version(body) == "v1", f"GET {url}: {status} {body!r}\n" + run.explain()


def test_c_docker_was_installed_on_the_vm_by_csdeploy(bare: Lab) -> None:
    host = State.inventory["hosts"][0]["name"]
    code, out, err = ssh(bare, ENV, host, "docker version --format '{{.Server.Version}}'")
    assert code == 0 and out.strip(), f"docker version on {host}: {code} {out}{err}"
    code, out, err = ssh(bare, ENV, host, "dpkg-query -W -f='${Status} ${Version}' docker.io")
    assert code == 0 and out.startswith("install ok installed"), f"{code} {out}{err}"
    # apt's own log on the VM: docker.io came from the install command csdeploy runs.
    code, out, err = ssh(bare, ENV, host, "cat /var/log/apt/history.log")
    assert "apt-get install -y -qq docker.io pigz" in out, f"no csdeploy install of docker.io in apt's log:\n{out}{err}"
    # and pigz with it: the VM's dockerd decompresses the layers it pulls with unpigz
    code, out, err = ssh(bare, ENV, host, "command -v unpigz")
    assert code == 0 and out.strip(), f"no unpigz on {host}: {code} {out}{err}"


def test_d_teardown_leaves_nothing(bare: Lab) -> None:
    bare.csdeploy("teardown", "--env", ENV, "--yes", "--progress", "plain")
    assert cloud_leftovers(bare, ENV, State.inventory) == {}
    assert docker_leftovers(bare, State.inventory) == {}
