"""The history store on SQLite and PostgreSQL alike: schema migrations, what each record
holds, the filters `csdeploy history` uses, and writers in two processes at once."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cloudstack_deploy.store import Store, parse_store_url
from cloudstack_deploy.store import records as r
from cloudstack_deploy.store.db import MIGRATION_TABLE, migration_ids

REPO = Path(__file__).resolve().parents[2]


def open_store(url: str) -> Store:
    parsed = parse_store_url(url)
    assert parsed is not None
    return Store(parsed).open()


def test_a_fresh_store_gets_every_migration_once(store_url: str) -> None:
    with open_store(store_url) as store:
        applied = [row["migration_id"] for row in store.query(f"SELECT migration_id FROM {MIGRATION_TABLE}")]
        assert applied == migration_ids() and applied, applied
    with open_store(store_url) as store:  # a second open applies nothing again
        again = [row["migration_id"] for row in store.query(f"SELECT migration_id FROM {MIGRATION_TABLE}")]
        assert again == applied
        assert store._pending() == []


def test_an_environment_has_one_row_per_life(store_url: str) -> None:
    expires = datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)
    with open_store(store_url) as store:
        first = r.env_created(store, name="shop", cloud="c1", service="demo", network_id="n1", expires=None)
        again = r.env_created(store, name="shop", cloud="c1", service="demo", network_id="n1", expires=expires)
        assert again == first  # a converging re-run keeps the row and updates the expiry
        r.env_created(store, name="shop", cloud="other-cloud", service="demo", network_id="n9", expires=None)
        r.env_torn_down(store, name="shop", cloud="c1", how="reap", by="ci@runner")
        second = r.env_created(store, name="shop", cloud="c1", service="demo", network_id="n2", expires=None)
        assert second != first
        rows = {(e.cloud, e.network_id): e for e in r.environments(store, name="shop")}
    assert set(rows) == {("c1", "n1"), ("c1", "n2"), ("other-cloud", "n9")}
    old = rows[("c1", "n1")]
    assert old.expires_at == "2031-01-02T03:04:05.000000Z"
    assert (old.torn_down_how, old.torn_down_by) == ("reap", "ci@runner") and old.torn_down_at
    assert old.created_by and "@" in old.created_by
    assert rows[("c1", "n2")].torn_down_at is None and rows[("other-cloud", "n9")].torn_down_at is None


def test_a_teardown_the_store_never_saw_created_is_recorded_too(store_url: str) -> None:
    with open_store(store_url) as store:
        r.env_torn_down(store, name="old", cloud="c1", how="teardown")
        (row,) = r.environments(store, name="old")
    assert row.created_at is None and row.torn_down_how == "teardown"


def _deploy(store: Store, version: str, *, kind: str = "deploy", ok: bool = True, env: str = "shop",
            service: str = "demo", error: str | None = None) -> str:
    dep = r.deployment_pending(store, env=env, cloud="c1", service=service, version=version, kind=kind)
    r.deployment_started(store, dep, {"hosts": 3, "primary": f"{env}-web-1"})
    r.deployment_finished(store, dep, ok=ok, seconds=12.5, error=error, metadata={"hosts": 3})
    return dep


def test_deployments_go_through_their_statuses_with_events(store_url: str) -> None:
    with open_store(store_url) as store:
        env_id = r.env_created(store, name="shop", cloud="c1", service="demo", network_id="n1", expires=None)
        dep = r.deployment_pending(store, env="shop", cloud="c1", service="demo", version="v1", kind="deploy")
        (pending,) = r.deployments(store)
        assert (pending.status, pending.events, pending.environment_id) == ("pending", [], env_id)
        r.deployment_started(store, dep, {"primary": "shop-web-1"})
        assert r.deployments(store)[0].status == "deploying"
        r.deployment_finished(store, dep, ok=True, seconds=3.25, error=None, metadata={"hosts": 1})
        _deploy(store, "broken", ok=False, error="shop-web-1: deploy web broken failed\n    (HTTP 500)")
        (failed, done) = r.deployments(store)
    assert (done.status, done.duration_seconds, done.finished_at is not None) == ("deployed", 3.25, True)
    assert [(e.type, e.metadata) for e in done.events] == [("deploy_started", {"primary": "shop-web-1"}),
                                                          ("deploy_completed", {"hosts": 1})]
    assert failed.status == "failed" and failed.error.endswith("(HTTP 500)")
    assert [e.type for e in failed.events] == ["deploy_started", "deploy_failed"]


def test_a_rollback_marks_the_deployment_it_replaced(store_url: str) -> None:
    with open_store(store_url) as store:
        _deploy(store, "v1")
        _deploy(store, "v2")
        _deploy(store, "v2", env="other")          # another environment is not touched
        _deploy(store, "v1", kind="rollback")
        by = {(d.env, d.version, d.kind): d for d in r.deployments(store)}
    assert by[("shop", "v2", "deploy")].status == "rolled_back"
    (event,) = [e for e in by[("shop", "v2", "deploy")].events if e.type == "rollback"]
    assert event.metadata["to_version"] == "v1"
    assert event.metadata["rollback_deployment"] == by[("shop", "v1", "rollback")].id
    assert by[("shop", "v1", "rollback")].status == "deployed"
    assert by[("shop", "v1", "deploy")].status == "deployed"
    assert by[("other", "v2", "deploy")].status == "deployed"


def test_a_deploy_that_undid_itself_is_rolled_back_with_its_reason(store_url: str) -> None:
    with open_store(store_url) as store:
        _deploy(store, "v1")
        dep = r.deployment_pending(store, env="shop", cloud="lab", service="shop", version="degrading", kind="deploy")
        r.deployment_started(store, dep, {"kind": "deploy"})
        r.deployment_finished(store, dep, ok=False, seconds=9.5, error="watch failed after 6s: GET / HTTP 500",
                              metadata={"switched": ["a", "b"], "reverted": ["b", "a"]}, rolled_back=True)
        assert r.deployment_exists(store, dep) and not r.deployment_exists(store, "no-such-id")
        by = {d.version: d for d in r.deployments(store)}
    bad = by["degrading"]
    assert bad.status == "rolled_back" and bad.error == "watch failed after 6s: GET / HTTP 500"
    assert bad.duration_seconds == 9.5
    (event,) = [e for e in bad.events if e.type == "rollback"]
    assert event.metadata["reason"] == bad.error and event.metadata["reverted"] == ["b", "a"]
    assert by["v1"].status == "deployed", "the version it went back to stays deployed"


def test_history_filters(store_url: str) -> None:
    with open_store(store_url) as store:
        _deploy(store, "v1")
        _deploy(store, "v2", ok=False, error="boom")
        _deploy(store, "w1", env="jobs", service="worker")
        store.execute_many([("UPDATE deployments SET started_at = :old WHERE version = 'v1'",
                             {"old": r.now_text(datetime.now(UTC) - timedelta(days=10))})])
        versions = lambda **kw: sorted(d.version for d in r.deployments(store, **kw))  # noqa: E731
        assert versions() == ["v1", "v2", "w1"]
        assert versions(env="shop") == ["v1", "v2"]
        assert versions(service="worker") == ["w1"]
        assert versions(status="failed") == ["v2"]
        assert versions(since=timedelta(days=7)) == ["v2", "w1"]
        assert [d.version for d in r.deployments(store, limit=1)] == ["w1"]  # newest first


def test_runs_keep_their_summary(store_url: str) -> None:
    with open_store(store_url) as store:
        run = r.run_started(store, kind="nightly", cloud="c1", prefix="nightly")
        assert r.runs(store)[0].status == "running"
        r.run_finished(store, run, passed=False, summary={"cases": [{"name": "deploy", "status": "failed"}]},
                       env="nightly-1130-abc")
        (done,) = r.runs(store, kind="nightly")
    assert (done.status, done.env, done.prefix) == ("failed", "nightly-1130-abc", "nightly")
    assert done.summary["cases"][0]["status"] == "failed"


WRITER = textwrap.dedent("""
    import sys
    from cloudstack_deploy.store import Store, parse_store_url
    from cloudstack_deploy.store import records as r
    url, who, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with Store(parse_store_url(url)).open() as store:
        for i in range(count):
            dep = r.deployment_pending(store, env="shop", cloud="c1", service="demo", version=f"{who}-{i}",
                                       kind="deploy", by=who)
            r.deployment_started(store, dep, {"i": i})
            r.deployment_finished(store, dep, ok=True, seconds=0.1, error=None, metadata={"i": i})
