"""The lab's images, for real: built offline, cached, pushed, and behaving like upstream's.

Needs a Docker engine (the module is skipped without one). The first run builds every image
(about a minute on 2 cores); later runs reuse them, which is itself under test.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator

import pytest

from cloudstack_deploy.lab.base import BASE_IMAGE
from cloudstack_deploy.lab.build import BuildResult
from cloudstack_deploy.lab.images import DEMO_VERSIONS, PUSH_AS, build_images
from cloudstack_deploy.lab.registry import REGISTRY_IMAGE, RegistryInfo
from cloudstack_deploy.progress import Recorder

from .images_helpers import (
    Scratch,
    catalog_json,
    docker,
    leftovers,
    own_registry,
    request,
    scratch,
    wait_for,
)

pytestmark = pytest.mark.usefixtures("docker_engine")

PROXY = "csdeploy-lab/kamal-proxy:v0.9.2"
PASSWORD = "p@ss:w/rd%"
ENCODED = "p%40ss%3Aw%2Frd%25"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryInfo]:
    with own_registry(tmp_path_factory.mktemp("home")) as info:
        yield info


@pytest.fixture(scope="module")
def images(registry: RegistryInfo) -> dict[str, str]:
    """Every image built (or reused) and pushed into this module's registry."""
    return asyncio.run(build_images(registry=registry))


@pytest.fixture
def lab() -> Iterator[Scratch]:
    with scratch() as s:
        yield s


def test_build_images_pushes_everything_and_a_second_run_does_nothing(
        images: dict[str, str], registry: RegistryInfo) -> None:
    assert images == {local: f"registry.lab:5000/{repo_tag}" for local, repo_tag in PUSH_AS.items()}
    assert "registry.lab:5000/basecamp/kamal-proxy:v0.9.2" in images.values()
    repos = catalog_json(registry)["repositories"]
    assert sorted(repos) == sorted({rt.rpartition(":")[0] for rt in PUSH_AS.values()})  # type: ignore[arg-type]

    ids = {name: docker("image", "inspect", "--format", "{{.Id}}", name).stdout.strip() for name in PUSH_AS}
    recorder, results = Recorder(), list[BuildResult]()
    asyncio.run(build_images(registry=registry, progress=recorder, results=results))
    assert results and not [r.name for r in results if r.built]
    assert {r.name: r.image_id for r in results} == ids
    statuses = {(e.action, e.status) for e in recorder.events}
    assert statuses == {("build", "skipped"), ("push", "skipped")}, recorder.events
    assert sum(e.action == "push" for e in recorder.events) == len(PUSH_AS)


def test_no_image_carries_apt_lists_caches_docs_or_translations(images: dict[str, str]) -> None:
    """Each image is pulled into every new lab VM: what Debian's slim images leave out (apt's
    lists and caches, docs, man pages, translations) is not in the base nor in any layer an
    image adds on it (each install runs under the base's dpkg filters and apt clean-up)."""
    checked = [BASE_IMAGE, REGISTRY_IMAGE, *(name for name in PUSH_AS if not name.startswith("csdeploy-lab/demo-app:")),
               "csdeploy-lab/demo-app:v1"]  # the demo's other versions share v1's layers but the last
    found = {image: leftovers(image) for image in checked}
    assert found == {image: [] for image in checked}, {k: v[:10] for k, v in found.items() if v}


def test_demo_images_carry_the_service_label_and_their_version(images: dict[str, str]) -> None:
    for version in DEMO_VERSIONS:
        out = docker("image", "inspect", "--format", "{{json .Config}}", f"csdeploy-lab/demo-app:{version}")
        config = json.loads(out.stdout)
        assert config["Labels"]["service"] == "demo"
        assert config["Labels"]["version"] == version
        assert f"APP_VERSION={version}" in config["Env"]
    kp = json.loads(docker("image", "inspect", "--format", "{{json .Config}}", PROXY).stdout)
    assert kp["Cmd"] == ["kamal-proxy", "run"] and kp["User"] == "kamal-proxy:kamal-proxy"
    assert set(kp["ExposedPorts"]) == {"80/tcp", "443/tcp"}


def _deploy(lab: Scratch, proxy: str, target: str, timeout: str = "10s") -> tuple[int, str, float]:
    started = time.monotonic()
    proc = docker("exec", proxy, "kamal-proxy", "deploy", "demo", f"--target={lab.ip(target)}:8000",
                  "--health-check-path=/up", "--health-check-interval=1s",
                  f"--deploy-timeout={timeout}", "--drain-timeout=5s", check=False, timeout=60)
    return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - started


