"""Suite-wide: the ``lab`` marker (tests that need the Docker engine), set where nobody can
forget it, and the ``docker_engine`` fixture.

``lab`` is set on every test under tests/lab and tests/e2e, and on any other test that uses
``docker_engine`` (directly or through its fixtures). ``pytest -m "not lab"`` (what
``scripts/test --fast`` runs) is then the whole suite minus what needs Docker. Lab tests use
a CSDEPLOY_HOME and a lab of their own (tests.support.lab), never the developer's; every
other test runs with a CSDEPLOY_HOME of the run's own (``_csdeploy_home_of_the_run``).

scripts/test spreads the fast tier over pytest-xdist workers (``-n``): each worker has its own
temp dirs, CSDEPLOY_HOME, PostgreSQL (tests/store) and share of the simulators' loopback
ranges (tests.support.sim.worker_octets). The ``lab`` tests run in one process of their own
beside it, in order, sharing the session's lab.

Every test has a time bound (pytest-timeout: pyproject's ``timeout`` for the fast tier, and
``tests.support.timeouts.LAB_TIMEOUT`` for ``lab`` tests unless they carry a timeout mark of
their own); a hang fails that test and the run goes on (see tests/support/timeouts.py).
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.docker import docker_reason

pytest_plugins = ["pytester", "tests.support.timeouts", "tests.support.cpu_time", "tests.support.checkout_guard",
                  "tests.support.long_first"]

TESTS = Path(__file__).resolve().parent
LAB_DIRS = frozenset({"lab", "e2e"})
"""Test packages whose every test needs the Docker engine."""
UNDER_XDIST = ("lab tests run in one process, not spread over pytest-xdist workers (each would start a "
               "lab of its own): `pytest -m lab` without -n, as scripts/test runs them")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Under exactly ``-m "not lab"`` (the fast tiers), the directories whose every test is
    ``lab`` are not collected at all: every test there would be deselected, and importing them
    (and the lab modules they import) cost each pytest-xdist worker 0.1-0.2 s of its start."""
    if collection_path.name in LAB_DIRS and collection_path.parent == TESTS \
            and (config.getoption("markexpr", "") or "").strip() == "not lab":
        return True
    return None


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tops: dict[str, str] = {}  # per file: resolving a path is a few system calls, and 2,000 items share 200 files
    for item in items:
        if (top := tops.get(path := str(item.path))) is None:
            try:
                top = tops[path] = Path(path).resolve().relative_to(TESTS).parts[0]
            except ValueError:
                top = tops[path] = ""
        if top in LAB_DIRS or "docker_engine" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.lab)  # and tests.support.timeouts.LAB_TIMEOUT
            if os.environ.get("PYTEST_XDIST_WORKER"):  # each worker would start a lab of its own
                item.add_marker(pytest.mark.skip(reason=UNDER_XDIST))


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """What collection made (2,000 items, 200 modules and the product they import) lives until
    the run ends: the collector's oldest generation need not walk it again at every full pass.
    And a young pass every 50,000 allocations, not 700: a test's objects that live a little
    while (a simulator's state, a parsed blueprint) were walked by hundreds of young passes and
    moved up only to be walked again (measured: see the README's testing section).

    Only in pytest-xdist's workers (the fast tiers): the lab tier's one process runs the lab's
    simulator in a thread, and its detach story failed twice in four CI runs with these
    settings (a loop device busy with no holder; see tests/lab/test_docker_backend.py), never
    in the runs before. Until that is understood, the lab keeps Python's defaults."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        gc.freeze()
        gc.set_threshold(50_000, 20, 20)


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """Skip unless a Docker engine answers; using it marks the test ``lab``."""
    reason = docker_reason()
    if reason:
        pytest.skip(f"needs a Docker engine: {reason}")


@pytest.fixture(scope="session", autouse=True)
def _csdeploy_home_of_the_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Whatever the shell says, no test uses the developer's CSDEPLOY_HOME (~/.csdeploy):
    the run has a home of its own; fixtures give tests and labs their own homes below it."""
    home = tmp_path_factory.mktemp("csdeploy-home-of-the-run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CSDEPLOY_HOME", str(home))
        yield home
