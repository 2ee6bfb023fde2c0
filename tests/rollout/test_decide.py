"""What the rollout does on each host, decided from the facts it read there (pure), and the facts
script itself under a real /bin/sh."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudstack_deploy.blueprint import loads_blueprint
from cloudstack_deploy.errors import OperationFailed
from cloudstack_deploy.progress import Recorder
from cloudstack_deploy.rollout.commands import facts, hardening
from cloudstack_deploy.rollout.contract import accessory_env
from cloudstack_deploy.rollout.deploy import Rollout
from cloudstack_deploy.rollout.stages import accessory_hash

from .test_commands import BLUEPRINT, INVENTORY, SECRETS, calls, run_script, shim  # noqa: F401 (fixture)

APP = "registry.lab:5000/demo-app"
REDIS = "registry.lab:5000/redis:7"
POSTGRES = "registry.lab:5000/postgres:15"
PROXY = "basecamp/kamal-proxy:v0.9.2"


def rollout() -> Rollout:
    return Rollout(loads_blueprint(BLUEPRINT), INVENTORY, SECRETS, Recorder())


def running_accessory(r: Rollout, name: str, ip: str) -> tuple[str, tuple[str, str]]:
    acc = r.bp.accessories[name]
    return f"demo-{name}", (accessory_hash(acc, accessory_env(acc, SECRETS), ip), "running")


def deployed(r: Rollout, version: str, *, web: bool = True) -> facts.HostFacts:
    """The web host after a successful deploy of ``version``."""
    name, acc = running_accessory(r, "redis", "10.1.1.2")
    return facts.HostFacts(docker=True, network=True, images={f"{APP}:{version}": "sha256:a", REDIS: "sha256:r",
                                                               PROXY: "sha256:p"},
                           service_label={f"{APP}:{version}": "demo"}, accessories={name: acc}, proxy="running",
                           hardening=hardening.wanted(r.bp.hosts, *r.host_slot(INVENTORY.host("demo-web-1"))))


def test_a_fresh_host_gets_everything() -> None:
    r = rollout()
    work = r.decide(INVENTORY.host("demo-web-1"), facts.HostFacts(), "v1")
    assert work.install == "apt" and work.network and work.proxy
    assert work.pulls == (f"{APP}:v1", REDIS, PROXY) and work.check_images == (f"{APP}:v1",)
    assert work.accessories == ("redis",)


def test_a_redeploy_pulls_only_the_new_version() -> None:
    r = rollout()
    work = r.decide(INVENTORY.host("demo-web-1"), deployed(r, "v1"), "v2")
    assert work.pulls == (f"{APP}:v2",) and work.check_images == (f"{APP}:v2",)
    assert not (work.install or work.network or work.proxy or work.accessories)


def test_a_rollback_to_an_image_on_the_host_needs_no_registry() -> None:
    r = rollout()
    f = deployed(r, "v1")
    f.images[f"{APP}:v2"] = "sha256:b"
    f.service_label[f"{APP}:v2"] = "demo"
    work = r.decide(INVENTORY.host("demo-web-1"), f, "v1")
    assert not work.needed, "no login, no pull, nothing to prepare"


def test_an_unchanged_accessory_host_is_left_alone_and_a_changed_one_rebooted() -> None:
    r = rollout()
    name, acc = running_accessory(r, "db", "10.1.1.4")
    db = facts.HostFacts(docker=True, network=True, images={POSTGRES: "sha256:pg"}, accessories={name: acc},
                         hardening=hardening.wanted(r.bp.hosts, 0, 1))
    assert not r.decide(INVENTORY.host("demo-db-1"), db, "v2").needed
    assert r.decide(INVENTORY.host("demo-db-1"), db, "v2", reboot=("db",)).accessories == ("db",)
    other = Rollout(r.bp, INVENTORY, dict(SECRETS, POSTGRES_PASSWORD="rotated"), Recorder())
    assert other.decide(INVENTORY.host("demo-db-1"), db, "v2").accessories == ("db",), "a rotated secret reboots it"
    stopped = facts.HostFacts(docker=True, network=True, images={POSTGRES: "x"}, accessories={name: (acc[0], "exited")})
    assert r.decide(INVENTORY.host("demo-db-1"), stopped, "v2").accessories == ("db",)


def test_an_image_of_another_service_on_the_host_is_refused() -> None:
    r = rollout()
    f = deployed(r, "v1")
    f.images[f"{APP}:v2"] = "sha256:x"
    f.service_label[f"{APP}:v2"] = "shop"
    with pytest.raises(OperationFailed, match="has label service=shop, not demo"):
        r.decide(INVENTORY.host("demo-web-1"), f, "v2")


def test_the_facts_script_reads_everything_in_four_docker_calls(shim, tmp_path: Path) -> None:  # noqa: F811
    """The recording docker answers nothing useful: what matters here is that the facts take
    a bounded number of docker calls and change nothing (tests/lab/test_facts.py reads a real
    engine)."""
    env, log = shim
    r = rollout()
    res = run_script(r._facts_script(INVENTORY.host("demo-web-1"), "v3"), env, tmp_path)
    assert res.returncode == 0, res.stderr
    docker_calls = calls(log)
    assert len(docker_calls) == 4, docker_calls
    assert docker_calls[1][:2] == ["image", "inspect"] and set(docker_calls[1][4:]) == {f"{APP}:v3", REDIS, PROXY}
    assert docker_calls[2][:3] == ["inspect", "--type", "container"]
    assert set(docker_calls[2][5:]) == {"demo-redis", "demo-web-v3", "kamal-proxy"}
    ps = docker_calls[3]
    assert ps[0] == "ps" and {"label=service=demo", "label=role=web", "label=destination=demo"} <= set(ps), ps
    assert not any(c[:1] in (["run"], ["pull"], ["login"], ["rm"], ["stop"]) for c in docker_calls), "it only reads"


def test_facts_parse_what_docker_prints() -> None:
    out = "\n".join([
        "docker|ok", "network|ok",
        f"image|{APP}:v3 {APP}:latest |sha256:aa|demo",
        f"image|{REDIS} |sha256:rr|<no value>",
        "container|/demo-redis|running|c0ffee",
        "container|/demo-web-v3|exited|be5ef00d",
        "container|/kamal-proxy|running|<no value>|/home/kamal-proxy/.config/kamal-proxy /home/kamal-proxy/.apps-config ",
        "running|web|demo-web-v2|true", "running|web|demo-web-v1|",
        "mount|/data/db|ok",
    ])
    f = facts.parse(out, accessories=["demo-redis"])
    assert f.docker and f.network and f.mounts == {"/data/db": True}
    assert f.images == {f"{APP}:v3": "sha256:aa", f"{APP}:latest": "sha256:aa", REDIS: "sha256:rr"}
    assert f.service_label[f"{APP}:v3"] == "demo" and f.service_label[REDIS] == ""
    assert f.accessories == {"demo-redis": ("c0ffee", "running")}
    assert f.containers == {"demo-web-v3": ("exited", "be5ef00d")} and f.proxy == "running"
    assert f.proxy_mounts == ("/home/kamal-proxy/.config/kamal-proxy", "/home/kamal-proxy/.apps-config")
    assert f.running == {"web": ["demo-web-v2", "demo-web-v1"]}, "what a switch back returns to, newest first"
    assert f.tls == {"demo-web-v2"}, "served over HTTPS (its tls label)"
    assert not facts.parse("").docker, "no answer: nothing is assumed"


def test_roles_and_hosts_limit_a_run_and_unknown_names_are_invalid_input() -> None:
    from cloudstack_deploy.errors import InvalidInput

    r = rollout()
    assert [h.name for h in r.select(roles=("web",))] == ["demo-web-1"]
    assert r.role_hosts("worker") == [], "the other roles' hosts are not touched"
    assert [h.name for h in r.select(hosts=("demo-worker-1",))] == ["demo-worker-1"]
    with pytest.raises(InvalidInput, match="no role named api") as err:
        r.select(roles=("api",))
    assert "web, worker" in (err.value.hint or "")
    with pytest.raises(InvalidInput, match="has no host demo-web-9"):
        r.select(hosts=("demo-web-9",))
    with pytest.raises(InvalidInput, match="no host matches"):
        r.select(roles=("web",), hosts=("demo-worker-1",))


def test_a_partial_deploy_does_not_move_the_environments_previous_version() -> None:
    from cloudstack_deploy.rollout import history

    full = [history.DeployRecord(version=v, status="ok") for v in ("v1", "v2")]
    partial = history.DeployRecord(version="v3", status="ok", hosts=["demo-web-1"])
    assert history.previous_version([*full, partial]) == "v1"
    assert history.parse(partial.to_json())[0].hosts == ["demo-web-1"]


def test_a_proxy_without_the_certificates_mount_is_replaced_only_when_a_certificate_needs_it() -> None:
    from cloudstack_deploy.rollout.commands import proxy

    r = rollout()
    web = INVENTORY.host("demo-web-1")
    old = facts.HostFacts(proxy="running", proxy_mounts=("/home/kamal-proxy/.config/kamal-proxy",))
    assert not r.proxy_needs_reboot(web, old), "no certificate: the proxy stays"
    r.certificates["web"] = ("CERT", "KEY")
    assert r.proxy_needs_reboot(web, old)
    new = facts.HostFacts(proxy="running", proxy_mounts=(*old.proxy_mounts, proxy.APPS_MOUNT))
    assert not r.proxy_needs_reboot(web, new)
    assert not r.proxy_needs_reboot(web, facts.HostFacts()), "no proxy yet: it is booted with the mount"
    assert not r.proxy_needs_reboot(INVENTORY.host("demo-worker-1"), old)
