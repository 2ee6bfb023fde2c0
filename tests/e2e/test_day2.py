"""Day two on the lab, as a person does it, in one environment (e2e-day2): one web VM with
kamal-proxy and PostgreSQL, the real kamal-proxy v0.9.2 (its `stop`/`resume`), the CLI as a
subprocess, a terminal from `script`.

  a. create-env -> 200 "demo v1"
  b. maintenance on -> 503 with the message; status says MAINTENANCE
  c. deploy v2 during maintenance -> still 503 (kamal-proxy and the marker keep it)
  d. maintenance off -> 200 "demo v2"
  e. app stop -> no 200; app start -> 200 v2 again
  f. psql (an alias), exec -i with stdin, exec -it under `script`: a terminal, the exit code
  g. accessory restart, upgrade (the same image: re-created, data kept) and prune; the app still answers
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from .conftest import REPO, Lab, environment, http, page_version, wait_for_page

ENV = "e2e-day2"
BLUEPRINT = str(REPO / "tests" / "e2e" / "blueprints" / "day2.yml")
MESSAGE = "Back at 14:00 UTC"

pytestmark = pytest.mark.story


@dataclass
class Story:
    lab: Lab
    url: str = ""


@pytest.fixture(scope="module")
def story(lab: Lab) -> Iterator[Story]:
    with environment(lab, ENV):
        yield Story(lab)


def _status_within(url: str, want: int, seconds: float = 20) -> tuple[int, str]:
    end = time.monotonic() + seconds
    status, body = 0, ""
    while time.monotonic() < end:
        try:
            status, body = http("GET", url)
        except OSError as exc:
            status, body = 0, str(exc)
        if status == want:
            return status, body
        time.sleep(0.3)
    return status, body


def test_a_create_env_serves_v1(story: Story) -> None:
    story.lab.csdeploy("create-env", BLUEPRINT, "--env", ENV, "--version", "v1", "--progress", "plain", timeout=600)
    web = next(h for h in story.lab.inventory(ENV)["hosts"] if h.get("proxy"))
    story.url = f"http://{web['public_ip']}/"
    wait_for_page(story.url, "v1")


def test_b_maintenance_on_answers_503_with_the_message(story: Story) -> None:
    run = story.lab.csdeploy("maintenance", "on", "--env", ENV, "--message", MESSAGE)
    assert f"{ENV}-web-1: demo-web answers 503 ({MESSAGE})" in run.stdout, run.explain()
    status, body = _status_within(story.url, 503)
    assert status == 503 and MESSAGE in body, f"{status} {body[:300]}"
    run = story.lab.csdeploy("status", "--env", ENV)
    assert f"MAINTENANCE: kamal-proxy answers 503 ({MESSAGE})" in run.stdout, run.explain()


def test_c_a_deploy_during_maintenance_keeps_it(story: Story) -> None:
    run = story.lab.csdeploy("deploy", BLUEPRINT, "--env", ENV, "--version", "v2", "--progress", "plain")
    status, body = http("GET", story.url)
    assert status == 503 and MESSAGE in body, f"{status} {body[:300]}\n" + run.explain()


def test_d_maintenance_off_serves_the_new_version(story: Story) -> None:
    story.lab.csdeploy("maintenance", "off", "--env", ENV)
    wait_for_page(story.url, "v2", deadline=20)
    assert "MAINTENANCE" not in story.lab.csdeploy("status", "--env", ENV).stdout


def test_e_app_stop_and_start(story: Story) -> None:
    run = story.lab.csdeploy("app", "stop", "--env", ENV)
    assert f"{ENV}-web-1: demo-web-v2 stopped" in run.stdout, run.explain()
    status, _ = http("GET", story.url)
    assert status != 200
    run = story.lab.csdeploy("app", "start", "--env", ENV)
    assert "demo-web-v2 started" in run.stdout and "routed through kamal-proxy again" in run.stdout, run.explain()
    status, body = http("GET", story.url)
    assert status == 200 and page_version(body) == "v2", f"{status} {body[:200]}"


def test_f_psql_exec_i_and_a_terminal(story: Story) -> None:
    run = story.lab.csdeploy("alias", "sql", "--env", ENV)
    assert run.stdout.strip() == "42", run.explain()
    res = subprocess.run([sys.executable, "-m", "cloudstack_deploy", "exec", "-i", "--env", ENV, "--role", "web",
                          "--", "sh", "-c", 'read x; echo "got $x on $CSDEPLOY_VERSION"; exit 4'],
                         input="hello\n", env=story.lab.env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 4 and "got hello on v2" in res.stdout, res.stdout + res.stderr
    cmd = shlex.join([sys.executable, "-m", "cloudstack_deploy", "exec", "-it", "--env", ENV, "--role", "web", "--",
                      "sh", "-c", "test -t 0 && echo TTY-OK; exit 3"])
    res = subprocess.run(["script", "-qec", cmd, "/dev/null"], env=story.lab.env, capture_output=True, text=True,
                         timeout=120, stdin=subprocess.DEVNULL)
    assert res.returncode == 3 and "TTY-OK" in res.stdout, res.stdout + res.stderr


def test_g_accessory_restart_upgrade_and_prune(story: Story) -> None:
    run = story.lab.csdeploy("accessory", "restart", "db", "--env", ENV)
    assert "demo-db restarted" in run.stdout, run.explain()
    run = story.lab.csdeploy("accessory", "upgrade", "db", "--env", ENV)
    assert "demo-db rebooted with registry.lab:5000/postgres:15 (the same image as before)" in run.stdout, \
        run.explain()
    assert story.lab.csdeploy("alias", "sql", "--env", ENV).stdout.strip() == "42"
    run = story.lab.csdeploy("prune", "--env", ENV)
    assert f"{ENV}-web-1: removed" in run.stdout, run.explain()
    wait_for_page(story.url, "v2", deadline=20)
