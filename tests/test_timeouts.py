"""A test that hangs fails within its bound, and the run goes on (tests/support/timeouts.py).

A pytest run of its own (pytester, in a subprocess: the timer's SIGALRM must not meet this
run's) with the suite's timeout method from pyproject.toml and a 1 s bound: a sleeping test,
an async test awaiting for ever, and a fixture whose teardown hangs after its test failed
(which pytest-timeout 2.4 alone leaves unbounded) each fail in about 1 s, and the tests after
them still run.
"""

from __future__ import annotations

import os
import time
import tomllib

import pytest

from tests.support.cli import REPO

HANG = 120  # seconds a hung test would take without its bound
BOUND = 1  # each of the three hangs costs the run this much wall time

INNER = f"""
import asyncio
import time

import pytest


def test_sleeps_too_long():
    time.sleep({HANG})


async def test_awaits_for_ever():
    await asyncio.sleep({HANG})


@pytest.fixture
def close_that_hangs():
    yield
    time.sleep({HANG})


def test_fails_then_its_teardown_hangs(close_that_hangs):
    assert False, "the test's own failure"


def test_after_them_all():
    pass
"""


def test_a_hang_fails_the_test_within_its_bound_and_the_run_goes_on(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    options = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert options["timeout"] >= 60 and options["timeout_method"] == "signal", options
    pytester.makeini(f"""
        [pytest]
        asyncio_mode = auto
        asyncio_default_fixture_loop_scope = function
        timeout = {BOUND}
        timeout_method = {options["timeout_method"]}
    """)
    pytester.makepyfile(test_hangs=INNER)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    started = time.monotonic()
    result = pytester.runpytest_subprocess("-p", "tests.support.timeouts", "-p", "no:cacheprovider",
                                           "-rA", timeout=4 * HANG)
    seconds = time.monotonic() - started
    out = result.stdout.str()
    assert seconds < 4 * BOUND + 30, f"the run took {seconds:.0f} s\n{out}"
    result.assert_outcomes(passed=1, failed=3, errors=1)
    assert "PASSED test_hangs.py::test_after_them_all" in out
    assert "ERROR test_hangs.py::test_fails_then_its_teardown_hangs" in out  # the teardown's own bound
    assert out.count(f"Timeout (>{float(BOUND)}s) from pytest-timeout") >= 3, out
