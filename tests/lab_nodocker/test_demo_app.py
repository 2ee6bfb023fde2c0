"""The demo app's code without Docker: configuration, URL encoding, routing, job messages.

The image-level behaviour (real PostgreSQL, Redis, kamal-proxy) is in test_images.py.
"""

from __future__ import annotations

import sys
import time
from urllib.parse import urlsplit

import pytest

from tests.support.lab import ASSETS

sys.path.insert(0, str(ASSETS / "demo"))

from demo import app, db, jobs  # noqa: E402

SPECIAL = "p@ss:w/rd%"


def test_build_url_encodes_every_part_and_parses_back() -> None:
    url = db.build_url("de mo@x", SPECIAL, "db", 5432, "my/db")
    assert url == "postgresql://de%20mo%40x:p%40ss%3Aw%2Frd%25@db:5432/my%2Fdb"
    assert urlsplit(url).hostname == "db"  # the '@' in the password did not move the host
    params = db.connect_params(url)
    assert params["user"] == "de mo@x"
    assert params["password"] == SPECIAL
    assert (params["host"], params["port"], params["dbname"]) == ("db", 5432, "my/db")


def test_database_url_from_postgres_variables_like_the_blueprint_env() -> None:
    env = {"POSTGRES_HOST": "db", "POSTGRES_USER": "demo", "POSTGRES_PASSWORD": SPECIAL,
           "POSTGRES_DB": "demo"}
    params = db.connect_params(db.database_url(env))
    assert params == {"host": "db", "port": 5432, "dbname": "demo", "user": "demo",
                      "password": SPECIAL, "connect_timeout": db.CONNECT_TIMEOUT}


def test_database_url_wins_over_postgres_variables_and_keeps_query_options() -> None:
    env = {"DATABASE_URL": "postgres://u:p%25@h:6543/d?sslmode=require", "POSTGRES_HOST": "other"}
    params = db.connect_params(db.database_url(env))
    assert params["host"] == "h" and params["port"] == 6543 and params["password"] == "p%"
    assert params["sslmode"] == "require"


def test_defaults_and_a_url_without_password() -> None:
    assert db.database_url({}) == "postgresql://postgres@localhost:5432/postgres"
    assert "password" not in db.connect_params(db.database_url({}))
    assert db.describe(db.build_url("demo", SPECIAL, "db", 5432, "demo")) == "demo@db:5432/demo"


def test_a_non_postgres_url_is_refused_with_a_hint() -> None:
    with pytest.raises(ValueError, match="postgresql://"):
        db.connect_params("mysql://u:p@h/d")


def test_redis_url_from_parts_encodes_the_password() -> None:
    assert jobs.redis_url({}) == "redis://localhost:6379/0"
    assert jobs.redis_url({"REDIS_HOST": "redis", "REDIS_PASSWORD": "a@b"}) == "redis://:a%40b@redis:6379/0"
    assert jobs.redis_url({"REDIS_URL": "redis://x:1/2", "REDIS_HOST": "y"}) == "redis://x:1/2"


def test_job_messages_round_trip_and_garbage_is_refused() -> None:
    job = jobs.new_job("hello", "web-1", "v1")
    assert len(job["id"]) == 32
    assert jobs.decode(jobs.encode(job)) == job
    done = jobs.process(job, "worker-1", "v2")
    assert done == {"id": job["id"], "payload": "hello", "result": "HELLO",
                    "processed_by": "worker-1", "version": "v2"}
    for raw in (b"[]", b'{"payload": "x"}', b"not json"):
        with pytest.raises(ValueError):
            jobs.decode(raw)


@pytest.mark.parametrize(("method", "path", "expected"), [
    ("GET", "/up", ("up", {})),
    ("HEAD", "/up", ("up", {})),
    ("GET", "/?x=1", ("index", {})),
    ("POST", "/jobs", ("enqueue", {})),
    ("GET", "/jobs/" + "a" * 32, ("job", {"job_id": "a" * 32})),
    ("GET", "/jobs/../etc", None),
    ("POST", "/notes", ("add_note", {})),
    ("GET", "/notes", ("notes", {})),
    ("DELETE", "/notes", ("method_not_allowed", {})),
    ("GET", "/nope", None),
])
def test_routes(method: str, path: str, expected: object) -> None:
    assert app.route(method, path) == expected


def test_health_is_ok_except_for_the_broken_version_and_needs_no_database() -> None:
    env = {"POSTGRES_HOST": "127.0.0.1", "POSTGRES_PORT": "9"}
    assert app.App({**env, "APP_VERSION": "v1"}).handle("GET", "/up")[0] == 200
    assert app.App({**env, "APP_VERSION": "broken"}).handle("GET", "/up")[0] == 500


def test_degrading_passes_its_health_check_but_fails_its_pages_after_a_while() -> None:
    env = {"POSTGRES_HOST": "127.0.0.1", "POSTGRES_PORT": "9", "REDIS_URL": "redis://127.0.0.1:9/0"}
    demo = app.App({**env, "APP_VERSION": "degrading", "DEGRADE_AFTER": "0.2"})
    assert demo.handle("GET", "/")[0] == 200
    time.sleep(0.3)
    status, _, body = demo.handle("GET", "/")
    assert status == 500 and body.startswith(b"demo degrading\n")
    assert demo.handle("GET", "/up")[0] == 200
    steady = app.App({**env, "APP_VERSION": "v2", "DEGRADE_AFTER": "0"})
    time.sleep(0.05)
    assert steady.handle("GET", "/")[0] == 200


def test_unknown_paths_and_methods() -> None:
    demo = app.App({"APP_VERSION": "v1"})
    assert demo.handle("GET", "/missing")[0] == 404
    assert demo.handle("PUT", "/jobs")[0] == 405
    assert demo.handle("POST", "/notes", b"   ")[0] == 400


def test_index_shows_version_and_host_even_when_dependencies_are_down() -> None:
    demo = app.App({"APP_VERSION": "v2", "POSTGRES_HOST": "127.0.0.1", "POSTGRES_PORT": "9",
                    "POSTGRES_PASSWORD": SPECIAL, "REDIS_URL": "redis://127.0.0.1:9/0"})
    status, ctype, body = demo.handle("GET", "/")
    text = body.decode()
    assert status == 200 and ctype == "text/plain"
    assert text.startswith("demo v2\n") and f"host: {demo.hostname}" in text
    assert "db: error" in text and "redis: error" in text
    assert SPECIAL not in text
