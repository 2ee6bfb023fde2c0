"""csdeploy's CLI as tests run it: in process (click's runner) or as a subprocess."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "cloudstack_deploy"]


def cli(*args: str) -> Result:
    """The CLI in process (click's runner); ``stderr`` apart from ``stdout``."""
    from cloudstack_deploy.cli import main

    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def cli_here(*args: str, cwd: Path | str | None = None,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """What ``subprocess.run(cli_argv(*args), cwd=cwd, env=env, capture_output=True, text=True)``
    gives (exit code, stdout and stderr apart), run in this process with click's runner: for
    tests of what a command prints and exits with, where a process of its own (a third of a
    second of CPU each) adds nothing. ``env``: the run's whole environment (None: this one's)."""
    import os

    import pytest

    from cloudstack_deploy.cli import main

    with pytest.MonkeyPatch.context() as mp:
        if env is not None:
            for name in set(os.environ) - set(env):
                mp.delenv(name)
            for name, value in env.items():
                mp.setenv(name, value)
        if cwd is not None:
            mp.chdir(cwd)
        res = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return subprocess.CompletedProcess(list(args), res.exit_code, res.stdout, res.stderr)


def cli_argv(*args: str) -> list[str]:
    """argv of the CLI as a subprocess (this interpreter; PYTHONPATH is inherited)."""
    return [*CLI, *args]


@dataclass
class Run:
    """One CLI subprocess run, with what a failed assertion should show."""

    args: list[str]
    code: int
    stdout: str
    stderr: str
    seconds: float

    def explain(self) -> str:
        return (f"$ csdeploy {shlex.join(self.args)}\nexit {self.code} after {self.seconds:.1f}s\n"
                f"--- stdout (tail)\n{self.stdout[-4000:]}\n--- stderr (tail)\n{self.stderr[-8000:]}")

    def json(self) -> Any:
        """The JSON result: the last line of stdout that is JSON (or the whole stdout)."""
        try:
            return json.loads(self.stdout)
        except json.JSONDecodeError:
            pass
        for line in reversed(self.stdout.strip().splitlines()):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
        raise AssertionError("no JSON on stdout\n" + self.explain())


def run_cli(args: list[str], env: dict[str, str], *, timeout: float) -> Run:
    """The CLI as a subprocess from the repository's root, killed after ``timeout``."""
    started = time.monotonic()
    try:
        proc = subprocess.run(cli_argv(*args), cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        run = Run(args, -9, out, err, time.monotonic() - started)
        raise AssertionError(f"timed out after {timeout:.0f}s (killed)\n" + run.explain()) from None
    return Run(args, proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)
