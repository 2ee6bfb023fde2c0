"""The shared job queue in the history store (SQLite and a real PostgreSQL): one running job
per environment, jobs whose worker died marked interrupted, and two `serve` processes on one
PostgreSQL sharing ten jobs with none run twice and no environment running two at once."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests

from cloudstack_deploy.server import access, queue
from cloudstack_deploy.store.db import Store
from cloudstack_deploy.store.records import now_text
from cloudstack_deploy.store.url import parse_store_url

from .servers import serve_process


def _open(url: str) -> Store:
    parsed = parse_store_url(url)
    assert parsed is not None
    return Store(parsed).open()


def test_one_environment_never_runs_two_jobs(store_url: str) -> None:
    with _open(store_url) as store:
        a1 = queue.enqueue(store, kind="sleep", env="a", params={}, by="t")
        a2 = queue.enqueue(store, kind="sleep", env="a", params={}, by="t")
        b1 = queue.enqueue(store, kind="sleep", env="b", params={}, by="t")
        first = queue.claim(store, ("sleep",))
        second = queue.claim(store, ("sleep",))
        assert (first.id, second.id) == (a1.id, b1.id)   # a2 waits for a1
        assert queue.claim(store, ("sleep",)) is None
        assert queue.claim(store, ("deploy",)) is None   # a worker takes only the kinds it runs
        # even written behind the queue's back, the database refuses a second running job of env a
        try:
            with store.transaction() as execute:
                execute("UPDATE jobs SET status = 'running' WHERE id = :id", {"id": a2.id})
        except Exception as exc:
            assert "unique" in str(exc).lower()
        else:
            raise AssertionError("two running jobs in one environment were accepted")
        assert queue.finish(store, a1.id, status="succeeded")
        assert queue.claim(store, ("sleep",)).id == a2.id
        assert not queue.finish(store, a1.id, status="failed")   # a finished job stays finished


def test_a_job_whose_worker_died_is_interrupted_and_frees_its_environment(store_url: str) -> None:
    with _open(store_url) as store:
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        gone = queue.enqueue(store, kind="sleep", env="a", params={}, by="t")
        queue.claim(store, ("sleep",), pid=dead.pid)       # its worker's pid no longer exists here
        silent = queue.enqueue(store, kind="sleep", env="b", params={}, by="t")
        queue.claim(store, ("sleep",), host="another-machine", pid=1)
        alive = queue.enqueue(store, kind="sleep", env="c", params={}, by="t")
        queue.claim(store, ("sleep",))
        assert queue.interrupt_stale(store, timedelta(seconds=30)) == [gone.id]
        later = datetime.now(UTC) + timedelta(seconds=31)   # nobody beat for b (nor c) since
        queue.heartbeat(store, [alive.id])
        with store.transaction() as execute:
            execute("UPDATE jobs SET heartbeat_at = :at WHERE id = :id",
                    {"at": now_text(later), "id": alive.id})
        assert queue.interrupt_stale(store, timedelta(seconds=30), now=later) == [silent.id]
        assert queue.get(store, gone.id).status == "interrupted"
        assert queue.get(store, alive.id).status == "running"
        again = queue.enqueue(store, kind="sleep", env="a", params={}, by="t")
        assert queue.claim(store, ("sleep",)).id == again.id


def test_two_serve_processes_share_ten_jobs_on_one_postgresql(postgres, tmp_path: Path) -> None:  # noqa: ANN001
    from tests.store.conftest import fresh_database

    url = fresh_database(postgres)
    with _open(url) as store:
        token = access.create_token(store, name="ci", role="deployer")[1]
    env = {"CSDEPLOY_STATE_URL": url, "CSDEPLOY_SERVER_TEST_JOBS": "1", "CSDEPLOY_HOME": str(tmp_path / "home")}
    args = ("--max-jobs", "2", "--heartbeat", "0.2")
    with serve_process(env, tmp_path / "a.log", *args) as a, serve_process(env, tmp_path / "b.log", *args) as b:
        auth = {"Authorization": f"Bearer {token}"}
        ids = []
        for n in range(10):
            base = (a, b)[n % 2].url
            resp = requests.post(base + "/api/jobs", json={"env": f"env-{n % 4}", "params": {"seconds": 0.6}},
                                 headers=auth, timeout=10)
            assert resp.status_code == 202, resp.text
            ids.append(resp.json()["job"]["id"])
        deadline = time.monotonic() + 90
        while True:
            jobs = requests.get(a.url + "/api/jobs?limit=100", headers=auth, timeout=10).json()["jobs"]
            if all(j["status"] in queue.FINISHED for j in jobs) or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        details = [requests.get(f"{b.url}/api/jobs/{i}", headers=auth, timeout=10).json() for i in ids]
    assert [d["job"]["status"] for d in details] == ["succeeded"] * 10, (a.output(), b.output())
    for d in details:   # run once: one start note, the result from the process that ran it
        starts = [e for e in d["events"] if e["type"] == "note" and "started on" in e["text"]]
        assert len(starts) == 1 and d["job"]["result"]["pid"] == d["job"]["worker_pid"]
    assert {d["job"]["worker_pid"] for d in details} == {a.proc.pid, b.proc.pid}  # both took work
    by_env: dict[str, list[tuple[str, str]]] = {}
    for d in details:
        by_env.setdefault(d["job"]["env"], []).append((d["job"]["started_at"], d["job"]["finished_at"]))
    for env_name, spans in by_env.items():
        spans.sort()
        for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
            assert end <= start, f"{env_name} ran two jobs at once: {json.dumps(spans)}"


def test_a_serve_process_killed_mid_job_leaves_it_interrupted(tmp_path: Path) -> None:
    """kill -9 of the worker's process: the next server marks its job interrupted (its pid is
    gone from this machine) and runs the environment's next job."""
    url = f"sqlite:///{tmp_path / 'history.db'}"
    with _open(url) as store:
        token = access.create_token(store, name="ci", role="deployer")[1]
    env = {"CSDEPLOY_STATE_URL": url, "CSDEPLOY_SERVER_TEST_JOBS": "1", "CSDEPLOY_HOME": str(tmp_path / "home")}
    auth = {"Authorization": f"Bearer {token}"}
    with serve_process(env, tmp_path / "a.log", "--heartbeat", "0.2") as a:
        long = requests.post(a.url + "/api/jobs", json={"env": "env-1", "params": {"seconds": 60, "steps": 60}},
                             headers=auth, timeout=10).json()["job"]["id"]
        deadline = time.monotonic() + 30
        while requests.get(f"{a.url}/api/jobs/{long}", headers=auth, timeout=10).json()["job"]["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        a.proc.kill()
        a.proc.wait(10)
    with _open(url) as store:
        assert queue.get(store, long).status == "running"     # nobody has looked yet
        after = queue.enqueue(store, kind="sleep", env="env-1", params={"seconds": 0.1}, by="ci")
    with serve_process(env, tmp_path / "b.log", "--heartbeat", "0.2") as b:
        deadline = time.monotonic() + 30
        while requests.get(f"{b.url}/api/jobs/{after.id}", headers=auth, timeout=10).json()["job"]["status"] \
                not in queue.FINISHED:
            assert time.monotonic() < deadline, b.output()
            time.sleep(0.1)
        killed = requests.get(f"{b.url}/api/jobs/{long}", headers=auth, timeout=10).json()["job"]
    assert killed["status"] == "interrupted" and "heartbeat" in killed["error"]
    with _open(url) as store:
        assert queue.get(store, after.id).status == "succeeded"


def test_one_deployment_is_read_with_its_events_and_an_interrupted_one_says_so(store_url: str) -> None:
    """`GET /api/deployments/{id}` reads one row (records.deployment), not the env's whole list."""
    from cloudstack_deploy.store import records

    with _open(store_url) as store:
        done = records.deployment_pending(store, env="e", cloud="c", service="s", version="v1", kind="deploy")
        records.deployment_started(store, done, {"hosts": 2})
        records.deployment_finished(store, done, ok=True, seconds=1.0, error=None, metadata={})
        stuck = records.deployment_pending(store, env="e", cloud="c", service="s", version="v2", kind="deploy")
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        with store.transaction() as execute:
            execute("UPDATE processes SET pid = :pid WHERE record_id = :id", {"pid": dead.pid, "id": stuck})
        one = records.deployment(store, done)
        assert one is not None and one.status == "deployed"
        assert [e.type for e in one.events] == ["deploy_started", "deploy_completed"]
        assert records.deployment(store, stuck).status == "interrupted"
        assert records.deployment(store, "nope") is None
