"""In-process simulators for tests: each with a loopback range of its own and fast timings.

Public ranges: every simulator of a test run takes a /24 of its own in 127.40.0.0 -
127.199.255.0, away from the labs' ranges (127.200.0.0/16 for ~/.csdeploy's lab, 127.201+
for other homes' labs, see cloudstack_deploy/lab/config.py), so a test never binds an
address a running lab (a developer's, another suite's) uses, and tests never share one.
"""

from __future__ import annotations

import os
import random
from typing import Any

from cs import CloudStack

from cloudstack_deploy.lab.simulator.server import SimulatorConfig

KEY = "test-api-key"
SECRET = "test-secret-key"


def worker_octets(octets: str, worker: str | None, workers: str | None) -> tuple[int, int]:
    """The second octets (first, last) this process draws from: CSDEPLOY_TEST_OCTETS=A-B
    narrows them, so two runs at once (scripts/test runs the other Pythons' fast tiers side by
    side) never draw the same range; under pytest-xdist each worker (``gw3`` of 8) takes its
    own equal share of A-B, so two workers never draw the same range either."""
    first, last = (int(x) for x in octets.split("-", 1))
    if not worker or not workers:
        return first, last
    index, count = int(worker.removeprefix("gw")), int(workers)
    share = (last - first + 1) // count
    if share < 1:
        raise ValueError(f"CSDEPLOY_TEST_OCTETS={octets}: fewer octets than the {count} xdist workers")
    return first + index * share, first + (index + 1) * share - 1


FIRST_OCTET, LAST_OCTET = worker_octets(os.environ.get("CSDEPLOY_TEST_OCTETS", "40-199"),
                                        os.environ.get("PYTEST_XDIST_WORKER"),
                                        os.environ.get("PYTEST_XDIST_WORKER_COUNT"))

_used: set[str] = set()


def public_range() -> str:
    """A loopback /24 that no other simulator of this run uses (and no lab)."""
    while True:
        cidr = f"127.{random.randint(FIRST_OCTET, LAST_OCTET)}.{random.randint(0, 255)}.0/24"
        if cidr not in _used:
            _used.add(cidr)
            return cidr


def make_config(**kw: Any) -> SimulatorConfig:
    """A memory-backend simulator on a free port with fast VMs and jobs; ``kw`` overrides."""
    base: dict[str, Any] = dict(port=0, api_key=KEY, secret_key=SECRET, vm_boot_seconds=0.05,
                                job_seconds=0.02, public_range=public_range())
    base.update(kw)
    return SimulatorConfig(**base)


def cs_client(endpoint: str, key: str = KEY, secret: str = SECRET, *, wait: bool = True,
              **kw: Any) -> CloudStack:
    """The `cs` client as a user configures it; ``wait``: it waits for async jobs itself."""
    options: dict[str, Any] = dict(poll_interval=0.02, job_timeout=30)
    if wait:
        options["fetch_result"] = True
    options.update(kw)
    return CloudStack(endpoint=endpoint, key=key, secret=secret, **options)
