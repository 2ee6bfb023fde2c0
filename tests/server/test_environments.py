"""Environments through the API against the memory simulator: an admin creates one from a
blueprint of the server's directory and tears it down (real service.create_env / teardown in
the worker); a deployer may do neither; a blueprint outside the directory is refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from cloudstack_deploy.lab.simulator.server import ThreadedSimulator
from cloudstack_deploy.server import access, queue
from cloudstack_deploy.server.app import make_app
from cloudstack_deploy.server.worker import Worker
from cloudstack_deploy.store.db import Store
from tests.support.sim import KEY, SECRET, make_config

BLUEPRINTS = Path(__file__).resolve().parents[2] / "blueprints"


@pytest.fixture
async def admin_client(sqlite_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                       ) -> AsyncIterator[tuple[TestClient, dict[str, str], dict[str, str]]]:
    with ThreadedSimulator(make_config()) as sim:
        for name, value in {"CLOUDSTACK_ENDPOINT": sim.endpoint, "CLOUDSTACK_KEY": KEY, "CLOUDSTACK_SECRET": SECRET,
                            "CLOUDSTACK_POLL_INTERVAL": "0.05", "CSDEPLOY_HOME": str(tmp_path / "home")}.items():
            monkeypatch.setenv(name, value)
        admin = access.create_token(sqlite_store, name="ada", role="admin")[1]
        deployer = access.create_token(sqlite_store, name="dan", role="deployer")[1]
        worker = Worker(sqlite_store, poll=0.05, heartbeat=0.2)
        app = make_app(sqlite_store, worker=worker, blueprints=BLUEPRINTS)
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            yield client, {"Authorization": f"Bearer {admin}"}, {"Authorization": f"Bearer {deployer}"}


async def _finished(client: TestClient, auth: dict[str, str], job_id: str) -> dict[str, Any]:
    for _ in range(600):
        job = (await (await client.get(f"/api/jobs/{job_id}", headers=auth)).json())["job"]
        if job["status"] in queue.FINISHED:
            return job
        await asyncio.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish")


async def test_an_admin_creates_and_tears_down_an_environment(admin_client: Any) -> None:
    client, admin, deployer = admin_client
    ask = {"env": "team-a", "blueprint": "demo.yml", "ttl": "2h"}
    assert (await client.post("/api/environments", json=ask, headers=deployer)).status == 403
    for bad in ("../pyproject.toml", "/etc/passwd", "nope.yml"):
        resp = await client.post("/api/environments", json={**ask, "blueprint": bad}, headers=admin)
        assert resp.status == 400, bad
    resp = await client.post("/api/environments", json=ask, headers=admin)
    assert resp.status == 202
    job = await _finished(client, admin, (await resp.json())["job"]["id"])
    assert job["status"] == "succeeded", job
    assert job["result"]["hosts"] == ["team-a-web-1", "team-a-worker-1", "team-a-db-1"]
    envs = (await (await client.get("/api/environments", headers=deployer)).json())["environments"]
    assert [e["env"] for e in envs] == ["team-a"]
    shown = await (await client.get("/api/environments/team-a", headers=deployer)).json()
    assert shown["inventory"]["roles"] == {"web": ["team-a-web-1"], "worker": ["team-a-worker-1"],
                                           "db": ["team-a-db-1"]}
    assert (await client.delete("/api/environments/team-a", headers=deployer)).status == 403
    resp = await client.delete("/api/environments/team-a", headers=admin)
    job = await _finished(client, admin, (await resp.json())["job"]["id"])
    assert job["status"] == "succeeded", job
    assert (await (await client.get("/api/environments", headers=admin)).json())["environments"] == []
