"""On the lab: a Compose file with two HTTP services on two images (one without any label) imported
and deployed, a template deployed, then a Rails-8-shaped
Kamal config imported and deployed on the same VM, keeping its storage volume across a
redeploy, and `deploy --build` from a fresh clone of this repository serving the version it built.

Environments e2e-compose, e2e-template (the template, then the Kamal import) and e2e-build, each torn down before (leftovers of a
killed run) and after, in a finally. Only the lab fixture's csdeploy()/inventory() are used.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from .conftest import Lab

REPO = Path(__file__).resolve().parents[2]
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))

COMPOSE = """\
# web + postgres + redis + a sidekiq-style worker, on the lab's images
name: demo
services:
  web:
    image: registry.lab:5000/demo-app:v1
    ports: ["8000:8000"]
    depends_on:
      db: {condition: service_healthy}
      redis: {condition: service_started}
    healthcheck:
      test: ["CMD", "curl", "-fsS", "http://localhost:8000/up"]
      interval: 2s
      timeout: 3s
    restart: unless-stopped
  worker:
    image: registry.lab:5000/demo-app:v1
    command: python -m demo.worker
    depends_on: [db, redis]
  db:
    image: registry.lab:5000/postgres:15
    environment:
      POSTGRES_DB: demo
      POSTGRES_USER: demo
      POSTGRES_PASSWORD: ${POSTGRES_PASSWORD}
    volumes: [pgdata:/var/lib/postgresql/data]
  redis:
    image: registry.lab:5000/redis:7
  docs:
    image: registry.lab:5000/docs:1.0
    ports: ["9000:9000"]
    healthcheck:
      test: ["CMD", "wget", "-qO-", "localhost:9000/up"]
volumes:
  pgdata: {}
