"""Scheduled backups kept on the accessory's host (`accessories.X.backups.schedule` with no
`to:`, or `to: host`): the job script `rollout/commands/hostdump.py` builds, run by a real
/bin/sh with the real `flock`, `sha256sum` and `date`, dumping a real PostgreSQL with the real
`pg_dump` (the process's throwaway server, tests/store/pgserver.py); only `docker exec` is
stood in for (it runs the tool here). Then what csdeploy reads back from the host: the listing
(`backups`' WHERE column says host:PATH), the copy to this machine (`backup --fetch`), checked
against the manifest the job wrote, and a restore of it with the rows compared.

The timer machinery is the role jobs' (tests/rollout/test_jobs.py: cron lines, the gate).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import stat
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from cloudstack_deploy import backup_dest as bd
from cloudstack_deploy import dumps, host_backups, hostdumps
from cloudstack_deploy.blueprint import load_blueprint
from cloudstack_deploy.errors import OperationFailed
from cloudstack_deploy.render_data import backups_text
from cloudstack_deploy.rollout.commands import hostdump as hd
from cloudstack_deploy.rollout.hosts import Result
from tests.store.pgserver import PgServer
from tests.support.fakedocker import SHEBANG
from tests.support.streams import pipe_local
from tests.test_dumps import DEMO, HostHere, environment, notes, sql
from tests.test_dumps import _maintenance_log as _maintenance_log  # noqa: F401  (autouse: maintenance recorded)
from tests.test_dumps import postgres as postgres  # noqa: F401  (the fixture)

REPO = Path(__file__).resolve().parents[1]
ON_HOST = "{schedule: '* * * * *', keep: 2}"

# `docker exec CONTAINER TOOL ARGS` run here: pg_dump on the test's database (its -d replaced),
# or, with FAKE_FAIL, some bytes of a dump and then a failure (a dump cut short)
DOCKER = SHEBANG + r'''
import os, sys
args = sys.argv[1:]
assert args[0] == "exec", args
rest = args[2:] if args[1] == "-i" else args[1:]
tool = [os.environ["FAKE_DB"] if prev == "-d" else a for prev, a in zip(["", *rest[1:-1]], rest[1:])]
if os.environ.get("FAKE_FAIL"):
    sys.stdout.write("PGDMP-half-a-dump")
    sys.stdout.flush()
    sys.stderr.write("pg_dump: error: connection to server lost\n")
    sys.exit(1)
if os.environ.get("FAKE_NOT_A_DUMP"):
    print("id,body")
    sys.exit(0)
os.execvp(tool[0], tool)
'''


def _blueprint(tmp_path: Path, backups: str = ON_HOST) -> Any:
    text = (REPO / "blueprints" / "demo.yml").read_text()
    marker = "    image: registry.lab:5000/postgres:15\n"
    path = tmp_path / "shop.yml"
    path.write_text(text.replace(marker, f"{marker}    backups: {backups}\n", 1))
    return load_blueprint(str(path))


class Host:
    """The accessory's host: its dump directory is under the test's folder, its clock is ours."""

    def __init__(self, tmp_path: Path, server: PgServer, database: str) -> None:
        self.dir = tmp_path / "disk" / "csdeploy-backups" / "db"
        self.bin = tmp_path / "bin"
        self.bin.mkdir(exist_ok=True)
        (self.bin / "docker").write_text(DOCKER)
        # the clock: real `date`, at the second in $CLOCK (a file), so each run has its own stamp
        (self.bin / "date").write_text(f'#!/bin/sh\nexec /bin/date -d "@$(cat {tmp_path / "clock"})" "$@"\n')
        for f in self.bin.iterdir():
            f.chmod(0o755)
        self.clock = tmp_path / "clock"
        self.clock.write_text("1796000000\n")  # 2026-11-29T...
        self.env = {**os.environ, "PATH": f"{self.bin}:{os.environ['PATH']}", "FAKE_DB": database,
                    "PGHOST": server.host, "PGPORT": str(server.port), "PGPASSWORD": server.password}

    def tick(self, seconds: int = 61) -> None:
        self.clock.write_text(str(int(self.clock.read_text()) + seconds) + "\n")

    def run(self, script: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["sh", "-c", script], env={**self.env, **env}, capture_output=True, text=True,
                              timeout=120)

    def kept(self) -> list[str]:
        return sorted(p.name for p in self.dir.iterdir()) if self.dir.exists() else []


def _job(bp: Any, host: Host, **changes: Any) -> str:
    d = replace(hostdumps.host_dump(bp, "shop", "db", "shop-db-1"), directory=str(host.dir),
                where=f"host:{host.dir}", **changes)
    return hd.job_script(d).text()


@pytest.fixture
def here(postgres: PgServer, tmp_path: Path) -> tuple[Any, HostHere, Host]:  # noqa: F811
    r, db, _ = environment(postgres, "shop")
    sql(postgres, db, "CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL)")
    sql(postgres, db, "INSERT INTO notes (body) VALUES ('first'), ('second')")
    return r, db, Host(tmp_path, postgres, db.database)


def test_a_due_run_keeps_a_checked_dump_and_its_manifest_in_a_root_only_directory(
        here: tuple[Any, HostHere, Host], tmp_path: Path) -> None:
    _, _, host = here
    res = host.run(_job(_blueprint(tmp_path), host))
    assert res.returncode == 0, res.stderr
    [lock, dump, manifest, last] = host.kept()
    assert (lock, last) == (".lock", hd.LAST_RUN)
    assert dump.endswith(".pgdump") and manifest == dump + ".json"
    assert stat.S_IMODE(host.dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(host.dir.parent.stat().st_mode) == 0o700
    for name in (dump, manifest):
        assert stat.S_IMODE((host.dir / name).stat().st_mode) == 0o600
    data = (host.dir / dump).read_bytes()
    m = dumps.Manifest.from_dict(json.loads((host.dir / manifest).read_text()))
    import hashlib

    assert data.startswith(b"PGDMP")
    assert (m.size, m.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert (m.env, m.accessory, m.kind, m.image, m.by, m.host) == (
        "shop", "db", "postgres", DEMO.accessories["db"].image, "schedule", "shop-db-1")
    assert m.key == f"shop/db/{dump}" and m.id == f"shop/db/{dump.removesuffix('.pgdump')}"
    assert m.destination == f"host:{host.dir}"
    assert json.loads((host.dir / hd.LAST_RUN).read_text())["result"] == "ok"


def test_keep_leaves_the_newest_and_a_minute_not_due_does_nothing(here: tuple[Any, HostHere, Host],
                                                                  tmp_path: Path) -> None:
    _, _, host = here
    script = _job(_blueprint(tmp_path), host)
    stamps = []
    for _ in range(3):
        assert host.run(script).returncode == 0
        stamps.append(int(host.clock.read_text()))
        host.tick()
    dumps_kept = [n for n in host.kept() if n.endswith(".pgdump")]
    assert len(dumps_kept) == 2 and all(n + ".json" in host.kept() for n in dumps_kept)
    first = subprocess.run(["date", "-u", "-d", f"@{stamps[0]}", "+%Y%m%dT%H%M%S"], capture_output=True,
                           text=True).stdout.strip()
    assert not any(n.startswith(first) for n in host.kept()), "the oldest was removed"
    before = host.kept()
    never = _job(_blueprint(tmp_path, "{schedule: '0 0 29 2 1', keep: 2}"), host)  # a Monday 29 February
    assert host.run(never).returncode == 0 and host.kept() == before


@pytest.mark.parametrize("fault, code, says", [
    ({"FAKE_FAIL": "1"}, 1, "the dump failed (exit 1): pg_dump: error: connection to server lost"),
    ({"FAKE_NOT_A_DUMP": "1"}, 65, "the dump is not a postgres dump"),
])
def test_a_failed_run_leaves_no_partial_file_and_says_why(here: tuple[Any, HostHere, Host], tmp_path: Path,
                                                          fault: dict[str, str], code: int, says: str) -> None:
    _, _, host = here
    script = _job(_blueprint(tmp_path), host)
    assert host.run(script).returncode == 0
    good = host.kept()
    host.tick()
    res = host.run(script, **fault)
    assert res.returncode == code
    assert host.kept() == good, "nothing of the failed run is left; the good one is kept"
    last = json.loads((host.dir / hd.LAST_RUN).read_text())
    assert last["result"] == "failed" and last["detail"] == says


def test_a_killed_runs_leftover_is_removed_and_a_running_one_is_not_disturbed(
        here: tuple[Any, HostHere, Host], tmp_path: Path) -> None:
    _, _, host = here
    script = _job(_blueprint(tmp_path), host)
    host.dir.mkdir(parents=True)
    (host.dir / ".partial-20261129T000000000000Z").write_bytes(b"PGDMP-killed")
    with open(host.dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a run still going: this minute is skipped
        assert host.run(script).returncode == 0
        assert host.kept() == [".lock", ".partial-20261129T000000000000Z"]
    assert host.run(script).returncode == 0
    assert not [n for n in host.kept() if n.startswith(".partial")]
    assert len([n for n in host.kept() if n.endswith(".pgdump")]) == 1


class HostSide(HostHere):
    """`run` and `pipe` of the accessory's host: its reads (`sh -c`, `cat`) run here; a
    `docker exec` (the restore) on the test's database, as in tests/test_dumps.py."""

    def __init__(self, db: HostHere) -> None:
        super().__init__(db.server, db.database)
        self.events = db.events
        self.argv: list[list[str]] = []

    async def run(self, argv: list[str], *, check: bool = True, what: str = "", timeout: float = 60) -> Result:
        self.argv.append(list(argv))
        proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
        return Result(proc.returncode or 0, out.decode(), err.decode())

    async def pipe(self, argv: list[str], *, source: AsyncIterator[bytes] | None = None,
                   sink: Callable[[bytes], Awaitable[None]] | None = None, what: str = "") -> Result:
        self.argv.append(list(argv))
        if argv[0] == "docker":
            return await super().pipe(argv, source=source, sink=sink, what=what)
        return await pipe_local(argv, None, source=source, sink=sink)


