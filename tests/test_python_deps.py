"""scripts/python_deps.py: when scripts/lab-prereqs may skip `pip install -e .[test,dns]`."""

from __future__ import annotations

import importlib.util
import shutil
from importlib import metadata
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "python_deps.py"


@pytest.fixture
def deps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The script's module, for a checkout at tmp_path/checkout (a copy of pyproject.toml) whose
    editable install is this environment's csdeploy, and a stamp cache of the test's own."""
    spec = importlib.util.spec_from_file_location("python_deps", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    shutil.copy(SCRIPT.parent.parent / "pyproject.toml", checkout / "pyproject.toml")
    monkeypatch.setattr(module, "ROOT", checkout)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return module


@pytest.fixture
def installed_here(deps: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deps, "_installed_here", lambda: metadata.distribution(deps.PROJECT))


def test_a_fresh_clone_installs(deps: ModuleType, installed_here: None) -> None:
    assert not deps.current("[test,dns]"), "no stamp yet: install"


def test_a_recorded_install_is_current_until_pyproject_or_the_extras_change(deps: ModuleType,
                                                                             installed_here: None) -> None:
    deps.record("[test,dns]")
    assert deps.current("[test,dns]")
    assert not deps.current("[test]"), "other extras: install"
    pyproject = deps.ROOT / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"click>=8.1",', '"click>=8.1", "rich",'))
    assert not deps.current("[test,dns]"), "a changed pyproject.toml: install"
    deps.record("[test,dns]")
    assert deps.current("[test,dns]")


def test_another_checkouts_install_is_not_current(deps: ModuleType) -> None:
    """The interpreter is shared by checkouts: the editable install must be this one's."""
    deps.record("[test,dns]")
    assert deps._installed_here() is None  # installed from elsewhere, never from tmp_path
    assert not deps.current("[test,dns]")


class _Dist:
    def __init__(self, *requires: str) -> None:
        self.requires = list(requires)


def test_a_requirement_missing_or_too_old_is_not_current(deps: ModuleType) -> None:
    pytest_version = metadata.version("pytest")
    assert deps._requirements_met(_Dist(f"pytest=={pytest_version}", "no-such-dist-anywhere; extra == 'other'"),
                                  {"test"})
    assert not deps._requirements_met(_Dist("no-such-dist-anywhere>=1"), set()), "uninstalled since"
    assert not deps._requirements_met(_Dist("pytest>=999"), set()), "an older version than required"
    assert not deps._requirements_met(_Dist("no-such-dist-anywhere; extra == 'test'"), {"test"})