"""

#: A second HTTP service on an image of its own, without any label (a plain public image as far
#: as csdeploy knows): a static site on port 9000 that answers GET /up.
DOCS_DOCKERFILE = """\
FROM csdeploy-lab/debian:bookworm
COPY --from=csdeploy-lab/demo-app:v1 /usr /usr
RUN mkdir -p /srv && echo docs 1.0 > /srv/index.html && echo ok > /srv/up
CMD ["python3", "-m", "http.server", "9000", "--directory", "/srv"]
"""


#: The worker (the Compose file's, the demo blueprint's) is judged ready after 1 s instead of the
#: default 7: these tests are about what is imported, built and served, not that delay, and every
#: second of it was spent waiting.
QUICK_WORKER = ("--set", "roles.worker.healthcheck.readiness_delay=1")


def _page(url: str, want: str, deadline: float = 60) -> str:
    """The index page once its first line is ``want`` (bounded)."""
    last = ""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            with _DIRECT.open(url, timeout=10) as resp:
                body = resp.read().decode(errors="replace")
                if resp.status == 200 and body.splitlines()[:1] == [want]:
                    return body
                last = f"HTTP {resp.status}: {body[:200]!r}"
        except OSError as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.5)
    raise AssertionError(f"{url} does not answer {want!r} after {deadline:.0f}s; last: {last}")


@contextmanager
def env(lab: Lab, name: str) -> Iterator[str]:
    lab.csdeploy("teardown", "--env", name, "--yes", "--progress", "plain", timeout=600)
    try:
        yield name
    finally:
        lab.csdeploy("teardown", "--env", name, "--yes", "--progress", "plain", timeout=600)


def _url(lab: Lab, name: str) -> str:
    web = next(h for h in lab.inventory(name)["hosts"] if h.get("proxy"))
    return f"http://{web['public_ip']}/"


def _role_url(lab: Lab, name: str, role: str) -> str:
    host = next(h for h in lab.inventory(name)["hosts"] if h["role"] == role and h.get("proxy"))
    return f"http://{host['public_ip']}/"


def test_compose_file_imports_and_deploys(lab: Lab, tmp_path: Path) -> None:
    """Several images, several HTTP services: the Compose importer used to make one web role
    and run the app's image everywhere."""
    subprocess.run(["docker", "build", "-q", "-t", "csdeploy-e2e/docs:1.0", "-"], input=DOCS_DOCKERFILE,
                   text=True, check=True, capture_output=True, timeout=600)
    pushed = subprocess.run([sys.executable, "-c", PUSH, "csdeploy-e2e/docs:1.0", "docs:1.0"],
                            env=lab.env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert pushed.returncode == 0, pushed.stderr
    (tmp_path / "docker-compose.yml").write_text(COMPOSE)
    blueprint = tmp_path / "csdeploy.yml"
    init = lab.csdeploy("init", "--from-compose", str(tmp_path / "docker-compose.yml"), "--out", str(blueprint))
    assert "services.web.restart" in init.stderr, init.explain()
    with env(lab, "e2e-compose") as name:
        run = lab.csdeploy("create-env", str(blueprint), "--env", name, "--version", "v1", "--progress", "plain",
                           *QUICK_WORKER, timeout=900)
        lab.record("formats", compose_create_env_seconds=round(run.seconds, 1))
        body = _page(_role_url(lab, name, "web"), "demo v1")
        assert "db: ok" in body and "redis: ok" in body, body  # the env contract reached the app
        _page(_role_url(lab, name, "docs"), "docs 1.0")  # its own entry point, its own pinned image
        inv = lab.inventory(name)
        assert {h["role"] for h in inv["hosts"]} == {"web", "worker", "db", "docs"}, inv["hosts"]
        # a Kamal config runs one image in every role: refused, naming the role, nothing written
        refused = lab.csdeploy("export", "kamal", str(blueprint), "--env", name, "--out", str(tmp_path / "no"),
                               check=False)
        assert refused.code == 2 and "docs (registry.lab:5000/docs:1.0)" in refused.stderr, refused.explain()
        assert not (tmp_path / "no").exists()
        # the same app without the second image exports, and Kamal reads what was written
        (tmp_path / "one").mkdir()
        (tmp_path / "one" / "docker-compose.yml").write_text(COMPOSE.split("  docs:\n")[0] + "volumes:\n  pgdata: {}\n")
        lab.csdeploy("init", "--from-compose", str(tmp_path / "one" / "docker-compose.yml"), "--out",
                     str(tmp_path / "one" / "csdeploy.yml"))
        kamal_dir = tmp_path / "kamal"
        lab.csdeploy("export", "kamal", str(tmp_path / "one" / "csdeploy.yml"), "--env", name, "--out",
                     str(kamal_dir))
        deploy_yml = (kamal_dir / "config" / "deploy.yml").read_text()
        for host in inv["hosts"]:
            assert (host["public_ip"] in deploy_yml) == (host["role"] != "docs"), deploy_yml
        db_host = next(h for h in inv["hosts"] if h["role"] == "db")
        assert f"port: {db_host['private_ip']}:5432:5432" in deploy_yml, deploy_yml
        if shutil.which("kamal"):
            subprocess.run(["git", "init", "-q"], cwd=kamal_dir, check=True)
            check = subprocess.run(["kamal", "config", "--version", "v1"], cwd=kamal_dir, capture_output=True,
                                   text=True, timeout=120, env={**os.environ, "REGISTRY_PASSWORD": "x",
                                                                "POSTGRES_PASSWORD": "y"})
            assert check.returncode == 0, check.stdout + check.stderr


@pytest.fixture(scope="module")
def web_env(lab: Lab) -> Iterator[str]:
    """One web VM for the template and then the imported Kamal config (a second create-env on
    it only deploys: the Kamal test costs no VM of its own)."""
    with env(lab, "e2e-template") as name:
        yield name


def test_template_deploys(lab: Lab, tmp_path: Path, web_env: str) -> None:
    blueprint = tmp_path / "web.yml"
    lab.csdeploy("init", "--template", "generic", "--out", str(blueprint), "--set", "service=demo",
                 "--set", "image=registry.lab:5000/demo-app", "--set", "app_port=8000")
    run = lab.csdeploy("create-env", str(blueprint), "--env", web_env, "--version", "v2", "--progress", "plain",
                       timeout=600)
    lab.record("formats", template_create_env_seconds=round(run.seconds, 1))
    _page(_url(lab, web_env), "demo v2")


#: A Rails 8 app's image as far as storage goes: the app runs as uid 1000, which owns
#: /rails/storage (SQLite lives there), and answers GET /up.
RAILS_DOCKERFILE = """\
FROM csdeploy-lab/debian:bookworm
COPY --from=csdeploy-lab/demo-app:v1 /usr /usr
RUN useradd --uid 1000 --create-home rails \\
 && mkdir -p /rails/storage /rails/public && echo ok > /rails/public/up && chown -R 1000:1000 /rails
USER 1000
CMD ["python3", "-m", "http.server", "3000", "--directory", "/rails/public"]
"""

#: config/deploy.yml as `rails new` shapes it (Kamal's local registry, the storage volume, the
#: default builder), with the lab's host and the image above.
RAILS_DEPLOY = """\
service: demo
image: rails8
servers:
  web:
    - 192.0.2.10
proxy:
  app_port: 3000
registry:
  server: localhost:5555
volumes:
  - "app_storage:/rails/storage"
builder:
  arch: amd64
aliases:
  shell: app exec --interactive --reuse "bash"
"""

PUSH = """\
import asyncio, sys
from cloudstack_deploy.lab.registry import push
for tag in sys.argv[2:]:
    asyncio.run(push(sys.argv[1], tag))
"""


def test_an_imported_rails_8_kamal_config_keeps_its_storage_across_a_redeploy(lab: Lab, tmp_path: Path,
                                                                               web_env: str) -> None:
    """Kamal's `volumes` were dropped on import: an unedited Rails 8 app lost its SQLite
    database on every deploy."""
    started = time.monotonic()
    subprocess.run(["docker", "build", "-q", "-t", "csdeploy-e2e/rails8:1", "-"], input=RAILS_DOCKERFILE,
                   text=True, check=True, capture_output=True, timeout=600)
    pushed = subprocess.run([sys.executable, "-c", PUSH, "csdeploy-e2e/rails8:1", "rails8:v1", "rails8:v2"],
                            env=lab.env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert pushed.returncode == 0, pushed.stderr
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "deploy.yml").write_text(RAILS_DEPLOY)
    blueprint = tmp_path / "csdeploy.yml"
    init = lab.csdeploy("init", "--from-kamal", str(tmp_path / "config" / "deploy.yml"), "--out", str(blueprint))
    assert "localhost:5555 is Kamal's local registry" in init.stderr, init.explain()
    lab.csdeploy("create-env", str(blueprint), "--env", web_env, "--version", "v1", "--progress", "plain",
                 timeout=600)  # healthy through kamal-proxy (GET /up) before it returns
    lab.csdeploy("exec", "--env", web_env, "--role", "web", "--", "sh", "-c",
                 "id -u > /rails/storage/kept && echo db >> /rails/storage/kept")
    lab.csdeploy("deploy", str(blueprint), "--env", web_env, "--version", "v2", "--progress", "plain", timeout=600)
    kept = lab.csdeploy("exec", "--env", web_env, "--role", "web", "--", "cat", "/rails/storage/kept")
    assert [line.split(" | ", 1)[-1] for line in kept.stdout.splitlines()] == ["1000", "db"], kept.explain()
    lab.record("formats", kamal_rails8_seconds=round(time.monotonic() - started, 1))



def test_deploy_build_from_a_fresh_clone_serves_the_built_version(lab: Lab, tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=120)
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True, text=True,
                         check=True).stdout.strip()
    blueprint = str(clone / "blueprints" / "demo.yml")
    cli_env = {**lab.env, "PYTHONPATH": str(clone)}  # the clone's csdeploy, not this checkout's

    def csdeploy(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "cloudstack_deploy", *args], cwd=clone, env=cli_env,
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, f"csdeploy {args[0]} failed after {time.monotonic() - started:.0f}s\n" \
                                     f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
        return proc

    assert os.path.islink(clone / "examples" / "demo") and (clone / "examples" / "demo" / "Dockerfile").is_file()
    with env(lab, "e2e-build") as name:
        started = time.monotonic()
        csdeploy("create-env", blueprint, "--env", name, "--skip-rollout", "--progress", "plain", timeout=900)
        created = time.monotonic() - started
        started = time.monotonic()
        deploy = csdeploy("deploy", blueprint, "--env", name, "--build", "--json", "--progress", "plain",
                          *QUICK_WORKER, timeout=1800)
        result = json.loads(deploy.stdout)
        lab.record("formats", build_create_env_seconds=round(created, 1),
                   deploy_build_seconds=round(time.monotonic() - started, 1),
                   build_seconds=result["build"]["build_seconds"], push_seconds=result["build"]["push_seconds"])
        assert result["build"]["version"] == sha and not result["build"]["dirty"], result
        assert result["version"] == sha
        _page(_url(lab, name), f"demo {sha}")
