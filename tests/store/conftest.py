"""Store fixtures: every store test runs on SQLite and on a real PostgreSQL server.

The PostgreSQL server is Debian's (``/usr/lib/postgresql/N/bin``), one throwaway cluster per
test process, shared with the other packages' tests (see `pgserver.py`); each test gets a
database of its own. Without the binaries the PostgreSQL half is skipped on a developer's machine and fails in CI
(``CI`` set), where ``scripts/lab-prereqs --test`` installs them.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

from .pgserver import PgServer, bindir, shared_pg_server


@pytest.fixture(scope="session")
def postgres(request: pytest.FixtureRequest) -> PgServer:
    if bindir() is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed: scripts/lab-prereqs --test installs it")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    return shared_pg_server(request.config)


def fresh_database(server: PgServer) -> str:
    import psycopg

    name = "t_" + secrets.token_hex(6)
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return server.url_for(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of an empty store: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'history.db'}"
    return fresh_database(request.getfixturevalue("postgres"))
