"""The rollout's command builders: quoting, secrets off argv, and the env contract.

The scripts are run for real by /bin/sh with a recording `docker` first on PATH, so these
tests see exactly the argv each docker call would get: a hostile blueprint value must
arrive as one intact word and never run anything.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from cloudstack_deploy.accessories import image_base
from cloudstack_deploy.blueprint import loads_blueprint
from cloudstack_deploy.errors import InvalidInput
from cloudstack_deploy.inventory import Host, Inventory, Network, SSHAccess
from cloudstack_deploy.rollout.commands import host as host_cmds
from cloudstack_deploy.rollout.commands.script import Script
from cloudstack_deploy.rollout.contract import check_version, container_name, role_env
from cloudstack_deploy.rollout.stages import (
    accessory_script,
    prepare_script,
    proxy_commit_script,
    proxy_switch_back_script,
    proxy_switch_script,
    worker_commit_script,
    worker_start_script,
)
from tests.support.fakedocker import SHEBANG

HOSTILE = "x'; touch PWNED; echo \"$(touch PWNED2)\" `touch PWNED3` $HOME \\ \n# end"

BLUEPRINT = """
service: demo
image: registry.lab:5000/demo-app
cloud:
  zone: z
  template: t
  service_offering: small
  ssh: {allow_from: [127.0.0.0/8]}
roles:
  web:
    proxy: {app_port: 8000}
    env:
      clear: {GREETING: "hello"}
      secret: [API_TOKEN]
  worker:
    cmd: ["python3", "-m", "demo.worker"]
accessories:
  db:
    image: registry.lab:5000/postgres:15
    vm: {service_offering: small}
    port: 5432
    env:
      clear: {POSTGRES_DB: demo, POSTGRES_USER: "app user"}
      secret: [POSTGRES_PASSWORD]
  redis:
    image: registry.lab:5000/redis:7
    role: web
    port: 6379
registry: {server: registry.lab:5000, username: csdeploy, password: REGISTRY_PASSWORD}
secrets: [API_TOKEN, POSTGRES_PASSWORD, REGISTRY_PASSWORD]
"""

def _host(name: str, role: str, ip: str, accessories: tuple[str, ...], proxy: bool) -> Host:
    return Host(name=name, role=role, index=1, vm_id=name, public_ip="127.0.0.9", ssh_port=22, private_ip=ip,
                host_key="ssh-ed25519 AAAA", accessories=accessories, proxy=proxy)


WEB = _host("demo-web-1", "web", "10.1.1.2", ("redis",), True)
INVENTORY = Inventory(
    env="demo", service="demo", network=Network(id="n1", name="csdeploy-demo"),
    ssh=SSHAccess(user="root", key=Path("/k"), known_hosts=Path("/kh")),
    hosts=(WEB, _host("demo-worker-1", "worker", "10.1.1.3", (), False),
           _host("demo-db-1", "db", "10.1.1.4", ("db",), False)),
)
SECRETS = {"API_TOKEN": "tok-" + "s3cr3t", "POSTGRES_PASSWORD": "p@ss:w/rd%", "REGISTRY_PASSWORD": "reg-pass-123"}


@pytest.fixture
def shim(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """A PATH whose `docker` records its argv (one JSON array per call) and succeeds."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "docker.log"
    (bindir / "docker").write_text(
        SHEBANG + "\nimport json, sys\n"
        f"open({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
        "if sys.argv[1:3] == ['image', 'inspect']: print('demo')\n"
        "if sys.argv[1:2] == ['inspect']: print('healthy running')\n"
    )
    (bindir / "docker").chmod(0o755)
    env = {"PATH": f"{bindir}:{os.environ['PATH']}", "HOME": str(tmp_path / "home")}
    (tmp_path / "home").mkdir()
    return env, log


