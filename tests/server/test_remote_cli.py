"""`csdeploy --server URL deploy|rollback|history ...`: the CLI's commands sent to the server's
application on a loopback port (served from a thread here, its worker given a deploy that
touches no host; tests/e2e/test_day2.py sends a real one to a `csdeploy serve` on the lab),
progress followed over server-sent events, the server's answers as the CLI's exit codes
(2 bad input, 1 refused or failed)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudstack_deploy.server import access, queue
from cloudstack_deploy.server.app import make_app
from cloudstack_deploy.server.worker import RUNNERS, Worker
from cloudstack_deploy.store.db import Store
from cloudstack_deploy.store.url import parse_store_url
from tests.support.cli import cli

from .fakes import fake_deploy, served_in_thread


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, dict[str, str]]]:
    parsed = parse_store_url(f"sqlite:///{tmp_path / 'history.db'}")
    assert parsed is not None
    monkeypatch.setenv("CSDEPLOY_HOME", str(tmp_path / "home"))
    with Store(parsed) as store:
        tokens = {name: access.create_token(store, name=name, role=role, env_prefix=prefix)[1]
                  for name, role, prefix in (("vera", "viewer", None), ("dan", "deployer", "dev-"))}
        fake = fake_deploy(parsed, seconds=0.05)
        worker = Worker(store, kinds=queue.KINDS, poll=0.05, heartbeat=0.1,
                        runners={**RUNNERS, "deploy": fake, "rollback": fake})
        with served_in_thread(make_app(store, worker=worker)) as url:
            monkeypatch.setenv("CSDEPLOY_SERVER", url)
            monkeypatch.setenv("CSDEPLOY_STATE_URL", "none")   # this side has no store: all comes from the server
            yield tmp_path, tokens


def test_deploy_rollback_and_history_through_the_server(server: tuple[Path, dict[str, str]],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    _, tokens = server
    monkeypatch.setenv("CSDEPLOY_TOKEN", tokens["dan"])
    done = cli("deploy", "--env", "dev-a", "--version", "v3", "--progress", "plain")
    assert done.exit_code == 0, done.output
    assert "deploy of dev-a to v3: succeeded" in done.stdout
    assert "fake-web-2" in done.stderr and tokens["dan"] not in done.output
    again = cli("deploy", "--env", "dev-a", "--version", "v4", "--progress", "plain")
    assert again.exit_code == 0, again.output
    back = cli("rollback", "--env", "dev-a", "--to", "v3", "--progress", "plain")
    assert back.exit_code == 0 and "rollback of dev-a to v3: succeeded" in back.stdout, back.output
    shown = cli("history", "--env", "dev-a")
    assert shown.exit_code == 0, shown.output
    assert "v4" in shown.stdout and "dan" in shown.stdout
    failed = cli("deploy", "--env", "dev-a", "--version", "fail-1", "--progress", "plain")
    assert failed.exit_code == 1 and "failed" in failed.stderr
    assert cli("history", "--env", "dev-a", "--status", "failed").stdout.count("fail-1") == 1


def test_the_server_says_no_and_the_cli_exits_accordingly(server: tuple[Path, dict[str, str]],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    tmp_path, tokens = server
    monkeypatch.delenv("CSDEPLOY_TOKEN", raising=False)
    none = cli("deploy", "--env", "dev-a", "--version", "v1")
    assert none.exit_code == 2 and "CSDEPLOY_TOKEN" in none.stderr
    monkeypatch.setenv("CSDEPLOY_TOKEN", "csd_not-a-token")
    bad = cli("deploy", "--env", "dev-a", "--version", "v1")
    assert bad.exit_code == 1 and "refused the token" in bad.stderr
    monkeypatch.setenv("CSDEPLOY_TOKEN", tokens["vera"])
    viewer = cli("deploy", "--env", "dev-a", "--version", "v1")
    assert viewer.exit_code == 1 and "may not" in viewer.stderr
    monkeypatch.setenv("CSDEPLOY_TOKEN", tokens["dan"])
    outside = cli("deploy", "--env", "prod-a", "--version", "v1")
    assert outside.exit_code == 1 and "may not deploy prod-a" in outside.stderr
    bad_version = cli("deploy", "--env", "dev-a", "--version", "v1;x")
    assert bad_version.exit_code == 2 and "version" in bad_version.stderr
    local_only = cli("deploy", "--env", "dev-a", "--version", "v1", "--dry-run")
    assert local_only.exit_code == 2 and "--dry-run: not available through --server" in local_only.stderr
    token_file = tmp_path / "token"
    token_file.write_text(tokens["dan"] + "\n")
    monkeypatch.delenv("CSDEPLOY_TOKEN")
    by_file = cli("--token-file", str(token_file), "deploy", "--env", "dev-b", "--version", "v1", "--progress", "plain")
    assert by_file.exit_code == 0, by_file.output


def test_without_a_server_deploy_still_needs_its_blueprint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CSDEPLOY_SERVER", raising=False)
    result = cli("deploy", "--env", "dev-a", "--version", "v1")
    assert result.exit_code == 2 and "Missing argument 'BLUEPRINT'" in result.stderr
