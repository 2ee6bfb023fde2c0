"""Start-up: `csdeploy --help` (and any command's option parsing) imports no client, no SSH,
no logging framework and no blueprint reader; each command imports what it uses when it runs.

What is asserted is WHAT gets imported (a wall time on a shared machine proves nothing): each
of these modules costs tens to hundreds of milliseconds here before a command can do anything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

HEAVY = ("aiohttp", "asyncssh", "cs", "requests", "structlog", "yaml", "tenacity", "sqlite3", "asyncio",
         "cloudstack_deploy.service", "cloudstack_deploy.cloud", "cloudstack_deploy.rollout",
         "cloudstack_deploy.provision", "cloudstack_deploy.blueprint_schema", "cloudstack_deploy.progress",
         "cloudstack_deploy.render")

PROBE = """
import json, runpy, sys
sys.argv = ["csdeploy", *{argv!r}]
try:
    runpy.run_module("cloudstack_deploy", run_name="__main__")
except SystemExit as exc:
    code = exc.code
sys.stdout.flush()
import logging
handler = any(getattr(h, "_csdeploy_handler", False) for h in logging.getLogger().handlers)
print("\\n@@" + json.dumps({{"code": code, "modules": sorted(sys.modules), "logging": handler}}))
"""


def imported_by(*argv: str, code: int = 0, home: Path | None = None) -> tuple[str, set[str]]:
    text, modules, _ = run_probe(*argv, code=code, home=home)
    return text, modules


def run_probe(*argv: str, code: int = 0, home: Path | None = None) -> tuple[str, set[str], bool]:
    """Output, modules loaded, and whether csdeploy's log handler was set up."""
    env = {**os.environ, **({"CSDEPLOY_HOME": str(home)} if home else {})}
    out = subprocess.run([sys.executable, "-c", PROBE.format(argv=list(argv))], capture_output=True, text=True,
                         timeout=60, cwd=REPO, env=env)
    text, _, tail = out.stdout.rpartition("\n@@")
    assert tail, out.stderr
    data = json.loads(tail)
    assert (data["code"] or 0) == code, out.stderr
    return text, set(data["modules"]), data["logging"]


@pytest.mark.parametrize("argv", [("--help",), ("deploy", "--help"), ("plan", "--help")])
def test_help_imports_nothing_heavy(argv: tuple[str, ...]) -> None:
    text, modules = imported_by(*argv)
    assert "Usage: csdeploy" in text
    loaded = [m for m in HEAVY if m in modules]
    assert loaded == [], f"`csdeploy {' '.join(argv)}` imported {loaded}"



def test_a_command_that_runs_sets_up_its_logging(tmp_path: Path) -> None:
    """Only help skips the logging set-up: a ``--help`` after ``--`` is the user's command's
    (exec's), and a command that runs (here refusing a missing file) has its logging (its
    handler; structlog itself loads with the first line written, see below)."""
    for argv in (["exec", "--env", "nosuch", "--", "ls", "--help"], ["validate", str(tmp_path / "missing.yml")]):
        _, _, logging_set_up = run_probe(*argv, code=2, home=tmp_path)
        assert logging_set_up, argv
    _, _, logging_set_up = run_probe("--help")
    assert not logging_set_up


# ---- the first API call ---------------------------------------------------------------------------
#: Loaded at the first API call of a command that does not SSH, each a tenth of a second or more
#: here: `requests` (what `cs` imported beside aiohttp), SSH and its crypto, the rollout, the
#: history store. `cs` is not the client any more (cloud/api.py signs the requests itself).
NOT_BEFORE_THE_FIRST_CALL = ("requests", "cs", "urllib3", "asyncssh", "cryptography", "sqlite3", "psycopg",
                             "yoyo", "cloudstack_deploy.rollout", "cloudstack_deploy.store.db",
                             "cloudstack_deploy.nightly", "cloudstack_deploy.image_build")