""")


def test_two_processes_write_at_once_without_loss(store_url: str) -> None:
    """Both start on an empty store (so both try to migrate it) and write 60 deployments each."""
    count = 60
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, store_url, who, str(count)], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for who in ("alice", "bob")]
    outcomes = [p.communicate(timeout=180) for p in procs]
    for p, (_out, err) in zip(procs, outcomes, strict=True):
        assert p.returncode == 0, err
    with open_store(store_url) as store:
        found = r.deployments(store, limit=1000)
        events = store.query("SELECT COUNT(*) AS n FROM events")[0]["n"]
    versions = sorted(d.version for d in found)
    assert versions == sorted(f"{who}-{i}" for who in ("alice", "bob") for i in range(count))
    assert all(d.status == "deployed" and len(d.events) == 2 for d in found)
    assert events == 2 * 2 * count
    assert json.dumps([d.to_dict() for d in found])  # JSON-ready, as `history --json` prints it


def test_processes_opening_a_fresh_sqlite_store_wait_out_a_busy_writer(tmp_path: Path) -> None:
    """On a busy machine a writer can hold SQLite's write lock for seconds (descheduled mid-
    transaction). Four processes open a fresh store at once while another connection holds
    the lock for 7 s twice: every step of opening, the schema migration included, must wait
    for it as the store's own statements do (15 s) instead of failing with "database is
    locked" after SQLite's default 5 s."""
    import sqlite3
    import threading
    import time

    path = tmp_path / "history.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("PRAGMA journal_mode = WAL")
    held = threading.Event()

    def hold() -> None:
        for _ in range(2):
            holder.execute("BEGIN IMMEDIATE")
            held.set()
            time.sleep(7)
            holder.execute("COMMIT")
            time.sleep(0.3)

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait()
    url = f"sqlite:///{path}"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, url, who, "3"], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for who in ("a", "b", "c", "d")]
    outcomes = [p.communicate(timeout=180) for p in procs]
    thread.join()
    holder.close()
    for p, (_out, err) in zip(procs, outcomes, strict=True):
        assert p.returncode == 0, err
    with open_store(url) as store:
        assert len(r.deployments(store, limit=100)) == 4 * 3


