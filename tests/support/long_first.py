"""The fast tier's longest tests start first, one at the head of each worker's queue (issue 22).

Under ``--dist worksteal`` (``scripts/test --fast``) pytest-xdist hands each worker a slice of
the collection, in order (the first worker the first ``n // W`` tests, the next ``n // (W-1)`` of
what is left, ...), and a worker that runs out steals the not-yet-started tail of the longest
queue. A test of 10 s or more (most of them wait: a simulated VM boot, a lock held for seconds,
SSH retries) that happens to start late is what the whole run waits for at the end. So the
tests listed in tests/fast_durations.txt (``SECONDS NODEID`` lines, from a ``--durations`` run
of the fast tier) are dealt out longest first, each to the slice with the least listed time so
far, and put at the head of their slice: they run while the short tests of every queue are
still there to be stolen around them.

Only the order changes, and only under worksteal with more than one worker (the whole suite's
default hand-out, one process, and ``-p no:xdist`` keep the collection order). A test the table
lists that is not collected (renamed, deselected) is ignored; one it does not list keeps its
place. Every worker computes the same order, as xdist requires.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

TABLE = Path(__file__).resolve().parent.parent / "fast_durations.txt"


def read_table(path: Path = TABLE) -> dict[str, float]:
    """node id -> seconds, from ``SECONDS NODEID`` lines (``#`` comments and blanks skipped)."""
    table: dict[str, float] = {}
    try:
        text = path.read_text()
    except FileNotFoundError:
        return table
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        seconds, _, nodeid = line.partition(" ")
        try:
            table[nodeid.strip()] = float(seconds)
        except ValueError:
            raise pytest.UsageError(f"{path}:{number}: expected 'SECONDS NODEID', got {line!r}") from None
    return table


def long_first(ids: list[str], table: dict[str, float], workers: int) -> list[int]:
    """The positions of ``ids`` reordered: each of the ``workers`` slices xdist's worksteal hands
    out starts with its share of the listed tests (longest first, each to the slice with the
    least listed seconds), then the others in collection order."""
    if workers < 2:
        return list(range(len(ids)))
    sizes, left = [], len(ids)
    for k in range(workers):  # as WorkStealingScheduling.check_schedule sends them
        sizes.append(left // (workers - k))
        left -= sizes[-1]
    listed = sorted((i for i, nodeid in enumerate(ids) if nodeid in table),
                    key=lambda i: (-table[ids[i]], i))
    heads: list[list[int]] = [[] for _ in range(workers)]
    loads = [0.0] * workers
    for i in listed:
        slot = min((k for k in range(workers) if len(heads[k]) < sizes[k]), key=lambda k: loads[k])
        heads[slot].append(i)
        loads[slot] += table[ids[i]]
    chosen = set(listed)
    rest = iter(i for i in range(len(ids)) if i not in chosen)
    order: list[int] = []
    for k in range(workers):
        order.extend(heads[k])
        order.extend(next(rest) for _ in range(sizes[k] - len(heads[k])))
    return order


DIST = "csdeploy_dist"
"""The key of the workers' ``workerinput`` that carries the controller's ``--dist`` (xdist sets
a worker's own ``--dist`` to "no")."""


@pytest.hookimpl(optionalhook=True)  # an xdist hook: the controller, before a worker starts
def pytest_configure_node(node) -> None:  # noqa: ANN001 (xdist's WorkerController)
    node.workerinput[DIST] = node.config.getoption("dist", None)


@pytest.hookimpl(trylast=True)  # after `-m`/`-k` deselected: the slices are of what runs
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None or workerinput.get(DIST) != "worksteal":
        return
    workers = int(workerinput.get("workercount") or os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    table = read_table()
    order = long_first([item.nodeid for item in items], table, workers)
    items[:] = [items[i] for i in order]
