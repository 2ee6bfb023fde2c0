"""Redis with a password (`requirepass`): when the accessory's env holds it (REDIS_PASSWORD,
VALKEY_PASSWORD or REDISCLI_AUTH, clear or secret), backup, restore and the host's scheduled
job hand it to redis-cli as REDISCLI_AUTH, set inside the container from that variable: it is
never a word of any command line (redis-cli's documentation: `-a` on the command line is
unsafe, REDISCLI_AUTH is the way). Against a real redis-server started with `--requirepass`
(tests/support/redisdocker.py; a container's environment is what `docker exec` in it sees).
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from cloudstack_deploy import backup_dest as bd
from cloudstack_deploy import dumps, hostdumps
from cloudstack_deploy.blueprint import load_blueprint
from cloudstack_deploy.errors import OperationFailed
from cloudstack_deploy.rollout.commands import hostdump as hd
from tests.support.redisdocker import RedisDocker
from tests.test_dumps_redis import CONTAINER, environment
from tests.test_dumps_redis import _maintenance_log as _maintenance_log  # noqa: F401  (autouse)
from tests.test_dumps_redis import docker as docker  # noqa: F401  (the fixture)
from tests.test_dumps_redis import redis_installed as redis_installed  # noqa: F401  (the fixture)

REPO = Path(__file__).resolve().parents[1]
PASSWORD = "pw-" + os.urandom(6).hex()


def _blueprint(tmp_path: Path, backups: str = "") -> object:
    """The demo with its Redis' password in a secret (as its command would read it)."""
    text = (REPO / "blueprints" / "demo.yml").read_text()
    marker = "    image: registry.lab:5000/redis:7\n"
    extra = "    env: {secret: [REDIS_PASSWORD]}\n" + (f"    backups: {backups}\n" if backups else "")
    text = text.replace(marker, marker + extra, 1).replace("secrets: [REGISTRY_PASSWORD, POSTGRES_PASSWORD]",
                                                           "secrets: [REGISTRY_PASSWORD, POSTGRES_PASSWORD, REDIS_PASSWORD]")
    path = tmp_path / "shop.yml"
    path.write_text(text)
    return load_blueprint(str(path))


def _redis(docker: RedisDocker, tmp_path: Path) -> None:  # noqa: F811
    data = tmp_path / "data"
    data.mkdir()
    docker.container(CONTAINER, "--dir", str(data), "--requirepass", PASSWORD, "--repl-diskless-sync-delay", "0",
                     env={"REDIS_PASSWORD": PASSWORD})


def _cli(docker: RedisDocker, *argv: str) -> str:  # noqa: F811
    """The test's own redis-cli, authenticated (never csdeploy's calls)."""
    out = subprocess.run(["docker", "exec", CONTAINER, "redis-cli", *argv], capture_output=True, text=True,
                         env={**docker.env, "REDISCLI_AUTH": PASSWORD}, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


async def test_backup_and_restore_of_a_redis_with_a_password_keep_it_off_argv(
        docker: RedisDocker, tmp_path: Path) -> None:  # noqa: F811
    _redis(docker, tmp_path)
    _cli(docker, "SET", "greeting", "hello")
    _cli(docker, "HSET", "user:1", "name", "Ada")
    assert "NOAUTH" in docker.docker("exec", CONTAINER, "redis-cli", "GET", "greeting").stdout, \
        "the Redis really asks for the password"
    r, _ = environment(docker)
    r.bp = _blueprint(tmp_path)
    store = bd.open_store(str(tmp_path / "backups"))
    before = len(docker.calls())
    m = (await dumps.take(r, "redis", store, by="tester")).manifest
    assert (tmp_path / "backups" / m.key).read_bytes().startswith(b"REDIS")
    _cli(docker, "FLUSHALL")
    _cli(docker, "SET", "after", "the backup")
    where, manifest, key = await dumps.choose(store, "shop", "redis", None)
    await dumps.restore(r, "redis", where, manifest, key, label=m.id)
    calls = docker.calls()
    assert PASSWORD not in json.dumps(calls[before:]), "never on a command line"
    assert _cli(docker, "GET", "greeting") == "hello" and _cli(docker, "HGET", "user:1", "name") == "Ada"
    assert _cli(docker, "EXISTS", "after") == "0"


async def test_without_the_password_in_its_env_the_backup_says_redis_refused(
        docker: RedisDocker, tmp_path: Path) -> None:  # noqa: F811
    """The blueprint does not say where the password is: the dump fails with Redis' own words."""
    _redis(docker, tmp_path)
    r, _ = environment(docker)  # the demo's Redis has no password in its env
    with pytest.raises(OperationFailed, match="the dump of redis failed"):
        await dumps.take(r, "redis", bd.open_store(str(tmp_path / "backups")), by="tester")


def test_the_hosts_scheduled_job_dumps_a_redis_with_a_password(docker: RedisDocker,  # noqa: F811
                                                                tmp_path: Path) -> None:
    _redis(docker, tmp_path)
    _cli(docker, "SET", "greeting", "hello")
    bp = _blueprint(tmp_path, "{schedule: '* * * * *', keep: 3}")
    assert hostdumps.runs_on_host(bp.accessories["redis"].backups)
    where = tmp_path / "disk" / "csdeploy-backups" / "redis"
    job = hd.job_script(replace(hostdumps.host_dump(bp, "shop", "redis", "shop-web-1"), directory=str(where)))
    assert PASSWORD not in job.text()
    res = subprocess.run(["sh", "-c", job.text()], env=docker.env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    [rdb] = [p for p in where.iterdir() if p.suffix == ".rdb"]
    m = json.loads((where / (rdb.name + ".json")).read_text())
    assert rdb.read_bytes().startswith(b"REDIS") and (m["kind"], m["by"], m["size"]) == ("redis", "schedule",
                                                                                        rdb.stat().st_size)
    assert PASSWORD not in json.dumps(docker.calls())
