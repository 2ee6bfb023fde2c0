"""``CSDEPLOY_TEST_CPU=N`` lists the N tests that used the most CPU (tests/support/cpu_time.py),
counting a test's own work and its subprocesses', not the time it spent waiting."""

from __future__ import annotations

import pytest

INNER = """
import subprocess
import sys
import time


def burn(seconds):
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_works_hard():
    burn(0.3)


def test_starts_a_busy_child():
    subprocess.run([sys.executable, "-c", "import time\\nend = time.process_time() + 0.3\\n"
                    "while time.process_time() < end: pass"], check=True)


def test_only_waits():
    time.sleep(0.3)
"""


def test_the_costliest_tests_are_listed_by_cpu_not_wall_time(pytester: pytest.Pytester,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CSDEPLOY_TEST_CPU", "2")
    pytester.makepyfile(test_inner=INNER)
    # The inner run's own ini, as pyproject.toml sets it (pytest-asyncio warns when it is unset).
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    result = pytester.runpytest_inprocess("-p", "tests.support.cpu_time", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
    listed = [line for line in result.outlines if line.endswith(("test_works_hard", "test_starts_a_busy_child",
                                                                 "test_only_waits"))]
    assert sorted(line.rsplit("::", 1)[1] for line in listed) == ["test_starts_a_busy_child", "test_works_hard"]
    assert all(float(line.split("s cpu")[0]) >= 0.25 for line in listed)

