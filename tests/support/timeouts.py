"""Every test has a bound: a hang fails that test with a message, and the run goes on.

pytest-timeout gives each test (setup, call and teardown together) the ``timeout`` of
pyproject.toml's [tool.pytest.ini_options], or its ``@pytest.mark.timeout(seconds)``; tests
that need the Docker engine (marked ``lab``) get :data:`LAB_TIMEOUT`. The method
is ``signal``: on a timeout the test fails (stacks of every thread printed) and the next test
runs; ``thread`` would end the whole run with ``os._exit``.

This plugin (loaded by tests/conftest.py) closes one gap: pytest-timeout 2.4 cancels its
timer as soon as a test *fails* (its ``pytest_exception_interact`` hook, meant for ``--pdb``),
so a fixture teardown that hangs after a failed test, the usual way an asyncio server's close
hangs, had no bound at all (pytest-dev/pytest-timeout#196, fixed upstream after 2.4.0). Here
the timer is armed again for the teardown, with the test's own settings.
"""

from __future__ import annotations

from typing import Any

import pytest

#: Per test, for tests that need the Docker engine (tests/lab, tests/e2e, the docker_engine
#: fixture): setup and teardown include the session's lab (`lab up` is bounded at 1800 s, its
#: `lab down --purge` at 600 s) or a docker-backend simulator (1800 s when it builds the VM
#: templates), and a story step's own CLI bounds reach 900-1800 s. Healthy runs take a few
#: minutes at most (create-env of the demo ~75 s, a lab up with cached images ~1 min), so
#: this never trips on a slow machine and still ends a hung test within the hour.
LAB_TIMEOUT = 3600.0

_SETTINGS = pytest.StashKey[Any]()
_ARMED = pytest.StashKey[bool]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """:data:`LAB_TIMEOUT` for ``lab`` tests (marked by tests/conftest.py, which runs first)
    that carry no timeout mark of their own."""
    if not config.pluginmanager.hasplugin("timeout"):
        return  # pytest-timeout is not installed (`pip install -e .[test]` brings it)
    for item in items:
        if item.get_closest_marker("lab") and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(LAB_TIMEOUT))


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> None:
    """Note the test's settings; pytest-timeout's own implementation then sets the timer."""
    item.stash[_SETTINGS] = settings
    item.stash[_ARMED] = True


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_timeout_cancel_timer(item: pytest.Item) -> None:
    item.stash[_ARMED] = False


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    settings = item.stash.get(_SETTINGS, None)
    if settings is not None and not item.stash.get(_ARMED, True) and not settings.func_only:
        item.config.pluginmanager.hook.pytest_timeout_set_timer(item=item, settings=settings)
    return (yield)