KILLED = textwrap.dedent("""
    import sys, time
    from cloudstack_deploy.store import Store, parse_store_url
    from cloudstack_deploy.store import records as r
    with Store(parse_store_url(sys.argv[1])).open() as store:
        r.run_started(store, kind="nightly", cloud="c1", prefix="nightly")
        dep = r.deployment_pending(store, env="shop", cloud="c1", service="demo", version="v9", kind="deploy")
        r.deployment_started(store, dep, {"kind": "deploy"})
        canary = r.deployment_pending(store, env="shop", cloud="c1", service="demo", version="v9c", kind="deploy")
        r.deployment_started(store, canary, {"kind": "deploy", "canary": "1 host: shop-web-1"})
        print("started", flush=True)
        time.sleep(600)
""")


def test_a_run_killed_midway_reads_as_interrupted(store_url: str) -> None:
    """A nightly (and its deploy) killed with SIGKILL never writes its outcome: while the
    process lives the rows are in progress; once it is gone they read as interrupted. A
    paused canary has no process by design and stays deploying."""
    proc = subprocess.Popen([sys.executable, "-c", KILLED, store_url], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "started", proc.stderr
        with open_store(store_url) as store:
            assert [x.status for x in r.runs(store)] == ["running"]
            assert sorted(d.status for d in r.deployments(store)) == ["deploying", "deploying"]
    finally:
        proc.kill()
        proc.wait(timeout=30)
    with open_store(store_url) as store:
        assert [x.status for x in r.runs(store)] == ["interrupted"]
        assert [x.status for x in r.runs(store, status="interrupted")] == ["interrupted"]
        assert r.runs(store, status="running") == []
        by_version = {d.version: d.status for d in r.deployments(store)}
        assert by_version == {"v9": "interrupted", "v9c": "deploying"}
        assert [d.version for d in r.deployments(store, status="interrupted")] == ["v9"]
        assert [d.version for d in r.deployments(store, status="deploying")] == ["v9c"]
        # a stored status is never rewritten: the reading is what changed
        assert store.query("SELECT status FROM runs")[0]["status"] == "running"


def test_in_progress_elsewhere_is_interrupted_only_after_a_bound(store_url: str) -> None:
    """Another machine's pid cannot be checked: a row from there (or from before pids were
    recorded) is in progress until it is older than the bound."""
    with open_store(store_url) as store:
        fresh = r.run_started(store, kind="reap", cloud="c1", prefix=None)
        old = r.run_started(store, kind="nightly", cloud="c1", prefix="nightly")
        dep = r.deployment_pending(store, env="shop", cloud="c1", service="demo", version="v1", kind="deploy")
        store.execute_many([
            ("UPDATE processes SET host = 'another-machine', pid = 1", {}),
            ("UPDATE runs SET started_at = :at WHERE id = :id",
             {"at": r.now_text(datetime.now(UTC) - r.RUN_STALE_AFTER - timedelta(minutes=1)), "id": old}),
            ("DELETE FROM processes WHERE record_id = :id", {"id": dep}),  # as an older csdeploy wrote it
        ])
        assert {x.id: x.status for x in r.runs(store)} == {fresh: "running", old: "interrupted"}
        assert r.deployments(store)[0].status == "pending"
        store.execute_many([("UPDATE deployments SET started_at = :at",
                             {"at": r.now_text(datetime.now(UTC) - r.DEPLOYMENT_STALE_AFTER - timedelta(minutes=1))})])
        assert r.deployments(store)[0].status == "interrupted"
        r.run_finished(store, old, passed=True, summary={})  # a slow run that did finish keeps its outcome
        assert {x.id: x.status for x in r.runs(store)}[old] == "passed"
        left = [row["record_id"] for row in store.query("SELECT record_id FROM processes")]
        assert left == [fresh]  # a finished run leaves no process behind


def test_a_store_made_by_the_first_schema_is_brought_up_to_date(store_url: str) -> None:
    from yoyo import get_backend, read_migrations

    from cloudstack_deploy.store.db import MIGRATIONS

    parsed = parse_store_url(store_url)
    assert parsed is not None
    backend = get_backend(parsed.yoyo_uri, migration_table=MIGRATION_TABLE)
    try:
        first = read_migrations(str(MIGRATIONS)).filter(lambda m: m.id == "0001.initial")
        with backend.lock():
            backend.apply_migrations(backend.to_apply(first))
        with backend.transaction():
            backend.execute("INSERT INTO runs (id, kind, cloud, status, started_by, started_at) "
                            "VALUES ('old-run', 'nightly', 'c1', 'running', 'ci@old', :at)", {"at": r.now_text()})
    finally:
        backend.connection.close()
    with open_store(store_url) as store:
        assert store._pending() == []
        (run,) = r.runs(store)
        assert (run.id, run.status) == ("old-run", "running")
        assert r.runs(store, status="running")[0].id == "old-run"
