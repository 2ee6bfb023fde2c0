"""CPU seconds per test, for finding the tests that cost the machine most (issue 22).

``--durations`` shows wall time, which on a shared machine is mostly waiting (simulator job
timers, polls, another suite's load). With ``CSDEPLOY_TEST_CPU=N`` in the environment, each
test's CPU time is measured (this process's, its threads' included, such as an in-process
simulator, plus that of the subprocesses it waited for, such as a CLI run) and the N costliest
tests are listed at the end, setup and teardown included (a module-scoped fixture's cost falls
on the first test that uses it, as with ``--durations``). Works under pytest-xdist: each
worker measures its tests and the totals travel with the reports.

    CSDEPLOY_TEST_CPU=30 PYTHONPATH=$PWD python -m pytest -q -m "not lab" -n 4 --durations=30
"""

from __future__ import annotations

import os
import resource
import time
from collections import defaultdict
from collections.abc import Iterator

import pytest

ENV = "CSDEPLOY_TEST_CPU"
PROPERTY = "cpu_seconds"
_PHASES = pytest.StashKey[dict[str, float]]()


def _cpu() -> float:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get(ENV):
        try:
            count = int(os.environ[ENV])
        except ValueError:
            count = 30
        config.pluginmanager.register(CpuTime(count), "csdeploy-cpu-time")


class CpuTime:
    """Measures each phase where the test runs (a worker under xdist), adds the seconds to
    the phase's report, and sums them per test where the reports arrive (the controller)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.totals: defaultdict[str, float] = defaultdict(float)

    @staticmethod
    def _measured(item: pytest.Item, phase: str) -> Iterator[None]:
        started = _cpu()
        yield
        item.stash.setdefault(_PHASES, {})[phase] = _cpu() - started

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Iterator[None]:
        yield from self._measured(item, "setup")

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Iterator[None]:
        yield from self._measured(item, "call")

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_teardown(self, item: pytest.Item) -> Iterator[None]:
        yield from self._measured(item, "teardown")

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
        outcome = yield
        spent = item.stash.get(_PHASES, {}).get(call.when)
        if spent is not None:
            outcome.get_result().user_properties.append((PROPERTY, spent))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for name, value in report.user_properties:
            if name == PROPERTY:
                self.totals[report.nodeid] += float(value)

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.totals:
            return
        terminalreporter.write_sep("=", f"{self.count} tests with the most CPU ({ENV})")
        for nodeid, spent in sorted(self.totals.items(), key=lambda kv: -kv[1])[:self.count]:
            terminalreporter.write_line(f"{spent:8.2f}s cpu  {nodeid}")
        terminalreporter.write_line(f"{sum(self.totals.values()):8.2f}s cpu  all {len(self.totals)} tests")
