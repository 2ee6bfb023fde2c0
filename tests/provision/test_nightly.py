"""`csdeploy nightly` on the simulator: bad input creates nothing; a failed deploy still writes
the JUnit report (read back with junitparser, as a CI system reads it), still tears down,
and is recorded in the history store. The passing run is on the lab (tests/e2e)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from junitparser import Error, Failure, JUnitXml, Skipped

from cloudstack_deploy.store import Store, parse_store_url
from cloudstack_deploy.store import records as r

from .conftest import REPO, CloudView, cli

MINIMAL = str(REPO / "blueprints" / "minimal.yml")


def nightly(*args: str) -> list[str]:
    return ["nightly", MINIMAL, "--version", "v1", "--progress", "plain", "--ssh-timeout", "20", *args]


def one_error_line(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if "rror" in line]
    assert len(errors) == 1, stderr
    return errors[0]


def dead_store() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"postgresql://ci:n1ghtly-secret@127.0.0.1:{port}/csdeploy"


@pytest.mark.parametrize(("args", "expected"), [
    (["--prefix", "nightly", "--check", "GET /up"], "--check 'GET /up': expected METHOD /PATH STATUS [TEXT]"),
    (["--prefix", "nightly", "--check", "FETCH /up 200"], "'FETCH' is not an HTTP method"),
    (["--prefix", "nightly", "--check", "GET up 200"], "the path must start with '/'"),
    (["--prefix", "nightly", "--check", "GET /up 2000"], "the expected status must be 100-599"),
    (["--prefix", "nightly", "--check-cmd", "db:true"], "the blueprint has no role or accessory 'db'"),
    (["--prefix", "Nightly"], "--prefix 'Nightly' is not a valid environment name prefix"),
    (["--prefix", "nightly-"], "--prefix 'nightly-' is not a valid environment name prefix"),
    (["--prefix", "much-too-long"], "--prefix 'much-too-long' is 13 characters; at most 11"),
])
def test_bad_input_is_one_line_and_creates_nothing(args: list[str], expected: str, home: Path,
                                                   cloud_view: CloudView, tmp_path: Path) -> None:
    junit = tmp_path / "report.xml"
    res = cli(*nightly(*args, "--junit", str(junit)))
    assert res.exit_code == 2, res.stdout + res.stderr
    assert expected in one_error_line(res.stderr), res.stderr
    assert not any(cloud_view.everything().values()), cloud_view.everything()
    assert not junit.exists()


def test_an_unreachable_store_is_bad_input_and_never_shows_its_password(home: Path, cloud_view: CloudView,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CSDEPLOY_STATE_URL", dead_store())
    res = cli(*nightly("--prefix", "nightly"))
    assert res.exit_code == 2, res.stdout + res.stderr
    line = one_error_line(res.stderr)
    assert "history store postgresql://ci:***@127.0.0.1:" in line and "cannot be reached" in line
    assert "n1ghtly-secret" not in res.stdout + res.stderr
    assert not any(cloud_view.everything().values()), cloud_view.everything()


def test_a_failed_deploy_still_reports_tears_down_and_records(home: Path, cloud_view: CloudView,
                                                             tmp_path: Path) -> None:
    """Memory-backend VMs answer SSH but run no commands: create-env passes, the deploy fails."""
    junit = tmp_path / "ci" / "nightly.xml"
    res = cli(*nightly("--prefix", "sim", "--check", "GET / 200 demo", "--check-cmd", "web:python3 -V",
                       "--junit", str(junit), "--json"))
    assert res.exit_code == 1, res.stdout + res.stderr
    summary = json.loads(res.stdout)
    env = summary["env"]
    assert env.startswith("sim-") and len(env) == len("sim-MMDD-abc"), env
    assert (summary["passed"], summary["torn_down"], summary["kept"]) == (False, True, False)

    suite = next(iter(JUnitXml.fromfile(str(junit))))
    cases = {c.name: c for c in suite}
    assert list(cases) == ["reap", "create-env", "deploy", "GET / 200 'demo'", "web: python3 -V", "teardown"]
    assert (suite.tests, suite.failures, suite.errors, suite.skipped) == (6, 1, 0, 2)
    assert cases["create-env"].is_passed and cases["teardown"].is_passed and cases["reap"].is_passed
    (failure,) = cases["deploy"].result
    assert isinstance(failure, Failure) and not isinstance(failure, Error)
    assert failure.message.startswith(f"{env}-web-1: read the host's state (and take the deploy lock): SSH failed"), \
        failure.message
    assert failure.text.count(failure.message) == 1, failure.text
    for name in ("GET / 200 'demo'", "web: python3 -V"):
        (skipped,) = cases[name].result
        assert isinstance(skipped, Skipped) and skipped.message == "deploy failed"
    props = {p.name: p.value for p in suite.properties()}
    assert props["env"] == env and props["version"] == "v1" and props["kept"] == "false"

    assert not any(cloud_view.everything().values()), cloud_view.everything()
    with Store(parse_store_url(f"sqlite:///{home / 'history.db'}")).open() as store:  # type: ignore[arg-type]
        (run,) = r.runs(store, kind="nightly")
        (life,) = r.environments(store, name=env)
        (dep,) = r.deployments(store, env=env)
    assert (run.status, run.env) == ("failed", env)
    assert [c["status"] for c in run.summary["cases"]] == ["passed", "passed", "failed", "skipped", "skipped",
                                                          "passed"]
    assert life.created_at and life.expires_at and life.torn_down_how == "nightly"
    assert dep.status == "failed" and dep.error.startswith(f"{env}-web-1: read the host's state")


def test_keep_on_failure_keeps_the_environment_until_its_ttl(home: Path, cloud_view: CloudView) -> None:
    res = cli(*nightly("--prefix", "kept", "--ttl", "2h", "--keep-on-failure"))
    assert res.exit_code == 1, res.stdout + res.stderr
    assert "kept: kept-" in res.stdout and "FAILED" in res.stdout
    env = res.stdout.split()[1]
    listed = {e["env"]: e for e in json.loads(cli("envs", "--json").stdout)}
    assert env in listed and listed[env]["expired"] is False and listed[env]["expires"]
    assert cli("teardown", "--env", env, "--yes").exit_code == 0
