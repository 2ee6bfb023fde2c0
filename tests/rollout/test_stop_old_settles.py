"""Stopping the old containers survives a dockerd restart in the middle (the rollout fault
matrix, tests/e2e/test_rollout_faults.py, cell stop old/dockerd: the deploy said done and the
web host ran v1 beside v2, because the daemon started the old container again once it was back).

The script runs in `sh` against a `docker` stand-in that plays the daemon: the first stop is cut
short, the daemon does not answer once, then the old container is running again. And on a full
disk (cell watch/disk): the daemon killed the old container but could not write down that it
ended, so it lists it running for good and `docker stop` does nothing (docker 20.10, seen in the
lab); only removing it ends that.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from cloudstack_deploy.rollout.commands import docker as d
from tests.support.fakedocker import SHEBANG

LABELS = {"service": "demo", "role": "web"}


#: a process id no process has (Linux's largest pid_max is 4194304)
GONE = 99999999


def _run(tmp_path: Path, restarts: int, settle: int = 30, ghost: bool = False,
         pid: int = GONE) -> tuple[int, list[list[str]], str]:
    """``restarts``: how many times the daemon brings the old container back after a stop.
    ``ghost``: the old container's process is gone but the daemon lists it running (a stop
    changes nothing); else its process is this test's own (alive)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log, state = tmp_path / "docker.log", tmp_path / "state.json"
    state.write_text(json.dumps({"running": True, "restarts": restarts, "down": 0, "ghost": ghost,
                                 "pid": pid if ghost else os.getpid()}))
    (bindir / "docker").write_text(SHEBANG + f"""
import json, sys
args = sys.argv[1:]
open({str(log)!r}, "a").write(json.dumps(args) + "\\n")
st = json.load(open({str(state)!r}))
def save(): json.dump(st, open({str(state)!r}, "w"))
if args[0] == "version":
    if st["down"]:
        st["down"] -= 1; save(); sys.exit(1)
elif args[0] == "ps":
    print("demo-web-v2")
    if st["running"]:
        print("demo-web-v1")
elif args[0] == "inspect":
    print(st["pid"] if st["running"] else 0)
elif args[0] == "rm":
    st["running"] = False; save()
elif args[0] == "stop":
    if st["ghost"]:
        pass
    elif st["restarts"]:        # cut short by the daemon's restart: back once it answers again
        st["restarts"] -= 1; st["down"] = 1
    else:
        st["running"] = False
    save()
""")
    (bindir / "docker").chmod(0o755)
    script = d.stop_others(LABELS, keep="demo-web-v2", settle=settle)
    proc = subprocess.run(["sh", "-s"], input=script.text(), capture_output=True, text=True, timeout=60,
                          env={"PATH": f"{bindir}:{os.environ['PATH']}"}, cwd=tmp_path)
    return proc.returncode, [json.loads(line) for line in log.read_text().splitlines()], proc.stderr


def test_an_old_container_the_daemon_started_again_is_stopped_again(tmp_path: Path) -> None:
    code, calls, err = _run(tmp_path, restarts=1)
    assert code == 0, err
    stops = [c for c in calls if c[0] == "stop"]
    assert len(stops) == 2 and all(c[-1] == "demo-web-v1" for c in stops), calls
    assert json.loads((tmp_path / "state.json").read_text())["running"] is False


def test_a_plain_stop_costs_one_check(tmp_path: Path) -> None:
    code, calls, err = _run(tmp_path, restarts=0)
    assert code == 0, err
    assert [c[0] for c in calls] == ["ps", "stop", "version", "ps"]


def test_an_old_container_that_keeps_coming_back_fails_the_step_naming_it(tmp_path: Path) -> None:
    code, calls, err = _run(tmp_path, restarts=100, settle=2)
    assert code == 1
    assert "still running after 2 s of stopping: demo-web-v1" in err
    assert not [c for c in calls if c[0] == "rm"], calls   # its process lives: never removed


def test_an_old_container_listed_running_without_its_process_is_removed(tmp_path: Path) -> None:
    code, calls, err = _run(tmp_path, restarts=0, ghost=True, settle=5)
    assert code == 0, err
    assert ["rm", "--force", "demo-web-v1"] in calls, calls
    assert "demo-web-v1: docker lists it running but it is not" in err
    assert json.loads((tmp_path / "state.json").read_text())["running"] is False


def test_an_old_container_listed_running_that_docker_inspect_says_ended_is_removed(tmp_path: Path) -> None:
    """``docker ps`` reads a view the daemon updates only when it could write the container's
    state down: after a full disk it lists an ended container as running (pid 0 in inspect)."""
    code, calls, err = _run(tmp_path, restarts=0, ghost=True, settle=5, pid=0)
    assert code == 0, err
    assert ["rm", "--force", "demo-web-v1"] in calls, calls
