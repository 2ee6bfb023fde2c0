"""The fast tier's longest tests start first, one at the head of each worker's slice
(tests/support/long_first.py), and tests/fast_durations.txt names tests that exist."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support.long_first import TABLE, long_first, read_table

REPO = Path(__file__).resolve().parent.parent


def slices(order: list[int], n: int, workers: int) -> list[list[int]]:
    """What xdist's WorkStealingScheduling hands each worker at the start: the first
    len // W of what is pending, then len // (W - 1) of the rest, ..."""
    out, start = [], 0
    for k in range(workers):
        size = (n - start) // (workers - k)
        out.append(order[start:start + size])
        start += size
    return out


def test_each_worker_s_slice_starts_with_its_share_of_the_long_tests() -> None:
    ids = [f"t{i}" for i in range(100)]
    table = {"t99": 14.0, "t98": 12.0, "t97": 11.0, "t50": 9.0, "t3": 5.0, "t60": 4.0, "gone": 30.0}
    order = long_first(ids, table, 3)
    assert sorted(order) == list(range(100))  # every test once: only the order changes
    heads = slices(order, 100, 3)
    assert [s[0] for s in heads] == [99, 98, 97]  # the three longest start at once, one per worker
    assert sorted(heads[0][:2] + heads[1][:2] + heads[2][:2]) == [3, 50, 60, 97, 98, 99]
    # dealt to the least loaded slice: 14 | 12 + 5 | 11 + 9 + ... never two of the longest together
    loads = [sum(table.get(ids[i], 0) for i in s) for s in heads]
    assert max(loads) - min(loads) <= 9.0, loads
    rest = [i for i in order if ids[i] not in table]
    assert rest == sorted(rest)  # the others keep their collection order


def test_one_worker_or_none_keeps_the_collection_order() -> None:
    ids = ["a", "b", "c"]
    assert long_first(ids, {"c": 20.0}, 1) == [0, 1, 2]
    assert long_first(ids, {"c": 20.0}, 0) == [0, 1, 2]


def test_more_long_tests_than_a_slice_holds_still_runs_each_test_once() -> None:
    ids = [f"t{i}" for i in range(7)]
    order = long_first(ids, {nodeid: 10.0 + i for i, nodeid in enumerate(ids)}, 3)
    assert sorted(order) == list(range(7))
    assert [len(s) for s in slices(order, 7, 3)] == [2, 2, 3]


def test_a_malformed_line_names_the_file_and_line(tmp_path: Path) -> None:
    table = tmp_path / "durations.txt"
    table.write_text("# comment\n\n4.5 tests/a.py::t\nslow tests/b.py::t\n")
    with pytest.raises(pytest.UsageError, match=r"durations.txt:4: expected 'SECONDS NODEID'"):
        read_table(table)
    table.write_text("4.5 tests/a.py::t[x-1]\n")
    assert read_table(table) == {"tests/a.py::t[x-1]": 4.5}


def test_every_line_of_the_table_names_a_test_function_that_exists() -> None:
    """Without collecting the suite: the module exists and defines the test function."""
    table = read_table(TABLE)
    assert len(table) >= 10
    defined: dict[str, set[str]] = {}
    for nodeid in table:
        path, _, name = nodeid.partition("::")
        if path not in defined:
            tree = ast.parse((REPO / path).read_text())
            defined[path] = {n.name for n in ast.walk(tree)
                             if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
        assert name.split("[")[0] in defined[path], f"{TABLE.name}: {nodeid} is not a test any more"
