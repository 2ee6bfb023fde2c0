"""The demo blueprint's whole life on the lab, as a user lives it, in one environment (e2e-demo).

Each test is one step of the story and relies on what the steps before it left (the module's
tests run in file order; after a failed step the rest are skipped, see conftest). Everything
is real: the CLI as a subprocess, VMs that are systemd containers with their own dockerd,
kamal-proxy, PostgreSQL on a data disk, Redis, the worker. Checks go through HTTP to the
web VM's public IP, the `cs` client and the docker CLI.

  a. create-env from nothing -> 200 "demo v1" on http://<public ip>/
  b. a job goes web -> Redis -> worker -> PostgreSQL -> web
  c. a note is written (checked in f)
  d. deploy v2 under continuous load: 0 failed of >= 500, both versions seen, then v2
  e. rollback (to the previous successful version) under load: 0 failed, then v1
  f. the note survived; `accessory reboot db` keeps it
  g. deploy of `broken` fails (exit 1) naming host, kamal-proxy, /up and its HTTP 500; v1 serves on
  h. status --json (containers, versions, proxy target v1), logs, exec
  i. teardown, then nothing of the environment is left in the cloud or in docker

The load during d, e and g: two aiohttp clients in a thread of the test process, keep-alive
OFF (a new TCP connection per request, through the public IP's NAT into kamal-proxy), GET /;
a non-200 answer, a connection error or a timeout is a failure.

Figures (exec calls per host of the v2 redeploy, wall times) are printed (``-s``) and
written to /tmp/csdeploy-e2e-figures.json.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from .conftest import (
    REPO,
    Lab,
    Load,
    cloud_leftovers,
    docker_leftovers,
    environment,
    http,
    page_version,
)

ENV = "e2e-demo"
BLUEPRINT = str(REPO / "blueprints" / "demo.yml")
MIN_REQUESTS = 500
JOB_DEADLINE = 30.0

pytestmark = pytest.mark.story


@dataclass
class Story:
    lab: Lab
    inventory: dict[str, Any] = field(default_factory=dict)
    url: str = ""
    note: str = ""

    @property
    def web(self) -> dict[str, Any]:
        return next(h for h in self.inventory["hosts"] if h.get("proxy"))


@pytest.fixture(scope="module")
def story(lab: Lab) -> Iterator[Story]:
    with environment(lab, ENV):
        yield Story(lab)


def deploy_under_load(story: Story, *args: str, min_requests: int = MIN_REQUESTS,
                      check: bool = True) -> tuple[Any, Load]:
    """Run a CLI command while a client loads the app; the load runs until the command returns
    and at least ``min_requests`` requests were made."""
    with Load(story.url) as load:
        load.keep_going_until(20, deadline=30)  # the client works before the command starts
        assert load.ok >= 20 and load.failed == 0, "the app does not answer before the deploy: " + load.summary()
        run = story.lab.csdeploy(*args, check=check)
        load.keep_going_until(min_requests)
    print(f"\n[e2e] {args[0]}: {load.summary()}")
    return run, load


# ---- a -----------------------------------------------------------------------------------------
def test_a_create_env_serves_v1(story: Story) -> None:
    run = story.lab.csdeploy("create-env", BLUEPRINT, "--env", ENV, "--version", "v1", "--progress", "plain",
                             timeout=600)
    story.lab.record("demo", create_env_seconds=round(run.seconds, 1))
    story.inventory = story.lab.inventory(ENV)
    assert sorted(story.inventory["roles"]) == ["db", "web", "worker"], story.inventory["roles"]
    story.url = f"http://{story.web['public_ip']}/"
    assert story.url in run.stdout, run.explain()
    status, body = http("GET", story.url)
    assert status == 200 and page_version(body) == "v1", f"GET {story.url}: {status} {body!r}\n" + run.explain()


# ---- b -----------------------------------------------------------------------------------------
def test_b_worker_processes_a_job_through_redis_into_postgres(story: Story) -> None:
    payload = f"e2e job {secrets.token_hex(4)}"
    status, body = http("POST", story.url + "jobs", payload.encode())
    assert status == 202, f"POST /jobs: {status} {body}"
    job_id = json.loads(body)["id"]
    end = time.monotonic() + JOB_DEADLINE
    last = ""
    while time.monotonic() < end:
        status, body = http("GET", f"{story.url}jobs/{job_id}")
        if status == 200:
            job = json.loads(body)
            assert job["result"] == payload.upper() and job["version"] == "v1", job
            return
        last = f"{status} {body}"
        time.sleep(0.5)
    logs = story.lab.csdeploy("logs", "--env", ENV, "--role", "worker", "-n", "30", check=False)
    pytest.fail(f"job {job_id} has no result after {JOB_DEADLINE:.0f}s (last: {last})\nworker logs:\n{logs.stdout}")


# ---- c -----------------------------------------------------------------------------------------
def test_c_write_a_note(story: Story) -> None:
    story.note = f"e2e note {secrets.token_hex(6)}"
    status, body = http("POST", story.url + "notes", story.note.encode())
    assert status == 201, f"POST /notes: {status} {body}"
    assert json.loads(body)["body"] == story.note


# ---- c2 ----------------------------------------------------------------------------------------
def test_c2_dry_run_shows_each_hosts_scripts_changes_nothing_and_leaks_no_secret(story: Story) -> None:
    """`deploy --dry-run` (with -vv JSON logs): the hosts' facts are read for real, the scripts
    that would run are printed per host, the app keeps serving v1, and the lab's PostgreSQL
    password (it has URL-special characters) appears in no form."""
    from urllib.parse import quote

    run = story.lab.csdeploy("-vv", "--log-format", "json", "deploy", BLUEPRINT, "--env", ENV, "--version", "v2",
                             "--dry-run")
    out = run.stdout + run.stderr
    headers = [line for line in run.stdout.splitlines() if line.startswith("### ")]
    assert f"### {ENV}-web-1: take the deploy lock" in headers
    assert any(h.startswith(f"### {ENV}-web-1: prepare") for h in headers), headers
    assert f"### {ENV}-web-1: switch web v2" in headers and f"### {ENV}-worker-1: start worker v2" in headers
    assert not any(h.startswith(f"### {ENV}-db-1") for h in headers), "nothing changes on the db host"
    assert "kamal-proxy deploy demo-web --target=demo-web-v2:8000" in run.stdout
    assert "[REDACTED]" in run.stdout, "the env files' secret lines are shown, redacted"
    password = story.lab.secrets["POSTGRES_PASSWORD"]
    for form in (password, quote(password, safe=""), quote(password)):
        assert form not in out, "a form of the PostgreSQL password leaked"
    status, body = http("GET", story.url)
    assert status == 200 and page_version(body) == "v1", "a dry run changes nothing"


# ---- d -----------------------------------------------------------------------------------------
def test_d_deploy_v2_under_load_drops_nothing(story: Story) -> None:
    run, load = deploy_under_load(story, "deploy", BLUEPRINT, "--env", ENV, "--version", "v2", "--json",
                                  "--progress", "plain")
    result = run.json()
    story.lab.record("demo", deploy_v2_seconds=round(run.seconds, 1),
                     deploy_v2_rollout_seconds=result["seconds"],
                     deploy_v2_ssh_exec_calls=result["ssh_exec_calls"],
                     deploy_v2_load=load.summary())
    assert result["version"] == "v2", result
    assert load.failed == 0, "requests failed during the deploy: " + load.summary()
    assert load.total >= MIN_REQUESTS, load.summary()
    assert load.versions["v1"] > 0 and load.versions["v2"] > 0, \
        "the switch did not happen while the client was running: " + load.summary()
    assert load.last_seen["v1"] < load.last_seen["v2"], load.summary()
    status, body = http("GET", story.url)
    assert status == 200 and page_version(body) == "v2", f"{status} {body!r}"


# ---- e -----------------------------------------------------------------------------------------
def test_e_rollback_under_load_drops_nothing(story: Story) -> None:
    run, load = deploy_under_load(story, "rollback", "--env", ENV, "--progress", "plain")
    story.lab.record("demo", rollback_seconds=round(run.seconds, 1), rollback_load=load.summary())
    assert "rollback to v1" in run.stdout, run.explain()
    assert load.failed == 0, "requests failed during the rollback: " + load.summary()
    assert load.total >= MIN_REQUESTS, load.summary()
    assert load.versions["v1"] > 0 and load.versions["v2"] > 0, load.summary()
    assert load.last_seen["v2"] < load.last_seen["v1"], load.summary()
    status, body = http("GET", story.url)
    assert status == 200 and page_version(body) == "v1", f"{status} {body!r}"


# ---- f -----------------------------------------------------------------------------------------
def _notes(story: Story, deadline: float = 30) -> list[dict[str, Any]]:
    end = time.monotonic() + deadline
    last = ""
    while time.monotonic() < end:
        try:
            status, body = http("GET", story.url + "notes")
            if status == 200:
                return json.loads(body)
            last = f"{status} {body}"
        except OSError as exc:
            last = repr(exc)
        time.sleep(0.5)
    raise AssertionError(f"GET /notes did not answer 200 within {deadline:.0f}s; last: {last}")


def test_f_data_survives_deploys_rollback_and_db_reboot(story: Story) -> None:
    assert story.note in [n["body"] for n in _notes(story)], "the note written before the deploys is gone"
    run = story.lab.csdeploy("accessory", "reboot", "db", "--env", ENV, "--progress", "plain")
    assert "accessory db: rebooted" in run.stdout, run.explain()
    bodies = [n["body"] for n in _notes(story)]
    assert story.note in bodies, f"the note is gone after `accessory reboot db`: {bodies}"
    status, body = http("POST", story.url + "notes", b"after the db reboot")
    assert status == 201, f"the database does not take writes after its reboot: {status} {body}"


# ---- g -----------------------------------------------------------------------------------------
def test_g_broken_deploy_fails_clearly_and_v1_keeps_serving(story: Story) -> None:
    run, load = deploy_under_load(story, "deploy", BLUEPRINT, "--env", ENV, "--version", "broken",
                                  "--progress", "plain", min_requests=50, check=False)
    story.lab.record("demo", broken_deploy_seconds=round(run.seconds, 1), broken_load=load.summary(),
                     broken_message=run.stderr.strip().splitlines()[-25:])
    assert run.code == 1, "a deploy whose health check fails must exit 1\n" + run.explain()
    message = run.stderr
    for part in (story.web["name"], "kamal-proxy", "/up", "HTTP 500"):
        assert part in message, f"the failure message does not mention {part!r}\n" + run.explain()
    assert load.failed == 0, "requests failed during the failing deploy: " + load.summary()
    assert set(load.versions) == {"v1"}, "only v1 may serve during a failing deploy: " + load.summary()
    status, body = http("GET", story.url)
    assert status == 200 and page_version(body) == "v1", f"{status} {body!r}"


# ---- h -----------------------------------------------------------------------------------------
def test_h_status_logs_exec(story: Story) -> None:
    run = story.lab.csdeploy("status", "--env", ENV, "--json")
    hosts = {h["name"]: h for h in run.json()}
    assert set(hosts) == {h["name"] for h in story.inventory["hosts"]}, run.explain()
    for h in hosts.values():
        assert h["error"] is None, f"{h['name']}: {h['error']}"
    running = {name: {c["name"]: c for c in h["containers"] if c["state"] == "running"}
               for name, h in hosts.items()}
    web, worker, db = (story.inventory["roles"][r][0] for r in ("web", "worker", "db"))
    assert set(running[web]) == {"demo-web-v1", "demo-redis"}, hosts[web]
    assert running[web]["demo-web-v1"]["version"] == "v1"
    assert set(running[worker]) == {"demo-worker-v1"}, hosts[worker]
    assert running[worker]["demo-worker-v1"]["version"] == "v1"
    assert set(running[db]) == {"demo-db"}, hosts[db]
    assert not any("broken" in c["name"] for c in hosts[web]["containers"]), "the broken container remains"
    versions = {c["version"] for c in hosts[web]["containers"] if c["role"] == "web"}
    assert {"v1", "v2"} <= versions, f"old versions are kept for rollback: {hosts[web]['containers']}"
    targets = hosts[web]["proxy_targets"]
    assert "demo-web-v1:8000" in targets and "v2" not in targets, f"kamal-proxy routes: {targets!r}"
    assert "\x1b" not in targets, f"terminal colour codes in the JSON: {targets!r}"

    logs = story.lab.csdeploy("logs", "--env", ENV, "--role", "web", "-n", "20")
    lines = logs.stdout.splitlines()
    assert 0 < len(lines) <= 20 and all(line.startswith(f"{web} | ") for line in lines), logs.explain()

    code = "import os; print('exec-ok', os.environ['APP_VERSION'], 6 * 7)"
    ex = story.lab.csdeploy("exec", "--env", ENV, "--role", "web", "--", "python3", "-c", code)
    assert f"{web} | exec-ok v1 42" in ex.stdout.splitlines(), ex.explain()


# ---- i -----------------------------------------------------------------------------------------
def test_h2_history_records_every_deploy_with_its_outcome(story: Story) -> None:
    run = story.lab.csdeploy("history", "--env", ENV, "--source", "host", "--json")
    records = json.loads(run.stdout)
    seen = [(r["kind"], r["version"], r["status"]) for r in records]
    for step in [("deploy", "v1", "ok"), ("deploy", "v2", "ok"), ("rollback", "v1", "ok"),
                 ("deploy", "broken", "failed")]:
        assert step in seen, f"{step} missing from the history: {seen}"
    failed = next(r for r in records if r["version"] == "broken")
    assert "proxy-deploy" in failed["error"], failed


def test_i_teardown_leaves_nothing(story: Story) -> None:
    run = story.lab.csdeploy("teardown", "--env", ENV, "--yes", "--progress", "plain")
    story.lab.record("demo", teardown_seconds=round(run.seconds, 1))
    left = cloud_leftovers(story.lab, ENV, story.inventory)
    assert left == {}, f"the cloud still lists resources of {ENV}: {left}\n" + run.explain()
    left = docker_leftovers(story.lab, story.inventory)
    assert left == {}, f"the lab still has docker objects of {ENV}: {left}\n" + run.explain()
    assert not (story.lab.home / "envs" / ENV).exists(), "the local state of the environment remains"
