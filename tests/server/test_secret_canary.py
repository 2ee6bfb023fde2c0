"""The cloud's secret key and the blueprint's secrets stay on the server: a canary value set as
each is in no API answer and in no line of the server's log, whatever the request (a real
`csdeploy -v serve` process; a real deploy job against the simulator, failing at SSH; a bad
request quoting the value back)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import requests

from cloudstack_deploy.lab.simulator.server import ThreadedSimulator
from cloudstack_deploy.server import access
from cloudstack_deploy.store.db import Store
from cloudstack_deploy.store.url import parse_store_url
from tests.support.sim import KEY, make_config

from .servers import serve_process

CLOUD_SECRET = "CANARY-cloud-3f9a1c"
DB_PASSWORD = "CANARY-db-77e2b0"
REGISTRY_PASSWORD = "CANARY-reg-1d5c44"
DEMO = Path(__file__).resolve().parents[2] / "blueprints" / "demo.yml"


@pytest.fixture
def sim() -> ThreadedSimulator:
    with ThreadedSimulator(make_config(secret_key=CLOUD_SECRET)) as simulator:
        yield simulator


def test_no_answer_and_no_log_line_carries_a_secret(sim: ThreadedSimulator, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    env = {"CLOUDSTACK_ENDPOINT": sim.endpoint, "CLOUDSTACK_KEY": KEY, "CLOUDSTACK_SECRET": CLOUD_SECRET,
           "CLOUDSTACK_POLL_INTERVAL": "0.05", "CSDEPLOY_HOME": str(home),
           "CSDEPLOY_STATE_URL": f"sqlite:///{tmp_path / 'history.db'}",
           "POSTGRES_PASSWORD": DB_PASSWORD, "REGISTRY_PASSWORD": REGISTRY_PASSWORD}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    from cloudstack_deploy import load_blueprint, service  # type: ignore[attr-defined]

    asyncio.run(service.create_env(load_blueprint(DEMO), "dev-x", skip_rollout=True, blueprint_path=str(DEMO)))
    parsed = parse_store_url(env["CSDEPLOY_STATE_URL"])
    assert parsed is not None
    with Store(parsed) as store:
        token = access.create_token(store, name="ada", role="admin")[1]
    auth = {"Authorization": f"Bearer {token}"}
    answers: list[str] = []
    with serve_process(env, tmp_path / "serve.log", "--heartbeat", "0.2", verbose=2) as server:
        def get(path: str) -> requests.Response:
            resp = requests.get(server.url + path, headers=auth, timeout=60)
            answers.append(resp.text)
            return resp

        listed = get("/api/environments")
        assert listed.status_code == 200, (listed.text, server.output())
        assert listed.json()["environments"][0]["env"] == "dev-x"
        resp = get("/api/environments/dev-x")
        assert resp.status_code == 200, (resp.text, server.output()[-3000:])
        shown = resp.json()
        assert [h["name"] for h in shown["inventory"]["hosts"]] == ["dev-x-web-1", "dev-x-worker-1", "dev-x-db-1"]
        resp = requests.post(server.url + "/api/deployments", json={"env": "dev-x", "version": "v1"}, headers=auth,
                             timeout=10)
        answers.append(resp.text)
        job = resp.json()["job"]["id"]
        deadline = time.monotonic() + 90
        while get(f"/api/jobs/{job}").json()["job"]["status"] in ("queued", "running"):
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.3)
        assert get(f"/api/jobs/{job}").json()["job"]["status"] == "failed"   # no SSH on a memory VM
        get(f"/api/jobs/{job}/events")
        resp = requests.post(server.url + "/api/deployments", json={"env": "dev-x", "version": CLOUD_SECRET + " x"},
                             headers=auth, timeout=10)
        assert resp.status_code == 400
        answers.append(resp.text)
        for path in ("/api/deployments", "/api/jobs", "/api/audit", "/api/tokens", "/api/whoami",
                     "/api/openapi.json"):
            assert get(path).status_code == 200, path
    log = server.output()
    assert "csdeploy serve" in log and "job start" in log and "command=listTags" in log  # -vv says a lot
    for secret in (CLOUD_SECRET, DB_PASSWORD, REGISTRY_PASSWORD):
        assert [a for a in answers if secret in a] == [], secret
        assert secret not in log, secret
