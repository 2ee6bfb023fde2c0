"""A worker is judged ready by what it says, not by a fixed wait: a blueprint `readiness.cmd`
(run inside the new container until it exits 0), or a Docker HEALTHCHECK (the image's or
healthcheck.cmd); `healthcheck.readiness_delay` stays the default for a worker with neither.

The worker's start script runs for real under /bin/sh with a `docker` first on PATH that
plays the container: its health state is read from a file, and `docker exec` of the probe
succeeds once another file exists. The readiness_delay is 60 s here, so a script that waited
for it would not end within the test's time.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from cloudstack_deploy.blueprint import BlueprintError, load_blueprint
from cloudstack_deploy.inventory import Inventory
from cloudstack_deploy.rollout.contract import role_env
from cloudstack_deploy.rollout.stages import worker_start_parts, worker_start_script
from tests.support.fakedocker import SHEBANG

from .test_commands import INVENTORY, SECRETS

HEAD = """\
service: demo
image: registry.lab:5000/demo-app
cloud: {zone: z, template: t, service_offering: small, ssh: {allow_from: [127.0.0.0/8]}}
roles:
  web: {}
  worker:
    cmd: python -m demo.worker
    healthcheck: {readiness_delay: 60}
"""

DOCKER = SHEBANG + """
import json, os, sys
here = {here!r}
args = sys.argv[1:]
open(os.path.join(here, "docker.log"), "a").write(json.dumps(args) + "\\n")
if args[:1] == ["inspect"] and ".Config.Healthcheck" in args[2]:
    if os.path.exists(os.path.join(here, "test")):  # the image's HEALTHCHECK, one word a line
        sys.stdout.write(open(os.path.join(here, "test")).read())
elif args[:1] == ["inspect"] and "RestartCount" in args[2]:
    f = os.path.join(here, "restarts")
    print(open(f).read().strip() if os.path.exists(f) else "0 running 2026-12-06T22:59:00Z")
elif args[:1] == ["inspect"] and "Health" in args[2]:
    print(open(os.path.join(here, "health")).read().strip())
if args[:1] == ["exec"]:
    sys.exit(0 if os.path.exists(os.path.join(here, "ready")) else 1)
