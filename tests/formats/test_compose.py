"""init --from-compose on files shaped like real projects, and on bad ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudstack_deploy.blueprint import BlueprintError, load_blueprint
from cloudstack_deploy.formats import init_blueprint

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "compose"


def _import(name: str, tmp_path: Path):
    out = tmp_path / "csdeploy.yml"
    result = init_blueprint(out, compose=FIXTURES / name)
    assert load_blueprint(out) == result.blueprint  # what was written is what validated
    return result, out.read_text()


def test_rails_web_postgres_redis_sidekiq(tmp_path: Path) -> None:
    result, text = _import("rails/docker-compose.yml", tmp_path)
    bp = result.blueprint
    assert list(bp.roles) == ["web", "sidekiq"]
    web, sidekiq = bp.roles["web"], bp.roles["sidekiq"]
    assert web.proxy is not None and web.proxy.app_port == 3000
    assert (web.proxy.healthcheck.path, web.proxy.healthcheck.interval, web.proxy.healthcheck.timeout) == ("/up", 10, 3)
    assert sidekiq.proxy is None and sidekiq.cmd == ("bundle", "exec", "sidekiq")
    assert web.env.clear["WEB_CONCURRENCY"] == "2" and "SECRET_KEY_BASE" in web.env.secret
    assert "DATABASE_URL" not in web.env.clear and "REDIS_URL" not in web.env.clear  # the rollout's contract
    db, redis = bp.accessories["db"], bp.accessories["redis"]
    assert db.vm is not None and db.port == 5432 and db.disk is not None and db.disk.mount == "/data/db"
    assert db.volumes == ("/data/db/postgres:/var/lib/postgresql/data",)
    assert db.env.clear == {"POSTGRES_USER": "shop", "POSTGRES_DB": "shop"} and db.env.secret == ("POSTGRES_PASSWORD",)
    assert redis.role == "web" and redis.disk is not None and redis.cmd == ("redis-server", "--appendonly", "yes")
    assert bp.image == "ghcr.io/acme/shop" and bp.registry is not None and bp.registry.server == "ghcr.io"
    assert bp.build is not None and bp.build_context().resolve() == FIXTURES / "rails"
    notes = [str(n) for n in result.notes]
    assert any("docker-compose.yml:26: services.web.restart" in n for n in notes)
    assert any("services.web.volumes[0]" in n and "bind mount" in n for n in notes)
    assert "Not carried over" in text and "services.web.restart" in text


def test_node_app_with_build_context_and_build_secret(tmp_path: Path) -> None:
    result, text = _import("node/docker-compose.yml", tmp_path)
    bp = result.blueprint
    assert bp.service == "storefront" and list(bp.roles) == ["frontend"]
    assert bp.build is not None and bp.build.dockerfile == "Dockerfile.prod" and bp.build.target == "runner"
    assert bp.build_context().resolve() == FIXTURES / "node" / "frontend"
    assert bp.build.secrets == ("NPM_TOKEN",) and bp.build.args == {"NODE_ENV": "production"}
    web = bp.roles["frontend"]
    assert web.proxy is not None and web.proxy.app_port == 3000 and web.proxy.healthcheck.path == "/api/health"
    assert set(web.env.secret) >= {"API_TOKEN", "SESSION_SECRET"}
    assert "dev-only-not-real" not in text  # a secret's literal value is never written
    assert bp.accessories["cache"].disk is None and bp.accessories["cache"].port == 11211


def test_django_with_celery_and_healthchecks(tmp_path: Path) -> None:
    result, text = _import("django/docker-compose.yml", tmp_path)
    bp = result.blueprint
    assert list(bp.roles) == ["web", "celery", "celery-beat"]  # depends_on order
    assert bp.roles["web"].proxy is not None and bp.roles["web"].proxy.healthcheck.path == "/healthz/"
    celery = bp.roles["celery"]
    assert celery.healthcheck is not None and celery.healthcheck.cmd == "celery -A mysite inspect ping"
    assert (celery.healthcheck.interval, celery.healthcheck.timeout) == (30, 10)
    pg = bp.accessories["postgres"]
    assert "POSTGRES_PASSWORD" in pg.env.secret and "POSTGRES_PASSWORD" not in pg.env.clear
    assert "POSTGRES_PASSWORD: django" not in text
    assert any("env_file" in str(n) for n in result.notes)
    assert any("CELERY_BROKER_URL" in str(n) and "'redis'" in str(n) for n in result.notes)


def test_anchors_and_extension_fields(tmp_path: Path) -> None:
    result, _ = _import("anchors/compose.yaml", tmp_path)
    bp = result.blueprint
    assert bp.roles["worker"].count == 2 and bp.roles["worker"].cmd == ("./api", "worker", "--queue", "default")
    assert bp.roles["scheduler"].env.clear["ROLE"] == "scheduler"
    assert all("STRIPE_API_KEY" in r.env.secret for r in bp.roles.values())
    assert set(bp.accessories) == {"mongo", "valkey", "mysql"}
    assert bp.accessories["mysql"].volumes == ("/data/mysql/mysql:/var/lib/mysql",)
    notes = [str(n) for n in result.notes]
    assert any(n.startswith(f"{FIXTURES / 'anchors/compose.yaml'}:1: x-app: extension field") for n in notes)


def _bad(tmp_path: Path, text: str) -> str:
    source = tmp_path / "docker-compose.yml"
    source.write_text(text)
    out = tmp_path / "csdeploy.yml"
    with pytest.raises(BlueprintError) as err:
        init_blueprint(out, compose=source)
    assert not out.exists()
    return str(err.value)


def test_unknown_version_names_file_and_line(tmp_path: Path) -> None:
    msg = _bad(tmp_path, "# a comment\nversion: '4.1'\nservices:\n  web: {image: nginx}\n")
    assert f"{tmp_path / 'docker-compose.yml'}:2: version: unknown Compose file version '4.1'" in msg


def test_service_without_image_or_build(tmp_path: Path) -> None:
    msg = _bad(tmp_path, "services:\n  web:\n    image: nginx\n  worker:\n    command: run\n")
    assert "docker-compose.yml:4: services.worker: has neither image nor build" in msg


def test_depends_on_cycle_and_yaml_errors(tmp_path: Path) -> None:
    msg = _bad(tmp_path, "services:\n  a: {image: x, depends_on: [b]}\n  b: {image: y, depends_on: [a]}\n")
    assert "depends_on cycle" in msg
    assert "YAML syntax error" in _bad(tmp_path, "services:\n  web: [\n")
    assert "unsupported YAML tag !reset" in _bad(tmp_path, "services:\n  web:\n    image: x\n    ports: !reset []\n")


def test_published_port_picks_the_proxy_role_and_order_follows_depends_on(tmp_path: Path) -> None:
    source = tmp_path / "compose.yaml"
    source.write_text("services:\n  jobs: {image: acme/app, command: work, depends_on: [web]}\n"
                      "  web: {image: acme/app, ports: ['8080:80']}\n")
    bp = init_blueprint(tmp_path / "bp.yml", compose=source).blueprint
    assert list(bp.roles) == ["web", "jobs"]
    assert bp.roles["web"].proxy is not None and bp.roles["web"].proxy.app_port == 80
    assert bp.roles["jobs"].proxy is None


def test_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    out = tmp_path / "csdeploy.yml"
    out.write_text("mine\n")
    with pytest.raises(Exception, match="already exists"):
        init_blueprint(out, compose=FIXTURES / "rails/docker-compose.yml")
    assert out.read_text() == "mine\n"
    init_blueprint(out, compose=FIXTURES / "rails/docker-compose.yml", force=True)
    assert load_blueprint(out).service == "rails"


def test_each_service_runs_its_own_image_builds_and_keeps_its_named_volumes(tmp_path: Path) -> None:
    """flask + nginx + a second build (an admin app) + a public image with a volume: the
    first build is the app's image; the second build is the admin role's own image (built with
    the same version); nginx keeps its tag; named volumes become role volumes, bind mounts are
    noted. Before, nginx ran `nginx:<version>`, the admin's code was not built, and gitea's
    repositories were dropped."""
    (tmp_path / "app").mkdir()
    (tmp_path / "admin").mkdir()
    source = tmp_path / "compose.yaml"
    source.write_text(
        "services:\n"
        "  web:\n    build: ./app\n    ports: ['8000:8000']\n    volumes: ['uploads:/srv/uploads', './app:/src']\n"
        "  admin:\n    build: {context: ./admin}\n    ports: ['9000:9000']\n"
        "  proxy:\n    image: nginx:1.27@sha256:" + "ab" * 32 + "\n"
        "  git:\n    image: gitea/gitea:1.22\n    deploy: {replicas: 2}\n    volumes: ['gitea:/data']\n"
        "volumes: {uploads: {}, gitea: {}}\n")
    out = tmp_path / "csdeploy.yml"
    result = init_blueprint(out, compose=source)
    bp = result.blueprint
    assert load_blueprint(out) == bp
    from cloudstack_deploy.rollout.contract import image_ref
    web, admin, proxy, git = (bp.roles[n] for n in ("web", "admin", "proxy", "git"))
    assert image_ref(web.image, "v3") == f"{bp.image}:v3" and bp.build is not None
    assert admin.build is not None and admin.image != bp.image and image_ref(admin.image, "v3").endswith(":v3")
    assert admin.build.context == "admin"
    assert image_ref(proxy.image, "v3") == "nginx:1.27@sha256:" + "ab" * 32
    assert image_ref(git.image, "v3") == "gitea/gitea:1.22"
    assert [(v.name, v.path) for v in web.volumes] == [("uploads", "/srv/uploads")]
    assert [(v.name, v.path, v.per_host) for v in git.volumes] == [("gitea", "/data", True)]
    notes = "\n".join(str(n) for n in result.notes)
    assert "services.web.volumes[1]" in notes and "bind mount" in notes
    assert "2 replicas: each VM keeps its own copy of gitea" in notes
