"""Scheduled backups (`accessories.NAME.backups.schedule`), run by `csdeploy serve`: the
scheduler, on an injected clock (nothing waits on wall time), queues one ``backup`` job per due
minute, also with two schedulers racing on one store (SQLite and a real PostgreSQL), runs the
newest missed slot once after a pause and never an older one; a worker runs the job with the
function `csdeploy backup` runs, against a real PostgreSQL, and the dump lands at the
destination with its manifest, listed by `csdeploy backups`.

As in tests/test_dumps.py only SSH and `docker exec` are stood in for (`HostHere` runs what
`docker exec` would run in the accessory's container, on this machine's throwaway server).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from cloudstack_deploy import cron, service
from cloudstack_deploy.blueprint import load_blueprint
from cloudstack_deploy.envctx import remember_blueprint
from cloudstack_deploy.errors import OperationFailed
from cloudstack_deploy.server import queue, schedule
from cloudstack_deploy.state import EnvState
from cloudstack_deploy.store.db import Store
from cloudstack_deploy.store.url import parse_store_url
from tests.store.pgserver import PgServer
from tests.test_dumps import REPO, environment, sql

from .conftest import Served
from .test_api import _sse

DAY1 = datetime(2026, 12, 1, tzinfo=UTC)


def blueprint_with(folder: Path, backups: str) -> Path:
    """The demo blueprint with ``backups: ...`` on its PostgreSQL accessory (``db``)."""
    text = (REPO / "blueprints" / "demo.yml").read_text()
    marker = "    image: registry.lab:5000/postgres:15\n"
    assert marker in text
    path = folder / "shop.yml"
    path.write_text(text.replace(marker, f"{marker}    backups: {backups}\n", 1))
    return path


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def _open(url: str) -> Store:
    parsed = parse_store_url(url)
    assert parsed is not None
    return Store(parsed).open()


def _bp(tmp_path: Path, backups: str = '{schedule: "0 3 * * *", keep: 2, to: /srv/dumps}') -> Any:
    return load_blueprint(str(blueprint_with(tmp_path, backups)))


def _scheduler(store: Store, clock: Clock, bp: Any, env: str = "shop") -> schedule.Scheduler:
    return schedule.Scheduler(store, clock=clock, environments=lambda: [(env, bp)])


def _done(store: Store, job: queue.Job, status: str = "succeeded", error: str | None = None) -> None:
    """The job claimed and finished as a worker would."""
    claimed = queue.claim(store, ("backup",))
    assert claimed is not None and claimed.id == job.id
    assert queue.finish(store, job.id, status=status, error=error)


def test_cron_latest_and_following() -> None:
    at = datetime(2026, 12, 6, 9, 40, 30, tzinfo=UTC)   # a Sunday
    daily = cron.parse("0 3 * * *")
    assert daily.latest(at) == datetime(2026, 12, 6, 3, 0, tzinfo=UTC)
    assert daily.following(at) == datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
    assert daily.latest(datetime(2026, 12, 6, 3, 0, 59, tzinfo=UTC)) == datetime(2026, 12, 6, 3, 0, tzinfo=UTC)
    quarter = cron.parse("*/15 * * * *")
    assert (quarter.latest(at), quarter.following(at)) == (at.replace(minute=30, second=0),
                                                           at.replace(minute=45, second=0))
    weekdays = cron.parse("30 23 * * mon-fri")
    assert weekdays.latest(at) == datetime(2026, 12, 4, 23, 30, tzinfo=UTC)    # Friday
    assert weekdays.following(at) == datetime(2026, 12, 7, 23, 30, tzinfo=UTC)  # Monday
    both = cron.parse("0 0 13 * 5")   # crontab(5): the 13th OR a Friday
    assert both.following(at) == datetime(2026, 12, 11, 0, 0, tzinfo=UTC)
    assert cron.parse("0 0 31 2 *").latest(at) is None and cron.parse("0 0 31 2 *").following(at) is None


def test_a_due_slot_is_queued_once_with_the_blueprint_policy(store_url: str, tmp_path: Path) -> None:
    bp = _bp(tmp_path, '{schedule: "0 3 * * *", keep: 2, to: "s3://bk/shop"}')
    clock = Clock(DAY1 + timedelta(hours=2, minutes=58))
    with _open(store_url) as store:
        sched = _scheduler(store, clock, bp)
        assert sched.tick() == [], "yesterday's 03:00 was before this schedule was ever run: not caught up"
        clock.at = DAY1 + timedelta(hours=3, seconds=5)
        [job] = sched.tick()
        assert (job.kind, job.env, job.requested_by) == ("backup", "shop", "schedule")
        assert job.params == {"accessory": "db", "to": "s3://bk/shop", "keep": 2, "schedule": "0 3 * * *",
                              "due": "2026-12-01T03:00Z"}
        for later in (timedelta(hours=3, seconds=40), timedelta(hours=3, minutes=5), timedelta(hours=23)):
            clock.at = DAY1 + later
            assert sched.tick() == []
        assert [j.id for j in queue.jobs(store, kind="backup")] == [job.id]
        _done(store, job, "failed")
        clock.at = DAY1 + timedelta(days=1, hours=3, seconds=1)
        [nxt] = sched.tick()
        assert nxt.params["due"] == "2026-12-02T03:00Z", "a failed run does not stop the next slot"


def test_the_database_refuses_a_second_job_for_one_slot(store_url: str, tmp_path: Path) -> None:
    with _open(store_url) as store:
        sched = _scheduler(store, Clock(DAY1 + timedelta(hours=3)), _bp(tmp_path))
        [job] = sched.tick()
        other = queue.enqueue(store, kind="sleep", env="shop", params={}, by="t")
        with pytest.raises(OperationFailed, match="(?i)unique"), store.transaction() as execute:
            execute("INSERT INTO backup_slots (env, accessory, due_at, job_id, schedule, queued_at, queued_by) "
                    "VALUES ('shop', 'db', '2026-12-01T03:00Z', :job, 's', 'now', 'me')", {"job": other.id})
        [row] = store.query("SELECT job_id FROM backup_slots")
        assert row["job_id"] == job.id


def test_two_schedulers_racing_on_one_store_queue_each_slot_once(store_url: str, tmp_path: Path) -> None:
    bp = _bp(tmp_path, '{schedule: "* * * * *", to: /srv/dumps}')
    start = DAY1 + timedelta(hours=3)
    minutes = 12
    with _open(store_url) as a, _open(store_url) as b:
        clock = Clock(start)
        schedulers = [_scheduler(a, clock, bp), _scheduler(b, clock, bp)]
        won: list[list[queue.Job]] = [[], []]
        for minute in range(minutes):
            clock.at = start + timedelta(minutes=minute, seconds=1)
            gate = threading.Barrier(2)

            def tick(i: int, gate: threading.Barrier) -> None:
                gate.wait()   # both read the store at once
                won[i].extend(schedulers[i].tick())

            threads = [threading.Thread(target=tick, args=(i, gate)) for i in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            for job in queue.jobs(a, kind="backup", status="queued"):
                queue.request_cancel(a, job.id)   # let the next slot in (one queued per pair)
        dues = [j.params["due"] for j in won[0] + won[1]]
        assert len(dues) == minutes and len(set(dues)) == minutes, dues
        assert len(queue.jobs(a, kind="backup", limit=1000)) == minutes


def test_after_a_pause_only_the_newest_missed_slot_runs_once(store_url: str, tmp_path: Path) -> None:
    bp = _bp(tmp_path)
    with _open(store_url) as store:
        first = _scheduler(store, Clock(DAY1 + timedelta(hours=3, seconds=2)), bp)
        [job] = first.tick()
        _done(store, job)
        # the server is down from day 1 to day 4 10:00: day 2, 3 and 4's 03:00 were missed
        later = Clock(DAY1 + timedelta(days=3, hours=10))
        restarted = _scheduler(store, later, bp)
        [late] = restarted.tick()
        assert late.params["due"] == "2026-12-04T03:00Z"
        later.at += timedelta(minutes=1)
        assert restarted.tick() == []
        _done(store, late)
        later.at = DAY1 + timedelta(days=4, hours=3)
        assert [j.params["due"] for j in restarted.tick()] == ["2026-12-05T03:00Z"]
        dues = sorted(r["due_at"] for r in store.query("SELECT due_at FROM backup_slots"))
        assert dues == ["2026-12-01T03:00Z", "2026-12-04T03:00Z", "2026-12-05T03:00Z"]


def test_a_backup_still_queued_holds_back_the_next_slot(store_url: str, tmp_path: Path) -> None:
    bp = _bp(tmp_path, '{schedule: "*/5 * * * *", to: /srv/dumps}')
    clock = Clock(DAY1 + timedelta(hours=3))
    with _open(store_url) as store:
        sched = _scheduler(store, clock, bp)
        [job] = sched.tick()
        clock.at += timedelta(minutes=12)
        assert sched.tick() == [], "the 03:00 backup has not started: no pile-up behind it"
        assert queue.claim(store, ("backup",)).id == job.id
        [nxt] = sched.tick()
        assert nxt.params["due"] == "2026-12-01T03:10Z", "the newest slot, not the ones in between"


def test_the_saved_blueprints_are_scheduled_and_one_that_cannot_load_is_left_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CSDEPLOY_HOME", str(tmp_path / "home"))
    remember_blueprint(EnvState("shop"), str(blueprint_with(tmp_path, '{schedule: "@hourly", to: /srv/dumps}')), ())
    # a schedule kept on the host is its timer's, never serve's (tests/test_hostdumps.py)
    (on_host := tmp_path / "on-host").mkdir()
    remember_blueprint(EnvState("onhost"), str(blueprint_with(on_host, '{schedule: "@hourly", keep: 3}')), ())
    gone = tmp_path / "gone.yml"
    gone.write_text((REPO / "blueprints" / "demo.yml").read_text())
    remember_blueprint(EnvState("old"), str(gone), ())
    gone.unlink()   # its file moved away: the others are still scheduled
    remember_blueprint(EnvState("plain"), str(REPO / "blueprints" / "demo.yml"), ())   # no schedule
    found = [schedule.schedules_of(env, bp) for env, bp in schedule.saved_environments()]
    assert found == [[], [], [schedule.Scheduled("shop", "db", "@hourly", "/srv/dumps", None)]]


def test_the_blueprint_says_the_schedule_is_run_by_serve_and_status_shows_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from cloudstack_deploy.cli import main

    path = blueprint_with(tmp_path, '{schedule: "0 3 * * *", keep: 7, to: /srv/dumps}')
    res = CliRunner().invoke(main, ["validate", str(path)])
    assert res.exit_code == 0, res.output
    assert ("note: accessories.db.backups.schedule '0 3 * * *' (UTC) is run by `csdeploy serve`" in res.output
            and "backups go to /srv/dumps, keeping the newest 7" in res.output), res.output
    async def up_to_date(bp: Any, env: str, **_: Any) -> Any:   # the cloud's side is not this test's
        return SimpleNamespace(empty=True, env=env, to_dict=lambda: {"env": env, "actions": []})

    async def no_dns(bp: Any, env: str) -> list[Any]:
        return []

    monkeypatch.setattr(service, "plan", up_to_date)
    monkeypatch.setattr(service, "dns_records", no_dns)
    res = CliRunner().invoke(main, ["plan", str(path), "--env", "shop"])
    assert res.exit_code == 0 and "note: accessories.db.backups.schedule '0 3 * * *' (UTC)" in res.output, res.output
    assert "`csdeploy status --env shop` shows the last run" in res.output
    res = CliRunner().invoke(main, ["plan", str(path), "--env", "shop", "--json"])
    assert "run by `csdeploy serve`" in json.loads(res.output)["notes"][0]
    monkeypatch.setenv("CSDEPLOY_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CSDEPLOY_STATE_URL", f"sqlite:///{tmp_path / 'h.db'}")
    remember_blueprint(EnvState("shop"), str(path), ())
    import asyncio

    [state] = asyncio.run(service.scheduled_backups("shop"))
    assert (state.accessory, state.last_status, state.next_due is not None) == ("db", None, True)
    with _open(f"sqlite:///{tmp_path / 'h.db'}") as store:
        [item] = schedule.schedules_of("shop", load_blueprint(str(path)))
        due = cron.parse(item.schedule).latest(datetime.now(UTC))
        job = schedule.queue_slot(store, item, due, since=due)
        assert job is not None
        _done(store, job, "failed", "db-vm: the dump of db failed (exit 1)")

    async def no_hosts(env: str, **_: Any) -> list[Any]:   # what runs on the hosts is not this test's
        return []

    monkeypatch.setattr(service, "status", no_hosts)
    res = CliRunner().invoke(main, ["status", "--env", "shop"])
    assert res.exit_code == 0, res.output
    text = res.output
    nxt = cron.parse("0 3 * * *").following(datetime.now(UTC)).strftime("%Y-%m-%dT%H:%MZ")
    assert f"scheduled backup of db (0 3 * * * UTC, by csdeploy serve): last run failed (due {job.params['due']}" \
        in text and f"the dump of db failed (exit 1); next due {nxt}" in text, text


# ---- a worker runs the job: a real PostgreSQL dump at the destination --------------------------------

@pytest.fixture
def pg_demo(postgres: PgServer) -> PgServer:
    """The store tests' throwaway PostgreSQL server (one per session), with the demo
    blueprint's POSTGRES_USER as tests/test_dumps.py has it."""
    import psycopg

    with psycopg.connect(postgres.url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'demo'").fetchall():
            conn.execute(f"CREATE ROLE demo LOGIN SUPERUSER PASSWORD '{postgres.password}'")
    return postgres


@pytest.fixture
def shop(pg_demo: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SimpleNamespace]:
    """Environment ``shop`` as this server knows it (its saved blueprint, scheduling a backup at
    03:00 keeping 2, into a directory), its accessory's host stood in for by `HostHere`."""
    monkeypatch.setenv("CSDEPLOY_HOME", str(tmp_path / "home"))
    dest = tmp_path / "dumps"
    path = blueprint_with(tmp_path, f'{{schedule: "0 3 * * *", keep: 2, to: "{dest}"}}')
    remember_blueprint(EnvState("shop"), str(path), ())
    r, here, _ = environment(pg_demo, "shop")
    sql(pg_demo, here, "CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL)")
    sql(pg_demo, here, "INSERT INTO notes (body) VALUES ('kept safe')")

    async def context(env: str, blueprint: str | None = None, overrides: tuple[str, ...] = ()) -> Any:
        from cloudstack_deploy.envctx import recall_blueprint

        return SimpleNamespace(env=env, bp=recall_blueprint(EnvState(env), blueprint, overrides))

    monkeypatch.setattr(service, "context", context)           # the blueprint: the saved one, really loaded
    monkeypatch.setattr(service, "_rollout", lambda ctx, *a, **k: r)  # the hosts: HostHere
    yield SimpleNamespace(dest=dest, here=here, database=here.database)


async def test_a_worker_runs_the_scheduled_backup_as_csdeploy_backup_does(served: Served, shop: Any) -> None:
    import asyncio

    from click.testing import CliRunner

    from cloudstack_deploy.cli import main
    from cloudstack_deploy.store import records

    clock = Clock(DAY1 + timedelta(hours=3, seconds=3))
    sched = schedule.Scheduler(served.store, clock=clock)   # the environments: the saved blueprints

    async def run_slot() -> dict[str, Any]:
        [job] = await asyncio.to_thread(sched.tick)
        events = await _sse(served, job.id)   # the job's stream, to its end (the served worker runs it)
        return events[-1][1]

    ended = await run_slot()
    assert ended["status"] == "succeeded", ended
    assert ended["requested_by"] == "schedule" and ended["result"]["accessory"] == "db"
    key = ended["result"]["key"]
    dump = shop.dest / key
    assert key.startswith("shop/db/") and dump.read_bytes().startswith(b"PGDMP")
    assert json.loads((shop.dest / (key + ".json")).read_text())["sha256"] == ended["result"]["sha256"]
    def backups_listed() -> Any:   # `csdeploy backups` (its own event loop: from a thread)
        return CliRunner().invoke(main, ["backups", "--env", "shop", "--to", str(shop.dest), "--json"])

    listed = await asyncio.to_thread(backups_listed)
    assert listed.exit_code == 0, listed.output
    assert [(m["id"], m["by"]) for m in json.loads(listed.output)] == [(ended["result"]["id"], "schedule")]
    resp = await served.client.get("/api/jobs?kind=backup", headers=served.auth("vera"))
    assert [j["id"] for j in (await resp.json())["jobs"]] == [ended["id"]]

    shop.here.database = "no_such_database"   # the next run fails on the host
    clock.at += timedelta(days=1)
    failed = await run_slot()
    assert failed["status"] == "failed" and "the dump of db failed" in failed["error"], failed

    shop.here.database = shop.database
    for day in (2, 3):   # the next slots still run; keep 2 prunes the oldest
        clock.at = DAY1 + timedelta(days=day, hours=3, seconds=3)
        assert (await run_slot())["status"] == "succeeded"
    kept = json.loads((await asyncio.to_thread(backups_listed)).output)
    assert len(kept) == 2 and ended["result"]["id"] not in [m["id"] for m in kept]
    rows = records.backup_records(served.store, env="shop")
    assert [(r["status"], r["done_by"]) for r in rows][::-1] == [("done", "schedule"), ("failed", "schedule"),
                                                                  ("done", "schedule"), ("done", "schedule")]
