"""Logical backups of Redis against a real Redis (Debian's redis-server and redis-cli): a backup
is `redis-cli --rdb -` streamed into the destination, a restore puts the RDB where Redis reads
it at start and starts Redis on it, rewriting the append-only file from it when Redis keeps one
(Redis loads an AOF and ignores the RDB when both exist: redis/redis#12098 and the data-loss
warning on ``appendonly`` added to redis.conf in redis/redis#12506).

Only SSH and Docker are stood in for: the scripts `rollout/commands/dump.py` builds run under
a real /bin/sh, and `docker` is tests/support/redisdocker.py, whose containers are real
redis-servers on loopback addresses of this test process's own share (CSDEPLOY_TEST_OCTETS),
stopped with SIGTERM as `docker stop` does (Redis saves on it) and started again with the same
arguments. The maintenance calls are recorded, as in tests/test_dumps.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from cloudstack_deploy import backup_dest as bd
from cloudstack_deploy import dumps
from cloudstack_deploy.blueprint import load_blueprint
from cloudstack_deploy.errors import InvalidInput, OperationFailed
from cloudstack_deploy.rollout.commands.dump import REDIS_INCOMING, restore_container
from cloudstack_deploy.rollout.commands.script import Script
from cloudstack_deploy.rollout.hosts import HostError, Result
from tests.support.redisdocker import RedisDocker
from tests.support.sim import public_range
from tests.support.streams import pipe_local

REPO = Path(__file__).resolve().parents[1]
DEMO = load_blueprint(str(REPO / "blueprints" / "demo.yml"))
CONTAINER = "demo-redis"  # the demo's redis accessory, by the contract's name


@pytest.fixture(scope="module")
def redis_installed() -> None:
    if shutil.which("redis-server") is None or shutil.which("redis-check-rdb") is None:
        if os.environ.get("CI"):
            pytest.fail("Redis is not installed: scripts/lab-prereqs --test installs it")
        pytest.skip("Redis is not installed (apt-get install redis-server)")


class RedisHost:
    """The accessory's host, here: scripts and commands run under /bin/sh with the Redis `docker`."""

    def __init__(self, docker: RedisDocker) -> None:
        self.docker = docker
        self.host = SimpleNamespace(name="web-vm")

    async def run(self, command: Script | list[str], *, input: str | None = None, timeout: float = 600,
                  check: bool = True, what: str = "command", read_only: bool = False) -> Result:
        argv, stdin = (["sh", "-s"], command.text()) if isinstance(command, Script) else (command, "")
        proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.PIPE,
                                                    stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE, env=self.docker.env,
                                                    cwd=self.docker.state_file.parent)  # never the checkout
        out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), timeout)
        res = Result(proc.returncode or 0, out.decode(), err.decode())
        if check and res.exit_status:
            raise HostError(self.host.name, f"{what} failed (exit {res.exit_status})", res.stderr_clean)
        return res

    async def pipe(self, argv: list[str], *, source: AsyncIterator[bytes] | None = None,
                   sink: Callable[[bytes], Awaitable[None]] | None = None, what: str = "") -> Result:
        return await pipe_local(argv, self.docker.env, source=source, sink=sink)


@pytest.fixture
def docker(redis_installed: None, tmp_path: Path) -> Iterator[RedisDocker]:
    d = RedisDocker.start(tmp_path, public_range().rsplit(".", 1)[0])
    yield d
    d.close()


def environment(docker: RedisDocker, name: str = "shop") -> tuple[Any, list[bool]]:
    """A `Rollout` as dumps uses it (blueprint, env, inventory, pool) and the maintenance log."""
    here = RedisHost(docker)

    class Pool:
        async def connect(self, host: Any) -> RedisHost:
            return here

    @contextlib.asynccontextmanager
    async def pool(concurrency: int = 20) -> AsyncIterator[Pool]:
        yield Pool()

    inv = SimpleNamespace(accessory_host=lambda n: here.host if n in ("db", "redis") else None,
                          proxy_hosts=[SimpleNamespace(name="web-1")])
    r = SimpleNamespace(bp=DEMO, env=name, inv=inv, pool=pool, maintenance=[])
    return r, r.maintenance


@pytest.fixture(autouse=True)
def _maintenance_log(monkeypatch: pytest.MonkeyPatch) -> None:
    async def maintenance(r: Any, on: bool, message: str = "") -> dict[str, Any]:
        r.maintenance.append(on)
        return {}

    monkeypatch.setattr(dumps.ops, "maintenance", maintenance)


def redis(docker: RedisDocker, data: Path, appendonly: str) -> None:
    """The demo's Redis: data in ``data``; no 5 s wait before an RDB goes to a replica (redis-cli
    --rdb is one), Redis' default that only makes the test slower."""
    data.mkdir()
    docker.container(CONTAINER, "--dir", str(data), "--appendonly", appendonly, "--repl-diskless-sync-delay", "0")


def fill(docker: RedisDocker) -> None:
    """Strings, a hash, a list and a key with a TTL."""
    docker.cli(CONTAINER, "SET", "greeting", "hello world")
    docker.cli(CONTAINER, "HSET", "user:1", "name", "Ada", "lang", "en")
    docker.cli(CONTAINER, "RPUSH", "queue", "a", "b", "c")
    docker.cli(CONTAINER, "SET", "session", "s3cr3t", "EX", "3600")


def assert_filled(docker: RedisDocker) -> None:
    assert docker.cli(CONTAINER, "GET", "greeting") == "hello world"
    assert docker.cli(CONTAINER, "HGETALL", "user:1").splitlines() == ["name", "Ada", "lang", "en"]
    assert docker.cli(CONTAINER, "LRANGE", "queue", "0", "-1").splitlines() == ["a", "b", "c"]
    assert docker.cli(CONTAINER, "GET", "session") == "s3cr3t"
    assert 3000 < int(docker.cli(CONTAINER, "TTL", "session")) <= 3600, "the key keeps its expiry"


