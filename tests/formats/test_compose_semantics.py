"""Compose as Compose reads it, and accessories as their official images read their
environment: profiles, extends, env_file, --env-file, nested interpolation, health check
forms, depends_on conditions, resources, proxy roles by what a service serves, image
families and their env contracts.

The env rules are the official images' docker-entrypoint.sh: postgres refuses to start
without POSTGRES_PASSWORD unless POSTGRES_HOST_AUTH_METHOD=trust; every `file_env NAME`
refuses NAME next to NAME_FILE; MariaDB reads MYSQL_* as aliases of MARIADB_*; mongo needs
MONGO_INITDB_ROOT_USERNAME and _PASSWORD together.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cloudstack_deploy.accessories import env_needs, kind_of
from cloudstack_deploy.blueprint import BlueprintError, load_blueprint
from cloudstack_deploy.formats import init_blueprint
from cloudstack_deploy.formats.kinds import http_check

from .test_cli import csdeploy


def _init(tmp_path: Path, text: str, **kw: Any):
    source = tmp_path / "compose.yaml"
    source.write_text(text)
    out = tmp_path / "csdeploy.yml"
    result = init_blueprint(out, compose=source, **kw)
    assert load_blueprint(out) == result.blueprint
    return result, "\n".join(str(n) for n in result.notes)


def test_services_in_a_profile_are_left_out_unless_it_is_active(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COMPOSE_PROFILES", raising=False)
    text = ("services:\n  web:\n    image: acme/web:1\n    ports: ['8080:8080']\n"
            "    depends_on: [debug]\n"
            "  debug:\n    image: acme/debug:1\n    profiles: [debug]\n")
    result, notes = _init(tmp_path, text)
    assert list(result.blueprint.roles) == ["web"]
    assert "compose.yaml:8: services.debug.profiles: in profile(s) debug, none of them active" in notes
    assert "compose.yaml:5: services.web.depends_on: depends on debug, which is not imported" in notes
    result, _ = _init(tmp_path / "", text.replace("8080", "8081"), profiles=["debug"], force=True)
    assert list(result.blueprint.roles) == ["debug", "web"]
    monkeypatch.setenv("COMPOSE_PROFILES", "debug")
    result, _ = _init(tmp_path, text, force=True)
    assert "debug" in result.blueprint.roles


def test_extends_merges_the_base_service_of_this_file_and_of_another(tmp_path: Path) -> None:
    (tmp_path / "common.yml").write_text("services:\n  app:\n    image: acme/app:2\n"
                                         "    environment: {LOG_LEVEL: info, MODE: base}\n")
    result, notes = _init(tmp_path, (
        "services:\n"
        "  base:\n    image: acme/app:1\n    environment: [MODE=base, KEEP=yes]\n    ports: ['3000:3000']\n"
        "  web:\n    extends: base\n    environment: {MODE: web}\n"
        "  jobs:\n    extends: {file: common.yml, service: app}\n    command: bin/jobs\n"))
    web, jobs = result.blueprint.roles["web"], result.blueprint.roles["jobs"]
    assert web.env.clear == {"MODE": "web", "KEEP": "yes"} and web.proxy is not None and web.proxy.app_port == 3000
    assert jobs.env.clear == {"LOG_LEVEL": "info", "MODE": "base"} and jobs.cmd == ("bin/jobs",)
    assert "extends service app of common.yml: merged in" in notes
    with pytest.raises(BlueprintError, match=r"compose.yaml:7: services.b.extends: extends cycle: a -> b -> a"):
        _init(tmp_path, "services:\n  a:\n    image: x/y:1\n    extends: b\n  b:\n    image: x/y:1\n    extends: a\n",
              force=True)


def test_env_file_values_are_clear_or_secret_by_the_same_rules_and_environment_wins(tmp_path: Path) -> None:
    (tmp_path / "app.env").write_text("# app settings\nLOG_LEVEL=debug\nAPI_TOKEN=tok-123-not-copied\n"
                                      "MODE=from-file\n")
    result, notes = _init(tmp_path, (
        "services:\n  web:\n    image: acme/web:1\n    ports: ['80:80']\n"
        "    env_file: [app.env, {path: local.env, required: false}]\n    environment: {MODE: web}\n"))
    web = result.blueprint.roles["web"]
    assert web.env.clear == {"LOG_LEVEL": "debug", "MODE": "web"} and web.env.secret == ("API_TOKEN",)
    assert "tok-123-not-copied" not in (tmp_path / "csdeploy.yml").read_text()
    assert "compose.yaml:5: services.web.env_file[1]: env file local.env is not here (required: false)" in notes


def test_env_file_option_replaces_the_dot_env_and_a_missing_one_is_refused(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("TAG=from-dot-env\n")
    (tmp_path / "prod.env").write_text("TAG=from-prod\nDB_USER=shop\n")
    (tmp_path / "compose.yaml").write_text(
        "services:\n  web:\n    image: acme/web:1\n    ports: ['80:80']\n    environment: {RELEASE: '${TAG}'}\n"
        "  db:\n    image: postgres:16\n    environment: {POSTGRES_USER: '${DB_USER:-x}', POSTGRES_DB: '${DB_NAME:-${DB_USER}}'}\n")
    proc = csdeploy("init", "--from-compose", "compose.yaml", "--env-file", "prod.env", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    bp = load_blueprint(tmp_path / "csdeploy.yml")
    assert bp.roles["web"].env.clear["RELEASE"] == "from-prod"
    assert bp.accessories["db"].env.clear == {"POSTGRES_USER": "shop", "POSTGRES_DB": "shop"}
    assert bp.secrets_file is not None and Path(bp.secrets_file).name == "prod.env"
    proc = csdeploy("init", "--from-compose", "compose.yaml", "--env-file", "nope.env", "--out", "b.yml",
                    cwd=tmp_path)
    assert proc.returncode == 2 and "nope.env: no such env file" in proc.stderr
    assert not (tmp_path / "b.yml").exists()


def test_a_required_variable_nested_in_a_default_is_refused_with_the_line(tmp_path: Path) -> None:
    source = tmp_path / "compose.yaml"
    source.write_text("services:\n  web:\n    image: acme/web:1\n    ports: ['80:80']\n"
                      "    environment:\n      URL: ${CSD_T_URL:-${CSD_T_HOST:?set CSD_T_HOST or CSD_T_URL}}\n")
    proc = csdeploy("init", "--from-compose", "compose.yaml", cwd=tmp_path)
    assert proc.returncode == 2
    assert ("compose.yaml:6: services.web.environment.URL: required variable CSD_T_HOST is not set: set CSD_T_HOST "
            "or CSD_T_URL") in proc.stderr
    assert not (tmp_path / "csdeploy.yml").exists()
    (tmp_path / ".env").write_text("CSD_T_HOST=example.test\n")
    result, _ = _init(tmp_path, source.read_text().replace("${CSD_T_URL:-${CSD_T_HOST", "https://${CSD_T_URL:-${CSD_T_HOST"))
    assert result.blueprint.roles["web"].env.clear["URL"] == "https://example.test"


@pytest.mark.parametrize(("test", "path", "port"), [
    (["CMD", "curl", "-f", "http://localhost:8000/healthz"], "/healthz", 8000),
    (["CMD-SHELL", "wget -qO- 127.0.0.1:8000/ready || exit 1"], "/ready", 8000),
    ("curl -fsS --noproxy localhost localhost:8000/api/health | grep ok", "/api/health", 8000),
    (["CMD", "wget", "--spider", "-q", "http://0.0.0.0:8000/"], "/", 8000),
])
def test_health_checks_of_every_common_form_give_kamal_proxy_their_path(
        tmp_path: Path, test: Any, path: str, port: int) -> None:
    import json

    result, _ = _init(tmp_path, "services:\n  api:\n    image: acme/api:1\n    ports: ['8000:8000']\n"
                                f"    healthcheck:\n      test: {json.dumps(test)}\n      interval: 5s\n")
    proxy = result.blueprint.roles["api"].proxy
    assert proxy is not None and (proxy.app_port, proxy.healthcheck.path, proxy.healthcheck.interval) == (port, path, 5)
    assert http_check("pg_isready -h localhost") is None and http_check("ps aux | grep localhost:3000") is None


def test_proxy_roles_come_from_published_http_ports_not_names(tmp_path: Path) -> None:
    """`web` publishing only SMTP is a worker; `admin` and `api` serving HTTP are both proxy
    roles, each with its own port; a check on another port than the first published one wins."""
    result, notes = _init(tmp_path, (
        "services:\n"
        "  web:\n    image: acme/mail:1\n    ports: ['25:25']\n"
        "  admin:\n    image: acme/admin:1\n    ports: ['9000:9000']\n"
        "  api:\n    image: acme/api:1\n    ports: ['9464:9464', '8080:8080']\n"
        "    healthcheck: {test: 'curl -f localhost:8080/up'}\n"
        "    deploy: {resources: {limits: {cpus: '0.5', memory: 512M}, reservations: {memory: 128m}}}\n"))
    roles = result.blueprint.roles
    assert roles["web"].proxy is None and "services.web.ports[0]: not an HTTP port" in notes
    assert roles["admin"].proxy is not None and roles["admin"].proxy.app_port == 9000
    assert roles["api"].proxy is not None and roles["api"].proxy.app_port == 8080
    res = roles["api"].container.resources
    assert res is not None and (res.cpus, res.memory, res.memory_reservation) == (0.5, 512 << 20, 128 << 20)


def test_depends_on_conditions_are_kept_as_start_order(tmp_path: Path) -> None:
    result, notes = _init(tmp_path, (
        "services:\n  web:\n    image: acme/web:1\n    ports: ['80:80']\n"
        "    depends_on: {migrate: {condition: service_completed_successfully}, db: {condition: service_healthy}}\n"
        "  migrate:\n    image: acme/web:1\n    command: bin/migrate\n"
        "  db:\n    image: postgres:16\n    environment: {POSTGRES_PASSWORD: x}\n"))
    assert list(result.blueprint.roles) == ["migrate", "web"]
    assert "services.web.depends_on.migrate: condition service_completed_successfully: kept as start order" in notes


def test_an_undefined_named_volume_is_refused_as_compose_refuses_it(tmp_path: Path) -> None:
    with pytest.raises(BlueprintError, match=r"compose.yaml:5: services.web.volumes\[0\]: refers to undefined "
                                             r"volume 'uploads'"):
        _init(tmp_path, "services:\n  web:\n    image: acme/web:1\n    ports: ['80:80']\n"
                        "    volumes: ['uploads:/srv/uploads']\n")
    assert not (tmp_path / "csdeploy.yml").exists()


@pytest.mark.parametrize(("image", "kind"), [
    ("pgvector/pgvector:pg16", "postgres"), ("postgis/postgis:16-3.4", "postgres"),
    ("timescale/timescaledb:latest-pg16", "postgres"), ("bitnami/postgresql:16", "postgres"),
    ("ghcr.io/immich-app/postgres:14", "postgres"), ("mariadb:11", "mariadb"), ("mysql:8", "mysql"),
    ("redis/redis-stack:latest", "redis"), ("redislabs/redismod", "redis"), ("eqalpha/keydb", "redis"),
    ("valkey/valkey:8", "valkey"), ("mongo:7", "mongo"), ("bitnami/mongodb:7", "mongo"),
    ("docker.elastic.co/elasticsearch/elasticsearch:8.15.0", "elasticsearch"),
    ("opensearchproject/opensearch:2", "opensearch"), ("rabbitmq:3-management", "rabbitmq"),
    ("quay.io/minio/minio", "minio"), ("memcached:1.6", "memcached"), ("nginx:1.27", None),
    ("acme/postgres-backup:1", None),
])
def test_accessory_kinds_by_image_family(image: str, kind: str | None) -> None:
    found = kind_of(image)
    assert (found.name if found else None) == kind
    if image.startswith("bitnami/postgresql"):
        assert found is not None and found.data == "/bitnami/postgresql"


def test_env_contracts_follow_the_official_images() -> None:
    pg, maria, mongo = kind_of("postgres:16"), kind_of("mariadb:11"), kind_of("mongo:7")
    assert pg and maria and mongo
    assert env_needs(pg, {"POSTGRES_HOST_AUTH_METHOD": "trust"}, []).add_secret == ()
    assert env_needs(pg, {}, []).add_secret == ("POSTGRES_PASSWORD",)
    both = env_needs(pg, {"POSTGRES_PASSWORD_FILE": "/run/pw"}, ["POSTGRES_PASSWORD"])
    assert both.drop == ("POSTGRES_PASSWORD",) and both.add_secret == ()
    assert env_needs(maria, {}, ["MYSQL_ROOT_PASSWORD"]).add_secret == ()
    assert env_needs(maria, {"MARIADB_RANDOM_ROOT_PASSWORD": "1"}, []).add_secret == ()
    assert env_needs(maria, {}, []).add_secret == ("MARIADB_ROOT_PASSWORD",)
    assert env_needs(mongo, {}, []).add_secret == () and env_needs(mongo, {}, []).add_clear == ()
    assert env_needs(mongo, {"MONGO_INITDB_ROOT_USERNAME": "root"}, []).add_secret == ("MONGO_INITDB_ROOT_PASSWORD",)
    assert env_needs(mongo, {}, ["MONGO_INITDB_ROOT_PASSWORD"]).add_clear == (("MONGO_INITDB_ROOT_USERNAME", "admin"),)


def test_an_accessory_given_name_and_name_file_keeps_only_the_file(tmp_path: Path) -> None:
    result, notes = _init(tmp_path, (
        "services:\n  web:\n    image: acme/web:1\n    ports: ['80:80']\n"
        "  db:\n    image: postgres:16\n    environment:\n      POSTGRES_PASSWORD: ${PW}\n"
        "      POSTGRES_PASSWORD_FILE: /etc/pg/password\n      POSTGRES_HOST_AUTH_METHOD: scram-sha-256\n"))
    db = result.blueprint.accessories["db"]
    assert "POSTGRES_PASSWORD" not in db.env.secret and "POSTGRES_PASSWORD" not in db.env.clear
    assert db.env.clear == {"POSTGRES_PASSWORD_FILE": "/etc/pg/password", "POSTGRES_HOST_AUTH_METHOD": "scram-sha-256"}
    assert "POSTGRES_PASSWORD dropped: the postgres image refuses it next to POSTGRES_PASSWORD_FILE" in notes


def test_a_value_from_a_secret_variable_stays_a_secret_name(tmp_path: Path) -> None:
    """`SETTING: ${SECRET_KEY_BASE}` is known from the .env file, but its variable is a secret:
    the value is never written, under any key."""
    (tmp_path / ".env").write_text("SECRET_KEY_BASE=kb-not-to-be-written\nDB_URL=postgres://u:pw-not-written@db/x\n")
    result, _ = _init(tmp_path, "services:\n  web:\n    image: acme/web:1\n    ports: ['80:80']\n"
                                "    environment: {SETTING: '${SECRET_KEY_BASE}', TARGET: '${DB_URL}'}\n")
    web = result.blueprint.roles["web"]
    assert set(web.env.secret) == {"SETTING", "TARGET"} and not web.env.clear
    text = (tmp_path / "csdeploy.yml").read_text()
    assert "kb-not-to-be-written" not in text and "pw-not-written" not in text
