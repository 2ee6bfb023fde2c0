"""The suite must leave the checkout as it found it: no csdeploy state written into it.

A test that runs csdeploy (or a host script) with the checkout as its working directory and no
CSDEPLOY_HOME of its own writes `.csdeploy/` there. With two Pythons' tiers side by side in one
checkout (CI), one tier then removes what the other is using (the race of 2026-12-06). This
plugin fails the run that leaves such state behind, naming what appeared, so that the test
responsible is found when it is written rather than by a race later.
"""

from __future__ import annotations

from pathlib import Path

import pytest

#: What csdeploy writes where it runs (its state, a host script's work folder).
WATCHED = (".csdeploy",)
_BEFORE = pytest.StashKey[frozenset[str]]()


def _present(root: Path) -> frozenset[str]:
    return frozenset(name for name in WATCHED if (root / name).exists())


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_BEFORE] = _present(config.rootpath)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if hasattr(session.config, "workerinput"):  # under xdist: the controller looks, once
        return
    root = session.config.rootpath  # the checkout (where pyproject.toml is)
    appeared = sorted(_present(root) - session.config.stash.get(_BEFORE, frozenset()))
    if not appeared:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    message = (f"the tests wrote {', '.join(appeared)} into the checkout ({root}): a test ran csdeploy "
               "there without a tmp_path working directory or CSDEPLOY_HOME of its own")
    if reporter is not None:
        reporter.write_line(f"ERROR: {message}", red=True, bold=True)
    if session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