@pytest.mark.parametrize("appendonly", ["no", "yes"])
async def test_backup_flushall_restore_gives_the_keys_back(docker: RedisDocker, tmp_path: Path,
                                                          appendonly: str) -> None:
    data = tmp_path / "data"
    redis(docker, data, appendonly)
    fill(docker)
    r, maintenance = environment(docker)
    store = bd.open_store(str(tmp_path / "backups"))
    m = (await dumps.take(r, "redis", store, by="tester")).manifest
    assert (m.kind, m.accessory) == ("redis", "redis")
    assert (tmp_path / "backups" / m.key).read_bytes().startswith(b"REDIS")
    docker.cli(CONTAINER, "FLUSHALL")
    docker.cli(CONTAINER, "SET", "after", "the backup")
    docker.calls().clear()

    where, manifest, key = await dumps.choose(store, "shop", "redis", None)
    result = await dumps.restore(r, "redis", where, manifest, key, label=m.id)
    assert_filled(docker)
    assert docker.cli(CONTAINER, "EXISTS", "after") == "0", "what was written after the backup is gone"
    assert maintenance == [True, False] and result.maintenance == "on during the restore"
    assert docker.names() == [CONTAINER], "the loading container is removed"
    assert not (data / REDIS_INCOMING).exists()
    # a restart reads what Redis really keeps: the AOF (appendonly yes) or the RDB
    docker.docker("stop", CONTAINER)
    docker.docker("start", CONTAINER)
    assert_filled(docker)
    assert docker.cli(CONTAINER, "CONFIG", "GET", "appendonly").splitlines()[-1] == appendonly


def _real_rdb(docker: RedisDocker, tmp_path: Path) -> bytes:
    out = tmp_path / "one.rdb"
    docker.docker("exec", CONTAINER, "redis-cli", "--rdb", str(out))
    return out.read_bytes()


@pytest.mark.parametrize(("make", "says"), [
    (lambda rdb: b"key,value\ngreeting,hello\n" * 20, "is not a Redis RDB file"),
    (lambda rdb: b"PGDMP" + b"\0" * 200, "is not a Redis RDB file"),  # a PostgreSQL dump
    (lambda rdb: rdb[:30] + bytes(b ^ 0x5A for b in rdb[30:60]) + rdb[60:], "is not an RDB file this Redis can load"),
    (lambda rdb: rdb[: len(rdb) // 2], "this Redis can load ([offset "),  # cut short: the checker's reason
], ids=["csv", "postgresql-dump", "damaged-rdb", "truncated-rdb"])
async def test_what_is_not_a_good_rdb_is_refused_with_nothing_changed(
        docker: RedisDocker, tmp_path: Path, make: Callable[[bytes], bytes], says: str) -> None:
    data = tmp_path / "data"
    redis(docker, data, "yes")
    fill(docker)
    bogus = tmp_path / "offered.rdb"
    bogus.write_bytes(make(_real_rdb(docker, tmp_path)))
    docker.cli(CONTAINER, "SET", "greeting", "changed since")
    r, maintenance = environment(docker)
    docker.calls().clear()
    where, manifest, key = await dumps.choose(bd.open_store(str(tmp_path / "none")), "shop", "redis", str(bogus))
    with pytest.raises(InvalidInput) as caught:
        await dumps.restore(r, "redis", where, manifest, key, label=str(bogus))
    text = str(caught.value)
    assert says in text and str(bogus) in text and "nothing was changed" in text, text
    assert caught.value.exit_code == 2
    assert maintenance == [], "the app was never put behind maintenance"
    assert not any(c[0] in ("stop", "run") for c in docker.calls()), docker.calls()
    assert docker.cli(CONTAINER, "GET", "greeting") == "changed since"
    assert not (data / REDIS_INCOMING).exists(), "the refused file is not left beside Redis' data"
    assert docker.names() == [CONTAINER] and restore_container(CONTAINER) not in docker.names()


async def test_a_load_that_fails_starts_redis_again_on_its_old_data(docker: RedisDocker, tmp_path: Path) -> None:
    data = tmp_path / "data"
    redis(docker, data, "yes")
    fill(docker)
    r, maintenance = environment(docker)
    store = bd.open_store(str(tmp_path / "backups"))
    m = (await dumps.take(r, "redis", store, by="tester")).manifest
    docker.cli(CONTAINER, "SET", "greeting", "kept")
    docker.fail_runs()
    with pytest.raises(OperationFailed) as caught:
        await dumps.restore(r, "redis", store, m, m.key, label=m.id)
    text = str(caught.value)
    assert "Redis did not load" in text and "could not start Redis on the backup" in text, text
    assert "at step load" in text and "no space left on device" in text, text
    assert docker.cli(CONTAINER, "GET", "greeting") == "kept", "Redis runs again, on its old data"
    assert maintenance == [True, False], "maintenance is lifted after the failure too"
    assert docker.names() == [CONTAINER]


def test_a_valkey_restore_loads_with_valkey_server() -> None:
    """Valkey's image entrypoint drops root (and hands /data to its user) only for `valkey-server`;
    its redis-* commands are links. The loading container is started with the name it knows."""
    from cloudstack_deploy.rollout.commands import dump as cmd

    text = cmd.redis_load("shop-cache", "/data", server="valkey-server").text()
    assert "set -- valkey-server --dir /data --dbfilename csdeploy-restore.rdb --appendonly no" in text
    assert "set -- redis-server --dir /data" in cmd.redis_load("shop-cache", "/data").text()
