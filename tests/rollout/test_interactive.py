"""Interactive sessions (`exec -i`, `--tty`, `--new`, `accessory exec -i`, `console`, `psql`,
`alias`) as a person runs them: the CLI as a subprocess, under `script` or tmux for a terminal,
logging in over SSH to a host in this process (tests/support/sshhost.py: asyncssh's server,
commands run here with a `docker` that runs a foreground container's command here too)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import fakedocker as fd
from tests.support.sshhost import SSHHost

WEB = {"service": "demo", "role": "web", "destination": "demo"}
BLUEPRINT = """
service: demo
image: registry.lab:5000/demo-app
cloud: {zone: z, template: t, service_offering: small, ssh: {allow_from: [127.0.0.0/8]}}
roles:
  web:
    proxy: {app_port: 8000}
    env:
      clear: {GREETING: hello}
      secret: [API_TOKEN]
accessories:
  db:
    image: registry.lab:5000/postgres:15
    vm: {service_offering: small}
    port: 5432
    env:
      clear: {POSTGRES_DB: notes, POSTGRES_USER: app}
      secret: [POSTGRES_PASSWORD]
secrets: [API_TOKEN, POSTGRES_PASSWORD]
aliases:
  hello: exec -i --role web -- sh -c 'echo "alias ran in $FAKE_CONTAINER"'
  console: exec -i --role web -- sh -c 'echo "the console alias"'