def _rollout(r: Any, side: HostSide, bp: Any) -> Any:
    class Pool:
        async def connect(self, host: Any) -> HostSide:
            return side

    @contextlib.asynccontextmanager
    async def pool(concurrency: int = 20) -> Iterator[Pool]:  # type: ignore[misc]
        yield Pool()

    side.host = r.inv.accessory_host("db")
    inv = SimpleNamespace(**vars(r.inv), ssh=SimpleNamespace(user="root"))
    return SimpleNamespace(**{**vars(r), "bp": bp, "inv": inv, "pool": pool})


async def test_backups_lists_the_hosts_dumps_and_a_fetched_one_restores_the_rows(
        here: tuple[Any, HostHere, Host], tmp_path: Path, postgres: PgServer,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    r, db, host = here
    bp = _blueprint(tmp_path)
    monkeypatch.setattr(host_backups, "directory", lambda _bp, name: str(host.dir))
    assert host.run(_job(bp, host)).returncode == 0
    sql(postgres, db, "INSERT INTO notes (body) VALUES ('after the scheduled dump')")
    side = HostSide(db)
    rollout = _rollout(r, side, bp)

    found, problems = await host_backups.listing(rollout)
    assert problems == [] and len(found) == 1
    [m] = found
    assert m.destination == f"host:{host.dir}" and m.by == "schedule"
    table = backups_text("shop", found, ["/somewhere", f"host:{host.dir}"])
    assert f"host:{host.dir}" in table.splitlines()[1] and "schedule" in table

    store = bd.open_store(str(tmp_path / "fetched"))
    [copied] = await host_backups.fetch(rollout, "db", store)
    assert copied.id == m.id and copied.sha256 == m.sha256 and copied.destination == store.url
    assert await host_backups.fetch(rollout, "db", store) == [], "what is already there is not copied again"

    new, new_db, _ = environment(postgres, "shop-new")
    where, manifest, key = await dumps.choose(store, "shop", "db", m.id)
    assert manifest is not None and manifest.sha256 == m.sha256
    await dumps.restore(new, "db", where, manifest, key, label=m.id)
    assert notes(postgres, new_db) == ["first", "second"]


async def test_a_dump_changed_on_the_host_is_not_copied(here: tuple[Any, HostHere, Host], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    r, db, host = here
    bp = _blueprint(tmp_path)
    monkeypatch.setattr(host_backups, "directory", lambda _bp, name: str(host.dir))
    assert host.run(_job(bp, host)).returncode == 0
    [dump] = [p for p in host.dir.iterdir() if p.suffix == ".pgdump"]
    dump.write_bytes(dump.read_bytes()[:-10] + b"0123456789")  # same size, other bytes
    store = bd.open_store(str(tmp_path / "fetched"))
    with pytest.raises(OperationFailed, match="does not match its manifest"):
        await host_backups.fetch(_rollout(r, HostSide(db), bp), "db", store)
    assert await dumps.listing(store, "shop") == [] and not list((tmp_path / "fetched").rglob("*.pgdump"))


# ---- where each schedule runs, and the timers a deploy sets -----------------------------------------

def _host(accessories: tuple[str, ...] = ("db",)) -> Any:
    return SimpleNamespace(name="shop-db-1", accessories=accessories)


def test_a_schedule_with_no_destination_or_to_host_runs_on_the_host_and_one_sent_off_by_serve(
        tmp_path: Path) -> None:
    from cloudstack_deploy.server import schedule

    for backups in (ON_HOST, "{schedule: '0 3 * * *', to: host}"):
        bp = _blueprint(tmp_path, backups)
        assert hostdumps.runs_on_host(bp.accessories["db"].backups) and schedule.schedules_of("shop", bp) == []
        [note] = schedule.notes(bp)
        assert "is run on db's host by a systemd timer" in note and "no credentials" in note
        assert "kept in /data/db/csdeploy-backups/db (root only)" in note
    off = _blueprint(tmp_path, "{schedule: '0 3 * * *', to: 's3://bk/shop'}")
    assert not hostdumps.runs_on_host(off.accessories["db"].backups)
    [note] = schedule.notes(off)
    assert "is run by `csdeploy serve`" in note and "off the host, which has no credentials" in note
    assert hostdumps.install_script(off, "shop", _host(), "root", "") is None, "no timer for serve's schedule"


def test_the_dumps_are_kept_on_the_accessorys_data_disk_or_else_in_a_directory_of_roots() -> None:
    """The demo's PostgreSQL has its own disk (/data/db); its Redis shares the first web VM, which has none."""
    bp = load_blueprint(str(REPO / "blueprints" / "demo.yml"))
    assert bp.accessories["db"].disk.mount == "/data/db"
    assert hostdumps.directory(bp, "db") == "/data/db/csdeploy-backups/db"
    assert hostdumps.directory(bp, "redis") == "/var/lib/csdeploy/backups/redis"


def test_a_deploy_sets_the_timer_once_and_removes_it_when_the_schedule_goes(tmp_path: Path) -> None:
    from cloudstack_deploy.rollout.commands import facts

    bp = _blueprint(tmp_path)
    first = hostdumps.install_script(bp, "shop", _host(), "root", "")
    assert first is not None
    text = first.text()
    assert "csdeploy-backup-demo-db.timer" in text and "OnCalendar=*-*-* *:*:00" in text
    assert 'ExecStart=/bin/sh -c "cd ~root && exec /bin/sh .csdeploy/demo/jobs/backup-db.sh"' in text
    assert "User=" not in text, "the service runs as root: the directory is root's"
    marker = text.split(".csdeploy/demo/jobs/backup-schedules.sum <<'", 1)[1].split("\n", 2)[1]
    f = facts.parse(f"backups|{marker}\n", accessories=())
    assert f.backups == marker
    assert hostdumps.install_script(bp, "shop", _host(), "root", f.backups) is None, "unchanged: nothing run"
    changed = _blueprint(tmp_path, "{schedule: '0 3 * * *', keep: 2}")
    assert hostdumps.install_script(changed, "shop", _host(), "root", f.backups) is not None

    # the schedule is gone from the blueprint: the timer is stopped and its files removed (run here)
    plain = load_blueprint(str(REPO / "blueprints" / "demo.yml"))
    assert hostdumps.install_script(plain, "shop", _host(), "root", "") is None, "never set: nothing to do"
    removal = hostdumps.install_script(plain, "shop", _host(), "root", marker)
    assert removal is not None
    home = tmp_path / "home"
    jobs_dir = home / ".csdeploy" / "demo" / "jobs"
    jobs_dir.mkdir(parents=True)
    for name in ("csdeploy-backup-demo-db.timer", "csdeploy-backup-demo-db.service", "backup-db.sh",
                 "backup-schedules.sum", "csdeploy-job-demo-worker-report.timer"):
        (jobs_dir / name).write_text("x\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "systemctl.log"}\n')
    (bin_dir / "systemctl").chmod(0o755)
    res = subprocess.run(["sh", "-c", removal.text()], cwd=home, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "HOME": str(home), "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in jobs_dir.iterdir()) == ["csdeploy-job-demo-worker-report.timer"], \
        "a role's job is not a backup's: left alone"
    assert (tmp_path / "systemctl.log").read_text().split() == [
        "disable", "--now", "csdeploy-backup-demo-db.timer", "csdeploy-backup-demo-db.service"]


def test_the_commands_list_fetch_and_restore_the_hosts_dumps(
        here: tuple[Any, HostHere, Host], tmp_path: Path, postgres: PgServer,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`backups --env` lists the host's dumps (WHERE: host:PATH) beside the local ones;
    `restore ID` of one kept only on the host copies it to a private directory of this machine,
    checks it against its manifest, restores it and removes the copy (`--dry-run` copies
    nothing); `backup --fetch` copies them here, once."""
    from click.testing import CliRunner

    from cloudstack_deploy import service
    from cloudstack_deploy.cli import main
    from cloudstack_deploy.envctx import remember_blueprint
    from cloudstack_deploy.state import EnvState
    from tests.test_dumps import _stored

    r, db, host = here
    monkeypatch.setenv("CSDEPLOY_HOME", str(tmp_path / "home"))
    bp = _blueprint(tmp_path)
    remember_blueprint(EnvState("shop"), str(tmp_path / "shop.yml"), ())
    monkeypatch.setattr(host_backups, "directory", lambda _bp, name: str(host.dir))
    monkeypatch.setattr("cloudstack_deploy.hostdumps.directory", lambda _bp, name: str(host.dir))
    fake = _rollout(r, HostSide(db), bp)

    async def context(env: str, blueprint: str | None = None, *args: Any, **kwargs: Any) -> Any:
        return SimpleNamespace(bp=bp, env=env)

    monkeypatch.setattr(service, "context", context)
    monkeypatch.setattr(service, "_rollout", lambda *a, **k: fake)
    assert host.run(_job(bp, host)).returncode == 0
    local = _stored(tmp_path / "home" / "backups", "shop", "db", "20261101T030000Z", "cron")

    runner = CliRunner()
    res = runner.invoke(main, ["backups", "--env", "shop"])
    assert res.exit_code == 0, res.output
    rows = res.output.splitlines()
    assert "WHERE" in rows[0] and "schedule" in rows[1] and rows[1].rstrip().endswith(f"host:{host.dir}"), rows
    assert local in rows[2]
    [on_host] = [m for m in json.loads(runner.invoke(main, ["backups", "--env", "shop", "--json"]).output)
                 if m["by"] == "schedule"]

    res = runner.invoke(main, ["restore", "--env", "shop", "--accessory", "db", on_host["id"], "--dry-run"])
    assert res.exit_code == 0, res.output
    assert f"check {on_host['id']}: a PostgreSQL custom-format dump (pg_dump -Fc), size and sha256 as its manifest" \
        in res.output
    assert not list((tmp_path / "home").glob("restore-*")), "a dry run copies nothing"

    sql(postgres, db, "INSERT INTO notes (body) VALUES ('after the scheduled dump')")
    res = runner.invoke(main, ["restore", "--env", "shop", "--accessory", "db", on_host["id"], "--yes"])
    assert res.exit_code == 0, res.output
    assert f"restored {on_host['id']} into shop's db" in res.output
    assert notes(postgres, db) == ["first", "second"]
    assert not list((tmp_path / "home").glob("restore-*")), "the copy made for the restore is removed"
    assert not (tmp_path / "home" / "backups" / on_host["key"]).exists(), "a restore is not a fetch"

    res = runner.invoke(main, ["backup", "--env", "shop", "--accessory", "db", "--fetch"])
    assert res.exit_code == 0 and f"copied {on_host['id']}" in res.output, res.output
    copy = tmp_path / "home" / "backups" / on_host["key"]
    assert copy.read_bytes() == (host.dir / Path(on_host["key"]).name).read_bytes()
    res = runner.invoke(main, ["backup", "--env", "shop", "--accessory", "db", "--fetch"])
    assert res.exit_code == 0 and "nothing to copy" in res.output, res.output


async def test_status_shows_each_schedule_and_the_hosts_last_run(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Per host (`status --json`'s `backups`): who runs each schedule; for the host's timer, its
    last run as the job wrote it, read from the host; `status` says it in a line."""
    from cloudstack_deploy.render import status_text
    from cloudstack_deploy.rollout import ops

    where = tmp_path / "dumps"
    where.mkdir()
    monkeypatch.setattr(ops.hostdumps, "directory", lambda _bp, name: str(where))
    text = (REPO / "blueprints" / "demo.yml").read_text()
    text = text.replace("    image: registry.lab:5000/postgres:15\n",
                        "    image: registry.lab:5000/postgres:15\n    backups: {schedule: '0 3 * * *', keep: 7}\n", 1)
    text = text.replace("    image: registry.lab:5000/redis:7\n",
                        "    image: registry.lab:5000/redis:7\n    backups: {schedule: '@hourly', to: /srv/dumps}\n", 1)
    (tmp_path / "shop.yml").write_text(text)
    bp = load_blueprint(str(tmp_path / "shop.yml"))
    side = HostSide.__new__(HostSide)
    side.argv = []
    side.host = SimpleNamespace(name="shop-db-1", accessories=("db", "redis"))
    r = SimpleNamespace(bp=bp, inv=SimpleNamespace(ssh=SimpleNamespace(user="root")))

    first = await ops._backup_schedules(r, side)  # type: ignore[arg-type]
    assert first == [
        {"accessory": "db", "schedule": "0 3 * * *", "keep": 7, "to": f"host:{where}", "run_by": "host",
         "last_run": {}},
        {"accessory": "redis", "schedule": "@hourly", "keep": None, "to": "/srv/dumps", "run_by": "serve"}]
    (where / hd.LAST_RUN).write_text('{"result": "failed", "at": "2026-12-06T03:00:01Z", '
                                     '"detail": "the dump failed (exit 1): no space left on device"}\n')
    st = ops.HostStatus("shop-db-1", "db", "127.0.0.1", backups=await ops._backup_schedules(r, side))  # type: ignore[arg-type]
    assert st.backups[0]["last_run"]["result"] == "failed"
    assert (f"  scheduled backup of db (0 3 * * * UTC, by this host's timer, kept in host:{where}, newest 7): "
            "last run failed at 2026-12-06T03:00:01Z: the dump failed (exit 1): no space left on device") \
        in status_text([st]).splitlines()
    assert "redis" not in status_text([st]), "serve's schedules are said from the history store, after the hosts"
