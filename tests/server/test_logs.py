"""`GET /api/environments/{env}/logs`: a role's container logs through the API, as `csdeploy
logs` shows them (the same service function), read over real SSH from a host in this process
(tests/support/sshhost.py, its `docker` tests/support/fakedocker.py); the blueprint's secrets
replaced in every line, for a viewer who does not hold them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import fakedocker as fd
from tests.support.sshhost import SSHHost

from .conftest import Served

SECRET = "logs-canary-5b1e7d90c4"
WEB = {"service": "demo", "role": "web", "destination": "demo"}
BLUEPRINT = """
service: demo
image: registry.lab:5000/demo-app
cloud: {zone: z, template: t, service_offering: small, ssh: {allow_from: [127.0.0.0/8]}}
roles:
  web:
    proxy: {app_port: 8000}
    env:
      secret: [API_TOKEN]
secrets: [API_TOKEN]
"""
LINES = [f"GET /{n} 200" for n in range(1, 8)] + [f"connecting with token {SECRET}"]


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SSHHost]:
    web = fd.container("demo-web-v1", "running", "registry.lab:5000/demo-app:v1", **WEB, version="v1")
    ssh = SSHHost.start(tmp_path, {"containers": [{**web, "logs": LINES}]})
    blueprint = tmp_path / "blueprint.yml"
    blueprint.write_text(BLUEPRINT)
    home = tmp_path / "csdeploy-home"
    ssh.environment(home, blueprint)
    monkeypatch.setenv("CSDEPLOY_HOME", str(home))
    monkeypatch.setenv("API_TOKEN", SECRET)   # where the server finds the blueprint's secret
    try:
        yield ssh
    finally:
        ssh.stop()


async def test_a_viewer_reads_the_last_lines_of_a_role_with_its_secrets_replaced(served: Served,
                                                                                 host: SSHHost) -> None:
    resp = await served.client.get("/api/environments/demo/logs?role=web&lines=3", headers=served.auth("vera"))
    assert resp.status == 200, await resp.text()
    text = await resp.text()
    assert SECRET not in text
    shown = await resp.json()
    assert shown["lines"] == ["demo-web-1 | GET /6 200", "demo-web-1 | GET /7 200",
                              "demo-web-1 | connecting with token [REDACTED]"]
    resp = await served.client.get("/api/environments/demo/logs?role=web&lines=2&since=30m",
                                   headers=served.auth("vera"))
    assert resp.status == 200, await resp.text()
    assert ["logs", "--tail", "2", "--since", "1800s", "demo-web-v1"] in host.docker_state()["calls"]


async def test_logs_refuse_bad_input_and_need_a_token(served: Served, host: SSHHost) -> None:
    assert (await served.client.get("/api/environments/demo/logs?role=web")).status == 401
    for query, said in (("role=web;id", "role"), ("role=", "role"), ("role=web&lines=0", "lines: 1 to 10000"),
                        ("role=web&lines=many", "lines: a number"), ("role=web&since=soon", "since")):
        resp = await served.client.get(f"/api/environments/demo/logs?{query}", headers=served.auth("vera"))
        assert resp.status == 400 and said in (await resp.json())["error"], (query, await resp.text())
    resp = await served.client.get("/api/environments/demo/logs?role=nosuch", headers=served.auth("vera"))
    assert resp.status == 400 and "nosuch" in (await resp.json())["error"], await resp.text()
    calls = host.docker_state().get("calls", [])
    assert not [c for c in calls if c[:1] == ["logs"]], "bad input reached the host"


def test_the_cli_shows_the_same_lines_and_passes_since(host: SSHHost) -> None:
    from tests.support.cli import cli

    shown = cli("logs", "--env", "demo", "--role", "web", "-n", "2", "--since", "1h")
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert len(lines) == 2 and lines[0] == "demo-web-1 | GET /7 200", lines
    assert ["logs", "--tail", "2", "--since", "3600s", "demo-web-v1"] in host.docker_state()["calls"]
    bad = cli("logs", "--env", "demo", "--role", "web", "--since", "soon")
    assert bad.exit_code == 2 and "--since" in bad.stderr, bad.output
