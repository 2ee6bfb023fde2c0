"""The store as commands meet it: a journal that cannot reach its store warns once and gets
out of the way; `csdeploy history` reads the store, filters it, and never prints a password."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cloudstack_deploy.store import Journal, Store, parse_store_url
from cloudstack_deploy.store import records as r
from tests.support.cli import cli_here

from .conftest import fresh_database
from .pgserver import PgServer

REPO = Path(__file__).resolve().parents[2]


def dead_url(password: str = "s3cret-pass-word") -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"postgresql://ci:{password}@127.0.0.1:{port}/csdeploy"  # nothing listens there now


def csdeploy(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`csdeploy ARGS` with ``env`` as its only CSDEPLOY_*/CLOUDSTACK_* variables, in this process:
    what `history` prints and its exit code do not depend on a process of its own."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("CSDEPLOY_", "CLOUDSTACK_"))}
    return cli_here(*args, cwd=REPO, env={**full, **env})


def test_an_unreachable_store_is_one_warning_and_nothing_else() -> None:
    warnings: list[str] = []
    url = parse_store_url(dead_url())
    journal = Journal(url, warn=warnings.append)

    async def story() -> list[object]:
        out = [await journal.env_created(name="shop", cloud="c", service="demo", network_id="n", expires=None),
               await journal.deployment_pending(env="shop", cloud="c", service="demo", version="v1", kind="deploy")]
        await journal.deployment_finished(out[1], ok=True, seconds=1.0, error=None, metadata={})  # type: ignore[arg-type]
        return out

    assert asyncio.run(story()) == [None, None]
    journal.close()
    assert len(warnings) == 1, warnings
    assert "cannot be reached" in warnings[0] and "postgresql://ci:***@127.0.0.1" in warnings[0]
    assert "s3cret-pass-word" not in warnings[0]
    assert "primary host keeps its deploy record" in warnings[0]


def test_history_of_an_unreachable_store_is_a_one_line_error_without_the_password(tmp_path: Path) -> None:
    res = csdeploy("-v", "history", env={"CSDEPLOY_HOME": str(tmp_path), "CSDEPLOY_STATE_URL": dead_url()})
    assert res.returncode == 1, res
    assert "s3cret-pass-word" not in res.stdout + res.stderr
    error = [line for line in res.stderr.splitlines() if line.startswith("csdeploy: error:")]
    assert len(error) == 1 and "postgresql://ci:***@127.0.0.1:" in error[0] and "cannot be reached" in error[0], \
        res.stderr


def test_a_store_url_csdeploy_cannot_speak_is_invalid_input(tmp_path: Path) -> None:
    res = csdeploy("history", env={"CSDEPLOY_HOME": str(tmp_path),
                                   "CSDEPLOY_STATE_URL": "mysql://u:hunter22pw@db/x"})
    assert res.returncode == 2, res
    assert "hunter22pw" not in res.stderr and "mysql://u:***@db/x" in res.stderr
    assert res.stderr.count("csdeploy: error:") == 1


def test_history_reads_the_shared_postgres_store(postgres: PgServer, tmp_path: Path) -> None:
    url = fresh_database(postgres)
    with Store(parse_store_url(url)).open() as store:  # type: ignore[arg-type]
        r.env_created(store, name="shop", cloud="c1", service="demo", network_id="n1", expires=None)
        for version, ok in (("v1", True), ("broken", False)):
            dep = r.deployment_pending(store, env="shop", cloud="c1", service="demo", version=version, kind="deploy")
            r.deployment_started(store, dep, {})
            r.deployment_finished(store, dep, ok=ok, seconds=2.0, error=None if ok else "health check: HTTP 500",
                                  metadata={})
        r.deployment_pending(store, env="other", cloud="c1", service="demo", version="x", kind="deploy")
    env = {"CSDEPLOY_HOME": str(tmp_path), "CSDEPLOY_STATE_URL": url}

    failed = csdeploy("history", "--env", "shop", "--status", "failed", "--json", env=env)
    assert failed.returncode == 0, failed.stderr
    (dep,) = json.loads(failed.stdout)
    assert (dep["version"], dep["status"], dep["error"]) == ("broken", "failed", "health check: HTTP 500")
    assert [e["type"] for e in dep["events"]] == ["deploy_started", "deploy_failed"]

    table = csdeploy("history", "--since", "1d", env=env)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:6] == ["STARTED", "ENV", "SERVICE", "KIND", "VERSION", "STATUS"]
    assert [line.split()[6] for line in lines[1:]] == ["pending", "failed", "deployed"]  # newest first (date, time, ...)
    assert postgres.password not in table.stdout + table.stderr

    envs = csdeploy("history", "--show", "environments", "--json", env=env)
    assert [e["name"] for e in json.loads(envs.stdout)] == ["shop"]


@pytest.mark.parametrize("args", [["--since", "7x"], ["--status", "lost"]])
def test_history_refuses_bad_filters(args: list[str], tmp_path: Path) -> None:
    res = csdeploy("history", *args, env={"CSDEPLOY_HOME": str(tmp_path)})
    assert res.returncode == 2 and "Error: Invalid value" in res.stderr, res


def socket_urls(server: PgServer, database: str) -> list[str]:
    return [f"postgresql:///{database}?host={server.socket_dir}&port={server.port}&user={server.user}"
            f"&password={server.password}",
            f"postgresql://{server.user}:{server.password}@:{server.port}/{database}?host={server.socket_dir}"]


@pytest.mark.parametrize("form", [0, 1], ids=["host-in-query", "user-at-no-host"])
def test_a_store_over_a_unix_socket_works(postgres: PgServer, tmp_path: Path, form: int) -> None:
    """`postgresql:///db?host=/path` used to come out as `postgresql:/db?...`, which libpq
    cannot read; the schema migration (yoyo) and the CLI both go over the socket here."""
    assert postgres.socket_dir
    url = socket_urls(postgres, fresh_database(postgres).rsplit("/", 1)[1])[form]
    with Store(parse_store_url(url)).open() as store:  # type: ignore[arg-type]
        r.deployment_pending(store, env="shop", cloud="c1", service="demo", version="over-socket", kind="deploy")
        assert store.query("SELECT inet_server_addr() AS addr")[0]["addr"] is None  # a Unix socket, not TCP
    res = csdeploy("-v", "history", "--json", env={"CSDEPLOY_HOME": str(tmp_path), "CSDEPLOY_STATE_URL": url})
    assert res.returncode == 0, res.stderr
    assert [d["version"] for d in json.loads(res.stdout)] == ["over-socket"]
    assert postgres.password not in res.stdout + res.stderr


def test_a_password_in_the_query_is_never_shown(tmp_path: Path) -> None:
    url = dead_url().replace("ci:s3cret-pass-word@", "ci@") + "?sslmode=disable&password=s3cret-pass-word"
    res = csdeploy("-v", "history", env={"CSDEPLOY_HOME": str(tmp_path), "CSDEPLOY_STATE_URL": url})
    assert res.returncode == 1, res
    assert "s3cret-pass-word" not in res.stdout + res.stderr
    assert "?sslmode=disable&password=*** cannot be reached" in res.stderr, res.stderr


def test_a_password_with_an_unencoded_slash_is_refused_whole(tmp_path: Path) -> None:
    res = csdeploy("history", env={"CSDEPLOY_HOME": str(tmp_path),
                                   "CSDEPLOY_STATE_URL": "postgresql://ci:pa/ss#w?rd@127.0.0.1:1/db"})
    assert res.returncode == 2, res
    assert "percent-encode" in res.stderr and res.stderr.count("csdeploy: error:") == 1
    for piece in ("pa/", "ss#", "w?rd", "'pa'"):
        assert piece not in res.stderr, res.stderr


def test_history_shows_a_nightly_that_died_as_interrupted(tmp_path: Path) -> None:
    import signal

    url = f"sqlite:///{tmp_path / 'history.db'}"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    with Store(parse_store_url(url)).open() as store:  # type: ignore[arg-type]
        run_id = r.run_started(store, kind="nightly", cloud="c1", prefix="nightly")
        store.execute_many([("UPDATE processes SET pid = :pid", {"pid": child.pid})])  # the nightly's process
        r.run_started(store, kind="reap", cloud="c1", prefix=None)  # this test's own: alive
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    env = {"CSDEPLOY_HOME": str(tmp_path)}
    res = csdeploy("history", "--show", "runs", "--status", "interrupted", "--json", env=env)
    assert res.returncode == 0, res.stderr
    assert [(x["id"], x["status"]) for x in json.loads(res.stdout)] == [(run_id, "interrupted")]
    table = csdeploy("history", "--show", "runs", env=env)
    assert sorted(line.split()[5] for line in table.stdout.splitlines()[1:]) == ["interrupted", "running"], table.stdout