def _proxy_with_v1(lab: Scratch) -> tuple[str, str]:
    """kamal-proxy serving demo v1 the way Kamal runs it; returns (proxy, 127.0.0.1:port)."""
    proxy = lab.run("proxy", PROXY, volumes=[f"{lab.volume('proxy-config')}:/home/kamal-proxy/.config/kamal-proxy"],
                    publish=["127.0.0.1::80"])
    lab.run("v1", "csdeploy-lab/demo-app:v1")
    code, out, _ = _deploy(lab, proxy, f"{lab.prefix}-v1")
    assert code == 0, out
    address = lab.host_port(proxy, 80)
    assert wait_for(lambda: request("GET", address, "/")[1].startswith("demo v1"), 10, "v1 via the proxy")
    return proxy, address


def test_kamal_proxy_switches_v1_to_v2_without_a_failed_request(images: dict[str, str], lab: Scratch) -> None:
    proxy, address = _proxy_with_v1(lab)
    seen: list[tuple[int, str]] = []
    switched = threading.Event()

    def client() -> None:  # bounded: stops 50 requests after the switch, or at 3000
        after = 0
        while len(seen) < 3000 and after < 50:
            try:
                status, body = request("GET", address, "/")
            except OSError as exc:
                status, body = 0, str(exc)
            seen.append((status, body.split("\n", 1)[0]))
            after += switched.is_set()

    loop = threading.Thread(target=client)
    loop.start()
    try:
        lab.run("v2", "csdeploy-lab/demo-app:v2")
        code, out, _ = _deploy(lab, proxy, f"{lab.prefix}-v2")
        assert code == 0, out
    finally:
        switched.set()
        loop.join(timeout=60)
    assert [s for s in seen if s[0] != 200] == []
    versions = [body for _, body in seen]
    assert "demo v1" in versions and versions[-1] == "demo v2"
    assert versions.index("demo v2") > versions.index("demo v1")
    assert len(seen) >= 50

    stop = docker("stop", "--time", "10", f"{lab.prefix}-v1")  # what a deploy does next
    assert stop.returncode == 0
    assert docker("inspect", "--format", "{{.State.ExitCode}}", f"{lab.prefix}-v1").stdout.strip() == "0"
    # The proxy's state lives in its volume (writable by the non-root kamal-proxy user).
    docker("restart", proxy)
    address = lab.host_port(proxy, 80)  # a restart publishes on a new random port
    assert wait_for(lambda: request("GET", address, "/")[1].startswith("demo v2"), 15, "v2 after a restart")


def test_a_broken_version_fails_its_deploy_and_v1_keeps_serving(images: dict[str, str], lab: Scratch) -> None:
    proxy, address = _proxy_with_v1(lab)
    lab.run("broken", "csdeploy-lab/demo-app:broken")
    wait_for(lambda: "demo broken" in docker("exec", f"{lab.prefix}-broken", "python3", "-c",
                                             "import urllib.request as u; print(u.urlopen('http://127.0.0.1:8000/').read().decode())",
                                             check=False).stdout, 15, "the broken version to serve /")
    code, out, seconds = _deploy(lab, proxy, f"{lab.prefix}-broken", timeout="5s")
    assert code != 0, out
    assert "healthy" in out.lower(), out
    assert seconds < 20
    for _ in range(20):
        status, body = request("GET", address, "/")
        assert (status, body.split("\n", 1)[0]) == (200, "demo v1")


def _app(lab: Scratch, name: str, env: dict[str, str], version: str = "v1", cmd: tuple[str, ...] = ()) -> str:
    container = lab.run(name, f"csdeploy-lab/demo-app:{version}", *cmd, env=env, publish=["127.0.0.1::8000"])
    if cmd:
        return container
    address = lab.host_port(container, 8000)
    wait_for(lambda: request("GET", address, "/up")[0] == 200, 20, f"{name} to answer /up")
    return address


def _postgres(lab: Scratch, volume: str, name: str = "db", password: str = PASSWORD) -> str:
    pg = lab.run(name, "csdeploy-lab/postgres:15", alias="db", volumes=[f"{volume}:/var/lib/postgresql/data"],
                 env={"POSTGRES_USER": "demo", "POSTGRES_PASSWORD": password, "POSTGRES_DB": "demo"})
    lab.wait_healthy(pg, timeout=90)
    return pg


