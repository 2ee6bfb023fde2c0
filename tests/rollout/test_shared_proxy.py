"""Two HTTP services on the same VMs, behind one kamal-proxy (`run_on` + proxy.host/path_prefix):
what the blueprint accepts and refuses, what provisioning creates (no VMs of the placed role's
own), and the rollout's plan on the shared hosts (each role switched, judged and switched back
on its own; `--roles` narrows to a role, not to its VMs). No host here: the lab story
tests/e2e/test_real_apps.py runs one on real kamal-proxy."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cloudstack_deploy.blueprint import BlueprintError, load_blueprint
from cloudstack_deploy.blueprint_schema import Blueprint
from cloudstack_deploy.inventory import Inventory, LoadBalancer
from cloudstack_deploy.progress import Recorder
from cloudstack_deploy.provision.desired import desired_state
from cloudstack_deploy.rollout import plan as planning
from cloudstack_deploy.rollout import runs
from cloudstack_deploy.rollout.commands.facts import HostFacts
from cloudstack_deploy.rollout.deploy import Rollout
from cloudstack_deploy.state import inventory_from_dict, inventory_to_dict
from tests.support.cli import cli

from .test_commands import INVENTORY, SECRETS
from .test_strategy import web_hosts

HEAD = """\
service: demo
image: registry.lab:5000/demo-app
cloud: {zone: z, template: t, service_offering: small, ssh: {allow_from: [127.0.0.0/8]}}
registry: {server: registry.lab:5000, username: csdeploy, password: REGISTRY_PASSWORD}
secrets: [API_TOKEN, POSTGRES_PASSWORD, REGISTRY_PASSWORD]
roles:
"""
SHARED = """\
  web:
    count: 2
    proxy: {app_port: 8000}
    disk: {size: 2, mount: /data}
  admin:
    run_on: web
    image: registry.lab:5000/admin-ui:1.4
    proxy: {app_port: 3000, path_prefix: /admin, healthcheck: {path: /health}}
    volumes: [{name: uploads, path: /srv/uploads, per_host: true}]
  worker: {cmd: [python3, -m, demo.worker]}
