"""Team-server fixtures: the application in this process (aiohttp's test server on loopback)
over a SQLite store of the test's own, with a fast worker; tokens of each role.

The PostgreSQL fixtures (``postgres``, ``store_url``) are the store tests' (a real server)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from cloudstack_deploy.server import access, queue
from cloudstack_deploy.server.app import make_app
from cloudstack_deploy.server.worker import RUNNERS, Worker
from cloudstack_deploy.store.db import Store
from cloudstack_deploy.store.url import parse_store_url
from tests.server.fakes import fake_deploy
from tests.store.conftest import fresh_database, postgres, store_url  # noqa: F401 - fixtures

__all__ = ["Served", "fresh_database"]


@dataclass
class Served:
    client: TestClient
    store: Store
    tokens: dict[str, str]   # name -> token text

    def auth(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[name]}"}


@pytest.fixture
def sqlite_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    url = f"sqlite:///{tmp_path / 'history.db'}"
    monkeypatch.setenv("CSDEPLOY_STATE_URL", url)
    store_ = parse_store_url(url)
    assert store_ is not None
    with Store(store_) as store:
        yield store


@pytest.fixture
async def served(sqlite_store: Store) -> AsyncIterator[Served]:
    tokens = {}
    for name, role, prefix in (("vera", "viewer", None), ("dan", "deployer", "dev-"), ("ada", "admin", None)):
        tokens[name] = access.create_token(sqlite_store, name=name, role=role, env_prefix=prefix)[1]
    fake = fake_deploy(sqlite_store.url)
    runners = {**RUNNERS, "deploy": fake, "rollback": fake}
    worker = Worker(sqlite_store, kinds=queue.KINDS + queue.TEST_KINDS, poll=0.05, heartbeat=0.1,
                    stale_after=5, runners=runners)
    app = make_app(sqlite_store, worker=worker, test_jobs=True)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield Served(client, sqlite_store, tokens)
