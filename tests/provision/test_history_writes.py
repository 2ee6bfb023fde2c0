"""create-env and teardown write the history store; a store that cannot be reached is one
warning and the command succeeds all the same (on the simulator, checked through the CLI)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from .conftest import CloudView, cli, create_args


def test_create_env_and_teardown_record_the_environments_life(home: Path, cloud_view: CloudView) -> None:
    assert cli(*create_args("shop", extra=["--ttl", "2h"])).exit_code == 0
    assert cli(*create_args("shop")).exit_code == 0                      # a converging re-run: same life
    assert cli("teardown", "--env", "shop", "--yes").exit_code == 0
    assert cli(*create_args("shop")).exit_code == 0                      # a second life
    res = cli("history", "--show", "environments", "--env", "shop", "--json")
    assert res.exit_code == 0, res.stderr
    second, first = json.loads(res.stdout)
    assert first["created_at"] and first["expires_at"] and first["torn_down_how"] == "teardown"
    assert "@" in first["created_by"] and "@" in first["torn_down_by"]
    assert second["torn_down_at"] is None and second["network_id"] != first["network_id"]
    assert (home / "history.db").stat().st_mode & 0o777 == 0o600


def test_an_unreachable_store_never_fails_create_env_or_teardown(home: Path, cloud_view: CloudView,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("CSDEPLOY_STATE_URL", f"postgresql://ci:st0re-pass@127.0.0.1:{port}/csdeploy")
    created = cli(*create_args("shop"))
    assert created.exit_code == 0, created.stderr
    warnings = [line for line in created.stderr.splitlines() if "history store" in line]
    assert len(warnings) == 1 and "cannot be reached" in warnings[0], created.stderr
    assert "st0re-pass" not in created.stderr + created.stdout
    down = cli("teardown", "--env", "shop", "--yes", "--progress", "plain")
    assert down.exit_code == 0 and "st0re-pass" not in down.stderr
    assert not any(cloud_view.everything().values())