CALL_PROBE = """
import json, runpy, sys
at_call = []
def hook(event, args):  # the connection to the cloud's port: the first API request goes out
    if event == "socket.connect" and not at_call and isinstance(args[1], tuple) and args[1][1:2] == ({port},):
        at_call.extend(sorted(sys.modules))
sys.addaudithook(hook)
sys.argv = ["csdeploy", *{argv!r}]
code = 0
try:
    runpy.run_module("cloudstack_deploy", run_name="__main__")
except SystemExit as exc:
    code = exc.code
sys.stdout.flush()
print("\\n@@" + json.dumps({{"code": code, "at_call": at_call, "at_exit": sorted(sys.modules)}}))
"""


@pytest.fixture(scope="module")
def cloud() -> Iterator[str]:
    from cloudstack_deploy.lab.simulator.server import ThreadedSimulator
    from tests.support.sim import make_config

    with ThreadedSimulator(make_config(ssh=False)) as sim:
        yield sim.endpoint


def at_first_call(endpoint: str, home: Path, *argv: str) -> tuple[int, set[str], set[str]]:
    """The exit code, and the modules loaded when the command's first API request was sent and
    when it ended, of `csdeploy ARGV` run against the simulator at ``endpoint``."""
    from tests.support.sim import KEY, SECRET

    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("CLOUDSTACK_", "CSDEPLOY_"))},
           "CSDEPLOY_HOME": str(home), "CLOUDSTACK_ENDPOINT": endpoint, "CLOUDSTACK_KEY": KEY,
           "CLOUDSTACK_SECRET": SECRET, "CSDEPLOY_STATE_URL": "none", "PYTHONPATH": str(REPO)}
    port = int(endpoint.rsplit(":", 1)[1].split("/", 1)[0])
    out = subprocess.run([sys.executable, "-c", CALL_PROBE.format(argv=list(argv), port=port)], capture_output=True,
                         text=True, timeout=60, cwd=home, env=env)
    _, _, tail = out.stdout.rpartition("\n@@")
    assert tail, out.stderr
    data = json.loads(tail)
    assert data["at_call"], f"`csdeploy {' '.join(argv)}` made no API call: {out.stderr}"
    return data["code"] or 0, set(data["at_call"]), set(data["at_exit"])


def heavy(modules: set[str]) -> list[str]:
    return [m for m in NOT_BEFORE_THE_FIRST_CALL if m in modules]


DEMO = str(REPO / "blueprints" / "demo.yml")


@pytest.mark.parametrize("argv", [("envs",), ("plan", DEMO, "--env", "startup")],
                         ids=["envs", "plan"])
def test_a_command_that_only_reads_the_cloud_loads_no_ssh_rollout_or_requests(
        cloud: str, tmp_path: Path, argv: tuple[str, ...]) -> None:
    """Neither before its first API call nor by its end: `envs` and `plan` talk to the cloud only."""
    code, at_call, at_exit = at_first_call(cloud, tmp_path, *argv)
    assert code == 0
    assert heavy(at_call) == [] and heavy(at_exit) == []
    assert "aiohttp" in at_call  # the one HTTP client there is


def test_status_reads_a_missing_inventory_from_the_cloud_before_it_loads_ssh(cloud: str, tmp_path: Path) -> None:
    """`status` of an environment this machine has no inventory of rebuilds it from the cloud
    first (here the cloud has no such VMs: exit 1); SSH and the rollout load after that call."""
    code, at_call, _ = at_first_call(cloud, tmp_path, "status", "--env", "startup", "--blueprint", DEMO)
    assert code == 1
    assert heavy(at_call) == []


