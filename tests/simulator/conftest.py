"""Fixtures: a real simulator over HTTP on loopback, and real clients pointed at it."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from cs import CloudStack

from cloudstack_deploy.lab.simulator.server import SimulatorConfig, ThreadedSimulator

KEY = "test-api-key"
SECRET = "test-secret-key"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "simulator(**kwargs): SimulatorConfig fields for the `simulator` fixture")


def public_range() -> str:
    """A loopback /24 of its own per simulator, so parallel or leftover listeners never clash."""
    return f"127.{random.randint(202, 250)}.{random.randint(0, 255)}.0/24"


def make_config(**kw: object) -> SimulatorConfig:
    base: dict[str, object] = dict(port=0, api_key=KEY, secret_key=SECRET, vm_boot_seconds=0.05,
                                   job_seconds=0.02, public_range=public_range())
    base.update(kw)
    return SimulatorConfig(**base)  # type: ignore[arg-type]


@pytest.fixture
def simulator(request: pytest.FixtureRequest) -> Iterator[ThreadedSimulator]:
    marker = request.node.get_closest_marker("simulator")
    kwargs = dict(marker.kwargs) if marker else {}
    with ThreadedSimulator(make_config(**kwargs)) as sim:
        yield sim


@pytest.fixture
def cs(simulator: ThreadedSimulator) -> CloudStack:
    """The `cs` client, as a user would configure it, waiting for jobs itself."""
    return CloudStack(endpoint=simulator.endpoint, key=KEY, secret=SECRET, poll_interval=0.02,
                      job_timeout=30, fetch_result=True)


@pytest.fixture
def cs_raw(simulator: ThreadedSimulator) -> CloudStack:
    """The `cs` client without waiting for async jobs (returns id + jobid)."""
    return CloudStack(endpoint=simulator.endpoint, key=KEY, secret=SECRET, poll_interval=0.02, job_timeout=30)
