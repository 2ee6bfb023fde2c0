"""Fixtures: a real simulator over HTTP on loopback, and real clients pointed at it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cs import CloudStack

from cloudstack_deploy.lab.simulator.server import ThreadedSimulator
from tests.support.sim import KEY, SECRET, cs_client, make_config, public_range

__all__ = ["KEY", "SECRET", "make_config", "public_range"]  # what this package's tests import from here


@pytest.fixture
def simulator(request: pytest.FixtureRequest) -> Iterator[ThreadedSimulator]:
    """A simulator per test; ``@pytest.mark.simulator(**SimulatorConfig fields)`` configures it."""
    marker = request.node.get_closest_marker("simulator")
    kwargs = dict(marker.kwargs) if marker else {}
    with ThreadedSimulator(make_config(**kwargs)) as sim:
        yield sim


@pytest.fixture
def cs(simulator: ThreadedSimulator) -> CloudStack:
    """The `cs` client, as a user would configure it, waiting for jobs itself."""
    return cs_client(simulator.endpoint)


@pytest.fixture
def cs_raw(simulator: ThreadedSimulator) -> CloudStack:
    """The `cs` client without waiting for async jobs (returns id + jobid)."""
    return cs_client(simulator.endpoint, wait=False)