def test_structlog_loads_with_the_first_line_written(cloud: str, tmp_path: Path) -> None:
    """`envs` writes no log line and never loads structlog; with ``-v`` each API call is a
    line, rendered by structlog as before."""
    _, _, at_exit = at_first_call(cloud, tmp_path, "envs")
    assert "structlog" not in at_exit
    from tests.support.sim import KEY, SECRET

    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("CLOUDSTACK_", "CSDEPLOY_"))},
           "CSDEPLOY_HOME": str(tmp_path), "CLOUDSTACK_ENDPOINT": cloud, "CLOUDSTACK_KEY": KEY,
           "CLOUDSTACK_SECRET": SECRET, "CSDEPLOY_STATE_URL": "none", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-m", "cloudstack_deploy", "-v", "--log-format", "json", "envs"],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    calls = [json.loads(line) for line in out.stderr.splitlines() if line.startswith("{")]
    assert [c["command"] for c in calls if c.get("event") == "api call"][:1] == ["listTags"]
    assert all(c["logger"] == "cloudstack_deploy.cloud" and c["level"] == "info" for c in calls)


def test_envs_reads_tags_without_the_blueprint_reader(cloud: str, tmp_path: Path) -> None:
    """`envs` takes no blueprint: neither YAML nor the blueprint's rules (nor the vault
    adapters, which the cloud's configuration reached through secrets.py) load for it."""
    code, at_call, at_exit = at_first_call(cloud, tmp_path, "envs")
    assert code == 0
    unneeded = ("yaml", "cloudstack_deploy.blueprint_schema", "cloudstack_deploy.blueprint", "cloudstack_deploy.vaults")
    assert [m for m in unneeded if m in at_call | at_exit] == []


def test_history_from_this_machine_s_store_loads_no_http_client(tmp_path: Path) -> None:
    """`history` reads the local history store only: no cloud session, so neither aiohttp
    (about 130 ms of imports here, its TLS contexts made at import) nor the cloud client."""
    text, modules = imported_by("history", "--env", "startup", home=tmp_path)
    assert "no deployments recorded" in text
    assert "cloudstack_deploy.service" in modules  # it did run the command
    assert [m for m in ("aiohttp", "cloudstack_deploy.cloud.client", "asyncssh") if m in modules] == []


FROZEN_AT_EXIT = """
import atexit, gc, sys
atexit.register(lambda: print("frozen at exit:", gc.get_freeze_count(), file=sys.stderr))
sys.argv = ["csdeploy", *{argv!r}]
from cloudstack_deploy.cli import main
main()
"""


@pytest.mark.parametrize(("argv", "code", "said"), [(("--version",), 0, "csdeploy, version"),
                                                    (("validate", "/nonexistent/blueprint.yml"), 2, "blueprint.yml")])
def test_the_process_s_own_command_leaves_its_objects_out_of_the_shutdown_s_collections(
        argv: tuple[str, ...], code: int, said: str) -> None:
    """A command run as the process (`csdeploy ...`: sys.argv) freezes its objects when it has
    ended, so the interpreter's shutdown does not collect them all again (0.05-0.2 s of a
    command here): what it printed is all there, its exit code is kept, exit handlers still run."""
    proc = subprocess.run([sys.executable, "-c", FROZEN_AT_EXIT.format(argv=argv)], capture_output=True,
                          text=True, cwd=REPO, timeout=60)
    assert proc.returncode == code, proc.stderr
    assert said in proc.stdout + proc.stderr
    frozen = [line for line in proc.stderr.splitlines() if line.startswith("frozen at exit:")]
    assert frozen and int(frozen[0].split(":")[1]) > 1000, proc.stderr


def test_a_caller_s_own_arguments_leave_its_garbage_collector_alone() -> None:
    """click's CliRunner (and any program that calls `main(args)`) keeps its collector: its
    objects are not frozen, so its garbage is still collected."""
    import gc

    from click.testing import CliRunner

    from cloudstack_deploy.cli import main

    before = gc.get_freeze_count()
    result = CliRunner().invoke(main, ["--version"])
    after = gc.get_freeze_count()
    if after != before:
        gc.unfreeze()  # do not leave this test process's objects frozen
    assert result.exit_code == 0 and "csdeploy, version" in result.output
    assert after == before, f"{after - before} objects of the caller were frozen"
