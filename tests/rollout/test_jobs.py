"""Scheduled jobs: cron lines as crontab(5) reads them, and the job script a host's timer runs
every minute, executed here by a real sh with `date`, `flock` and `docker` stand-ins on PATH."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from cloudstack_deploy import cron
from cloudstack_deploy.blueprint import load_blueprint
from cloudstack_deploy.rollout.commands import jobs
from cloudstack_deploy.rollout.contract import role_env
from cloudstack_deploy.rollout.stages import schedule_script
from tests.formats.helpers import inventory_for
from tests.support.fakedocker import SHEBANG

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("line, when, runs", [
    ("*/15 * * * *", (30, 4, 6, 12, 0), True),
    ("*/15 * * * *", (31, 4, 6, 12, 0), False),
    ("0 3 * * *", (0, 3, 1, 1, 3), True),
    ("0 3 * * *", (0, 4, 1, 1, 3), False),
    ("5-10/5 9-17 * * mon-fri", (10, 9, 7, 12, 1), True),
    ("5-10/5 9-17 * * mon-fri", (10, 9, 6, 12, 0), False),     # Sunday
    ("0 0 1 * 1", (0, 0, 1, 12, 2), True),                     # both day fields: either matches
    ("0 0 1 * 1", (0, 0, 7, 12, 1), True),
    ("0 0 1 * 1", (0, 0, 7, 12, 2), False),
    ("0 0 * * 7", (0, 0, 6, 12, 0), True),                     # 7 is Sunday too
    ("@daily", (0, 0, 9, 3, 4), True),
    ("0 12 * jan,jul *", (0, 12, 9, 7, 4), True),
])
def test_cron_lines_match_as_crontab_reads_them(line: str, when: tuple[int, ...], runs: bool) -> None:
    assert cron.parse(line).matches(*when) is runs


@pytest.mark.parametrize("line, message", [
    ("61 * * * *", "minute: 61 is outside 0-59"),
    ("* * * *", "expected five fields"),
    ("*/0 * * * *", "step '0' must be a positive number"),
    ("10-5 * * * *", "runs backwards"),
    ("* * * foo *", "month: 'foo' is not a number"),
])
def test_a_cron_line_that_does_not_parse_says_which_field(line: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cron.parse(line)


def _shims(tmp: Path) -> dict[str, str]:
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    log = tmp / "calls.jsonl"
    (bin_dir / "date").write_text('#!/bin/sh\ncase "$1" in +%Y*) echo 202612061530 ;; *) echo "$FAKE_NOW" ;; esac\n')
    (bin_dir / "flock").write_text('#!/bin/sh\nshift 2\nexec "$@"\n')
    (bin_dir / "docker").write_text(
        SHEBANG + "\nimport json, os, sys\n"
        f"open({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
        "sys.exit(int(os.environ.get('JOB_EXIT', '0')) if sys.argv[1:2] == ['run'] else 0)\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}", "LOG": str(log)}


def _job_script(tmp: Path) -> str:
    text = (REPO / "blueprints" / "demo.yml").read_text().replace(
        "  worker:\n    count: 1\n",
        "  worker:\n    count: 1\n    volumes: ['jobs:/srv/jobs']\n"
        "    schedule:\n      report: {cron: '*/15 8-18 * * mon-fri', cmd: python -m demo.report --all}\n", 1)
    bp_file = tmp / "bp.yml"
    bp_file.write_text(text.replace("secrets_file: .env\n", ""))
    bp = load_blueprint(bp_file)
    worker = bp.roles["worker"]
    env = role_env(bp, "worker", inventory_for(bp), {"POSTGRES_PASSWORD": "pw", "REGISTRY_PASSWORD": "r"}, "v7")
    argv = jobs.run_argv(service="demo", env="e1", role="worker", job="report", image="registry.lab:5000/demo-app:v7",
                         clear=env.clear, env_file=".csdeploy/demo/env/worker.env", mounts=[], cmd=worker.schedules[0].cmd,
                         settings=worker.container)
    assert schedule_script(bp, "e1", worker, "v7", env).text()  # the whole install builds
    return jobs.job_script("demo", "worker", "report", worker.schedules[0].cron, argv).text()


def _run(script: str, tmp: Path, now: str, **env: str) -> tuple[int, list[list[str]]]:
    shims = _shims(tmp)
    proc = subprocess.run(["sh", "-c", script], env={**os.environ, **shims, "FAKE_NOW": now, **env},
                          cwd=tmp, capture_output=True, text=True, timeout=30)
    log = Path(shims["LOG"])
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return proc.returncode, calls


def test_the_job_runs_the_roles_image_in_a_matching_minute(tmp_path: Path) -> None:
    """Monday 09:30: the job's container runs in the foreground, with the role's env file, a name
    of its own per minute and the job label (what `logs` and `status` find its runs by)."""
    code, calls = _run(_job_script(tmp_path), tmp_path, "30 09 07 12 1")
    assert code == 0
    run = next(c for c in calls if c[0] == "run")
    assert "--detach" not in run and run[run.index("--restart") + 1] == "no"
    assert run[run.index("--name") + 1] == "demo-worker-job-report-202612061530"
    assert "csdeploy.job=worker.report" in run and "--env-file" in run
    assert run[-4:] == ["python", "-m", "demo.report", "--all"] and "registry.lab:5000/demo-app:v7" in run


@pytest.mark.parametrize("now", ["31 09 07 12 1", "30 19 07 12 1", "30 09 06 12 0"])
def test_the_job_does_not_run_in_other_minutes(tmp_path: Path, now: str) -> None:
    code, calls = _run(_job_script(tmp_path), tmp_path, now)
    assert code == 0 and not [c for c in calls if c[0] == "run"]


def test_a_failed_run_is_the_timers_failure(tmp_path: Path) -> None:
    """systemd records the unit as failed (and status shows the run's exit code)."""
    code, _ = _run(_job_script(tmp_path), tmp_path, "45 17 11 12 5", JOB_EXIT="3")
    assert code == 3
