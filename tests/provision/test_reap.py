"""`csdeploy reap` on the simulator: exactly the expired environments nobody is changing go,
and nothing of them is left (checked with `cs`, not with csdeploy's code)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cloudstack_deploy.cloud import read_cloud_config
from cloudstack_deploy.provision.cloudlock import rollout_lock
from cloudstack_deploy.provision.desired import TAG_LOCK, format_time, network_name
from cloudstack_deploy.state import EnvState

from .conftest import REPO, CloudView, blueprint, cli, create

MINIMAL = REPO / "blueprints" / "minimal.yml"
DISK = ("roles.web.disk={size: 5, mount: /data/web}",)   # a data volume too: every kind of resource


def small(*extra: str) -> Any:
    return blueprint(*DISK, *extra, path=MINIMAL)


async def create_many(ttls: dict[str, timedelta]) -> None:
    await asyncio.gather(*(create(env, ttl=ttl, bp=small()) for env, ttl in ttls.items()))


def owned(view: CloudView, env: str) -> dict[str, list[str]]:
    """Everything of ``env`` a `cs` user sees: by tag, by name, and what hangs off its network."""
    nets = [n for n in view.networks() if n["name"] == network_name(env)]
    net_ids = {n["id"] for n in nets}
    found = {
        "networks": [n["name"] for n in nets],
        "vms": [v["name"] for v in view.vms() if v["name"].startswith(f"{env}-")
                or any(nic.get("networkid") in net_ids for nic in v.get("nic", []))],
        "ips": [i["ipaddress"] for i in view.all_ips() if i.get("associatednetworkid") in net_ids],
        "volumes": [v["name"] for v in view.volumes() if v["name"].startswith(f"{env}-")],
        "keypairs": [k["name"] for k in view.keypairs() if k["name"] == f"csdeploy-{env}"],
        "tags": [f"{t['resourcetype']} {t['resourceid']}" for t in view.env_tags(env)],
    }
    return {k: v for k, v in found.items() if v}


def lock_network(view: CloudView, env: str, holder: str) -> None:
    (net,) = [n for n in view.networks() if n["name"] == network_name(env)]
    view.cs.createTags(resourceids=net["id"], resourcetype="Network",
                       **{"tags[0].key": TAG_LOCK, "tags[0].value": holder})


def wait_past(seconds: float, since: float) -> None:
    left = since + seconds - time.time()
    if left > 0:
        time.sleep(left)


def reap_json(*args: str) -> dict[str, Any]:
    res = cli("reap", "--json", *args)
    assert res.exit_code == 0, res.stderr + res.stdout
    return json.loads(res.stdout)


def test_reap_removes_exactly_the_expired_unlocked_environments(home: Path, cloud_view: CloudView) -> None:
    """Ten environments created at once: eight expire, one does not, one is locked by a run on
    another machine. Reap tears down the eight, concurrently, and leaves zero of their resources."""
    short = timedelta(seconds=3)
    ttls = {f"rp{i}": short for i in range(9)} | {"keeper": timedelta(days=1)}
    started = time.time()
    asyncio.run(create_many(ttls))
    lock_network(cloud_view, "rp8", f"ci@other-runner pid 4242 since {format_time(datetime.now(UTC))}")
    expired = {f"rp{i}" for i in range(8)}
    for env in ttls:
        assert owned(cloud_view, env).get("volumes"), f"{env} has no data volume to reap"
    wait_past(short.total_seconds() + 1, started)

    listed = json.loads(cli("envs", "--json").stdout)
    assert {e["env"] for e in listed if e["expired"]} == expired | {"rp8"}
    assert [e["env"] for e in listed if e["lock"]] == ["rp8"]

    result = reap_json("--max-parallel", "8")
    by_env = {i["env"]: i for i in result["items"]}
    assert set(by_env) == expired | {"rp8"}, "only expired environments are candidates"
    assert {e for e, i in by_env.items() if i["result"] == "removed"} == expired
    assert by_env["rp8"]["result"] == "skipped" and "ci@other-runner" in by_env["rp8"]["reason"]
    # each: the VM, its public IP, the data volume, the network, the key pair
    assert all(by_env[e]["deleted"] == 5 and by_env[e]["age_seconds"] >= 3 for e in expired), by_env
    print(f"\n[reap figures] {len(expired)} of 10 environments reaped in {result['seconds']}s "
          f"(max-parallel 8; per env {sorted(by_env[e]['seconds'] for e in expired)})")

    for env in expired:
        assert owned(cloud_view, env) == {}, f"{env} is not gone: {owned(cloud_view, env)}"
        assert not EnvState(env).dir.exists()
    for env in ("keeper", "rp8"):
        left = owned(cloud_view, env)
        assert set(left) == {"networks", "vms", "ips", "volumes", "keypairs", "tags"}, left

    again = reap_json()
    assert [(i["env"], i["result"]) for i in again["items"]] == [("rp8", "skipped")]


def test_dry_run_deletes_nothing_and_prefix_selects(home: Path, cloud_view: CloudView) -> None:
    started = time.time()
    asyncio.run(create_many({"nightly-1130-aaa": timedelta(seconds=2), "nightlyx": timedelta(seconds=2),
                             "other-1": timedelta(seconds=2)}))
    wait_past(3, started)
    before = cloud_view.everything()
    dry = reap_json("--dry-run")
    assert sorted((i["env"], i["result"]) for i in dry["items"]) == [
        ("nightly-1130-aaa", "would remove"), ("nightlyx", "would remove"), ("other-1", "would remove")]
    assert cloud_view.everything() == before
    text = cli("reap", "--dry-run").stdout
    assert "would remove 3" in text and "nightly-1130-aaa" in text

    only = reap_json("--prefix", "nightly")
    assert [(i["env"], i["result"]) for i in only["items"]] == [("nightly-1130-aaa", "removed")]
    assert owned(cloud_view, "nightly-1130-aaa") == {}
    assert owned(cloud_view, "nightlyx") and owned(cloud_view, "other-1")


def test_a_run_holding_the_local_lock_is_never_reaped_under(home: Path, cloud_view: CloudView) -> None:
    started = time.time()
    asyncio.run(create_many({"busy": timedelta(seconds=2)}))
    wait_past(3, started)
    with EnvState("busy").lock(owner="csdeploy deploy (test)"):
        result = reap_json()
    (item,) = result["items"]
    assert item["result"] == "skipped" and "being changed by another csdeploy" in item["reason"], item
    assert owned(cloud_view, "busy")
    assert reap_json()["items"][0]["result"] == "removed"  # once the lock is free
    assert owned(cloud_view, "busy") == {}


def test_dead_and_stale_locks_do_not_keep_an_expired_environment(home: Path, cloud_view: CloudView) -> None:
    """A run killed on this machine (its pid is gone) or on another one long ago leaves its lock."""
    started = time.time()
    asyncio.run(create_many({"killed": timedelta(seconds=2), "stale": timedelta(seconds=2)}))
    dead_pid = 2 ** 22 + 12345  # above pid_max's default: no such process
    lock_network(cloud_view, "killed", f"root@{socket.gethostname()} pid {dead_pid} since "
                                       f"{format_time(datetime.now(UTC))}")
    lock_network(cloud_view, "stale", f"ci@gone-runner pid 7 since {format_time(datetime.now(UTC) - timedelta(hours=3))}")
    wait_past(3, started)
    result = reap_json()
    by_env = {i["env"]: i for i in result["items"]}
    assert by_env["killed"]["result"] == "removed" and "holder is gone" in by_env["killed"]["reason"]
    assert by_env["stale"]["result"] == "removed" and "stale lock" in by_env["stale"]["reason"]
    assert owned(cloud_view, "killed") == {} and owned(cloud_view, "stale") == {}


def test_a_rollout_holds_the_cloud_lock_so_reap_elsewhere_skips_it(home: Path, cloud_view: CloudView) -> None:
    """deploy/rollback take the same lock tag around the rollout (`rollout_lock`): a reap in
    another process sees it, skips the environment, and it is released afterwards."""
    started = time.time()
    asyncio.run(create_many({"deploying": timedelta(seconds=2)}))
    wait_past(3, started)
    warnings: list[str] = []

    async def during() -> list[str]:
        async with rollout_lock(read_cloud_config(), "deploying", break_lock=False, warn=warnings.append) as gate:
            await gate  # taken in the background: a rollout awaits it before it changes anything
            locks = [t["value"] for t in cloud_view.cs.listTags(key=TAG_LOCK).get("tag", [])]
            reaped = await asyncio.to_thread(reap_json)
        return [locks, reaped]

    locks, reaped = asyncio.run(during())
    assert warnings == []
    assert len(locks) == 1 and f"pid {os.getpid()}" in locks[0]
    assert reaped["items"][0]["result"] == "skipped" and f"pid {os.getpid()}" in reaped["items"][0]["reason"]
    assert cloud_view.cs.listTags(key=TAG_LOCK).get("tag", []) == []
    assert reap_json()["items"][0]["result"] == "removed"


def test_a_rollout_without_a_reachable_cloud_warns_and_goes_on(home: Path) -> None:
    import dataclasses

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = dataclasses.replace(read_cloud_config(), endpoint=f"http://127.0.0.1:{port}/client/api")
    warnings: list[str] = []
    ran = []

    async def go() -> None:
        async with rollout_lock(config, "demo", break_lock=False, warn=warnings.append) as gate:
            await gate
            ran.append(True)

    asyncio.run(go())
    assert ran == [True]
    assert len(warnings) == 1 and "could not take the environment's lock" in warnings[0] \
        and "reap` on other machines cannot see it" in warnings[0], warnings
