"""`-v`, `-vv` and `--log-format json`: what a user sees of API calls and host steps, and that
no secret ever appears in it, even when a host's refusal echoes the script back.

Against the memory simulator: real API calls, real SSH logins (its hosts refuse to run
commands, exit 126, so the rollout fails at its first host step after logging the script).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cloudstack_deploy.log import clear_secrets

from .conftest import DEMO, SECRET, SSH_TIMEOUT, cli, create_args

CANARY_DB = "pg-" + "c4n4ry/:@x"      # a PostgreSQL password with URL-special characters
CANARY_REGISTRY = "reg-" + "c4n4ry-5150"


@pytest.fixture(autouse=True)
def _forget_secrets() -> None:
    yield
    clear_secrets()


def _json_lines(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def test_v_shows_each_api_call_with_duration_and_code(home: Path) -> None:
    result = cli("-v", "--log-format", "json", *create_args("logs"))
    assert result.exit_code == 0, result.output
    events = _json_lines(result.stderr)
    calls = [e for e in events if e.get("event") == "api call"]
    commands = {e["command"] for e in calls}
    assert {"createNetwork", "deployVirtualMachine", "associateIpAddress", "createTags"} <= commands
    deploy = next(e for e in calls if e["command"] == "deployVirtualMachine")
    assert deploy["code"] == 200 and deploy["seconds"] >= 0 and deploy["level"] == "info"
    assert deploy["params"]["userdata"].endswith("chars>"), "user data carries host private keys: size only"
    text = result.stderr
    assert "PRIVATE KEY" not in text and SECRET not in text


def test_without_v_no_log_lines(home: Path) -> None:
    result = cli(*create_args("quiet"))
    assert result.exit_code == 0, result.output
    assert "api call" not in result.stderr


def test_console_format_is_one_line_per_call(home: Path) -> None:
    result = cli("-v", *create_args("console"))
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if "api call" in line]
    assert lines and all("command=" in line and "seconds=" in line for line in lines)


def test_a_refused_host_step_names_host_and_step_and_vv_shows_the_script(
        home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTGRES_PASSWORD", CANARY_DB)
    monkeypatch.setenv("REGISTRY_PASSWORD", CANARY_REGISTRY)
    result = cli("-vv", "--log-format", "json", "create-env", str(DEMO), "--env", "canary", "--version", "v1",
                 "--progress", "plain", "--ssh-timeout", str(SSH_TIMEOUT))
    assert result.exit_code == 1, result.output
    events = _json_lines(result.stderr)
    scripts = {e["host"]: e for e in events if e.get("event") == "host script"}
    assert set(scripts) == {"canary-web-1", "canary-worker-1", "canary-db-1"}, "every host is read at once"
    primary = scripts["canary-web-1"]
    assert primary["step"] == "read the host's state (and take the deploy lock)"
    assert "mkdir .csdeploy/demo/lock" in primary["script"] and "docker image inspect" in primary["script"]
    steps = [e for e in events if e.get("event") == "host step"]
    # the memory simulator's hosts refuse to run commands: the channel closes under us
    assert {e["host"] for e in steps} == set(scripts) and all(e["error"] for e in steps)
    assert "csdeploy: error: canary-web-1: read the host's state (and take the deploy lock): SSH failed" \
        in result.stderr
    everything = result.stdout + result.stderr
    for secret in (CANARY_DB, CANARY_REGISTRY):
        assert secret not in everything, f"{secret!r} leaked"