def run_script(script: Script, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-s"], input=script.text(), env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=30)


def calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_hostile_values_arrive_as_single_words_and_run_nothing(shim, tmp_path: Path) -> None:
    env, log = shim
    text = BLUEPRINT.replace('GREETING: "hello"', f"GREETING: {json.dumps(HOSTILE)}").replace(
        'cmd: ["python3", "-m", "demo.worker"]', f"cmd: [\"echo\", {json.dumps(HOSTILE)}]")
    bp = loads_blueprint(text)
    secrets = dict(SECRETS, API_TOKEN=HOSTILE.replace("\n", " "))  # env files cannot carry newlines
    web, worker = bp.roles["web"], bp.roles["worker"]
    for script in (proxy_switch_script(bp, "demo", web, "v1", role_env(bp, "web", INVENTORY, secrets, "v1")),
                   proxy_commit_script(bp, "demo", web, "v1", retain=3),
                   proxy_switch_back_script(bp, web, "v1", HOSTILE),
                   worker_start_script(bp, "demo", worker, "v1", role_env(bp, "worker", INVENTORY, secrets, "v1")),
                   worker_commit_script(bp, "demo", worker, "v1", retain=3)):
        result = run_script(script, env, tmp_path)
        assert result.returncode == 0, result.stderr
    for marker in ("PWNED", "PWNED2", "PWNED3"):
        assert not (tmp_path / marker).exists(), f"{marker}: a blueprint value was executed by the shell"
    runs = [c for c in calls(log) if c[:1] == ["run"]]
    assert any(f"GREETING={HOSTILE}" in c for c in runs), "the clear env value must arrive intact, as one word"
    worker = next(c for c in runs if "role=worker" in c)
    assert worker[-2:] == ["echo", HOSTILE]
    assert not any(secrets["API_TOKEN"] in arg for c in calls(log) for arg in c), \
        "secrets must never be in docker's argv"


def test_secrets_go_to_0600_env_files_and_stdin_never_argv(shim, tmp_path: Path) -> None:
    env, log = shim
    bp = loads_blueprint(BLUEPRINT)
    app_env = role_env(bp, "web", INVENTORY, SECRETS, "v1")
    images = ["registry.lab:5000/demo-app:v1", "registry.lab:5000/redis:7", "basecamp/kamal-proxy:v0.9.2"]
    script = prepare_script(bp, WEB, user="root", install=None, network=True,
                            registry_password=SECRETS["REGISTRY_PASSWORD"], pulls=images, check_images=images[:1],
                            accessory_envs={}, proxy=True)
    script.extend(proxy_switch_script(bp, "demo", bp.roles["web"], "v1", app_env))
    script.extend(proxy_commit_script(bp, "demo", bp.roles["web"], "v1", retain=3))
    result = run_script(script, env, tmp_path)
    assert result.returncode == 0, result.stderr
    argv_text = json.dumps(calls(log))
    for value in SECRETS.values():
        assert value not in argv_text
    login = next(c for c in calls(log) if c[:1] == ["login"])
    assert login == ["login", "registry.lab:5000", "--username", "csdeploy", "--password-stdin"]
    env_path = tmp_path / "home" / ".csdeploy" / "demo" / "env" / "web.env"
    env_path_rel = tmp_path / ".csdeploy" / "demo" / "env" / "web.env"
    path = env_path if env_path.exists() else env_path_rel
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    content = path.read_text()
    assert "API_TOKEN=tok-s3cr3t" in content
    assert "DATABASE_URL=postgresql://app%20user:p%40ss%3Aw%2Frd%25@10.1.1.4:5432/demo" in content
    pulls = [c[-1] for c in calls(log) if c[:1] == ["pull"]]
    assert sorted(pulls) == sorted(images), "pulled side by side, each once"


def test_env_contract_points_apps_at_accessories_by_private_address() -> None:
    bp = loads_blueprint(BLUEPRINT)
    env = role_env(bp, "web", INVENTORY, SECRETS, "v7")
    assert env.clear["POSTGRES_HOST"] == "10.1.1.4"
    assert env.clear["POSTGRES_PORT"] == "5432"
    assert env.clear["POSTGRES_USER"] == "app user"
    assert env.clear["REDIS_URL"] == "redis://10.1.1.2:6379/0"
    assert env.clear["CSDEPLOY_VERSION"] == "v7"
    assert "POSTGRES_PASSWORD" not in env.clear and env.secret["POSTGRES_PASSWORD"] == "p@ss:w/rd%"
    assert env.secret["DATABASE_URL"].startswith("postgresql://app%20user:p%40ss%3Aw%2Frd%25@")


def test_accessory_config_change_is_detected_by_hash(shim, tmp_path: Path) -> None:
    bp = loads_blueprint(BLUEPRINT)
    from cloudstack_deploy.rollout.contract import accessory_env
    from cloudstack_deploy.rollout.stages import accessory_hash

    acc = bp.accessories["db"]
    h1 = accessory_hash(acc, accessory_env(acc, SECRETS), "10.1.1.4")
    h2 = accessory_hash(acc, accessory_env(acc, dict(SECRETS, POSTGRES_PASSWORD="other")), "10.1.1.4")
    assert h1 != h2, "a changed secret must reboot the accessory"
    assert SECRETS["POSTGRES_PASSWORD"] not in accessory_script(bp, "demo", acc, accessory_env(acc, SECRETS),
                                                                "10.1.1.4").text()


@pytest.mark.parametrize("bad", ["", "-x", "a b", "v1;rm", "x" * 65, "ü"])
def test_versions_must_be_valid_tags(bad: str) -> None:
    with pytest.raises(InvalidInput):
        check_version(bad)


def test_names() -> None:
    assert check_version("3f2a1b9") == "3f2a1b9"
    assert container_name("demo", "web", "v2") == "demo-web-v2"
    assert image_base("registry.lab:5000/postgres:15") == "postgres"
    assert image_base("postgres") == "postgres"


def test_deploy_lock_refuses_a_second_holder_until_broken_and_unlock_records_history(tmp_path: Path) -> None:
    from cloudstack_deploy.rollout import history

    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    first = json.dumps({"user": "alice", "host": "ci-1", "version": "v1", "since": 1, "ttl": 1800})
    assert run_script(host_cmds.lock("demo", first, break_lock=False), env, tmp_path).returncode == 0
    second = run_script(host_cmds.lock("demo", '{"user": "bob"}', break_lock=False), env, tmp_path)
    assert second.returncode == host_cmds.LOCK_EXIT
    assert json.loads(second.stdout.splitlines()[0])["user"] == "alice", "the refusal must say who holds the lock"
    broken = run_script(host_cmds.lock("demo", '{"user": "bob"}', break_lock=True), env, tmp_path)
    assert broken.returncode == 0, broken.stderr
    record = history.finish(history.start("v2", "deploy"), 3.0)
    assert run_script(host_cmds.unlock("demo", record.to_json()), env, tmp_path).returncode == 0
    assert run_script(host_cmds.lock("demo", '{"user": "carol"}', break_lock=False), env, tmp_path).returncode == 0
    read = run_script(history.read_script("demo"), env, tmp_path).stdout
    assert history.parse(read) == [record]
    assert history.parse(read)[0].status == "ok"


def test_docker_install_by_apt_brings_pigz_and_leaves_a_host_with_docker_alone(tmp_path: Path) -> None:
    """`rollout.docker_install: apt` on a host without docker: Debian's docker.io and pigz (dockerd
    decompresses pulled layers with unpigz when it finds one), then docker answers; on a host that has
    docker, apt is not run at all. The script runs for real, with only stubs on PATH."""
    from cloudstack_deploy.rollout.commands.docker import ensure_installed

    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "calls.log"
    docker = "#!/bin/sh\n[ \"$1\" = version ] && echo 20.10.24\nexit 0\n"
    stubs = {
        "apt-get": f"#!/bin/sh\nprintf 'apt-get %s\\n' \"$*\" >> {log}\n"
                   f"[ \"$1\" = install ] && printf '%s' '{docker}' > {bindir}/docker && /bin/chmod 755 {bindir}/docker\n"
                   "exit 0\n",
        "usermod": f"#!/bin/sh\nprintf 'usermod %s\\n' \"$*\" >> {log}\n",
        "systemctl": f"#!/bin/sh\nprintf 'systemctl %s\\n' \"$*\" >> {log}\n",
    }
    for name, text in stubs.items():
        (bindir / name).write_text(text)
        (bindir / name).chmod(0o755)
    script = ensure_installed("apt", "csdeploy").text()

    def run() -> list[str]:
        log.unlink(missing_ok=True)
        proc = subprocess.run(["/bin/sh", "-s"], input=script, env={"PATH": str(bindir)}, capture_output=True,
                              text=True, timeout=30)
        assert proc.returncode == 0, proc.stderr
        return log.read_text().splitlines() if log.exists() else []

    assert run() == ["apt-get update -qq", "apt-get install -y -qq docker.io pigz", "usermod -aG docker csdeploy"]
    assert (bindir / "docker").exists()
    assert run() == ["usermod -aG docker csdeploy"], "a host with docker must not get apt's install"
