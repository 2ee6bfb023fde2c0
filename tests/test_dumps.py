"""Logical backups with a real PostgreSQL: `dumps.take` streams a real `pg_dump -Fc` into the
destination and `dumps.restore` feeds it to a real `pg_restore`, the rows compared in another
database (as a restore into a second environment does).

Only SSH and `docker exec` are stood in for: `HostHere.pipe` runs the command `docker exec`
would run in the accessory's container on this machine, against a throwaway PostgreSQL
server (tests/store/pgserver.py), with the same streaming contract as `Connection.pipe`.
The maintenance calls are recorded, so a test sees whether the app was put behind it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from cloudstack_deploy import backup_dest as bd
from cloudstack_deploy import dumps
from cloudstack_deploy.blueprint import load_blueprint
from cloudstack_deploy.errors import InvalidInput, OperationFailed
from cloudstack_deploy.rollout.hosts import Result
from tests.store.pgserver import PgServer, bindir, shared_pg_server
from tests.support.streams import pipe_local

REPO = Path(__file__).resolve().parents[1]
DEMO = load_blueprint(str(REPO / "blueprints" / "demo.yml"))


@pytest.fixture(scope="module")
def postgres(request: pytest.FixtureRequest) -> PgServer:
    """The process's PostgreSQL (shared with tests/store), with the demo's POSTGRES_USER."""
    if bindir() is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed: scripts/lab-prereqs --test installs it")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    server = shared_pg_server(request.config)
    import psycopg

    with psycopg.connect(server.url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'demo'").fetchone():
            conn.execute(f"CREATE ROLE demo LOGIN SUPERUSER PASSWORD '{server.password}'")
    return server


class HostHere:
    """The accessory's host, here: runs what `docker exec CONTAINER ...` would run in it, on
    the database this 'environment' has (the demo blueprint's POSTGRES_DB is replaced)."""

    def __init__(self, server: PgServer, database: str) -> None:
        self.server, self.database = server, database
        self.host = SimpleNamespace(name="db-vm")
        self.ran: list[str] = []
        self.events: list[str] = []

    async def pipe(self, argv: list[str], *, source: AsyncIterator[bytes] | None = None,
                   sink: Callable[[bytes], Awaitable[None]] | None = None, what: str = "") -> Result:
        assert argv[:2] == ["docker", "exec"], argv
        rest = argv[3:] if argv[2] == "-i" else argv[2:]
        assert rest[0] == "demo-db", rest  # the accessory's container, by the contract's name
        tool = [self.database if prev == "-d" else a for prev, a in zip(["", *rest[1:-1]], rest[1:], strict=True)]
        self.ran.append(" ".join(tool[:2]))
        self.events.append(" ".join(tool[:2]))
        env = {**os.environ, "PGHOST": self.server.host, "PGPORT": str(self.server.port),
               "PGPASSWORD": self.server.password}
        return await pipe_local(tool, env, source=source, sink=sink)


def environment(server: PgServer, name: str, *, proxy: bool = True) -> tuple[Any, HostHere, list[bool]]:
    """A `Rollout` as dumps uses it: blueprint, env, inventory, pool; and the maintenance log."""
    import psycopg

    database = f"{name.replace('-', '_')}_{secrets.token_hex(3)}"
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {database} OWNER demo")
    here = HostHere(server, database)

    class Pool:
        async def connect(self, host: Any) -> HostHere:
            return here

    @contextlib.asynccontextmanager
    async def pool(concurrency: int = 20) -> AsyncIterator[Pool]:
        yield Pool()

    r = SimpleNamespace(bp=DEMO, env=name, inv=inventory(here.host, proxy), pool=pool, maintenance=[], events=[])
    here.events = r.events
    return r, here, r.maintenance


def inventory(db_host: Any, proxy: bool = True) -> Any:
    """The demo's hosts as dumps reads them: two web VMs (behind kamal-proxy or not), a worker,
    and the database's own VM (which also runs the redis accessory here)."""
    hosts = [SimpleNamespace(name=n, app_role=role, app_roles=(role,), proxy=proxy and role == "web")
             for n, role in (("web-1", "web"), ("web-2", "web"), ("worker-1", "worker"))] + [db_host]
    db_host.app_role, db_host.app_roles, db_host.proxy = None, (), False
    return SimpleNamespace(hosts=hosts, accessory_host=lambda n: db_host if n in ("db", "redis") else None,
                           proxy_hosts=[h for h in hosts if h.proxy])


@pytest.fixture(autouse=True)
def _maintenance_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """Maintenance and the app roles' stop/start, recorded (``r.maintenance``, and in order
    with what ran on the accessory's host in ``r.events``)."""
    async def maintenance(r: Any, on: bool, message: str = "") -> dict[str, Any]:
        r.maintenance.append(on)
        r.events.append(f"maintenance {'on' if on else 'off'}")
        return {}

    async def app(r: Any, action: str, *, roles: tuple[str, ...] = (), hosts: tuple[str, ...] = (),
                  break_lock: bool = False) -> Any:
        r.events.append(f"app {action} " + ",".join(roles or hosts))
        chosen = [h for h in r.inv.hosts if h.app_role and (h.app_role in roles or h.name in hosts)]
        return SimpleNamespace(hosts={h.name: {f"demo-{h.app_role}-v1": "stopped" if action == "stop" else "started"}
                                      for h in chosen if h.name != "web-2"})  # nothing ran on web-2

    monkeypatch.setattr(dumps.ops, "maintenance", maintenance)
    monkeypatch.setattr(dumps.lifecycle, "app", app)


def sql(server: PgServer, here: HostHere, statement: str) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(server.url_for(here.database), autocommit=True) as conn:
        cur = conn.execute(statement)
        return cur.fetchall() if cur.description else []


def notes(server: PgServer, here: HostHere) -> list[str]:
    return [r[0] for r in sql(server, here, "SELECT body FROM notes ORDER BY id")]


@pytest.fixture
def store(tmp_path: Path) -> bd.Store:
    return bd.open_store(str(tmp_path / "backups"))


async def test_backup_then_restore_into_another_environment_gives_the_same_rows(
        postgres: PgServer, store: bd.Store, tmp_path: Path) -> None:
    old, old_host, _ = environment(postgres, "shop-old")
    sql(postgres, old_host, "CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL)")
    sql(postgres, old_host, "INSERT INTO notes (body) VALUES ('first'), ('second'), ('third')")
    taken = await dumps.take(old, "db", store, by="tester")
    m = taken.manifest
    assert (m.env, m.accessory, m.kind, m.image, m.by) == ("shop-old", "db", "postgres", DEMO.accessories["db"].image,
                                                           "tester")
    dump = tmp_path / "backups" / m.key
    assert dump.read_bytes().startswith(b"PGDMP") and m.size == dump.stat().st_size
    assert stat.S_IMODE(dump.stat().st_mode) == 0o600
    assert json.loads((tmp_path / "backups" / (m.key + ".json")).read_text())["sha256"] == m.sha256
    sql(postgres, old_host, "INSERT INTO notes (body) VALUES ('after the backup')")

    new, new_host, maintenance = environment(postgres, "shop-new")
    sql(postgres, new_host, "CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL)")
    sql(postgres, new_host, "INSERT INTO notes (body) VALUES ('only in the new one')")
    where, manifest, key = await dumps.choose(store, "shop-old", "db", None)
    assert manifest is not None and manifest.id == m.id
    result = await dumps.restore(new, "db", where, manifest, key, label=manifest.id)
    assert notes(postgres, new_host) == ["first", "second", "third"]
    assert maintenance == [True, False], "the app is behind maintenance during the restore, then not"
    assert result.maintenance == "on during the restore"
    assert new_host.ran == ["pg_restore --list", "pg_restore --clean"]  # checked, then restored


@pytest.mark.parametrize(("content", "says"), [
    (b"id,body\n1,first\n" * 50, "is not a PostgreSQL custom-format dump"),
    (b"PGDMP" + os.urandom(4000), "is not a dump pg_restore can read"),  # the magic, then garbage
    (b"PG", "too short"),
])
async def test_a_file_that_is_not_a_dump_is_refused_before_anything_changes(
        postgres: PgServer, tmp_path: Path, content: bytes, says: str) -> None:
    r, here, maintenance = environment(postgres, "shop")
    sql(postgres, here, "CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL)")
    sql(postgres, here, "INSERT INTO notes (body) VALUES ('kept')")
    bogus = tmp_path / "export.csv"
    bogus.write_bytes(content)
    where, manifest, key = await dumps.choose(bd.open_store(str(tmp_path / "none")), "shop", "db", str(bogus))
    assert manifest is None
    with pytest.raises(InvalidInput) as caught:
        await dumps.restore(r, "db", where, manifest, key, label=str(bogus))
    assert says in str(caught.value) and str(bogus) in str(caught.value)
    assert "nothing was changed" in str(caught.value) and caught.value.exit_code == 2
    assert maintenance == [] and "pg_restore --clean" not in here.ran
    assert notes(postgres, here) == ["kept"]


async def test_a_damaged_backup_does_not_match_its_manifest(postgres: PgServer, store: bd.Store,
                                                            tmp_path: Path) -> None:
    r, here, maintenance = environment(postgres, "shop")
    sql(postgres, here, "CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL)")
    m = (await dumps.take(r, "db", store, by="t")).manifest
    path = tmp_path / "backups" / m.key
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(InvalidInput, match="does not match its manifest"):
        await dumps.restore(r, "db", store, m, m.key, label=m.id)
    assert maintenance == [] and "pg_restore --clean" not in here.ran


async def test_keep_prunes_the_oldest_and_the_listing_is_newest_first(postgres: PgServer, store: bd.Store) -> None:
    r, here, _ = environment(postgres, "shop")
    sql(postgres, here, "CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL)")
    start = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
    ids = []
    for day in range(3):
        res = await dumps.take(r, "db", store, by="t", keep=2, now=start + timedelta(days=day))
        ids.append(res.manifest.id)
    assert res.pruned == [ids[0]]
    assert [m.id for m in await dumps.listing(store, "shop")] == [ids[2], ids[1]]
    assert not any(k.startswith(ids[0]) for k in store.keys("shop/")), "the dump and its manifest are gone"


async def test_a_failed_dump_leaves_nothing_at_the_destination(postgres: PgServer, store: bd.Store) -> None:
    r, here, _ = environment(postgres, "shop")
    here.database = "no_such_database"
    with pytest.raises(OperationFailed, match="the dump of db failed") as caught:
        await dumps.take(r, "db", store, by="t")
    assert "db-vm" in str(caught.value)
    assert store.keys("shop/") == [] and await dumps.listing(store, "shop") == []


async def test_with_no_proxy_host_the_app_roles_are_stopped_around_the_restore(postgres: PgServer,
                                                                              store: bd.Store) -> None:
    """No kamal-proxy to answer for the app: its roles (web, worker; not the database's VM) are
    stopped after the dump is checked and started again after it is restored, on the hosts
    where something was stopped."""
    r, here, maintenance = environment(postgres, "shop", proxy=False)
    sql(postgres, here, "CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL)")
    m = (await dumps.take(r, "db", store, by="t")).manifest
    r.events.clear()
    result = await dumps.restore(r, "db", store, m, m.key, label=m.id)
    assert r.events == ["pg_restore --list", "app stop web,worker", "pg_restore --clean",
                        "app start web-1,worker-1"]
    assert maintenance == [] and result.maintenance == "app roles stopped during the restore: web, worker"
    assert any("has no proxy host" in n for n in result.notes)


async def test_the_app_roles_are_started_again_when_the_restore_fails(postgres: PgServer, store: bd.Store,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    r, here, _ = environment(postgres, "shop", proxy=False)
    sql(postgres, here, "CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL)")
    m = (await dumps.take(r, "db", store, by="t")).manifest
    r.events.clear()

    async def broken(*args: Any) -> None:
        r.events.append("load")
        raise OperationFailed("db-vm: pg_restore of it failed (exit 1)")

    monkeypatch.setattr(dumps, "_load", broken)
    with pytest.raises(OperationFailed, match="pg_restore of it failed"):
        await dumps.restore(r, "db", store, m, m.key, label=m.id)
    assert r.events == ["pg_restore --list", "app stop web,worker", "load", "app start web-1,worker-1"]


def test_the_restore_plan_says_what_keeps_the_app_off_the_data() -> None:
    db = SimpleNamespace(name="db-vm")
    behind = SimpleNamespace(bp=DEMO, env="shop", inv=inventory(db, proxy=True))
    assert dumps.guard_for(behind, True) == dumps.Guard("maintenance", hosts=("web-1", "web-2"))
    plan = dumps.restore_plan(behind, "db", "shop/db/1", None)
    assert [step.split(" ", 2)[:2] for step in plan] == [["check", "shop/db/1:"], ["maintenance", "on"],
                                                         ["restore", "into"], ["maintenance", "off"]]
    assert "size and sha256" not in plan[0], "a bare file has no manifest to match"

    alone = SimpleNamespace(bp=DEMO, env="shop", inv=inventory(db, proxy=False))
    guard = dumps.guard_for(alone, True)
    assert (guard.how, guard.roles, guard.hosts) == ("stop", ("web", "worker"), ("web-1", "web-2", "worker-1"))
    m = dumps.Manifest(env="shop", accessory="redis", kind="redis", image="redis:7", created_at="x", size=1,
                       sha256="0", key="shop/redis/1.rdb")
    plan = dumps.restore_plan(alone, "redis", m.id, m)
    assert plan[1] == "stop app roles web, worker on web-1, web-2, worker-1"
    assert plan[2].startswith("restore into demo-redis on db-vm: stop it, load the RDB")
    assert plan[3].startswith("start app roles web, worker") and "also when the restore fails" in plan[3]
    assert "redis-check-rdb" in plan[0] and "sha256" in plan[0]

    kept = dumps.guard_for(alone, False)
    assert kept.how == "none" and "--no-maintenance" in kept.reason
    assert len(dumps.restore_plan(alone, "db", "f", None, maintenance=False)) == 3  # check, restore, the note
    no_apps = SimpleNamespace(bp=DEMO, env="shop", inv=SimpleNamespace(hosts=[db], proxy_hosts=[],
                                                                     accessory_host=lambda n: db))
    assert dumps.guard_for(no_apps, True).how == "none"


def test_restore_dry_run_shows_the_roles_stopped_and_changes_nothing(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """`restore --dry-run` on an environment without a proxy host (its inventory says so) lists the
    steps in order; no host is contacted (nothing listens at the inventory's addresses) and --yes
    is not needed."""
    from click.testing import CliRunner

    from cloudstack_deploy.cli import main
    from cloudstack_deploy.envctx import remember_blueprint
    from cloudstack_deploy.inventory import Host, Inventory, Network, SSHAccess
    from cloudstack_deploy.state import EnvState
    from tests.support.sim import public_range

    monkeypatch.setenv("CSDEPLOY_HOME", str(tmp_path / "home"))
    state = EnvState("shop")
    key, _ = state.ensure_keypair()
    net = public_range().rsplit(".", 1)[0]  # loopback addresses of this test's own share: nothing listens
    pinned = dict(ssh_port=22, host_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq1RHk2Cw4d8bSXXJTqVHc5gu7XMPSl5MxTo")
    hosts = (Host(name="shop-web-1", role="web", index=1, vm_id="1", public_ip=f"{net}.1", private_ip="10.1.1.1",
                  **pinned),
             Host(name="shop-worker-1", role="worker", index=1, vm_id="2", public_ip=f"{net}.2",
                  private_ip="10.1.1.2", **pinned),
             Host(name="shop-db-1", role="db", index=1, vm_id="3", public_ip=f"{net}.3", private_ip="10.1.1.3",
                  accessories=("db", "redis"), **pinned))
    state.write_inventory(Inventory(env="shop", service="demo", network=Network(id="n", name="n"),
                                    ssh=SSHAccess(user="csdeploy", key=key, known_hosts=state.known_hosts_path),
                                    hosts=hosts))
    state.write_known_hosts({})
    remember_blueprint(state, str(REPO / "blueprints" / "demo.yml"), ())
    _stored(tmp_path / "home" / "backups", "shop", "db", "20261201T030000Z", "cron")
    res = CliRunner().invoke(main, ["restore", "--env", "shop", "--accessory", "db", "--dry-run"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0] == "restore into shop's db (dry run: nothing changed) would:"
    assert lines[1].startswith("  1. check shop/db/20261201T030000Z: a PostgreSQL custom-format dump")
    assert lines[2] == "  2. stop app roles web, worker on shop-web-1, shop-worker-1"
    assert lines[3].startswith("  3. restore into demo-db on shop-db-1: pg_restore --clean")
    assert lines[4].startswith("  4. start app roles web, worker on shop-web-1, shop-worker-1")
    res = CliRunner().invoke(main, ["restore", "--env", "shop", "--accessory", "db", "--dry-run", "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["steps"][1].startswith("stop app roles"), res.output


async def test_a_backup_of_another_kind_is_refused(postgres: PgServer, store: bd.Store) -> None:
    r, _, maintenance = environment(postgres, "shop")
    m = dumps.Manifest(env="shop", accessory="redis", kind="redis", image="redis:7", created_at="x", size=1,
                       sha256="0", key="shop/redis/x.rdb")
    with pytest.raises(InvalidInput, match="is a redis backup .* accessory db is postgres"):
        await dumps.restore(r, "db", store, m, m.key, label=m.id)
    assert maintenance == []


def test_an_unknown_accessory_and_a_kind_without_a_method_are_named() -> None:
    with pytest.raises(InvalidInput, match="no accessory named 'dbx'") as caught:
        dumps.method_for(DEMO, "dbx")
    assert "db" in (caught.value.hint or "")
    bp = SimpleNamespace(accessories={"cache": SimpleNamespace(image="registry.lab:5000/memcached:1.6")})
    with pytest.raises(InvalidInput, match=r"cache \(registry.lab:5000/memcached:1.6\) has no backup method: "
                                           "csdeploy backs up postgres, redis, valkey accessories"):
        dumps.method_for(bp, "cache")
    assert dumps.method_for(DEMO, "redis")[1].ext == "rdb"


def test_the_history_store_records_backups_and_restores(tmp_path: Path) -> None:
    from cloudstack_deploy.store import records
    from cloudstack_deploy.store.db import Store
    from cloudstack_deploy.store.url import store_url

    with Store(store_url({"CSDEPLOY_STATE_URL": f"sqlite:///{tmp_path / 'h.db'}"})) as s:
        records.backup_recorded(s, action="backup", env="shop", accessory="db", kind="postgres",
                                backup="shop/db/1", location="/b", size=10, sha256="ab", ok=True)
        records.backup_recorded(s, action="restore", env="shop", accessory="db", kind="postgres",
                                backup="x.csv", location="/b", size=None, sha256=None, ok=False, error="not a dump")
        rows = records.backup_records(s, env="shop")
    assert [(r["action"], r["status"], r["error"]) for r in rows] == [("restore", "failed", "not a dump"),
                                                                      ("backup", "done", None)]


def test_the_commands_refuse_bad_input_with_exit_2_and_one_line(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from cloudstack_deploy.cli import main

    runner = CliRunner()
    res = runner.invoke(main, ["restore", "--env", "shop", "--accessory", "db"])
    assert res.exit_code == 2 and "refusing to replace the data of shop's db without --yes" in res.output
    res = runner.invoke(main, ["backups", "--env", "shop", "--to", "ftp://files/x"])
    assert res.exit_code == 2 and "unknown scheme 'ftp'" in res.output, res.output
    res = runner.invoke(main, ["backups", "--env", "shop", "--to", str(tmp_path / "b"), "--json"])
    assert res.exit_code == 0 and json.loads(res.output) == []


def _blueprint_with(tmp_path: Path, backups: str, image: str = "registry.lab:5000/postgres:15") -> Path:
    text = (REPO / "blueprints" / "demo.yml").read_text()
    marker = "    image: registry.lab:5000/postgres:15\n"
    assert marker in text
    path = tmp_path / "bp.yml"
    path.write_text(text.replace(marker, f"    image: {image}\n    backups: {backups}\n", 1))
    return path


def test_the_blueprint_backups_key_gives_backup_its_destination_and_keep(tmp_path: Path) -> None:
    bp = load_blueprint(str(_blueprint_with(tmp_path, '{keep: 7, to: "s3://bk/shop"}')))
    policy = bp.accessories["db"].backups
    assert policy is not None and (policy.schedule, policy.keep, policy.to) == (None, 7, "s3://bk/shop")
    assert load_blueprint(str(REPO / "blueprints" / "demo.yml")).accessories["db"].backups is None



@pytest.mark.parametrize("backups", ['{schedule: "0 3 * * *"}', '{schedule: "@daily", to: /srv/dumps}',
                                     '{schedule: "0 3 * * *", to: "local://c/p?root=/x"}',
                                     '{schedule: "30 2 * * 1-5", to: "s3://b/p", keep: 3}'])
def test_a_schedule_is_accepted_with_any_destination(tmp_path: Path, backups: str) -> None:
    """`csdeploy serve` runs it on its own machine (tests/server/test_schedule.py), where every
    destination of `csdeploy backup` works, $CSDEPLOY_HOME/backups and directories included."""
    policy = load_blueprint(str(_blueprint_with(tmp_path, backups))).accessories["db"].backups
    assert policy is not None and policy.schedule


@pytest.mark.parametrize(("backups", "image", "says"), [
    ('{schedule: "0 25 * * *", to: "s3://b/p"}', None, "hour: 25 is outside 0-23"),
    ('{keep: 0}', None, "must be 1-10000"),
    ('{to: "ftp://h/x"}', None, "unknown scheme 'ftp'"),
    ('{kept: 3}', None, "kept"),
    ('{keep: 3}', "registry.lab:5000/memcached:1.6", "has no backup method: csdeploy backs up postgres, redis"),
])
def test_a_bad_backups_key_is_refused_at_its_line(tmp_path: Path, backups: str, image: str | None,
                                                   says: str) -> None:
    path = _blueprint_with(tmp_path, backups, image or "registry.lab:5000/postgres:15")
    with pytest.raises(InvalidInput) as caught:
        load_blueprint(str(path))
    text = str(caught.value)
    line = next(i for i, t in enumerate(path.read_text().splitlines(), start=1) if "backups:" in t)
    assert says in text, text
    assert f"{path}:{line}" in text, text


def _stored(root: Path, env: str, accessory: str, stamp: str, by: str) -> str:
    """A backup as `take` leaves it in directory ``root``: the dump and its manifest; its id."""
    key = f"{env}/{accessory}/{stamp}.pgdump"
    (root / env / accessory).mkdir(parents=True, exist_ok=True)
    (root / key).write_bytes(b"PGDMP")
    m = dumps.Manifest(env=env, accessory=accessory, kind="postgres", image="postgres:15",
                       created_at=f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]}T03:00:00Z", size=5, sha256="x", key=key,
                       by=by, destination=str(root))
    (root / (key + ".json")).write_text(json.dumps(m.to_dict()))
    return m.id


def test_backups_lists_the_blueprints_destination_besides_the_default_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`backups --env E` reads E's remembered blueprint (as the other day-two commands do) and
    lists the destination it gives an accessory (`backups.to`) as well as $CSDEPLOY_HOME/backups;
    `--to` lists that one only; an environment with no remembered blueprint has the default."""
    from click.testing import CliRunner

    from cloudstack_deploy.cli import main
    from cloudstack_deploy.envctx import remember_blueprint
    from cloudstack_deploy.state import EnvState

    home, elsewhere = tmp_path / "home", tmp_path / "offsite"
    monkeypatch.setenv("CSDEPLOY_HOME", str(home))
    remember_blueprint(EnvState("shop"), str(_blueprint_with(tmp_path, f"{{to: {elsewhere}}}")), ())
    local = _stored(home / "backups", "shop", "db", "20261201T030000Z", "cron")
    offsite = _stored(elsewhere, "shop", "db", "20261202T030000Z", "ci")
    _stored(elsewhere, "other", "db", "20261203T030000Z", "ci")  # another environment's: not listed

    runner = CliRunner()
    res = runner.invoke(main, ["backups", "--env", "shop", "--json"])
    assert res.exit_code == 0, res.output
    listed = json.loads(res.output)
    assert [(b["id"], b["destination"]) for b in listed] == [(offsite, str(elsewhere)),
                                                             (local, str(home / "backups"))]
    res = runner.invoke(main, ["backups", "--env", "shop"])
    assert res.exit_code == 0 and "WHERE" in res.output, res.output
    assert str(elsewhere) in res.output.splitlines()[1] and str(home / "backups") in res.output.splitlines()[2]

    res = runner.invoke(main, ["backups", "--env", "shop", "--to", str(elsewhere), "--json"])
    assert [b["id"] for b in json.loads(res.output)] == [offsite], "--to still overrides"
    res = runner.invoke(main, ["backups", "--env", "shop", "--accessory", "redis", "--to", str(tmp_path / "none")])
    assert res.exit_code == 0 and f"no backups in {tmp_path / 'none'}" in res.output, res.output

    _stored(home / "backups", "gone", "db", "20261201T030000Z", "cron")
    res = runner.invoke(main, ["backups", "--env", "gone"])  # torn down: no blueprint remembered
    assert res.exit_code == 0 and "gone/db/20261201T030000Z" in res.output, res.output
    assert "WHERE" not in res.output, "one destination searched: no column for it"
