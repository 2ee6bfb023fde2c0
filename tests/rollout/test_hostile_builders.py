"""Every script a host runs, built from a blueprint whose every host-bound value is hostile,
run under a real /bin/sh with a recording `docker`: nothing executes, each value is one word.

The blueprint is made directly, without validation, on purpose: the builders must be safe on
their own (validation refuses most of these values too, which is the second wall, not the
first). Names and paths that the host also sees, the inventory's mount points and labels
included, are hostile as well.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from cloudstack_deploy.blueprint_schema import (
    Accessory,
    Blueprint,
    Cloud,
    EnvSpec,
    Healthcheck,
    Proxy,
    Registry,
    Role,
    RolloutSettings,
    SSHAccess,
)
from cloudstack_deploy.inventory import HostDisk
from cloudstack_deploy.rollout import history, ops
from cloudstack_deploy.rollout.commands import facts
from cloudstack_deploy.rollout.commands import host as host_cmds
from cloudstack_deploy.rollout.commands import lifecycle as lc
from cloudstack_deploy.rollout.commands import proxy as proxy_cmds
from cloudstack_deploy.rollout.contract import accessory_env, role_env
from cloudstack_deploy.rollout.stages import (
    accessory_script,
    canary_split_script,
    prepare_script,
    proxy_commit_script,
    proxy_switch_back_script,
    proxy_switch_script,
    worker_abort_script,
    worker_commit_script,
    worker_start_script,
)

from .test_commands import INVENTORY, WEB, calls, run_script, shim  # noqa: F401 (fixture)

#: Balanced, so that a value pasted into the script unquoted would run (not just break the
#: script's syntax); quotes, backslashes and globs come in a second round (QUOTES).
EVIL = "e$(touch PWN_A)`touch PWN_B`;touch PWN_C|touch PWN_D&&touch PWN_E *"
QUOTES = "q'x'\"y\"\\z"


def evil(tag: str) -> str:
    return f"{tag}{EVIL}{QUOTES}"


@pytest.fixture
def hostile_bp() -> Blueprint:
    hc = Healthcheck(path=evil("/up"), cmd=evil("check"), interval=1, timeout=1, readiness_delay=0)
    proxy = Proxy(app_port=8000, hosts=(evil("host"),), healthcheck=hc, deploy_timeout=1, drain_timeout=1)
    env = EnvSpec(clear={"GREETING": evil("clear")}, secret=("API_TOKEN",))
    return Blueprint(
        service="demo", image=evil("registry.example/app"),
        cloud=Cloud(zone="z", template="t", service_offering="s", ssh=SSHAccess(allow_from=("127.0.0.0/8",))),
        roles={"web": Role(name="web", image=evil("registry.example/app"), service_offering="s", proxy=proxy, env=env, cmd=(evil("cmd"),)),
               "worker": Role(name="worker", image=evil("registry.example/app"), service_offering="s", env=env, cmd=(evil("work"),),
                              healthcheck=hc)},
        accessories={"redis": Accessory(name="redis", image=evil("redis"), role="web", port=6379,
                                        env=EnvSpec(clear={"X": evil("acc")}), cmd=(evil("acmd"),),
                                        volumes=(evil("/data/vol") + ":/data",)),
                     "db": Accessory(name="db", image="registry.example/postgres:15", port=5432,
                                     env=EnvSpec(clear={"POSTGRES_DB": evil("db")}, secret=("POSTGRES_PASSWORD",)))},
        registry=Registry(server=evil("registry.example"), username=evil("user"), password="REGISTRY_PASSWORD"),
        secrets=("API_TOKEN", "POSTGRES_PASSWORD", "REGISTRY_PASSWORD"),
        rollout=RolloutSettings(proxy_image=evil("proxy")),
    )


SECRETS = {"API_TOKEN": evil("token"), "POSTGRES_PASSWORD": evil("pw"), "REGISTRY_PASSWORD": evil("reg")}


def scripts(bp: Blueprint) -> dict[str, object]:
    web = replace(WEB, disks=(HostDisk(name="d", label=evil("lbl"), mount=evil("/data/m"), size_gb=1),))
    web_env = role_env(bp, "web", INVENTORY, {k: v.replace("\n", " ") for k, v in SECRETS.items()}, "v1")
    worker_env = role_env(bp, "worker", INVENTORY, SECRETS, "v1")
    redis = bp.accessories["redis"]
    return {
        "prepare": prepare_script(bp, web, user=evil("user"), install="apt", network=True,
                                  registry_password=SECRETS["REGISTRY_PASSWORD"],
                                  pulls=[bp.image + ":v1", redis.image], check_images=[bp.image + ":v1"],
                                  accessory_envs={"redis": accessory_env(redis, SECRETS)}, proxy=True),
        "accessory": accessory_script(bp, "demo", redis, accessory_env(redis, SECRETS), "10.1.1.2", force=True),
        "switch": proxy_switch_script(bp, "demo", bp.roles["web"], "v1", web_env, reboot_proxy=True),
        "commit": proxy_commit_script(bp, "demo", bp.roles["web"], "v1", retain=2),
        "switch back": proxy_switch_back_script(bp, bp.roles["web"], "v1", evil("demo-web-v0")),
        "canary split": canary_split_script(bp, "demo", bp.roles["web"], "v1", web_env, percent=10,
                                            cookie=evil("cookie")),
        "worker start": worker_start_script(bp, "demo", bp.roles["worker"], "v1", worker_env),
        "worker commit": worker_commit_script(bp, "demo", bp.roles["worker"], "v1", retain=2),
        "worker abort": worker_abort_script(bp, bp.roles["worker"], "v1"),
        "facts": facts.script(images=[bp.image + ":v1", redis.image], accessories=["demo-redis"],
                              containers=["demo-web-v1"], mounts=[evil("/data/m")],
                              roles={"web": {"service": evil("svc"), "role": "web"}}),
        "lock": host_cmds.lock("demo", json.dumps({"user": evil("u")}), break_lock=True),
        "unlock": host_cmds.unlock("demo", history.start(evil("v"), "deploy").to_json()),
        "history": history.read_script("demo"),
        "status": ops.status_script("demo"),
        "maintenance on": proxy_cmds.maintenance_on("demo", [(evil("svc"), 1.0)], evil("msg")),
        "maintenance off": proxy_cmds.maintenance_off("demo", [evil("svc")]),
        "app stop": lc.app_stop({"service": evil("svc"), "role": evil("role")}),
        "app start": lc.app_start({"service": evil("svc")}, evil("demo-web-v1"), role=evil("role"),
                                  service=evil("svc"), proxy=bp.roles["web"].proxy),
        "app remove": lc.app_remove({"service": evil("svc")}, service=evil("svc")),
        "accessory remove": lc.accessory_remove(evil("acc"), env_file=evil("envfile"),
                                                data=[evil("/data/vol"), evil("vol")]),
    }


@pytest.mark.parametrize("which", ["prepare", "accessory", "switch", "commit", "switch back", "canary split",
                                   "worker start", "worker commit", "worker abort",
                                   "facts", "lock", "unlock", "history", "status", "maintenance on",
                                   "maintenance off", "app stop", "app start", "app remove",
                                   "accessory remove"])
def test_a_hostile_value_never_runs(which: str, hostile_bp: Blueprint, shim, tmp_path: Path) -> None:  # noqa: F811
    env, log = shim
    work = tmp_path / "work"
    work.mkdir()
    script = scripts(hostile_bp)[which]
    syntax = subprocess.run(["sh", "-n"], input=script.text(), capture_output=True, text=True)  # type: ignore[attr-defined]
    assert syntax.returncode == 0, f"{which}: a value broke the script's quoting: {syntax.stderr}"
    run_script(script, {**env, "HOME": str(work)}, work)  # type: ignore[arg-type]
    created = sorted(p.name for p in [*work.rglob("PWN_*"), *tmp_path.glob("PWN_*"), *Path(os.getcwd()).glob("PWN_*")])
    assert created == [], f"{which}: a blueprint value was run by the shell"
    argv = json.dumps(calls(log))
    for value in SECRETS.values():
        assert value not in argv, f"{which}: a secret reached docker's argv"


def test_hostile_values_reach_docker_as_single_words(hostile_bp: Blueprint, shim, tmp_path: Path) -> None:  # noqa: F811
    env, log = shim
    run_script(scripts(hostile_bp)["switch"], env, tmp_path)
    run = next(c for c in calls(log) if c[:1] == ["run"])
    assert f"GREETING={evil('clear')}" in run and run[-1] == evil("cmd")
    assert run[-2] == evil("registry.example/app") + ":v1"
