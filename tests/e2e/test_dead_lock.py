"""A deploy killed with SIGKILL under load does not keep the environment locked (e2e-lock).

tests/e2e/blueprints/bare.yml on its default (Docker) template: one web VM with kamal-proxy,
with an SSH key of the test's own so
that a second CSDEPLOY_HOME can reach the hosts. Each step relies on the ones before it.

  a. create-env v1
  b. a deploy of v2 under load is SIGKILLed once it holds the deploy lock (the lock stays on
     the primary host); the next deploy from the same CSDEPLOY_HOME proceeds at once without
     --break-lock, says whose lock it took over, and the host's history marks the killed
     deploy interrupted
  c. the same from a second CSDEPLOY_HOME (another user's state: no inventory, no key cache)
  d. a killed deploy "from another machine" (its owner record says so: its pid means nothing
     here): the next deploy waits for its lease to run out (45 s) and takes over, within a
     minute and without --break-lock
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cli import cli_argv

from .conftest import REPO, Lab, Load, environment, http, page_version, ssh

ENV = "e2e-lock"
BLUEPRINT = str(REPO / "tests" / "e2e" / "blueprints" / "bare.yml")  # its template default has Docker
SERVICE = "demo"
LOCK = f".csdeploy/{SERVICE}/lock/owner.json"

pytestmark = pytest.mark.story


class State:
    sets: tuple[str, ...] = ()
    web: dict = {}


@pytest.fixture(scope="module")
def locked(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    keydir = tmp_path_factory.mktemp("e2e-lock-key")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keydir / "id")], check=True)
    State.sets = ("--set", f"cloud.ssh.key={keydir / 'id'}")
    with environment(lab, ENV):
        yield lab


def kill_while_locked(lab: Lab, env: dict[str, str], version: str, elsewhere: bool = False) -> None:
    """Start a deploy, SIGKILL it once the primary host shows its lock, check the lock stays."""
    proc = subprocess.Popen(cli_argv("deploy", BLUEPRINT, "--env", ENV, "--version", version, "--progress",
                                     "plain", *State.sets), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 120
        while time.monotonic() < end and proc.poll() is None:
            if ssh(lab, ENV, State.web["name"], f"test -s {LOCK}")[0] == 0:
                break
            time.sleep(0.2)
        assert proc.poll() is None, f"the deploy of {version} ended (exit {proc.returncode}) before it was killed"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    if elsewhere:
        ssh(lab, ENV, State.web["name"], f"sed -i 's/\"machine\": \"[^\"]*\"/\"machine\": \"another\"/' {LOCK}")
    code, out, _ = ssh(lab, ENV, State.web["name"], f"cat {LOCK}")
    assert code == 0 and json.loads(out)["version"] == version, "the killed deploy's lock is gone"
    assert not elsewhere or json.loads(out)["machine"] == "another"


def deploy_again(lab: Lab, env: dict[str, str], version: str, killed: str, reason: str = "is gone") -> None:
    started = time.monotonic()
    proc = subprocess.run(cli_argv("deploy", BLUEPRINT, "--env", ENV, "--version", version, "--progress",
                                   "plain", *State.sets), cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)
    seconds = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    assert "took over the deploy lock of" in proc.stderr and f"deploying {killed}" in proc.stderr, proc.stderr
    assert reason in proc.stderr, proc.stderr
    status, body = http("GET", f"http://{State.web['public_ip']}/")
    assert status == 200 and page_version(body) == version
    _, history, _ = ssh(lab, ENV, State.web["name"], f"cat .csdeploy/{SERVICE}/history.jsonl")
    records = [json.loads(line) for line in history.splitlines() if line.strip()]
    assert any(r["version"] == killed and r["status"] == "interrupted" for r in records), history
    lab.record("dead_lock", **{f"redeploy_{version}_seconds": round(seconds, 1)})
    assert seconds < 90, f"the deploy after a killed one took {seconds:.0f}s"


def test_a_create_env_v1(locked: Lab) -> None:
    run = locked.csdeploy("create-env", BLUEPRINT, "--env", ENV, "--version", "v1", "--progress", "plain",
                          *State.sets, timeout=600)
    [State.web] = locked.inventory(ENV)["hosts"]
    status, body = http("GET", f"http://{State.web['public_ip']}/")
    assert status == 200 and page_version(body) == "v1", run.explain()


def test_b_a_killed_deploy_is_taken_over_from_the_same_home(locked: Lab) -> None:
    with Load(f"http://{State.web['public_ip']}/") as load:
        kill_while_locked(locked, locked.env, "v2")
        deploy_again(locked, locked.env, "v2", killed="v2")
    locked.record("dead_lock", load_same_home=load.summary())


def test_c_a_killed_deploy_is_taken_over_from_another_home(locked: Lab, tmp_path: Path) -> None:
    other = {**locked.env, "CSDEPLOY_HOME": str(tmp_path / "other-home"), "CLOUDSTACK_ENDPOINT": locked.endpoint,
             "CLOUDSTACK_KEY": locked.key, "CLOUDSTACK_SECRET": locked.secret, "CLOUDSTACK_POLL_INTERVAL": "0.25",
             **locked.secrets}
    with Load(f"http://{State.web['public_ip']}/") as load:
        kill_while_locked(locked, locked.env, "v1")
        deploy_again(locked, other, "v1", killed="v1")
    locked.record("dead_lock", load_other_home=load.summary())


def test_d_a_killed_deploy_from_another_machine_is_taken_over_when_its_lease_runs_out(locked: Lab) -> None:
    kill_while_locked(locked, locked.env, "v2", elsewhere=True)
    deploy_again(locked, locked.env, "v2", killed="v2", reason="its lease was last renewed")