def test_postgres_with_a_url_special_password_keeps_notes_across_containers(
        images: dict[str, str], lab: Scratch) -> None:
    volume = lab.volume("pgdata")
    pg = _postgres(lab, volume)
    app = _app(lab, "web", {"DATABASE_URL": f"postgresql://demo:{ENCODED}@db:5432/demo"})
    status, body = request("POST", app, "/notes", "survives redeploys")
    assert status == 201, body
    for _ in range(20):  # the status page checks the database on a connection it keeps
        assert "db: ok" in request("GET", app, "/")[1]
    assert _client_connections(pg) == 1

    wrong = _app(lab, "web-wrong", {"DATABASE_URL": "postgresql://demo:nope@db:5432/demo"})
    status, body = request("GET", wrong, "/notes")
    assert status == 503 and "password authentication failed" in body

    started = time.monotonic()
    docker("stop", pg)  # SIGINT (fast shutdown): quick and clean
    assert time.monotonic() - started < 8
    assert docker("inspect", "--format", "{{.State.ExitCode}}", pg).stdout.strip() == "0"
    docker("rm", pg)
    # A new container on the same volume: no initdb, so even another password is ignored.
    pg = _postgres(lab, volume, name="db2", password="ignored-now")
    # its kept connection went with the old server: the first check opens a new one, no error
    assert "db: ok" in request("GET", app, "/")[1]
    status, body = request("GET", app, "/notes")
    assert status == 200, body
    assert [n["body"] for n in json.loads(body)] == ["survives redeploys"]
    assert _client_connections(pg) == 1


def _client_connections(pg: str) -> int:
    """The client connections the server holds open, psql's own left out."""
    return int(docker("exec", pg, "psql", "-U", "demo", "-d", "demo", "-tAc",
                      "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                      "AND pid <> pg_backend_pid()").stdout.strip())


def test_postgres_refuses_to_initialise_without_a_password(images: dict[str, str], lab: Scratch) -> None:
    pg = lab.run("nopw", "csdeploy-lab/postgres:15")
    wait_for(lambda: docker("inspect", "--format", "{{.State.Status}}", pg).stdout.strip() == "exited",
             30, "postgres without a password to exit")
    assert docker("inspect", "--format", "{{.State.ExitCode}}", pg).stdout.strip() == "1"
    assert "POSTGRES_PASSWORD" in docker("logs", pg).stderr


def test_worker_takes_a_job_from_redis_and_the_app_reads_the_result(images: dict[str, str], lab: Scratch) -> None:
    redis = lab.run("redis", "csdeploy-lab/redis:7", alias="redis")
    _postgres(lab, lab.volume("pgdata"))
    lab.wait_healthy(redis, timeout=30)
    env = {"POSTGRES_HOST": "db", "POSTGRES_USER": "demo", "POSTGRES_PASSWORD": PASSWORD,
           "POSTGRES_DB": "demo", "REDIS_URL": "redis://redis:6379/0"}
    worker = _app(lab, "worker", env, version="v2",
                  cmd=("python", "-m", "demo.worker"))  # `python`, as blueprints/demo.yml says
    app = _app(lab, "web", env)
    index = request("GET", app, "/")[1]
    assert "db: ok" in index and "redis: ok" in index

    status, body = request("POST", app, "/jobs", "hello worker")
    assert status == 202, body
    job_id = json.loads(body)["id"]
    result = wait_for(lambda: _job(app, job_id), 20, "the job's result")
    worker_host = docker("inspect", "--format", "{{.Config.Hostname}}", worker).stdout.strip()
    assert result["result"] == "HELLO WORKER"
    assert result["processed_by"] == worker_host and result["version"] == "v2"

    started = time.monotonic()
    docker("stop", "--time", "10", worker)
    assert time.monotonic() - started < 5, "the worker should stop on SIGTERM, not be killed"
    assert docker("inspect", "--format", "{{.State.ExitCode}}", worker).stdout.strip() == "0"
    assert "stopped after 1 job(s)" in docker("logs", worker).stderr
    assert "appendonly" in docker("exec", redis, "ls", "/data").stdout
    docker("stop", redis)  # redis-server is PID 1 (exec): SIGTERM makes it save and exit 0
    assert docker("inspect", "--format", "{{.State.ExitCode}}", redis).stdout.strip() == "0"


def _job(address: str, job_id: str) -> dict[str, str] | None:
    status, body = request("GET", address, f"/jobs/{job_id}")
    return json.loads(body) if status == 200 else None
