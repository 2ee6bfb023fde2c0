"""The lab tier split into shards that run side by side (scripts/test), balanced by time.

The lab tier mostly waits (VMs booting, readiness delays, health checks, watch windows), so
two or three pytest processes on 2 cores finish it in about half the wall time of one.
tests/lab_shards.txt records how long each lab module takes (seconds, one ``SECONDS PATH``
line each, from a ``--durations=0`` run of the lab tier); :func:`plan` deals the modules out,
longest first, each to the shard with the least time so far.

Nothing is ever left out: the lightest shard is the catch-all. It runs the whole lab tier
minus the other shards' modules (``--ignore``), so a lab module the table does not list yet
(or one it misses: a test outside tests/lab and tests/e2e that uses ``docker_engine`` through
another fixture) still runs, on the lighter shard. tests/test_lab_shards.py fails until the
table lists it, so its time is counted next time.

``python -m tests.support.lab_shards N`` prints the plan for N shards, one shard a line: the
pytest arguments that select its modules (scripts/test reads them).
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
REPO = TESTS.parent
TABLE = TESTS / "lab_shards.txt"
LAB_DIRS = ("lab", "e2e")
UNKNOWN_SECONDS = 120.0
"""What a module the table does not list is assumed to take (it goes to the catch-all)."""


@dataclass
class Shard:
    modules: list[str] = field(default_factory=list)   # paths relative to the repository
    seconds: float = 0.0
    catch_all: bool = False

    def pytest_args(self, others: list[str]) -> list[str]:
        """The arguments (after ``pytest -m lab``) that select this shard's tests."""
        if self.catch_all:
            return ["tests", *(f"--ignore={m}" for m in others)]
        return list(self.modules)


def read_table(path: Path = TABLE) -> dict[str, float]:
    """``{module: seconds}`` from the table (``#`` starts a comment); a bad line raises, naming it."""
    table: dict[str, float] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        try:
            if len(parts) != 2:
                raise ValueError("want 'SECONDS PATH'")
            seconds = float(parts[0])
        except ValueError as exc:
            raise ValueError(f"{path}:{number}: {raw.strip()!r}: {exc}") from None
        if parts[1] in table:
            raise ValueError(f"{path}:{number}: {parts[1]} is listed twice")
        table[parts[1]] = seconds
    return table


def _takes_docker_engine(path: Path) -> bool:
    """Whether a function of the module (a test, a fixture) takes the ``docker_engine`` fixture."""
    if "docker_engine" not in (text := path.read_text()):
        return False
    return any(isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
               and any(arg.arg == "docker_engine" for arg in node.args.args + node.args.kwonlyargs)
               for node in ast.walk(ast.parse(text, str(path))))


def lab_modules(tests: Path = TESTS) -> set[str]:
    """The test modules that need the Docker engine, found without importing them: every
    test module of tests/lab and tests/e2e, and any other that takes ``docker_engine``."""
    found = set()
    for path in tests.rglob("test_*.py"):
        rel = path.relative_to(tests)
        if rel.parts[0] in LAB_DIRS or _takes_docker_engine(path):
            found.add(path.relative_to(tests.parent).as_posix())
    return found


def plan(count: int, table: dict[str, float], present: set[str] | None = None) -> list[Shard]:
    """``count`` shards, balanced: longest module first, each to the least loaded shard.

    ``present``: the lab modules that exist (default: :func:`lab_modules`); a listed module
    that is gone is left out, one that is missing from the table is counted at
    UNKNOWN_SECONDS in the catch-all (the lightest shard, chosen before they are added).
    """
    if count < 1:
        raise ValueError(f"{count} shards: want at least 1")
    present = lab_modules() if present is None else present
    shards = [Shard() for _ in range(count)]
    for module, seconds in sorted(((m, s) for m, s in table.items() if m in present),
                                  key=lambda item: (-item[1], item[0])):
        lightest = min(shards, key=lambda s: s.seconds)
        lightest.modules.append(module)
        lightest.seconds += seconds
    catch_all = min(shards, key=lambda s: s.seconds)
    catch_all.catch_all = True
    for module in sorted(present - table.keys()):
        catch_all.modules.append(module)
        catch_all.seconds += UNKNOWN_SECONDS
    for shard in shards:  # file order within a shard, as one process would run them
        shard.modules.sort()
    return shards


def shard_args(shards: list[Shard]) -> list[list[str]]:
    """Each shard's pytest arguments; the catch-all ignores every other shard's modules. A shard
    left empty (more shards than modules) gets none: without paths pytest would run them all."""
    return [shard.pytest_args([m for other in shards if other is not shard for m in other.modules])
            for shard in shards if shard.modules or shard.catch_all]


def main(argv: list[str]) -> int:
    count = int(argv[0]) if argv else 2
    shards = plan(count, read_table())
    for args in shard_args(shards):
        print(" ".join(args))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
