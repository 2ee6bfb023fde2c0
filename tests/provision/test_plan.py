"""make_plan, pure: desired and actual states built in code, no cloud."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cloudstack_deploy.errors import InvalidInput
from cloudstack_deploy.provision.actual import Actual
from cloudstack_deploy.provision.desired import (
    TAG_ENV,
    TAG_EXPIRES,
    TAG_ROLE,
    TAG_VM,
    Desired,
    desired_state,
    format_time,
)
from cloudstack_deploy.provision.hostkeys import generate_host_key
from cloudstack_deploy.provision.plan import GB, NO_LOCAL_KEY, REMOVE, Plan, make_plan
from cloudstack_deploy.provision.userdata import DataDisk, build_userdata

from .conftest import blueprint

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
FINGERPRINT = "aa:bb"


def desired(*overrides: str, ttl: timedelta | None = None) -> Desired:
    return desired_state(blueprint(*overrides), "demo", ttl=ttl, now=NOW)


def converged(d: Desired) -> Actual:
    """The cloud exactly as ``d`` wants it (static NAT mode), every resource tagged."""
    env_tags = d.base_tags()
    a = Actual(env="demo", network={"id": "net", "name": d.network, "cidr": "10.1.1.0/24"},
               keypair={"name": d.keypair, "fingerprint": FINGERPRINT})
    a.tags["net"] = dict(env_tags)
    for n, spec in enumerate(d.vms, start=1):
        vm_id, ip_id = f"vm-{spec.name}", f"ip-{spec.name}"
        a.vms[spec.name] = {"id": vm_id, "name": spec.name, "state": "Running",
                            "serviceofferingname": spec.offering, "nic": [{"ipaddress": f"10.1.1.{n}"}]}
        a.tags[vm_id] = {**env_tags, TAG_ROLE: spec.group}
        address = f"127.100.0.{n}"
        a.ips.append({"id": ip_id, "ipaddress": address, "isstaticnat": True, "virtualmachineid": vm_id})
        a.tags[ip_id] = {**env_tags, TAG_VM: spec.name}
        ports = [(22, ",".join(d.ssh_cidrs))] + ([(80, "0.0.0.0/0"), (443, "0.0.0.0/0")] if spec.proxy else [])
        for port, cidrs in ports:
            a.firewall.append({"id": f"fw-{spec.name}-{port}", "ipaddressid": ip_id, "ipaddress": address,
                               "startport": port, "endport": port, "protocol": "tcp", "cidrlist": cidrs})
        for disk in spec.disks:
            a.volumes[disk.name] = {"id": f"vol-{disk.name}", "name": disk.name, "size": disk.size_gb * GB,
                                    "virtualmachineid": vm_id, "vmname": spec.name}
            a.tags[f"vol-{disk.name}"] = dict(env_tags)
            a.policies[f"vol-{disk.name}"] = []
            for i, sched in enumerate(disk.snapshots):
                pid = f"pol-{disk.name}-{i}"
                a.policies[f"vol-{disk.name}"].append({
                    "id": pid, "volumeid": f"vol-{disk.name}", "schedule": sched.schedule,
                    "intervaltype": ("HOURLY", "DAILY", "WEEKLY", "MONTHLY").index(sched.interval),
                    "timezone": sched.timezone, "maxsnaps": sched.keep})
                a.tags[pid] = dict(env_tags)
    return a


def ops(plan: Plan) -> list[tuple[str, str, str]]:
    return [(a.op, a.kind, a.name) for a in plan.actions]


def plan_of(d: Desired, a: Actual) -> Plan:
    return make_plan(d, a, key_fingerprint=FINGERPRINT)


def test_a_converged_environment_needs_nothing() -> None:
    d = desired()
    assert plan_of(d, converged(d)).empty


def test_an_empty_cloud_gets_everything_created() -> None:
    d = desired()
    plan = plan_of(d, Actual(env="demo"))
    assert plan.count("create") == len(plan.actions)
    kinds: dict[str, list[str]] = {}
    for _op, kind, name in ops(plan):
        kinds.setdefault(kind, []).append(name)
    assert kinds["network"] == ["csdeploy-demo"] and kinds["keypair"] == ["csdeploy-demo"]
    assert kinds["vm"] == ["demo-web-1", "demo-worker-1", "demo-db-1"]
    assert len(kinds["ip"]) == 3 and kinds["volume"] == ["demo-db-1-db"]
    assert sorted(kinds["firewall"]) == ["demo-db-1:22", "demo-web-1:22", "demo-web-1:443", "demo-web-1:80",
                                         "demo-worker-1:22"]
    ssh_rules = [a for a in plan.actions if a.kind == "firewall" and a.data["port"] == 22]
    assert all(a.data["cidrs"] == ["127.0.0.0/8"] for a in ssh_rules)  # never 0.0.0.0/0 unless asked


def test_untagged_network_and_vm_of_the_environment_are_adopted() -> None:
    d = desired()
    a = converged(d)
    del a.tags["net"]
    del a.tags["vm-demo-worker-1"]
    del a.tags["ip-demo-worker-1"]
    plan = plan_of(d, a)
    assert ops(plan) == [("adopt", "network", "csdeploy-demo"), ("update", "network", "csdeploy-demo"),
                         ("adopt", "vm", "demo-worker-1"), ("adopt", "ip", "127.100.0.2")]
    assert plan.actions[0].data["id"] == "net" and plan.actions[2].data["id"] == "vm-demo-worker-1"


def test_an_untagged_loose_volume_named_like_ours_is_adopted_and_attached() -> None:
    d = desired()
    a = converged(d)
    vol = a.volumes.pop("demo-db-1-db")
    a.loose_volumes["demo-db-1-db"] = dict(vol, virtualmachineid=None)
    plan = plan_of(d, a)
    assert ops(plan) == [("adopt", "volume", "demo-db-1-db"), ("update", "volume", "demo-db-1-db")]
    assert plan.actions[1].data == {"id": "vol-demo-db-1-db", "attach": True}


@pytest.mark.parametrize("state", ["Error", "Destroyed"])
def test_a_broken_vm_is_replaced_keeping_its_address(state: str) -> None:
    d = desired()
    a = converged(d)
    a.vms["demo-db-1"]["state"] = state
    a.ips[2].update(isstaticnat=False, virtualmachineid=None)  # CloudStack drops the NAT of a dead VM
    plan = plan_of(d, a)
    assert ops(plan) == [("replace", "vm", "demo-db-1"), ("create", "static-nat", "demo-db-1"),
                         ("update", "volume", "demo-db-1-db")]
    assert plan.actions[0].data["id"] == "vm-demo-db-1"
    assert plan.actions[1].data["ip"] == "ip-demo-db-1"  # the same address, no new IP
    # Its data disk (still attached to the broken VM) goes to the new VM, not a InvalidInput.
    assert plan.actions[2].data == {"id": "vol-demo-db-1-db", "attach": True}


def _userdata(*disks: tuple[str, str]) -> str:
    return build_userdata(hostname="demo-db-1", host_key=HOST_KEY, disks=[DataDisk(*d) for d in disks])


HOST_KEY = generate_host_key()


@pytest.mark.parametrize("have", [[("csd-db", "/data/db")], [("csd-db", "/data/db"), ("csd-old", "/data/old")]])
def test_a_vm_that_mounts_what_the_blueprint_asks_is_left_alone(have: list[tuple[str, str]]) -> None:
    d = desired()
    a = converged(d)
    a.userdata["vm-demo-db-1"] = _userdata(*have)
    assert plan_of(d, a).empty


@pytest.mark.parametrize("have", [[("csd-db", "/data/old")], [], [("csd-other", "/data/db")]])
def test_a_vm_that_mounts_its_disk_elsewhere_is_replaced_keeping_disk_and_address(
        have: list[tuple[str, str]]) -> None:
    d = desired()
    a = converged(d)
    a.userdata["vm-demo-db-1"] = _userdata(*have)
    a.ips[2].update(isstaticnat=True)
    plan = plan_of(d, a)
    assert ops(plan) == [("replace", "vm", "demo-db-1"), ("create", "static-nat", "demo-db-1"),
                         ("update", "volume", "demo-db-1-db")]
    assert plan.actions[0].data["id"] == "vm-demo-db-1"
    assert "csd-db at /data/db" in plan.actions[0].detail
    assert plan.actions[1].data["ip"] == "ip-demo-db-1"
    assert plan.actions[2].data == {"id": "vol-demo-db-1-db", "attach": True}
    assert plan.warnings == ["demo-db-1 will be replaced to mount csd-db at /data/db: what is on its root "
                             "disk (containers, images, anything outside its data disks) is lost; its data "
                             "disks and public IP are kept"]


@pytest.mark.parametrize("userdata", [None, "not base64 at all", "I2Nsb3VkLWNvbmZpZwpob3N0bmFtZTogeAo="])
def test_user_data_that_is_not_csdeploys_says_nothing_about_disks(userdata: str | None) -> None:
    d = desired()
    a = converged(d)
    a.userdata["vm-demo-db-1"] = userdata
    assert plan_of(d, a).empty


def test_a_stopped_vm_is_started_and_an_offering_change_scales_with_a_warning() -> None:
    d = desired("roles.worker.service_offering=medium")
    a = converged(desired())
    a.vms["demo-db-1"]["state"] = "Stopped"
    plan = plan_of(d, a)
    assert ops(plan) == [("scale", "vm", "demo-worker-1"), ("start", "vm", "demo-db-1")]
    assert "small -> medium" in plan.actions[0].detail
    assert plan.warnings == ["demo-worker-1 will be stopped to change its offering to medium"]


def test_a_cidr_change_replaces_the_ssh_rules_only() -> None:
    a = converged(desired())
    d = desired("cloud.ssh.allow_from=[10.0.0.0/8, 192.168.1.0/24]")
    plan = plan_of(d, a)
    deletes = [(x.name, x.data["id"]) for x in plan.actions if x.op == "delete"]
    creates = [(x.name, x.data["cidrs"]) for x in plan.actions if x.op == "create"]
    assert sorted(deletes) == [("127.100.0.1:22", "fw-demo-web-1-22"), ("127.100.0.2:22", "fw-demo-worker-1-22"),
                               ("127.100.0.3:22", "fw-demo-db-1-22")]
    assert sorted(creates) == [(f"{vm}:22", ["10.0.0.0/8", "192.168.1.0/24"])
                               for vm in ("demo-db-1", "demo-web-1", "demo-worker-1")]
    assert {x.kind for x in plan.actions} == {"firewall"}
    # Each replacement runs in its VM's pipeline, not as a stray removal.
    assert all(x.group != REMOVE for x in plan.actions)


def test_a_stray_rule_is_deleted() -> None:
    d = desired()
    a = converged(d)
    a.firewall.append({"id": "fw-extra", "ipaddressid": "ip-demo-db-1", "ipaddress": "127.100.0.3",
                       "startport": 5432, "endport": 5432, "protocol": "tcp", "cidrlist": "0.0.0.0/0"})
    plan = plan_of(d, a)
    assert ops(plan) == [("delete", "firewall", "127.100.0.3:5432")]


def test_a_removed_vm_is_deleted_with_its_address() -> None:
    a = converged(desired("roles.web.count=2"))
    plan = plan_of(desired(), a)
    assert ops(plan) == [("delete", "vm", "demo-web-2"), ("delete", "ip", "127.100.0.2")]
    assert plan.actions[0].data["id"] == "vm-demo-web-2" and plan.actions[1].data["id"] == "ip-demo-web-2"
    assert all(x.group == REMOVE for x in plan.actions)


def test_an_ip_of_no_vm_is_released_but_one_waiting_for_its_vm_is_kept() -> None:
    d = desired()
    a = converged(d)
    a.ips.append({"id": "ip-orphan", "ipaddress": "127.100.0.9", "isstaticnat": False})
    plan = plan_of(d, a)
    assert ops(plan) == [("delete", "ip", "127.100.0.9")]


def test_a_removed_disk_is_deleted_with_a_warning() -> None:
    a = converged(desired())
    plan = plan_of(desired("accessories.db.disk=null"), a)
    assert ops(plan) == [("delete", "volume", "demo-db-1-db")]
    assert plan.actions[0].data == {"id": "vol-demo-db-1-db", "attached": True}
    assert any("demo-db-1-db" in w and "data" in w for w in plan.warnings)


def test_growing_a_disk_is_an_update() -> None:
    a = converged(desired())
    plan = plan_of(desired("accessories.db.disk.size=25"), a)
    assert ops(plan) == [("update", "volume", "demo-db-1-db")]
    assert plan.actions[0].data == {"id": "vol-demo-db-1-db", "size": 25}


def test_shrinking_a_disk_is_a_plan_error() -> None:
    a = converged(desired("accessories.db.disk.size=30"))
    with pytest.raises(InvalidInput) as err:
        plan_of(desired(), a)
    msg = str(err.value)
    assert "demo-db-1-db is 30 GB" in msg and "asks for 10 GB" in msg and "destroy data" in msg


def test_a_disk_attached_to_another_vm_is_a_plan_error() -> None:
    d = desired()
    a = converged(d)
    a.volumes["demo-db-1-db"].update(virtualmachineid="vm-stranger", vmname="stranger")
    with pytest.raises(InvalidInput) as err:
        plan_of(d, a)
    assert "attached to another VM (stranger)" in str(err.value)


def test_a_keypair_with_another_key_is_a_plan_error() -> None:
    d = desired()
    with pytest.raises(InvalidInput) as err:
        make_plan(d, converged(d), key_fingerprint="cc:dd")
    assert "aa:bb" in str(err.value) and "cc:dd" in str(err.value) and "could not log in" in str(err.value)


def test_no_local_key_for_an_existing_keypair_is_a_plan_error_with_a_key_hint() -> None:
    d = desired()
    with pytest.raises(InvalidInput) as err:
        make_plan(d, converged(d), key_fingerprint=NO_LOCAL_KEY, key_path="/h/envs/demo/id_ed25519")
    assert "this machine has no key for the environment (/h/envs/demo/id_ed25519 is missing" in str(err.value)
    assert err.value.hint is not None and "copy that private key to /h/envs/demo/id_ed25519" in err.value.hint
    assert "change the blueprint" not in err.value.hint


def test_a_plan_error_gives_the_hint_of_each_kind_of_problem() -> None:
    d = desired("accessories.db.disk.size=5")
    with pytest.raises(InvalidInput) as err:
        make_plan(d, converged(desired()), key_fingerprint="cc:dd")
    assert "shrinking a disk" in str(err.value) and "could not log in" in str(err.value)
    assert err.value.hint is not None and "copy that private key" in err.value.hint
    assert "change the blueprint" in err.value.hint


def test_ttl_sets_and_changes_the_expiry() -> None:
    d = desired(ttl=timedelta(hours=2))
    assert d.expires == NOW + timedelta(hours=2)
    a = converged(desired())  # made with the blueprint's 12h
    plan = plan_of(d, a)
    assert ops(plan) == [("update", "network", "csdeploy-demo")]
    assert format_time(NOW + timedelta(hours=2)) in plan.actions[0].detail
    assert a.tags["net"][TAG_EXPIRES] == format_time(NOW + timedelta(hours=12))


def test_port_forwarding_publishes_ssh_from_2201_and_http_on_the_first_web_vm() -> None:
    d = desired("cloud.public_access=port_forwarding", "roles.web.count=2", "roles.web.proxy.load_balancer=false")
    plan = plan_of(d, Actual(env="demo"))
    pf = [(x.name, x.data["public"], x.data["private"], x.data["cidrs"]) for x in plan.actions
          if x.kind == "port-forward"]
    assert pf == [
        ("demo-web-1:ssh", 2201, 22, ["127.0.0.0/8"]), ("demo-web-1:80", 80, 80, ["0.0.0.0/0"]),
        ("demo-web-1:443", 443, 443, ["0.0.0.0/0"]), ("demo-web-2:ssh", 2202, 22, ["127.0.0.0/8"]),
        ("demo-worker-1:ssh", 2203, 22, ["127.0.0.0/8"]), ("demo-db-1:ssh", 2204, 22, ["127.0.0.0/8"]),
    ]
    assert not any(x.kind in ("ip", "static-nat", "firewall") for x in plan.actions)


def test_port_forwarding_skips_ports_in_use_and_keeps_existing_rules() -> None:
    d = desired("cloud.public_access=port_forwarding")
    a = converged(desired())
    a.ips, a.firewall = [], []
    a.port_forwards = [
        {"id": "pf-1", "publicport": "2201", "privateport": "22", "virtualmachineid": "vm-demo-db-1",
         "cidrlist": "127.0.0.0/8"},
        {"id": "pf-2", "publicport": "2202", "privateport": "22", "virtualmachineid": "vm-somebody",
         "cidrlist": "127.0.0.0/8"},
    ]
    plan = plan_of(d, a)
    pf = sorted((x.name, x.data["public"]) for x in plan.actions if x.kind == "port-forward")
    assert pf == [("demo-web-1:443", 443), ("demo-web-1:80", 80), ("demo-web-1:ssh", 2203),
                  ("demo-worker-1:ssh", 2204)]


def test_to_dict_sorts_actions_into_creates_changes_deletes() -> None:
    a = converged(desired("roles.web.count=2"))
    del a.tags["vm-demo-db-1"]
    plan = plan_of(desired("roles.worker.count=2"), a)
    data = plan.to_dict()
    assert {(x["kind"], x["name"]) for x in data["creates"]} >= {("vm", "demo-worker-2")}
    assert [(x["op"], x["name"]) for x in data["changes"]] == [("adopt", "demo-db-1")]
    assert {(x["kind"], x["name"]) for x in data["deletes"]} == {("vm", "demo-web-2"), ("ip", "127.100.0.2")}


def test_make_plan_does_not_modify_its_inputs() -> None:
    d = desired()
    a = converged(desired("roles.web.count=2"))
    before: dict[str, Any] = copy.deepcopy(vars(a))
    plan_of(d, a)
    assert vars(a) == before
    assert TAG_ENV in a.tags["net"]


def test_switching_to_port_forwarding_releases_the_static_nat_ips() -> None:
    static = desired()
    a = converged(static)
    pf = desired("cloud.public_access=port_forwarding")
    plan = plan_of(pf, a)
    released = {name for op, kind, name in ops(plan) if (op, kind) == ("delete", "ip")}
    assert released == {ip["ipaddress"] for ip in a.ips}, "static NAT addresses must not stay allocated"
    assert all(x.group == REMOVE for x in plan.actions if (x.op, x.kind) == ("delete", "ip"))


def test_switching_back_to_static_nat_removes_the_port_forwards() -> None:
    d = desired()
    a = converged(d)
    a.port_forwards.append({"id": "pf-1", "ipaddress": "127.100.0.99", "publicport": "2201", "privateport": "22",
                            "virtualmachineid": "vm-demo-web-1"})
    plan = plan_of(d, a)
    assert ("delete", "port-forward", "127.100.0.99:2201") in ops(plan), "an old SSH forward would stay open"
