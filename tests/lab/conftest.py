"""Fixtures for the docker backend's tests: one simulator whose VMs are real hosts.

The simulator is module-scoped (VMs take seconds to boot, so tests share them) and runs with
its own ``CSDEPLOY_HOME`` (volume files, no lab CA) and its own loopback /24 of public IPs.
Checks go through the `cs` client, asyncssh, the docker CLI and losetup: never through the
backend under test.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cs import CloudStack

from cloudstack_deploy.lab.docker import engine_available
from cloudstack_deploy.lab.simulator.server import SimulatorConfig, ThreadedSimulator

DOCKER_KEY = "docker-lab-key"
DOCKER_SECRET = "docker-lab-secret"


def docker_problem() -> str | None:
    """None when the docker backend can run here, else why its tests are skipped."""
    problem = asyncio.run(engine_available())
    if problem:
        return f"needs a Docker engine: {problem}"
    if os.geteuid() != 0 or shutil.which("losetup") is None:
        return "needs root and losetup (data volumes are loop devices)"
    return None


def lab_docker(*args: str, check: bool = True, input: bytes | None = None,
               timeout: float = 300) -> subprocess.CompletedProcess[bytes]:
    """The docker CLI, for checks from outside the simulator."""
    proc = subprocess.run(["docker", *args], input=input, capture_output=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed: {proc.stderr.decode(errors='replace')}")
    return proc


@pytest.fixture(scope="module")
def docker_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A CSDEPLOY_HOME of the module's own (the backend reads it when it starts)."""
    home = tmp_path_factory.mktemp("csdeploy-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CSDEPLOY_HOME", str(home))
        yield home


@pytest.fixture(scope="module")
def docker_sim(docker_home: Path) -> Iterator[ThreadedSimulator]:
    """A docker-backend simulator (templates are built first if they are not cached)."""
    cidr = f"127.{random.randint(60, 99)}.{random.randint(0, 255)}.0/24"
    config = SimulatorConfig(port=0, backend="docker", api_key=DOCKER_KEY, secret_key=DOCKER_SECRET,
                             job_seconds=0.05, public_range=cidr)
    server = ThreadedSimulator(config)
    server.__enter__()
    try:
        yield server
    finally:
        if server._thread.is_alive():  # a test may have stopped it to check the cleanup
            server.__exit__(None, None, None)


@pytest.fixture(scope="module")
def docker_cs(docker_sim: ThreadedSimulator) -> CloudStack:
    """The `cs` client, waiting for jobs (real VMs: generous job timeout)."""
    return CloudStack(endpoint=docker_sim.endpoint, key=DOCKER_KEY, secret=DOCKER_SECRET,
                      poll_interval=0.1, job_timeout=300, fetch_result=True,
                      method="post")  # user data with a disk is over the 4096-char GET limit