"""


@pytest.fixture
def host(tmp_path: Path) -> tuple[dict[str, str], Path]:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "docker").write_text(DOCKER.format(here=str(tmp_path)))
    (bindir / "docker").chmod(0o755)
    (tmp_path / "home").mkdir()
    return {"PATH": f"{bindir}:{os.environ['PATH']}", "HOME": str(tmp_path / "home")}, tmp_path


def blueprint(tmp_path: Path, extra: str = "") -> object:
    path = tmp_path / "bp.yml"
    path.write_text(HEAD + extra)
    return load_blueprint(str(path))


def start_worker(bp, env: dict[str, str], here: Path, health: str) -> subprocess.CompletedProcess[str]:
    (here / "health").write_text(health)
    worker = bp.roles["worker"]
    inv: Inventory = INVENTORY
    script = worker_start_script(bp, "demo", worker, "v2", role_env(bp, "worker", inv, SECRETS, "v2"))
    return subprocess.run(["sh", "-s"], input=script.text(), env=env, cwd=here / "home", capture_output=True,
                          text=True, timeout=20)


def calls(here: Path) -> list[list[str]]:
    return [json.loads(line) for line in (here / "docker.log").read_text().splitlines()]


def healthy_on_4th_read(bindir: Path, here: Path) -> None:
    """The `docker` on PATH says `starting` to the first three reads of the health state and
    `healthy` from the fourth on."""
    (bindir / "docker").write_text(DOCKER.format(here=str(here)).replace(
        'print(open(os.path.join(here, "health")).read().strip())',
        'n = sum("State.Health" in line for line in open(os.path.join(here, "docker.log")))\n'
        '    print("healthy running" if n >= 4 else "starting running")'))


def test_readiness_cmd_makes_the_worker_ready_as_soon_as_it_exits_0(host, tmp_path: Path) -> None:
    env, here = host
    bp = blueprint(tmp_path, "    readiness: {cmd: [test, -f, /tmp/ready], timeout: 15}\n")
    (here / "ready").touch()
    done = start_worker(bp, env, here, "none running")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["fresh"]
    assert ["exec", "demo-worker-v2", "test", "-f", "/tmp/ready"] in calls(here), "the probe ran inside it"


def test_a_readiness_cmd_that_never_exits_0_refuses_the_worker_and_removes_it(host, tmp_path: Path) -> None:
    env, here = host
    bp = blueprint(tmp_path, "    readiness: {cmd: [test, -f, /tmp/ready], timeout: 1}\n")
    done = start_worker(bp, env, here, "none running")
    assert done.returncode == 66
    assert "container demo-worker-v2 not ready after 1s" in done.stderr
    assert "readiness.cmd never exited 0: test -f /tmp/ready" in done.stderr
    assert ["rm", "--force", "demo-worker-v2"] in calls(here), "a refused new worker does not linger"


def test_a_healthcheck_judges_the_worker_instead_of_the_delay(host, tmp_path: Path) -> None:
    """An image whose HEALTHCHECK says healthy is ready then, not readiness_delay later."""
    env, here = host
    done = start_worker(blueprint(tmp_path), env, here, "healthy running")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["fresh"]


@pytest.mark.parametrize("extra", ["", "    readiness: {cmd: [test, -f, /tmp/ready]}\n"])
def test_an_unhealthy_worker_is_refused(extra: str, host, tmp_path: Path) -> None:
    env, here = host
    (here / "ready").touch()   # even a passing probe does not make an unhealthy container ready
    done = start_worker(blueprint(tmp_path, extra), env, here, "unhealthy running")
    assert done.returncode == 66
    assert "container demo-worker-v2 is unhealthy running" in done.stderr


@pytest.mark.parametrize(("extra", "line", "message"), [
    ("    readiness: {timeout: 5}\n", 9, "roles.worker.readiness.cmd: missing: the command that exits 0"),
    ("    readiness: {cmd: [test], timeout: -1}\n", 9, "roles.worker.readiness.timeout: must be more than 0"),
    ("    readiness: {cmd: true, every: 1}\n", 9, "roles.worker.readiness.cmd: expected a command"),
    ("    readiness: [test]\n", 9, "roles.worker.readiness: expected a mapping"),
])
def test_bad_readiness_names_file_and_line(extra: str, line: int, message: str, tmp_path: Path) -> None:
    with pytest.raises(BlueprintError) as info:
        blueprint(tmp_path, extra)
    assert f"bp.yml:{line}: {message}" in str(info.value)


def test_readiness_is_refused_on_a_proxy_role(tmp_path: Path) -> None:
    path = tmp_path / "bp.yml"
    path.write_text(HEAD.replace("  web: {}\n", "  web:\n    readiness: {cmd: [test, -f, /x]}\n"))
    with pytest.raises(BlueprintError, match=r"bp.yml:6: roles.web.readiness: kamal-proxy judges a proxy role"):
        load_blueprint(str(path))


def test_a_healthcheck_turning_healthy_is_seen_at_once(host, tmp_path: Path) -> None:
    """While the HEALTHCHECK says `starting`, the state is read every 0.1 s (not every half
    second): the worker counts as ready within a tenth of a second of Docker's verdict. The
    `sleep` here records what it is asked to wait; Docker says healthy on its 4th read."""
    env, here = host
    bindir = Path(env["PATH"].split(":")[0])
    (bindir / "sleep").write_text(SHEBANG + f"\nimport sys\nopen({str(here / 'sleeps')!r}, 'a').write(sys.argv[1] + '\\n')\n")
    (bindir / "sleep").chmod(0o755)
    healthy_on_4th_read(bindir, here)
    done = start_worker(blueprint(tmp_path), env, here, "starting running")
    assert done.returncode == 0, done.stderr
    assert (here / "sleeps").read_text().split() == ["0.1", "0.1", "0.1"]


@pytest.mark.parametrize(("test", "runs"), [
    # `HEALTHCHECK CMD test -f /tmp/ok && echo "a b"` (and `healthcheck.cmd`): through /bin/sh -c
    ('CMD-SHELL\ntest -f /tmp/ok && echo "a b"\n', ["/bin/sh", "-c", 'test -f /tmp/ok && echo "a b"']),
    # `HEALTHCHECK CMD ["test", "-f", "/tmp/ok *"]`: word for word, no splitting or globbing
    ("CMD\ntest\n-f\n/tmp/ok *\n", ["test", "-f", "/tmp/ok *"]),
])
def test_a_healthchecks_own_check_passing_makes_it_ready_before_dockers_turn(
        test: str, runs: list[str], host, tmp_path: Path) -> None:
    """Docker runs a HEALTHCHECK only once its interval (30 s by default) has passed since the
    start, and says `healthy` after one passing run. While it still says `starting`, the same
    check is run at once in the container: it passes, so the worker is ready now, with the
    check's words exactly as the image gives them."""
    env, here = host
    (here / "test").write_text(test)
    (here / "ready").touch()
    done = start_worker(blueprint(tmp_path), env, here, "starting running")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["fresh"]
    assert ["exec", "demo-worker-v2", *runs] in calls(here)


