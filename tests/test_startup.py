"""Start-up: `csdeploy --help` (and any command's option parsing) imports no client, no SSH,
no logging framework and no blueprint reader; each command imports what it uses when it runs.

What is asserted is WHAT gets imported (a wall time on a shared machine proves nothing): each
of these modules costs tens to hundreds of milliseconds here before a command can do anything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

HEAVY = ("aiohttp", "asyncssh", "cs", "requests", "structlog", "yaml", "tenacity", "sqlite3", "asyncio",
         "cloudstack_deploy.service", "cloudstack_deploy.cloud", "cloudstack_deploy.rollout",
         "cloudstack_deploy.provision", "cloudstack_deploy.blueprint_schema", "cloudstack_deploy.progress",
         "cloudstack_deploy.render")

PROBE = """
import json, runpy, sys
sys.argv = ["csdeploy", *{argv!r}]
try:
    runpy.run_module("cloudstack_deploy", run_name="__main__")
except SystemExit as exc:
    code = exc.code
sys.stdout.flush()
print("\\n@@" + json.dumps({{"code": code, "modules": sorted(sys.modules)}}))
"""


def imported_by(*argv: str, code: int = 0, home: Path | None = None) -> tuple[str, set[str]]:
    env = {**os.environ, **({"CSDEPLOY_HOME": str(home)} if home else {})}
    out = subprocess.run([sys.executable, "-c", PROBE.format(argv=list(argv))], capture_output=True, text=True,
                         timeout=60, cwd=REPO, env=env)
    text, _, tail = out.stdout.rpartition("\n@@")
    assert tail, out.stderr
    data = json.loads(tail)
    assert (data["code"] or 0) == code, out.stderr
    return text, set(data["modules"])


@pytest.mark.parametrize("argv", [("--help",), ("deploy", "--help"), ("plan", "--help")])
def test_help_imports_nothing_heavy(argv: tuple[str, ...]) -> None:
    text, modules = imported_by(*argv)
    assert "Usage: csdeploy" in text
    loaded = [m for m in HEAVY if m in modules]
    assert loaded == [], f"`csdeploy {' '.join(argv)}` imported {loaded}"



def test_a_command_that_runs_sets_up_its_logging(tmp_path: Path) -> None:
    """Only help skips the logging set-up: a ``--help`` after ``--`` is the user's command's
    (exec's), and a command that runs (here refusing a missing file) has its logging."""
    for argv in (["exec", "--env", "nosuch", "--", "ls", "--help"], ["validate", str(tmp_path / "missing.yml")]):
        _, modules = imported_by(*argv, code=2, home=tmp_path)
        assert "structlog" in modules, argv
