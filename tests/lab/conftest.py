"""Fixtures for the docker backend's tests: one simulator whose VMs are real hosts.

Every test here needs the Docker engine (the ``lab`` marker is set for the whole directory,
see tests/conftest.py). The simulator is module-scoped (VMs take seconds to boot, so tests
share them) and runs with its own ``CSDEPLOY_HOME`` (volume files, no lab CA), hence its own
lab id, docker labels and guest subnets (cloudstack_deploy/lab/config.py), and its own
loopback /24 of public IPs. Checks go through the `cs` client, asyncssh, the docker CLI and
losetup: never through the backend under test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cs import CloudStack

from cloudstack_deploy.lab.config import release_lab_config
from cloudstack_deploy.lab.simulator.server import SimulatorConfig, ThreadedSimulator
from tests.support.docker import docker_backend_reason
from tests.support.sim import cs_client, public_range

DOCKER_KEY = "docker-lab-key"
DOCKER_SECRET = "docker-lab-secret"


@pytest.fixture(scope="module")
def docker_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A CSDEPLOY_HOME of the module's own (the backend reads it when it starts); its lab
    config (made by the backend) is released at the end, so its slot is free again."""
    reason = docker_backend_reason()
    if reason:
        pytest.skip(reason)
    home = tmp_path_factory.mktemp("csdeploy-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CSDEPLOY_HOME", str(home))
        try:
            yield home
        finally:
            release_lab_config()


def docker_config(**kw: object) -> SimulatorConfig:
    """A docker-backend simulator's config: free port, a loopback /24 of its own, fast jobs."""
    base: dict[str, object] = dict(port=0, backend="docker", api_key=DOCKER_KEY, secret_key=DOCKER_SECRET,
                                   job_seconds=0.05, public_range=public_range())
    base.update(kw)
    return SimulatorConfig(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def docker_sim(docker_home: Path) -> Iterator[ThreadedSimulator]:
    """A docker-backend simulator (templates are built first if they are not cached)."""
    server = ThreadedSimulator(docker_config())
    server.__enter__()
    try:
        yield server
    finally:
        if server._thread.is_alive():  # a test may have stopped it to check the cleanup
            server.__exit__(None, None, None)


@pytest.fixture(scope="module")
def docker_cs(docker_sim: ThreadedSimulator) -> CloudStack:
    """The `cs` client, waiting for jobs (real VMs: generous job timeout)."""
    return cs_client(docker_sim.endpoint, DOCKER_KEY, DOCKER_SECRET, poll_interval=0.1, job_timeout=300,
                     method="post")  # user data with a disk is over the 4096-char GET limit