"""
TOKEN = "tok-" + "s3cr3t-value"


@pytest.fixture
def host(tmp_path: Path) -> Iterator[tuple[SSHHost, dict[str, str]]]:
    """The host (a running web container, v1, and the db accessory) and the environment of a
    CLI subprocess whose environment `demo` reaches it."""
    ssh = SSHHost.start(tmp_path, {"containers": [
        fd.container("demo-web-v1", "running", "registry.lab:5000/demo-app:v1", **WEB, version="v1"),
        fd.container("demo-db", "running", "registry.lab:5000/postgres:15", service="demo", accessory="db")]})
    envdir = ssh.home / ".csdeploy/demo/env"
    envdir.mkdir(parents=True)
    (envdir / "web.env").write_text(f"API_TOKEN={TOKEN}\n")
    bindir = Path(ssh.env["PATH"].split(":")[0])
    (bindir / "psql").write_text('#!/bin/sh\necho "psql $* password:${PGPASSWORD:+set}"\n')
    (bindir / "psql").chmod(0o755)
    blueprint = tmp_path / "blueprint.yml"
    blueprint.write_text(BLUEPRINT)
    home = tmp_path / "csdeploy-home"
    ssh.environment(home, blueprint)
    env = {**os.environ, "CSDEPLOY_HOME": str(home), "CSDEPLOY_STATE_URL": "none", "TERM": "xterm"}
    try:
        yield ssh, env
    finally:
        ssh.stop()


def csdeploy(env: dict[str, str], *args: str, input: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cloudstack_deploy", *args], input=input, env=env,
                          capture_output=True, text=True, timeout=60)


def test_exec_i_sends_stdin_and_returns_the_command_s_exit_code(host) -> None:  # type: ignore[no-untyped-def]
    ssh, env = host
    res = csdeploy(env, "exec", "-i", "--env", "demo", "--role", "web", "--",
                   "sh", "-c", 'read line; echo "got <$line> in $FAKE_CONTAINER"; exit 5', input="hi there\n")
    assert res.returncode == 5, res.stderr
    assert res.stdout == "got <hi there> in demo-web-v1\n"
    call = ssh.docker_state()["calls"][-1]
    assert call[:4] == ["exec", "--interactive", "demo-web-v1", "sh"]


def test_exec_i_with_stdin_from_dev_null_or_a_file(host, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """What CI and cron give: /dev/null (which cannot be polled) and a redirect from a file."""
    _, env = host
    args = [sys.executable, "-m", "cloudstack_deploy", "exec", "-i", "--env", "demo", "--role", "web", "--",
            "sh", "-c", "wc -l"]
    res = subprocess.run(args, stdin=subprocess.DEVNULL, env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == "0", res.stderr
    sql = tmp_path / "fix.sql"
    sql.write_text("".join(f"line {n}\n" for n in range(5000)))
    with sql.open() as f:
        res = subprocess.run(args, stdin=f, env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == "5000", res.stderr


def test_exec_i_with_the_app_stopped_says_so(host) -> None:  # type: ignore[no-untyped-def]
    ssh, env = host
    state = ssh.docker_state()
    state["containers"][0]["state"] = "exited"
    ssh.state_file.write_text(json.dumps(state))
    res = csdeploy(env, "exec", "-i", "--env", "demo", "--role", "web", "--", "true")
    assert res.returncode == 79
    assert "no running container of role web on this host" in res.stderr


def test_exec_new_runs_a_removed_afterwards_container_with_the_role_env_and_no_secret_in_argv(host) -> None:  # type: ignore[no-untyped-def]
    ssh, env = host
    res = csdeploy(env, "exec", "-i", "--new", "--env", "demo", "--role", "web", "--",
                   "sh", "-c", 'echo "$GREETING ${API_TOKEN:+token} $FAKE_CONTAINER"; cat')
    assert res.returncode == 0, res.stderr
    assert res.stdout == "hello token registry.lab:5000/demo-app:v1\n"
    run = ssh.docker_state()["calls"][-1]
    assert run[:3] == ["run", "--rm", "--interactive"] and "--env-file" in run and "GREETING=hello" in run
    assert TOKEN not in json.dumps(ssh.docker_state()["calls"])
    assert [c["name"] for c in ssh.docker_state()["containers"]] == ["demo-web-v1", "demo-db"]


def test_accessory_exec_i_and_psql_with_the_accessory_s_user_and_database(host) -> None:  # type: ignore[no-untyped-def]
    ssh, env = host
    res = csdeploy(env, "accessory", "exec", "db", "-i", "--env", "demo", "--", "sh", "-c", "wc -l", input="a\nb\n")
    assert res.returncode == 0 and res.stdout.strip() == "2", res.stderr
    res = csdeploy(env, "psql", "--env", "demo", "--no-tty", "--", "-c", "select 1")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "psql -U app -d notes -c select 1 password:"


def test_an_alias_runs_its_command_line_with_the_env(host) -> None:  # type: ignore[no-untyped-def]
    _, env = host
    res = csdeploy(env, "alias", "hello", "--env", "demo")
    assert res.returncode == 0, res.stderr
    assert res.stdout == "alias ran in demo-web-v1\n"
    res = csdeploy(env, "alias", "nope", "--env", "demo")
    assert res.returncode == 2 and "no alias 'nope' in the blueprint (aliases: console, hello)" in res.stderr


def test_an_alias_is_a_top_level_command_too(host) -> None:  # type: ignore[no-untyped-def]
    """`csdeploy hello --env demo`, as Kamal users type `kamal console`; a name that is no
    command and no alias, or given without --env, is still "No such command"."""
    _, env = host
    res = csdeploy(env, "hello", "--env", "demo")
    assert res.returncode == 0, res.stderr
    assert res.stdout == "alias ran in demo-web-v1\n"
    res = csdeploy(env, "nope", "--env", "demo")
    assert res.returncode == 2 and "no alias 'nope' in the blueprint (aliases: console, hello)" in res.stderr
    res = csdeploy(env, "deplyo")
    assert res.returncode == 2 and "No such command 'deplyo'" in res.stderr


def test_console_runs_the_blueprint_s_console_alias(host) -> None:  # type: ignore[no-untyped-def]
    _, env = host
    res = csdeploy(env, "console", "--env", "demo")
    assert res.returncode == 0 and res.stdout == "the console alias\n", res.stderr


def test_blueprint_aliases_are_checked_at_their_line() -> None:
    from cloudstack_deploy.blueprint import loads_blueprint
    from cloudstack_deploy.errors import InvalidInput

    base = BLUEPRINT.split("aliases:")[0]
    assert loads_blueprint(base).aliases == {}
    with pytest.raises(InvalidInput) as err:
        loads_blueprint(base + "aliases:\n  loop: alias loop\n  empty: ''\n  Bad_Name: status\n")
    text = str(err.value)
    assert "aliases.loop: an alias cannot call another alias" in text
    assert "aliases.empty: expected a non-empty string" in text and "aliases.Bad_Name: invalid name" in text
    with pytest.raises(InvalidInput, match="aliases: expected a mapping of alias names"):
        loads_blueprint(base + "aliases: [status]\n")


def test_a_terminal_needs_a_terminal_here_too(host) -> None:  # type: ignore[no-untyped-def]
    """Under `script` csdeploy has a terminal: the container gets one of the same size."""
    _, env = host
    cmd = shlex.join([sys.executable, "-m", "cloudstack_deploy", "exec", "-it", "--env", "demo", "--role", "web",
                      "--", "sh", "-c", "test -t 0 && echo TTY-OK; stty size; exit 3"])
    res = subprocess.run(["script", "-qec", f"stty cols 91 rows 27; {cmd}", "/dev/null"], env=env,
                         capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert res.returncode == 3, res.stdout + res.stderr
    assert "TTY-OK" in res.stdout and "27 91" in res.stdout


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_console_in_tmux_as_a_person_uses_it_and_the_terminal_comes_back(host, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, env = host
    sock = str(tmp_path / "tmux.sock")

    def tmux(*args: str) -> str:
        return subprocess.run(["tmux", "-S", sock, *args], env=env, capture_output=True, text=True,
                               timeout=20).stdout

    def screen_shows(text: str, seconds: float = 20) -> str:
        """Wait for a line that starts with ``text``, after a shell prompt perhaps (what was typed echoes
        too, but never at a line's start)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            screen = tmux("capture-pane", "-p", "-t", "t")
            if any(line.removeprefix("# ").removeprefix("$ ").startswith(text) for line in screen.splitlines()):
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{text!r} not on the screen:\n{tmux('capture-pane', '-p', '-t', 't')}")

    tmux("new-session", "-d", "-s", "t", "-x", "100", "-y", "30", "sh")
    try:
        tmux("send-keys", "-t", "t", f"{shlex.quote(sys.executable)} -m cloudstack_deploy console --env demo --role web; "
             "echo console-exit=$?", "Enter")
        tmux("send-keys", "-t", "t", "echo in-$FAKE_CONTAINER-$((6*7)); test -t 0 && echo has-tty", "Enter")
        screen_shows("has-tty")
        screen_shows("in-demo-web-v1-42")
        tmux("send-keys", "-t", "t", "exit 7", "Enter")
        screen_shows("console-exit=7")
        # the terminal was put back as it was: canonical mode and echo
        tmux("send-keys", "-t", "t", "stty -a | tr ' ' '\\n' | grep -x -e icanon -e echo | tr '\\n' +", "Enter")
        screen_shows("icanon+echo+")
    finally:
        tmux("kill-server")


def test_interactive_needs_exactly_one_host(tmp_path: Path) -> None:
    import asyncio
    from dataclasses import replace

    from cloudstack_deploy.blueprint import loads_blueprint
    from cloudstack_deploy.errors import InvalidInput
    from cloudstack_deploy.progress import Recorder
    from cloudstack_deploy.rollout import interactive
    from cloudstack_deploy.rollout.deploy import Rollout

    from .test_commands import INVENTORY

    web2 = replace(INVENTORY.hosts[0], name="demo-web-2", index=2)
    inv = replace(INVENTORY, hosts=(*INVENTORY.hosts, web2))
    r = Rollout(loads_blueprint(BLUEPRINT.replace("aliases:", "x-aliases:").split("x-aliases:")[0]), inv, {},
                Recorder())
    with pytest.raises(InvalidInput, match=r"role web runs on 2 \(demo-web-1, demo-web-2\)"):
        interactive.one_host(r, "web")
    assert interactive.one_host(r, "web", primary=True).name == "demo-web-1"
    assert interactive.one_host(r, "web", hosts=("demo-web-2",)).name == "demo-web-2"
    with pytest.raises(InvalidInput, match="role web does not run on demo-db-1"):
        interactive.one_host(r, "web", hosts=("demo-db-1",))
    with pytest.raises(InvalidInput, match="--new makes a container of an app role"):
        asyncio.run(interactive.exec_(r, "db", ["sh"], new=True))


def test_app_stop_and_start_through_the_cli_with_the_deploy_lock(host) -> None:  # type: ignore[no-untyped-def]
    """The whole path of a life-cycle command: the CLI, the deploy lock on the primary host, the
    script, the lock released; --dry-run prints the script and changes nothing. The CLI runs in
    this process (what is checked is its output and exit code: a process of its own adds
    only its start-up's CPU)."""
    from tests.support.cli import cli_here

    ssh, env = host

    def csdeploy(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
        return cli_here(*args, env=env)

    res = csdeploy(env, "app", "stop", "--env", "demo", "--dry-run")
    assert res.returncode == 0, res.stderr
    assert "### demo-web-1: app stop web" in res.stdout and "### demo-web-1: take the deploy lock" in res.stdout
    assert [c["state"] for c in ssh.docker_state()["containers"]] == ["running", "running"]
    res = csdeploy(env, "app", "stop", "--env", "demo")
    assert res.returncode == 0, res.stderr
    assert res.stdout == "demo-web-1: demo-web-v1 stopped\n"
    assert [c["state"] for c in ssh.docker_state()["containers"]] == ["exited", "running"]
    assert not (ssh.home / ".csdeploy/demo/lock").exists()
    res = csdeploy(env, "app", "start", "--env", "demo")
    assert res.returncode == 0, res.stderr
    assert "demo-web-1: demo-web-v1 started" in res.stdout and "demo-web routed through kamal-proxy again" in res.stdout
    assert [c["state"] for c in ssh.docker_state()["containers"]] == ["running", "running"]


@pytest.mark.parametrize("image", ["pgvector/pgvector:pg16", "postgis/postgis:16-3.4", "timescale/timescaledb:latest-pg16",
                                   "bitnami/postgresql:16", "registry.lab:5000/postgres:15"])
def test_psql_finds_a_postgres_family_accessory(image: str) -> None:
    """`psql` looked for an image named postgres: an imported Chatwoot (pgvector) or an app on
    PostGIS had "no PostgreSQL accessory". The family is the importers' and backups' one."""
    from types import SimpleNamespace

    from cloudstack_deploy.blueprint import loads_blueprint
    from cloudstack_deploy.rollout.interactive import postgres_accessory

    bp = loads_blueprint(BLUEPRINT.replace("registry.lab:5000/postgres:15", image))
    assert postgres_accessory(SimpleNamespace(bp=bp), None) == "db"  # type: ignore[arg-type]
    other = loads_blueprint(BLUEPRINT.replace("registry.lab:5000/postgres:15", "registry.lab:5000/redis:7"))
    with pytest.raises(Exception, match="no PostgreSQL accessory"):
        postgres_accessory(SimpleNamespace(bp=other), None)  # type: ignore[arg-type]
