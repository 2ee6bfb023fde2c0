"""The suite fails when its tests leave csdeploy state in the checkout (tests/support/checkout_guard.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

WRITES = """
import os
def test_runs_csdeploy_in_the_checkout():
    os.makedirs(".csdeploy/demo/finishing")
"""


@pytest.fixture(autouse=True)
def importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """The inner run imports the plugin from this checkout."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))


def test_state_written_into_the_checkout_fails_the_run(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(WRITES)
    result = pytester.runpytest_subprocess("-p", "tests.support.checkout_guard", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*1 passed*"])
    result.stdout.fnmatch_lines(["ERROR: the tests wrote .csdeploy into the checkout*"])


def test_state_that_was_there_before_is_not_blamed_on_the_tests(pytester: pytest.Pytester) -> None:
    (pytester.path / ".csdeploy").mkdir()
    pytester.makepyfile(WRITES)
    result = pytester.runpytest_subprocess("-p", "tests.support.checkout_guard", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.OK
    assert "into the checkout" not in result.stdout.str()
