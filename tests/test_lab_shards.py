"""The lab tier's shards (tests/support/lab_shards.py, run side by side by scripts/test): the
table of durations lists every lab module, the shards are balanced, and together they run every
lab test exactly once, a module the table does not list yet included."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import lab_shards
from tests.support.lab_shards import TABLE, lab_modules, plan, read_table, shard_args

REPO = Path(__file__).resolve().parent.parent


def test_the_table_lists_every_lab_module_and_nothing_else() -> None:
    """A new lab module would run on the lightest shard without its time being counted (and a
    removed one would skew the balance): the table must be kept in step with the modules."""
    table = read_table()
    modules = lab_modules()
    missing = sorted(modules - table.keys())
    stale = sorted(table.keys() - modules)
    assert not missing, (f"{TABLE.relative_to(REPO)} lacks lab module(s) {missing}: add a 'SECONDS PATH' "
                         "line each (their time in a --durations=0 run of the lab tier)")
    assert not stale, f"{TABLE.relative_to(REPO)} lists {stale}, which are no lab modules (any more)"
    assert all(seconds > 0 for seconds in table.values()), table


def test_the_lab_modules_are_those_of_the_lab_dirs_and_those_taking_docker_engine(tmp_path: Path) -> None:
    tests = tmp_path / "tests"
    for rel, text in {
        "e2e/test_story.py": "def test_a(): pass\n",
        "lab/test_backend.py": "def test_b(): pass\n",
        "formats/test_engine.py": "def test_c(docker_engine: None) -> None: pass\n",
        "formats/test_plain.py": "def test_d(): '''no docker_engine here'''\n",
        "e2e/helpers.py": "",
    }.items():
        (tests / rel).parent.mkdir(parents=True, exist_ok=True)
        (tests / rel).write_text(text)
    assert lab_modules(tests) == {"tests/e2e/test_story.py", "tests/lab/test_backend.py",
                                  "tests/formats/test_engine.py"}


def test_a_bad_line_of_the_table_is_named_with_its_file_and_line(tmp_path: Path) -> None:
    table = tmp_path / "lab_shards.txt"
    table.write_text("# comment\n12 tests/e2e/test_a.py\nsoon tests/e2e/test_b.py\n")
    with pytest.raises(ValueError, match=r"lab_shards.txt:3: 'soon tests/e2e/test_b.py'"):
        read_table(table)
    table.write_text("12 tests/e2e/test_a.py\n3 tests/e2e/test_a.py\n")
    with pytest.raises(ValueError, match="lab_shards.txt:2: tests/e2e/test_a.py is listed twice"):
        read_table(table)


@pytest.mark.parametrize("count", [2, 3])
def test_the_shards_of_todays_table_are_balanced_and_cover_every_module_once(count: int) -> None:
    table = read_table()
    shards = plan(count, table)
    dealt = [m for shard in shards for m in shard.modules]
    assert sorted(dealt) == sorted(lab_modules()), "every lab module on exactly one shard"
    loads = [shard.seconds for shard in shards]
    # greedy, longest first: no shard exceeds another by more than the longest module
    assert max(loads) - min(loads) <= max(table.values()), loads
    assert sum(shard.catch_all for shard in shards) == 1
    assert next(s for s in shards if s.catch_all).seconds == min(loads)


def test_a_module_the_table_lacks_goes_to_the_lightest_shard() -> None:
    table = {"tests/e2e/test_long.py": 600.0, "tests/e2e/test_mid.py": 300.0, "tests/e2e/test_short.py": 200.0,
             "tests/e2e/test_gone.py": 50.0}
    present = {"tests/e2e/test_long.py", "tests/e2e/test_mid.py", "tests/e2e/test_short.py",
               "tests/e2e/test_new.py"}
    long_, rest = plan(2, table, present)
    assert (long_.modules, long_.catch_all) == (["tests/e2e/test_long.py"], False)
    assert rest.catch_all and rest.modules == ["tests/e2e/test_mid.py", "tests/e2e/test_new.py",
                                               "tests/e2e/test_short.py"]
    assert "tests/e2e/test_gone.py" not in long_.modules + rest.modules  # listed, but gone
    assert shard_args([long_, rest]) == [["tests/e2e/test_long.py"], ["tests", "--ignore=tests/e2e/test_long.py"]]


def test_together_the_shards_collect_every_test_once_a_new_module_included(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real thing: pytest run with each shard's arguments, as scripts/test runs it."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")  # collection only: no plugin needed
    for name in ("long", "mid", "short", "new"):
        pytester.makepyfile(**{f"tests/e2e/test_{name}": f"def test_{name}_1(): pass\ndef test_{name}_2(): pass\n"})
    table = {"tests/e2e/test_long.py": 600.0, "tests/e2e/test_mid.py": 300.0, "tests/e2e/test_short.py": 200.0}
    shards = plan(2, table, lab_modules(pytester.path / "tests"))
    seen: list[str] = []
    for args in shard_args(shards):
        result = pytester.runpytest("--collect-only", "-q", *args)
        seen += [line for line in result.outlines if "::" in line]
    want = [f"tests/e2e/test_{n}.py::test_{n}_{i}" for n in ("long", "mid", "new", "short") for i in (1, 2)]
    assert sorted(seen) == want


def test_the_plan_scripts_test_reads_names_each_lab_module_once() -> None:
    out = subprocess.run([sys.executable, "-m", "tests.support.lab_shards", "2"], cwd=REPO, capture_output=True,
                         text=True, timeout=60, check=True).stdout.splitlines()
    assert len(out) == 2
    explicit = [line.split() for line in out if not line.startswith("tests ")]
    catch_all = [line.split() for line in out if line.startswith("tests ")]
    assert len(explicit) == 1 and len(catch_all) == 1
    ignored = {arg.removeprefix("--ignore=") for arg in catch_all[0][1:]}
    assert ignored == set(explicit[0])
    assert set(explicit[0]) < lab_modules()
    assert lab_shards.UNKNOWN_SECONDS > 0
