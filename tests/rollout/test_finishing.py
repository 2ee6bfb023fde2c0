"""Old containers stopped without holding the result back: after a good rollout each host is
handed the stop (`host.finish_later`), the command returns, and the next command's facts or
`status` (`host.finish_left`) wait for it or finish it.

The scripts run for real under /bin/sh, with a `docker` first on PATH that records its argv
and whose `stop` blocks until the test lets it go (an event, not a clock): so the test sees
the commit return while the old container is still stopping.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from cloudstack_deploy.blueprint import loads_blueprint
from cloudstack_deploy.progress import Recorder
from cloudstack_deploy.rollout import ops
from cloudstack_deploy.rollout.commands import host as host_cmds
from cloudstack_deploy.rollout.commands.script import Script
from cloudstack_deploy.rollout.deploy import Rollout
from cloudstack_deploy.rollout.stages import (
    finishing_name,
    proxy_commit_script,
    worker_commit_script,
)
from tests.support.fakedocker import SHEBANG

from .test_commands import BLUEPRINT, INVENTORY, SECRETS

DOCKER = SHEBANG + """
import json, os, sys, time
log, release = {log!r}, {release!r}
args = sys.argv[1:]
stopped = log + ".stopped"
if args[:1] == ["stop"]:
    open(log, "a").write(json.dumps(["stop-begun", *args[3:]]) + "\\n")
    while not os.path.exists(release):   # held until the test releases it
        time.sleep(0.01)
    open(stopped, "a").write("".join(name + "\\n" for name in args[3:]))
open(log, "a").write(json.dumps(args) + "\\n")
if args[:1] == ["ps"] and "status=exited" not in args:   # what runs: what was not stopped
    gone = open(stopped).read().split() if os.path.exists(stopped) else []
    print("\\n".join(name for name in ("{old}", "{new}") if name not in gone))
"""


@pytest.fixture
def host(tmp_path: Path) -> tuple[dict[str, str], Path, Path]:
    """A host's shell: HOME, and a docker whose running containers are an old and a new web."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log, release = tmp_path / "docker.log", tmp_path / "release"
    (bindir / "docker").write_text(DOCKER.format(log=str(log), release=str(release), old="demo-web-v0",
                                                 new="demo-web-v1"))
    (bindir / "docker").chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    return {"PATH": f"{bindir}:{os.environ['PATH']}", "HOME": str(home)}, log, release


def sh(script: Script, env: dict[str, str], cwd: Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-s"], input=script.text(), env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def wait_for(log: Path, first: str) -> None:
    """Until the docker shim logged a call starting with ``first`` (the detached job's progress)."""
    deadline = time.monotonic() + 20
    while not any(c[:1] == [first] for c in calls(log)):
        assert time.monotonic() < deadline, f"no docker {first} within 20 s: {calls(log)}"
        time.sleep(0.01)


def test_the_commit_returns_while_the_host_stops_the_old_container_and_the_next_facts_wait_for_it(
        host, tmp_path: Path) -> None:
    env, log, release = host
    bp = loads_blueprint(BLUEPRINT)
    done = sh(proxy_commit_script(bp, "demo", bp.roles["web"], "v1", retain=3), env, tmp_path / "home", timeout=10)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "", "the hand-off prints nothing the caller would parse"
    wait_for(log, "stop-begun")
    assert ["stop", "--time", "30", "demo-web-v0"] not in calls(log), "the commit returned before the stop ended"
    job = tmp_path / "home" / host_cmds.finishing_dir("demo") / (finishing_name("web") + ".sh")
    assert job.exists(), "the host keeps the job until it ended"
    assert oct(job.stat().st_mode & 0o777) == "0o600"

    # the next command's facts: they wait for the stop still under way, then see one version
    waiting = subprocess.Popen(["sh", "-s"], stdin=subprocess.PIPE, env=env, cwd=tmp_path / "home", text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert waiting.stdin is not None
    waiting.stdin.write(host_cmds.finish_left("demo").text())
    waiting.stdin.close()
    with pytest.raises(subprocess.TimeoutExpired):
        waiting.wait(timeout=0.5)  # still held by the stop: the facts do not read past it
    release.touch()
    assert waiting.wait(timeout=20) == 0
    assert waiting.stdout is not None and waiting.stdout.read() == ""
    stops = [c for c in calls(log) if c[:1] == ["stop"]]
    assert stops == [["stop", "--time", "30", "demo-web-v0"]], "the old version stopped, once, the new kept"
    assert not job.exists(), "an ended job leaves nothing to finish"


def test_a_job_that_never_ended_is_finished_by_the_next_command(host, tmp_path: Path) -> None:
    """The host rebooted (or the job failed) before the old container stopped: the file is
    still there, and the next command's facts run it, so no role runs two versions after it."""
    env, log, release = host
    release.touch()
    bp = loads_blueprint(BLUEPRINT)
    script = worker_commit_script(bp, "demo", bp.roles["web"], "v1", retain=3)
    # the hand-off without its start: as if the host went down before the job ran
    written = Script(lines=[line for line in script.lines if not line.startswith("setsid ")])
    assert len(written.lines) == len(script.lines) - 1
    assert sh(written, env, tmp_path / "home").returncode == 0
    assert not [c for c in calls(log) if c[:1] == ["stop"]]
    finished = sh(host_cmds.finish_left("demo"), env, tmp_path / "home")
    assert finished.returncode == 0 and finished.stdout == "", finished.stderr
    assert [c for c in calls(log) if c[:1] == ["stop"]] == [["stop", "--time", "30", "demo-web-v0"]]
    assert not list((tmp_path / "home" / host_cmds.finishing_dir("demo")).iterdir())


def test_nothing_to_finish_costs_nothing(host, tmp_path: Path) -> None:
    env, log, _ = host
    finished = sh(host_cmds.finish_left("demo"), env, tmp_path / "home")
    assert finished.returncode == 0 and finished.stdout == "" and finished.stderr == ""
    assert calls(log) == []


def test_the_facts_and_status_finish_first_but_a_dry_run_only_reads() -> None:
    finish = host_cmds.finish_left("demo").text().splitlines()[2:]   # without the preamble
    status = ops.status_script("demo").text()
    assert "\n".join(finish) in status and status.index(finish[0]) < status.index("docker ps")
    bp = loads_blueprint(BLUEPRINT)
    web = INVENTORY.hosts[0]
    real = Rollout(bp, INVENTORY, SECRETS, Recorder())._facts_script(web, "v1").text()
    dry = Rollout(bp, INVENTORY, SECRETS, Recorder(), dry_run=True)._facts_script(web, "v1").text()
    assert "\n".join(finish) in real and real.index(finish[0]) < real.index("docker network ls")
    assert "flock" not in dry and "finishing" not in dry
