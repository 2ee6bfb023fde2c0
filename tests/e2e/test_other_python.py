"""The demo's main job under another supported Python (issue: the lab hung on 3.12 and 3.13).

`scripts/test` makes .venv-3.12 / .venv-3.13 (csdeploy installed in each) before the suite;
this runs the demo's create-env, a deploy and the teardown with the first of those
interpreters against the session's lab, as `PYTHON=.venv-3.12/bin/python scripts/demo` would
(the lab itself is this interpreter's: one lab per session)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import REPO, Lab, http, page_version, wait_for_page

ENV = "e2e-py"
BLUEPRINT = str(REPO / "blueprints" / "demo.yml")


def _other_python() -> Path:
    for version in os.environ.get("PYTHONS", "3.12 3.13").split():
        python = REPO / f".venv-{version}" / "bin" / "python"
        if python.exists():
            return python
    if os.environ.get("CI"):
        pytest.fail("no .venv-3.12 or .venv-3.13: scripts/test makes them before the suite")
    pytest.skip("no other Python's venv (scripts/test makes .venv-3.12 and .venv-3.13)")


def _run(python: Path, lab: Lab, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    started = time.monotonic()
    proc = subprocess.run([str(python), "-m", "cloudstack_deploy", *args], cwd=REPO, env=lab.env,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, (f"{python} csdeploy {args[0]} failed after {time.monotonic() - started:.0f}s\n"
                                  f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def test_the_demo_creates_deploys_and_tears_down_under_another_python(lab: Lab) -> None:
    python = _other_python()
    version = subprocess.run([str(python), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert version in ("3.12", "3.13"), version
    _run(python, lab, "teardown", "--env", ENV, "--yes", "--progress", "plain")  # a killed run's leftovers
    try:
        _run(python, lab, "create-env", BLUEPRINT, "--env", ENV, "--version", "v1", "--progress", "plain")
        url = f"http://{next(h for h in lab.inventory(ENV)['hosts'] if h['role'] == 'web')['public_ip']}/"
        wait_for_page(url, "v1")
        _run(python, lab, "deploy", BLUEPRINT, "--env", ENV, "--version", "v2", "--progress", "plain")
        status, body = http("GET", url)
        assert status == 200 and page_version(body) == "v2", body
    finally:
        done = _run(python, lab, "teardown", "--env", ENV, "--yes", "--progress", "plain")
    assert "nothing left" in done.stdout + done.stderr
    lab.record("python", version=version)