def test_a_failing_own_check_waits_for_dockers_verdict(host, tmp_path: Path) -> None:
    """The check run early fails (the app is not up yet): no early answer; the worker is ready
    only when Docker says healthy (on its 4th read here), and an unhealthy one is refused."""
    env, here = host
    (here / "test").write_text("CMD-SHELL\ncurl -f http://localhost/up\n")
    bindir = Path(env["PATH"].split(":")[0])
    healthy_on_4th_read(bindir, here)
    done = start_worker(blueprint(tmp_path), env, here, "starting running")
    assert done.returncode == 0, done.stderr
    early = [c for c in calls(here) if c[:1] == ["exec"]]
    assert early == [["exec", "demo-worker-v2", "/bin/sh", "-c", "curl -f http://localhost/up"]] * 3
    (bindir / "docker").write_text(DOCKER.format(here=str(here)))
    done = start_worker(blueprint(tmp_path), env, here, "unhealthy running")
    assert done.returncode == 66
    assert "container demo-worker-v2 is unhealthy running" in done.stderr


# ---- a worker started while its accessories were still starting (a first deploy) ----------------
def start_then_judge(bp, env: dict[str, str], here: Path, *, ran_for: int,
                     restarts: str | None = None) -> tuple[str, subprocess.CompletedProcess[str]]:
    """The worker's start (one exec), then, as if its accessories took ``ran_for`` s to be
    ready (its start time moved back that far), the exec that judges it (its wall time in
    ``here / "judged-seconds"``)."""
    (here / "health").write_text("none running")
    launch, ready = worker_start_parts(bp, "demo", bp.roles["worker"], "v2",
                                       role_env(bp, "worker", INVENTORY, SECRETS, "v2"))
    run = dict(env=env, cwd=here / "home", capture_output=True, text=True, timeout=20)
    started = subprocess.run(["sh", "-s"], input=launch.text(), **run)
    assert started.returncode == 0, started.stderr
    mark = here / "home" / ".csdeploy" / "demo" / "demo-worker-v2.started"
    mark.write_text(f"{int(mark.read_text()) - ran_for * 100}\n")
    if restarts is not None:
        (here / "restarts").write_text(restarts)
    began = time.monotonic()
    judged = subprocess.run(["sh", "-s"], input=ready.text(), **run)
    (here / "judged-seconds").write_text(f"{time.monotonic() - began:.3f}")
    return started.stdout, judged


def health_reads(here: Path) -> int:
    return sum(1 for c in calls(here) if c[:1] == ["inspect"] and "State.Health" in c[2])


def test_a_worker_that_ran_while_its_accessories_started_is_ready_from_its_start(host, tmp_path: Path) -> None:
    """Its readiness_delay (60 s here) counted from its start, 61 s before the judging exec:
    judged at its first look, not 60 s later."""
    env, here = host
    out, judged = start_then_judge(blueprint(tmp_path), env, here, ran_for=61)
    assert out.split() == ["fresh"]
    assert judged.returncode == 0, judged.stderr
    assert health_reads(here) == 1
    assert not [c for c in calls(here) if c[:1] == ["start"]]
    assert not (here / "home" / ".csdeploy" / "demo" / "demo-worker-v2.started").exists()


@pytest.mark.parametrize(("restarts", "started_again", "said"), [
    ("0 exited 2026-12-06T23:00:00Z", True, "stopped before its accessories were ready"),
    ("3 running 2026-12-06T23:00:09Z", False, "was restarted by Docker before its accessories were ready"),
])
def test_a_worker_that_stopped_before_its_accessories_were_ready_is_judged_from_a_new_start(
        restarts: str, started_again: bool, said: str, host, tmp_path: Path) -> None:
    """It exited (or Docker's restart policy restarted it) for want of its database: started
    again if it is not running, and its readiness_delay (1 s) counted from then, not from the
    start that failed 61 s before: the judging exec waits that second out. (Not a count of its
    looks: on a loaded machine the second had passed by its first look, in CI of 2026-12-07.)"""
    env, here = host
    path = tmp_path / "bp.yml"
    path.write_text(HEAD.replace("readiness_delay: 60", "readiness_delay: 1"))
    _, judged = start_then_judge(load_blueprint(str(path)), env, here, ran_for=61, restarts=restarts)
    assert judged.returncode == 0, judged.stderr
    assert f"container demo-worker-v2 {said} (restarts, state, start: {restarts})" in judged.stderr
    assert (["start", "demo-worker-v2"] in calls(here)) is started_again
    assert float((here / "judged-seconds").read_text()) >= 0.95, "judged from the new start, not at once"