"""
ADMIN = "registry.lab:5000/admin-ui:1.4"
APP = "registry.lab:5000/demo-app"
PROXY = "basecamp/kamal-proxy:v0.9.2"


def load(tmp_path: Path, roles: str, head: str = HEAD) -> Blueprint:
    path = tmp_path / "bp.yml"
    path.write_text(head + roles)
    return load_blueprint(path)


def problems(tmp_path: Path, roles: str, head: str = HEAD) -> list[str]:
    with pytest.raises(BlueprintError) as info:
        load(tmp_path, roles, head)
    return [str(p).replace(str(tmp_path) + "/", "") for p in info.value.problems]


# ---- the blueprint and provisioning ------------------------------------------------------------
def test_a_role_run_on_another_takes_its_vms_and_gets_none_of_its_own(tmp_path: Path) -> None:
    bp = load(tmp_path, SHARED)
    admin = bp.roles["admin"]
    assert (admin.run_on, admin.count, admin.vm_role) == ("web", 2, "web")
    assert "admin on web" in bp.summary()
    desired = desired_state(bp, "demo", now=datetime(2026, 12, 6, tzinfo=UTC))
    assert [(v.name, v.also) for v in desired.vms] == [
        ("demo-web-1", ("admin",)), ("demo-web-2", ("admin",)), ("demo-worker-1", ())]
    assert [lb.role for lb in desired.load_balancers] == ["web"], "admin comes in through web's address"
    assert [d.label for v in desired.vms for d in v.disks] == ["csd-web", "csd-web"], "no disk of admin's own"


@pytest.mark.parametrize(("roles", "expected"), [
    ("  web: {proxy: {app_port: 8000}}\n  admin: {run_on: wbe, proxy: {path_prefix: /admin}}\n",
     "bp.yml:8: roles.admin.run_on: no other role named 'wbe' to run on (did you mean 'web'?)"),
    ("  web: {proxy: {app_port: 8000}}\n  admin: {run_on: admin}\n",
     "bp.yml:8: roles.admin.run_on: no other role named 'admin' to run on (roles: web)"),
    ("  web: {proxy: {app_port: 8000}}\n  admin: {run_on: web, count: 3, proxy: {path_prefix: /admin}}\n",
     "bp.yml:8: roles.admin.count: count belongs to the VMs this role runs on: set it on role web"),
    ("  web: {proxy: {app_port: 8000}}\n  admin: {run_on: web, disk: {size: 1}, proxy: {path_prefix: /a}}\n",
     "bp.yml:8: roles.admin.disk: disk belongs to the VMs this role runs on: set it on role web"),
    ("  web: {proxy: {app_port: 8000}}\n  worker: {}\n  admin: {run_on: worker, proxy: {app_port: 3000}}\n",
     "bp.yml:9: roles.admin.run_on: role worker has no proxy, so its VMs run no kamal-proxy for this role"),
    ("  web: {proxy: {app_port: 8000}}\n  admin: {run_on: web, proxy: {path_prefix: /a}}\n"
     "  jobs: {run_on: admin}\n",
     "bp.yml:9: roles.jobs.run_on: role admin runs on role web's VMs itself: write run_on: web"),
    ("  web: {proxy: {app_port: 8000}}\n  admin: {run_on: web, proxy: {app_port: 3000}}\n",
     "bp.yml:8: roles.admin.proxy: role web already serves / on role web's kamal-proxy: give one of them "
     "another proxy.host or proxy.path_prefix"),
    ("  web: {proxy: {app_port: 8000}}\n  admin: {run_on: web, proxy: {path_prefix: /a, load_balancer: true}}\n",
     "bp.yml:8: roles.admin.proxy.load_balancer: role admin is served through role web's entry point"),
    ("  web: {proxy: {app_port: 8000}}\n  admin: {run_on: web, proxy: {path_prefix: /a}, volumes: ['/etc:/x']}\n",
     "bp.yml:8: roles.admin.volumes[0]: /etc is outside the allowed roots"),
])
def test_bad_placements_are_refused_with_their_line(tmp_path: Path, roles: str, expected: str) -> None:
    found = problems(tmp_path, roles)
    assert any(p.startswith(expected) for p in found), found


def test_an_accessory_goes_on_the_role_that_owns_the_vms(tmp_path: Path) -> None:
    found = problems(tmp_path, SHARED + "accessories:\n  redis: {image: redis:7, role: admin}\n")
    assert found == ["bp.yml:18: accessories.redis.role: role 'admin' runs on role web's VMs: write role: web"]


def test_hostless_roles_on_different_vms_do_not_collide_and_named_hosts_always_do(tmp_path: Path) -> None:
    load(tmp_path, "  web: {proxy: {app_port: 8000}}\n  docs: {proxy: {app_port: 80}}\n")  # two addresses
    found = problems(tmp_path, "  web: {proxy: {host: a.example.com}}\n"
                               "  admin: {run_on: web, proxy: {host: A.example.com}}\n")
    assert found == ["bp.yml:8: roles.admin.proxy: role web already serves A.example.com/: give one of them "
                     "another proxy.host or proxy.path_prefix"]


def test_port_forwarding_carries_a_second_http_service_on_the_same_vms(tmp_path: Path) -> None:
    head = HEAD.replace("ssh: {", "public_access: port_forwarding, ssh: {")
    load(tmp_path, "  web: {proxy: {app_port: 8000}}\n  admin: {run_on: web, proxy: {path_prefix: /admin}}\n", head)
    found = problems(tmp_path, "  web: {proxy: {app_port: 8000}}\n  docs: {proxy: {host: docs.example.com}}\n", head)
    assert len(found) == 1 and "or run it on role web's VMs (run_on: web" in found[0], found


def test_validate_exits_2_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bp.yml"
    path.write_text(HEAD + "  web: {proxy: {app_port: 8000}}\n  admin: {run_on: wbe}\n")
    result = cli("validate", str(path))
    assert result.exit_code == 2
    assert result.stderr.startswith(f"{path}:8: roles.admin.run_on: no other role named 'wbe'"), result.stderr


# ---- the inventory ---------------------------------------------------------------------------
def shared_inventory(n: int = 2) -> Inventory:
    hosts = tuple(replace(h, also=("admin",)) for h in web_hosts(n))
    others = tuple(h for h in INVENTORY.hosts if h.role == "worker")
    lb = LoadBalancer(role="web", public_ip="127.0.0.99", members=tuple(h.name for h in hosts))
    return replace(INVENTORY, hosts=hosts + others, load_balancers=(lb,))


def test_the_inventory_places_the_role_on_its_hosts_and_keeps_it_across_a_read() -> None:
    inv = shared_inventory()
    assert [h.name for h in inv.role_hosts("admin")] == ["demo-web-1", "demo-web-2"]
    lb = inv.load_balancer("admin")
    assert lb is not None and lb.role == "web" and inv.entrypoint("admin") == "127.0.0.99"
    assert inv.roles["admin"] == ["demo-web-1", "demo-web-2"]
    data = inventory_to_dict(inv)
    assert inventory_from_dict(data) == inv
    for h in data["hosts"]:  # an inventory written before `also`: read as before
        h.pop("also")
    assert inventory_from_dict(data).role_hosts("admin") == []


# ---- the rollout's plan ------------------------------------------------------------------------
def rollout(tmp_path: Path, roles: tuple[str, ...] = ()) -> Rollout:
    r = Rollout(load(tmp_path, SHARED.replace("  web:\n", "  web:\n    env: {secret: [API_TOKEN]}\n")
                     + "rollout: {watch: {duration: 10}}\n"),
                shared_inventory(), SECRETS, Recorder())
    r.select(roles)
    return r


def serving(r: Rollout, version: str) -> dict[str, HostFacts]:
    """web and admin at ``version`` on both web VMs; the worker too."""
    out = {}
    for h in r.inv.hosts:
        roles = [role for role in h.app_roles if role in r.bp.roles]
        images = {f"{APP}:{version}": "sha256:a", ADMIN: "sha256:b", PROXY: "sha256:p"}
        out[h.name] = HostFacts(docker=True, network=True, images=images, service_label={f"{APP}:{version}": "demo"},
                                proxy="running" if h.proxy else "",
                                running={role: [f"demo-{role}-{version}"] for role in roles})
    return out


def build(r: Rollout, facts: dict[str, HostFacts], version: str = "v2") -> planning.RolloutPlan:
    return runs.rollout_plan(r, runs.RolloutOptions(version=version), version, facts,
                             [h for h in r.hosts if h.name in r._selected], cookie="c")


def test_both_roles_switch_on_the_shared_hosts_and_each_goes_back_to_its_own(tmp_path: Path) -> None:
    r = rollout(tmp_path)
    rp = build(r, serving(r, "v1"))
    web1 = rp.host("demo-web-1")
    assert [(s.stage, s.role) for s in web1.steps if not s.on_failure] == [
        ("prepare", None), ("switch", "web"), ("switch", "admin"), ("stop old", "web"), ("stop old", "admin")]
    assert [s.what for s in web1.steps if s.on_failure] == [
        "switch web back to demo-web-v1", "switch admin back to demo-admin-v1"]
    assert rp.apps is not None
    assert rp.apps.groups == {"web": [[h] for h in r.inv.role_hosts("web")],
                              "admin": [[h] for h in r.inv.role_hosts("admin")]}, "behind a load balancer: one by one"
    assert web1.work.pulls == (f"{APP}:v2",), "admin's pinned image is there already"
    switch = web1.step("switch", "admin").script.text()
    assert "demo-admin" in switch and "--path-prefix" in switch and ADMIN in switch
    data = rp.to_dict()["hosts"][0]
    assert data["roles"] == ["web", "admin"]
    assert data["serving"] == {"web": "demo-web-v1", "admin": "demo-admin-v1"}
    assert [p for p in rp.probes if "/admin" in p] == ["http://127.0.0.99/admin/health"], rp.probes


def test_roles_narrows_to_the_role_not_to_every_role_on_its_vms(tmp_path: Path) -> None:
    r = rollout(tmp_path, ("web",))
    rp = build(r, serving(r, "v1"))
    assert {s.role for hp in rp.hosts for s in hp.steps if s.stage != "prepare"} == {"web"}
    r = rollout(tmp_path, ("admin",))
    rp = build(r, serving(r, "v1"))
    assert [hp.name for hp in rp.hosts] == ["demo-web-1", "demo-web-2"]
    assert {s.role for hp in rp.hosts for s in hp.steps if s.stage != "prepare"} == {"admin"}
    assert all(f"{APP}:v2" not in hp.work.pulls for hp in rp.hosts), "web's new image is not pulled for admin"


def test_the_placed_roles_volumes_live_on_the_vms_data_disk(tmp_path: Path) -> None:
    r = rollout(tmp_path)
    switch = build(r, serving(r, "v1")).host("demo-web-2").step("switch", "admin").script.text()
    assert "device=/data/volumes/uploads" in switch


def test_an_inventory_from_before_the_role_was_placed_is_said_not_guessed_at(tmp_path: Path) -> None:
    r = Rollout(load(tmp_path, SHARED), replace(shared_inventory(), hosts=tuple(
        replace(h, also=()) for h in shared_inventory().hosts)), SECRETS, Recorder())
    r.select()
    rp = build(r, serving(r, "v1"))
    assert {s.role for hp in rp.hosts for s in hp.steps if s.stage != "prepare"} == {"web", "worker"}
    assert rp.notes == ("role admin runs on role web's VMs (run_on), which this environment's inventory does not "
                        "show yet: it is not deployed; run `csdeploy create-env` again to place it",)
