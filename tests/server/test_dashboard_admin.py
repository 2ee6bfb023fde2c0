"""The dashboard's create and teardown, admins only: each asks once more (a confirmation page;
a teardown wants the environment's name typed) and then queues a job like a deploy, which the
worker runs with the real service functions against the memory simulator. Viewers and
deployers see neither button, and the server refuses the forms they post anyway."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from cloudstack_deploy.lab.simulator.server import ThreadedSimulator
from cloudstack_deploy.server import access
from cloudstack_deploy.server.app import make_app
from cloudstack_deploy.server.worker import Worker
from cloudstack_deploy.store.db import Store
from tests.support.sim import KEY, SECRET, make_config

from .test_environments import BLUEPRINTS, _finished


@pytest.fixture
async def site(sqlite_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
               ) -> AsyncIterator[tuple[TestClient, dict[str, str], Store]]:
    with ThreadedSimulator(make_config()) as sim:
        for name, value in {"CLOUDSTACK_ENDPOINT": sim.endpoint, "CLOUDSTACK_KEY": KEY, "CLOUDSTACK_SECRET": SECRET,
                            "CLOUDSTACK_POLL_INTERVAL": "0.05", "CSDEPLOY_HOME": str(tmp_path / "home")}.items():
            monkeypatch.setenv(name, value)
        tokens = {name: access.create_token(sqlite_store, name=name, role=role)[1]
                  for name, role in (("ada", "admin"), ("dan", "deployer"), ("vera", "viewer"))}
        app = make_app(sqlite_store, worker=Worker(sqlite_store, poll=0.05, heartbeat=0.2), blueprints=BLUEPRINTS)
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            yield client, tokens, sqlite_store


async def _login(client: TestClient, token: str) -> str:
    """Log in; the home page's CSRF token."""
    client.session.cookie_jar.clear()
    assert (await client.post("/login", data={"token": token}, allow_redirects=False)).status == 303
    return _csrf(await (await client.get("/")).text())


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


def _jobs(store: Store) -> list[tuple[str, str]]:
    return [(j["kind"], j["env"]) for j in store.query("SELECT kind, env FROM jobs ORDER BY created_at")]


async def test_an_admin_creates_and_tears_down_from_the_dashboard_after_confirming(site: Any) -> None:
    client, tokens, store = site
    admin = {"Authorization": f"Bearer {tokens['ada']}"}
    csrf = await _login(client, tokens["ada"])
    home = await (await client.get("/")).text()
    assert 'id="create-form"' in home and '<option value="demo.yml">' in home
    ask = {"blueprint": "demo.yml", "env": "team-b", "ttl": "2h"}
    assert (await client.post("/create", data=ask, allow_redirects=False)).status == 403   # no CSRF token
    for bad in ({**ask, "blueprint": "../pyproject.toml"}, {**ask, "env": "Not A Name"}, {**ask, "ttl": "soon"}):
        assert (await client.post("/create", data={**bad, "csrf": csrf}, allow_redirects=False)).status == 400, bad
    confirm = await client.post("/create", data={**ask, "csrf": csrf}, allow_redirects=False)
    assert confirm.status == 200
    page = await confirm.text()
    assert "Create environment <strong>team-b</strong> from demo.yml" in page and 'name="confirmed"' in page
    assert _jobs(store) == [], "asking is not doing"
    resp = await client.post("/create", data={**ask, "csrf": csrf, "confirmed": "yes"}, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"].startswith("/jobs/")
    job = await _finished(client, admin, resp.headers["Location"].rsplit("/", 1)[1])
    assert job["status"] == "succeeded" and job["requested_by"] == "ada", job
    assert "team-b" in await (await client.get("/")).text()

    env_page = await (await client.get("/envs/team-b")).text()
    assert 'id="teardown-form"' in env_page
    resp = await client.post("/envs/team-b/teardown", data={"csrf": csrf}, allow_redirects=False)
    assert resp.status == 200 and "Type its name to confirm" in await resp.text()
    resp = await client.post("/envs/team-b/teardown", data={"csrf": csrf, "confirm": "team-c"}, allow_redirects=False)
    assert resp.status == 200 and "team-c is not the environment" in await resp.text()
    assert _jobs(store) == [("create", "team-b")]
    resp = await client.post("/envs/team-b/teardown", data={"csrf": csrf, "confirm": "team-b"}, allow_redirects=False)
    assert resp.status == 303
    job = await _finished(client, admin, resp.headers["Location"].rsplit("/", 1)[1])
    assert job["status"] == "succeeded", job
    assert (await (await client.get("/api/environments", headers=admin)).json())["environments"] == []


@pytest.mark.parametrize("who", ["dan", "vera"])
async def test_others_see_no_create_or_teardown_and_posting_them_is_refused(site: Any, who: str) -> None:
    client, tokens, store = site
    csrf = await _login(client, tokens[who])
    home = await (await client.get("/")).text()
    assert "create-form" not in home and "Create" not in home
    assert "teardown-form" not in await (await client.get("/envs/team-b")).text()
    asked = {"csrf": csrf, "blueprint": "demo.yml", "env": "team-b", "confirmed": "yes"}
    assert (await client.post("/create", data=asked, allow_redirects=False)).status == 403
    resp = await client.post("/envs/team-b/teardown", data={"csrf": csrf, "confirm": "team-b"}, allow_redirects=False)
    assert resp.status == 403
    assert _jobs(store) == []
    denied = store.query("SELECT action, actor FROM audit_log WHERE outcome = 'denied' ORDER BY at")
    assert [(d["action"], d["actor"]) for d in denied] == [("create", who), ("teardown", who)]
