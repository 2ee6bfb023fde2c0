"""create-env / plan / envs on the simulator, end to end, checked with `cs` directly."""

from __future__ import annotations

import json
import shutil
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncssh
import pytest

from cloudstack_deploy.errors import InvalidInput
from cloudstack_deploy.progress import Recorder
from cloudstack_deploy.provision.desired import TAG_ENV, TAG_EXPIRES, TAG_KIND, TAG_ROLE, parse_time
from cloudstack_deploy.provision.userdata import disks_from_userdata
from cloudstack_deploy.state import EnvState, inventory_to_dict

from .conftest import CREATE_COMMANDS, DEMO, CloudView, cli, create, create_args

GB = 1024**3
DEMO_VMS = {"demo-web-1": "web", "demo-worker-1": "worker", "demo-db-1": "db"}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def tags_of(resource: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in resource.get("tags") or []}


async def ssh_run(host: dict, state: EnvState, known_hosts: str | None = None) -> asyncssh.SSHCompletedProcess:
    """Log in as a user would: the env's key, the env's known_hosts (nothing else trusted)."""
    async with asyncssh.connect(host["public_ip"], port=host["ssh_port"], username="root",
                                client_keys=[str(state.key_path)],
                                known_hosts=known_hosts or str(state.known_hosts_path),
                                connect_timeout=10) as conn:
        return await conn.run("hostname", check=False)


# ---- the full life cycle ----------------------------------------------------------------------
async def test_create_env_builds_the_demo_environment(home: Path, cloud_view: CloudView) -> None:
    started = datetime.now(UTC)
    result, _ = await create("demo", ttl=timedelta(hours=3))

    vms = {v["name"]: v for v in cloud_view.vms()}
    assert set(vms) == set(DEMO_VMS)
    ips = {i["virtualmachineid"]: i for i in cloud_view.public_ips() if i.get("isstaticnat")}
    for name, role in DEMO_VMS.items():
        vm = vms[name]
        assert vm["state"] == "Running"
        tags = tags_of(vm)
        assert tags[TAG_ENV] == "demo" and tags[TAG_ROLE] == role
        expires = parse_time(tags[TAG_EXPIRES])
        assert expires is not None
        assert abs((expires - started) - timedelta(hours=3)) < timedelta(minutes=1)
        # One static-NAT address per VM; SSH only from the blueprint's CIDRs, HTTP only on web.
        ip = ips[vm["id"]]
        rules = {(int(r["startport"]), r["cidrlist"]) for r in cloud_view.firewall(ip["id"])}
        expected = {(22, "127.0.0.0/8")}
        if role == "web":
            expected |= {(80, "0.0.0.0/0"), (443, "0.0.0.0/0")}
        assert rules == expected, name
        # each rule tagged as the run's own (tagged while its job ran), so teardown and reap find it
        for rule in cloud_view.firewall(ip["id"]):
            tags = tags_of(rule)
            assert (tags[TAG_ENV], tags[TAG_ROLE], tags[TAG_KIND]) == ("demo", role, "rule"), rule
    assert len(cloud_view.public_ips()) == 3
    assert [n["name"] for n in cloud_view.networks()] == ["csdeploy-demo"]

    # The db accessory's data disk: 10 GB, attached to the db VM.
    (disk,) = cloud_view.volumes()
    assert disk["name"] == "demo-db-1-db"
    assert disk["virtualmachineid"] == vms["demo-db-1"]["id"]
    assert disk["size"] == 10 * GB

    # Inventory: hosts by role, addresses as the cloud has them, how to log in.
    state = EnvState("demo")
    inv = json.loads(state.inventory_path.read_text())
    assert inv == inventory_to_dict(result.inventory)
    assert EnvState("demo").read_inventory() == result.inventory
    assert inv["roles"] == {"web": ["demo-web-1"], "worker": ["demo-worker-1"], "db": ["demo-db-1"]}
    assert inv["ssh"] == {"user": "root", "key": str(state.key_path), "known_hosts": str(state.known_hosts_path)}
    for host in inv["hosts"]:
        vm = vms[host["name"]]
        assert host["public_ip"] == ips[vm["id"]]["ipaddress"] == vm["publicip"]
        assert host["private_ip"] == vm["nic"][0]["ipaddress"]
        assert host["ssh_port"] == 22
    assert inv["accessories"] == {"db": "demo-db-1", "redis": "demo-web-1"}

    # Private files, with the pinned host keys.
    assert mode(state.key_path) == 0o600
    assert mode(state.known_hosts_path) == 0o600
    pinned = dict(line.split(" ", 1) for line in state.known_hosts_path.read_text().splitlines())
    assert pinned == {h["public_ip"]: h["host_key"] for h in inv["hosts"]}

    # SSH really works with the env's key and known_hosts, and reaches the right VM.
    for host in inv["hosts"]:
        proc = await ssh_run(host, state)
        assert f"VM {host['name']}" in str(proc.stderr)


async def test_ssh_refuses_a_host_key_other_than_the_pinned_one(home: Path, tmp_path: Path) -> None:
    """The pinning is real: the same login with another key in known_hosts fails."""
    result, _ = await create("demo")
    host = inventory_to_dict(result.inventory)["hosts"][0]
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    wrong = tmp_path / "wrong_known_hosts"
    wrong.write_text(f"{host['public_ip']} {other}\n")
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        await ssh_run(host, EnvState("demo"), known_hosts=str(wrong))


async def test_a_second_create_env_creates_nothing(home: Path, cloud_view: CloudView) -> None:
    await create("demo")
    before = cloud_view.everything()
    result, cloud = await create("demo")
    assert result.plan.empty
    assert {c: n for c, n in cloud.calls.items() if c in CREATE_COMMANDS} == {}
    assert cloud_view.everything() == before


# ---- changes ------------------------------------------------------------------------------------
async def test_scale_a_role_up_and_down(home: Path, cloud_view: CloudView) -> None:
    await create("demo")
    await create("demo", "roles.web.count=3")
    assert cloud_view.vm_names() == {n: 1 for n in [*DEMO_VMS, "demo-web-2", "demo-web-3"]}
    web3 = cloud_view.vm("demo-web-3")
    assert web3["state"] == "Running" and web3.get("publicip")
    extra_ips = {cloud_view.vm(n)["publicip"] for n in ("demo-web-2", "demo-web-3")}
    [lb_ip] = [i["ipaddress"] for i in cloud_view.public_ips() if not i.get("isstaticnat")]
    assert len(cloud_view.public_ips()) == 6  # one per VM, and web's load balancer (3 VMs now)
    extra_ips.add(lb_ip)

    result, _ = await create("demo")
    deleted = {a.name for a in result.plan.actions if a.op == "delete" and a.kind == "vm"}
    assert deleted == {"demo-web-2", "demo-web-3"}
    assert set(cloud_view.vm_names()) == set(DEMO_VMS)  # expunged: not even Destroyed
    left = {i["ipaddress"] for i in cloud_view.public_ips()}
    assert len(left) == 3 and not left & extra_ips
    assert [h["name"] for h in inventory_to_dict(result.inventory)["hosts"]] == list(DEMO_VMS)


async def test_changing_the_offering_scales_the_vm_and_warns(home: Path, cloud_view: CloudView) -> None:
    await create("demo")
    worker_id = cloud_view.vm("demo-worker-1")["id"]
    progress = Recorder()
    result, _ = await create("demo", "roles.worker.service_offering=medium", progress=progress)
    assert [(a.op, a.name) for a in result.plan.actions] == [("scale", "demo-worker-1")]
    vm = cloud_view.vm("demo-worker-1")
    assert vm["id"] == worker_id  # the same VM, not a new one
    assert vm["serviceofferingname"] == "medium" and vm["state"] == "Running"
    warnings = [text for level, text in progress.notes if level == "warning"]
    assert any("demo-worker-1" in w and "stopped" in w for w in warnings), progress.notes


async def test_growing_a_disk_resizes_the_volume(home: Path, cloud_view: CloudView) -> None:
    await create("demo")
    result, _ = await create("demo", "accessories.db.disk.size=20")
    assert [(a.op, a.kind) for a in result.plan.actions] == [("update", "volume")]
    (disk,) = cloud_view.volumes()
    assert disk["size"] == 20 * GB and disk["vmname"] == "demo-db-1"


async def test_shrinking_a_disk_is_refused_and_changes_nothing(home: Path, cloud_view: CloudView) -> None:
    await create("demo", "accessories.db.disk.size=20")
    before = cloud_view.everything()
    with pytest.raises(InvalidInput) as err:
        await create("demo", "accessories.db.disk.size=10", "roles.web.count=2")
    assert "demo-db-1-db" in str(err.value) and "20 GB" in str(err.value) and "shrink" in str(err.value)
    assert cloud_view.everything() == before
    assert cloud_view.volumes()[0]["size"] == 20 * GB


def test_shrinking_a_disk_exits_2_from_the_cli(home: Path, cloud_view: CloudView) -> None:
    assert cli(*create_args("demo")).exit_code == 0
    before = cloud_view.everything()
    res = cli(*create_args("demo", "accessories.db.disk.size=5"))
    assert res.exit_code == 2
    assert "shrinking a disk would destroy data" in res.stderr and "demo-db-1-db" in res.stderr
    assert cloud_view.everything() == before


async def test_a_destroyed_vm_is_replaced_and_gets_its_disk_back(home: Path, cloud_view: CloudView) -> None:
    await create("demo")
    old = cloud_view.vm("demo-db-1")
    (disk,) = cloud_view.volumes()
    cloud_view.cs.destroyVirtualMachine(id=old["id"])  # by hand, not expunged: the disk stays attached
    assert cloud_view.vm("demo-db-1")["state"] == "Destroyed"
    result, _ = await create("demo")
    assert ("replace", "demo-db-1") in [(a.op, a.name) for a in result.plan.actions]
    new = cloud_view.vm("demo-db-1")
    assert new["id"] != old["id"] and new["state"] == "Running"
    (again,) = cloud_view.volumes()
    assert again["id"] == disk["id"] and again["virtualmachineid"] == new["id"]  # same data, new VM
    assert new["publicip"] == old["publicip"]


def _mounts(cloud_view: CloudView, vm: dict) -> frozenset[tuple[str, str]] | None:
    data = cloud_view.cs.getVirtualMachineUserData(virtualmachineid=vm["id"])
    return disks_from_userdata(data["virtualmachineuserdata"]["userdata"])


def test_changing_a_mount_plans_a_replace_and_create_env_converges(home: Path, cloud_view: CloudView) -> None:
    """A VM's mount points are in its user data, fixed when it is made: plan used to say "up to
    date" while the VM kept mounting the old path."""
    assert cli(*create_args("demo")).exit_code == 0
    old = cloud_view.vm("demo-db-1")
    (disk,) = cloud_view.volumes()
    assert _mounts(cloud_view, old) == {("csd-db", "/data/db")}
    change = ["--set", "accessories.db.disk.mount=/data/pg"]

    res = cli("plan", str(DEMO), "--env", "demo", *change)
    assert res.exit_code == 0, res.output
    assert "up to date" not in res.stdout
    assert "± replace vm           demo-db-1  (its data disks changed (csd-db at /data/pg)" in res.stdout
    assert "! demo-db-1 will be replaced to mount csd-db at /data/pg" in res.stdout
    assert cloud_view.vm("demo-db-1")["id"] == old["id"]  # plan changed nothing

    res = cli(*create_args("demo", "accessories.db.disk.mount=/data/pg"))
    assert res.exit_code == 0, res.output
    new = cloud_view.vm("demo-db-1")
    assert new["id"] != old["id"] and new["publicip"] == old["publicip"]
    assert _mounts(cloud_view, new) == {("csd-db", "/data/pg")}
    (again,) = cloud_view.volumes()
    assert again["id"] == disk["id"] and again["virtualmachineid"] == new["id"]  # the same data disk
    res = cli("plan", str(DEMO), "--env", "demo", *change)
    assert res.stdout.strip() == "environment demo: up to date, nothing to do"
    assert EnvState("demo").read_inventory().host("demo-db-1").disks[0].mount == "/data/pg"


async def test_adding_a_disk_to_a_role_replaces_its_vms_to_mount_it(home: Path, cloud_view: CloudView) -> None:
    """A VM made without data disks has no mount for one attached later: it is replaced."""
    await create("demo")
    old = cloud_view.vm("demo-worker-1")
    result, _ = await create("demo", "roles.worker.disk.size=5")
    assert [(a.op, a.kind, a.name) for a in result.plan.actions if a.group == "demo-worker-1"][:1] == [
        ("replace", "vm", "demo-worker-1")]
    new = cloud_view.vm("demo-worker-1")
    assert new["id"] != old["id"]
    assert _mounts(cloud_view, new) == {("csd-worker", "/data")}
    result, _ = await create("demo", "roles.worker.disk.size=5")
    assert result.plan.empty


# ---- port forwarding ----------------------------------------------------------------------------
async def test_port_forwarding_mode_shares_the_source_nat_address(home: Path, cloud_view: CloudView) -> None:
    result, _ = await create("demo", "cloud.public_access=port_forwarding", "roles.web.count=2",
                             "roles.web.proxy.load_balancer=false")
    assert cloud_view.public_ips() == []  # no address per VM
    (snat,) = [i for i in cloud_view.all_ips() if i.get("issourcenat")]
    vms = {v["id"]: v["name"] for v in cloud_view.vms()}
    rules = {(int(r["publicport"]), int(r["privateport"]), vms[r["virtualmachineid"]], r.get("cidrlist", ""))
             for r in cloud_view.port_forwards()}
    ssh_rules = sorted(r for r in rules if r[1] == 22)
    assert [r[0] for r in ssh_rules] == [2201, 2202, 2203, 2204]
    assert {r[2] for r in ssh_rules} == {"demo-web-1", "demo-web-2", "demo-worker-1", "demo-db-1"}
    assert all(r[3] == "127.0.0.0/8" for r in ssh_rules)
    assert {r[:3] for r in rules if r[1] != 22} == {(80, 80, "demo-web-1"), (443, 443, "demo-web-1")}
    roles = {"demo-web-1": "web", "demo-web-2": "web", "demo-worker-1": "worker", "demo-db-1": "db"}
    assert {r["id"]: (tags_of(r)[TAG_ENV], tags_of(r)[TAG_ROLE], tags_of(r)[TAG_KIND]) for r in cloud_view.port_forwards()} \
        == {r["id"]: ("demo", roles[vms[r["virtualmachineid"]]], "rule") for r in cloud_view.port_forwards()}

    state = EnvState("demo")
    for host in inventory_to_dict(result.inventory)["hosts"]:
        assert host["public_ip"] == snat["ipaddress"] and host["ssh_port"] >= 2201
        proc = await ssh_run(host, state)
        assert f"VM {host['name']}" in str(proc.stderr)
    pinned = {line.split(" ", 1)[0] for line in state.known_hosts_path.read_text().splitlines()}
    assert pinned == {f"[{snat['ipaddress']}]:{h['ssh_port']}" for h in inventory_to_dict(result.inventory)["hosts"]}

    again, _ = await create("demo", "cloud.public_access=port_forwarding", "roles.web.count=2",
                            "roles.web.proxy.load_balancer=false")
    assert again.plan.empty


# ---- plan -----------------------------------------------------------------------------------------
def test_plan_on_an_empty_cloud_lists_creates_and_changes_nothing(home: Path, cloud_view: CloudView) -> None:
    res = cli("plan", str(DEMO), "--env", "demo")
    assert res.exit_code == 0, res.stderr
    assert res.stdout.startswith("environment demo: ")
    for name in ("csdeploy-demo", *DEMO_VMS, "demo-db-1-db", "demo-web-1:443"):
        assert name in res.stdout
    assert "demo-worker-1:443" not in res.stdout
    res = cli("plan", str(DEMO), "--env", "demo", "--json")
    assert res.exit_code == 0
    data = json.loads(res.stdout)
    assert set(data) >= {"creates", "changes", "deletes"}
    created = {(a["kind"], a["name"]) for a in data["creates"]}
    assert {("network", "csdeploy-demo"), ("keypair", "csdeploy-demo"), ("vm", "demo-web-1"),
            ("volume", "demo-db-1-db")} <= created
    assert data["changes"] == [] and data["deletes"] == []
    everything = cloud_view.everything()
    assert not any(everything.values()), everything
    assert not (home / "envs" / "demo").exists()  # no key made, nothing written


def test_names_the_cloud_does_not_offer_exit_2_with_suggestions(home: Path, cloud_view: CloudView) -> None:
    res = cli("plan", str(DEMO), "--env", "demo", "--set", "cloud.zone=lab-zone-2")
    assert res.exit_code == 2
    assert "lab-zone-2" in res.stderr and "lab-zone-1" in res.stderr
    res = cli(*create_args("demo", "cloud.template=Debian 13*", "roles.web.service_offering=huge"))
    assert res.exit_code == 2
    assert "Debian 13*" in res.stderr and "Debian 12 bookworm 2026-11-01" in res.stderr
    assert "'huge'" in res.stderr and "large" in res.stderr  # every problem at once
    everything = cloud_view.everything()
    assert not any(everything.values()), everything


def test_plan_json_shows_deletes_after_a_scale_down(home: Path) -> None:
    assert cli(*create_args("demo", "roles.web.count=3")).exit_code == 0
    res = cli("plan", str(DEMO), "--env", "demo", "--json", "--set", "roles.web.count=2")
    data = json.loads(res.stdout)
    assert data["creates"] == []
    # the VM leaves web's load balancer (before it is destroyed)
    assert [(a["op"], a["kind"], a["name"]) for a in data["changes"]] == [("remove", "lb-member", "demo-web-3")]
    assert {(a["kind"], a["name"]) for a in data["deletes"]} >= {("vm", "demo-web-3")}
    assert any(a["kind"] == "ip" for a in data["deletes"])


# ---- envs ----------------------------------------------------------------------------------------
def test_envs_lists_environments_with_roles_and_expiry(home: Path) -> None:
    assert cli("envs").stdout.strip() == "no environments"
    started = datetime.now(UTC)
    assert cli(*create_args("demo", "roles.web.count=2", extra=["--ttl", "2h"])).exit_code == 0
    assert cli(*create_args("other")).exit_code == 0
    res = cli("envs", "--json")
    assert res.exit_code == 0
    found = {e["env"]: e for e in json.loads(res.stdout)}
    assert set(found) == {"demo", "other"}
    demo = found["demo"]
    assert demo["roles"] == {"web": 2, "worker": 1, "db": 1} and demo["vms"] == 4
    expires, created = parse_time(demo["expires"]), parse_time(demo["created"])
    assert expires is not None and created is not None
    assert abs((expires - started) - timedelta(hours=2)) < timedelta(minutes=1)
    assert abs(created - started) < timedelta(minutes=1)
    # Without --ttl the blueprint's ttl (12h) applies.
    other = parse_time(found["other"]["expires"])
    assert other is not None and abs((other - started) - timedelta(hours=12)) < timedelta(minutes=1)
    text = cli("envs").stdout
    assert "demo" in text and "web×2" in text and demo["expires"] in text


def test_a_rerun_without_ttl_keeps_the_expiry(home: Path, cloud_view: CloudView) -> None:
    assert cli(*create_args("demo", extra=["--ttl", "2h"])).exit_code == 0
    before = tags_of(cloud_view.networks()[0])[TAG_EXPIRES]
    res = cli(*create_args("demo"))
    assert res.exit_code == 0
    assert tags_of(cloud_view.networks()[0])[TAG_EXPIRES] == before


# ---- the CLI's exit codes ---------------------------------------------------------------------
def test_invalid_env_name_exits_2(home: Path) -> None:
    res = cli(*create_args("Bad_Name"))
    assert res.exit_code == 2 and "Bad_Name" in res.stderr


def test_an_env_name_with_a_trailing_newline_exits_2_and_creates_nothing(home: Path, cloud_view: CloudView) -> None:
    for command in (["plan", str(DEMO), "--env", "ab\n"], create_args("ab\n")):
        res = cli(*command)
        assert res.exit_code == 2, res.output
        assert "'ab\\n'" in res.stderr
    assert cloud_view.everything() == {k: [] for k in cloud_view.everything()}


@pytest.mark.parametrize("mount", ["/etc", "/data/../etc", "/data/x';touch${IFS}PWNED;'"])
def test_a_mount_the_provisioner_refuses_exits_2_before_anything_is_created(
        home: Path, cloud_view: CloudView, mount: str) -> None:
    """validate and plan used to accept these; create-env refused them after creating the
    network, keypair, IPs and volumes (exit 1)."""
    override = ["--set", f"accessories.db.disk.mount={mount}"]
    for command in (["validate", str(DEMO)], ["plan", str(DEMO), "--env", "demo"], create_args("demo")):
        res = cli(*command, *override)
        assert res.exit_code == 2, res.output
        assert "accessories.db.disk.mount" in res.stderr and "cannot be a mount point" in res.stderr
    assert cloud_view.everything() == {k: [] for k in cloud_view.everything()}


def test_bad_blueprint_exits_2_with_file_and_line(home: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(DEMO.read_text().replace("  web:\n    count: 1\n", "  web:\n    count: many\n"))
    line = next(i for i, text in enumerate(bad.read_text().splitlines(), 1) if "count: many" in text)
    res = cli("create-env", str(bad), "--env", "demo", "--skip-rollout")
    assert res.exit_code == 2
    assert f"{bad}:{line}" in res.stderr


def test_no_cloud_configured_exits_2_with_the_hint(clean_env: Path) -> None:
    res = cli(*create_args("demo"))
    assert res.exit_code == 2
    assert "no CloudStack configured" in res.stderr
    assert "CLOUDSTACK_ENDPOINT" in res.stderr and "lab simulator" in res.stderr
    assert not (clean_env / "envs" / "demo" / "inventory.json").exists()


def test_a_lost_state_dir_plan_says_what_create_env_then_says(home: Path, cloud_view: CloudView) -> None:
    """plan used to say "up to date" while create-env exited 2 on the keypair, with a hint to
    change the blueprint."""
    assert cli(*create_args("demo")).exit_code == 0
    shutil.rmtree(home / "envs" / "demo")
    before = cloud_view.everything()
    key = home / "envs" / "demo" / "id_ed25519"
    plan = cli("plan", str(DEMO), "--env", "demo")
    create = cli(*create_args("demo"))
    for res in (plan, create):
        assert res.exit_code == 2, res.output
        assert "up to date" not in res.stdout
        assert (f"keypair csdeploy-demo is in the cloud but this machine has no key for the environment "
                f"({key} is missing") in res.stderr
        assert f"hint: the environment's VMs accept only the key it was created with: copy that private key " \
               f"to {key}" in res.stderr
        assert "change the blueprint" not in res.stderr
    assert plan.stderr == create.stderr  # the same refusal, word for word
    assert not key.exists()  # create-env made no new key that would then "mismatch" forever
    assert cloud_view.everything() == before


def test_a_key_that_is_not_the_environments_is_named_in_plan_and_create_env(home: Path, tmp_path: Path) -> None:
    assert cli(*create_args("demo")).exit_code == 0
    other = tmp_path / "other_key"
    EnvState("other").ensure_keypair()
    shutil.copy(home / "envs" / "other" / "id_ed25519", other)
    for args in (["plan", str(DEMO), "--env", "demo"], create_args("demo")):
        res = cli(*args, "--set", f"cloud.ssh.key={other}")
        assert res.exit_code == 2, res.output
        assert f"not that of {other}" in res.stderr and f"copy that private key to {other}" in res.stderr


def test_a_431_on_associate_ip_does_not_blame_the_blueprints_names(home: Path, cloud_view: CloudView) -> None:
    cloud_view.add_faults("associateIpAddress:http:431:1")
    res = cli(*create_args("demo"))
    assert res.exit_code == 1
    hint = next(line for line in res.stderr.splitlines() if line.startswith("hint:"))
    assert "CloudStack refused the parameters of associateIpAddress" in hint and "re-run" in hint
    assert "blueprint" not in hint
    cloud_view.add_faults("deployVirtualMachine:http:431:1")
    res = cli(*create_args("other"))
    assert res.exit_code == 1
    assert "check the blueprint's names (zone, template, offerings)" in res.stderr


def test_a_secrets_file_linked_to_elsewhere_exits_2_before_anything_is_created(
        home: Path, cloud_view: CloudView, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("POSTGRES_PASSWORD", "REGISTRY_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    bp = tmp_path / "app" / "demo.yml"
    bp.parent.mkdir()
    bp.write_text(DEMO.read_text())  # secrets_file: .env, beside the blueprint
    (bp.parent / ".env").symlink_to("/etc/shadow")
    res = cli("create-env", str(bp), "--env", "demo", "--version", "v1", "--progress", "plain")
    assert res.exit_code == 2, res.output
    assert f"secrets file {bp.parent / '.env'} is a symlink to /etc/shadow, outside {bp.parent}" in res.stderr
    assert cloud_view.everything() == {k: [] for k in cloud_view.everything()}


def test_the_state_home_and_everything_in_it_is_private(home: Path) -> None:
    """$CSDEPLOY_HOME and envs/ used to be 0755 and envs/NAME/blueprint.json 0644."""
    assert not home.exists()
    assert cli(*create_args("demo")).exit_code == 0
    assert (home / "envs" / "demo" / "blueprint.json").exists()
    paths = [home, *home.rglob("*")]
    assert {p.relative_to(home).as_posix(): mode(p) for p in paths if p.is_dir()} == {
        ".": 0o700, "envs": 0o700, "envs/demo": 0o700}
    files = {p.relative_to(home).as_posix(): mode(p) for p in paths if p.is_file()}
    assert set(files) >= {"envs/demo/blueprint.json", "envs/demo/inventory.json", "envs/demo/id_ed25519",
                          "envs/demo/known_hosts", "envs/demo/lock"}
    assert set(files.values()) == {0o600}, files


def test_a_home_left_open_by_an_older_version_is_tightened(home: Path) -> None:
    (home / "envs" / "demo").mkdir(parents=True)
    for d in (home, home / "envs", home / "envs" / "demo"):
        d.chmod(0o755)
    (home / "envs" / "demo" / "blueprint.json").write_text("{}")
    (home / "envs" / "demo" / "blueprint.json").chmod(0o644)
    assert cli(*create_args("demo")).exit_code == 0
    assert [mode(d) for d in (home, home / "envs", home / "envs" / "demo")] == [0o700] * 3
    assert mode(home / "envs" / "demo" / "blueprint.json") == 0o600


def test_a_bad_poll_interval_exits_2_naming_the_variable(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDSTACK_POLL_INTERVAL", "abc")
    for args in (["envs"], create_args("demo")):
        res = cli(*args)
        assert res.exit_code == 2
        assert res.stderr.splitlines()[0] == ("csdeploy: error: CLOUDSTACK_POLL_INTERVAL: expected a number of "
                                              "seconds, more than 0 and at most 600, got 'abc'")
        assert "Traceback" not in res.stderr


def test_a_password_in_the_endpoint_is_never_printed_or_written(home: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 sim) -> None:
    canary = "ep-canary-4411"
    host = sim.endpoint.split("://", 1)[1]
    monkeypatch.setenv("CLOUDSTACK_ENDPOINT", f"http://proxy:{canary}@{host}")
    res = cli(*create_args("demo", extra=["--json"]))
    assert res.exit_code == 0, res.stderr
    inventory = EnvState("demo").inventory_path.read_text()
    assert json.loads(res.stdout)["inventory"]["endpoint"] == f"http://proxy:***@{host}"
    assert canary not in res.stdout + res.stderr + inventory
    # unreachable: the error names the endpoint, without its password
    monkeypatch.setenv("CLOUDSTACK_ENDPOINT", f"http://proxy:{canary}@127.0.0.1:9/client/api")
    res = cli("envs")
    assert res.exit_code == 1
    assert "http://proxy:***@127.0.0.1:9/client/api" in res.stderr and canary not in res.stderr


async def test_host_keys_come_from_the_inventory_else_from_the_cloud(home: Path) -> None:
    """A re-run reads pinned keys from the last inventory (no API call); without it, from
    each VM's user data through CloudStack's API — the same keys either way. The user data
    of a VM with a data disk is read on every run (it says where the VM mounts its disks),
    and then serves its host key too."""
    first, _ = await create("demo")
    pinned = {h["name"]: h["host_key"] for h in inventory_to_dict(first.inventory)["hosts"]}
    _, cloud = await create("demo")
    assert cloud.calls["getVirtualMachineUserData"] == 1  # demo-db-1's, for its data disk
    EnvState("demo").inventory_path.unlink()
    again, cloud = await create("demo")
    assert cloud.calls["getVirtualMachineUserData"] == len(pinned)
    assert {h["name"]: h["host_key"] for h in inventory_to_dict(again.inventory)["hosts"]} == pinned


@pytest.mark.simulator(job_seconds=0.4)
async def test_ssh_logins_begin_as_each_vm_is_ready_not_after_the_whole_run(home: Path) -> None:
    """A VM's SSH wait starts once its own pipeline is done (address, rules, its host key known),
    beside what the run still does: here the web VMs answer SSH before their load balancer's
    members are added (a job of 0.4 s that follows every pipeline), where they used to wait
    for it and for the proof listing after it. Every login is still made with the pinned key."""
    progress = Recorder()
    result, _ = await create("demo", "roles.web.count=2", progress=progress)
    order = [(e.resource, e.action, e.status) for e in progress.events]
    assigned = [i for i, (res, action, status) in enumerate(order) if action == "assign" and status == "done"]
    answered = {res.split()[1]: i for i, (res, action, status) in enumerate(order)
                if res.startswith("ssh ") and status == "done"}
    assert assigned and set(answered) == {"demo-web-1", "demo-web-2", "demo-worker-1", "demo-db-1"}, order
    assert answered["demo-web-1"] < assigned[0] and answered["demo-web-2"] < assigned[0], order
    assert set(result.ssh_seconds) == set(answered)
    state = EnvState("demo")
    for host in inventory_to_dict(result.inventory)["hosts"]:
        assert f"VM {host['name']}" in str((await ssh_run(host, state)).stderr)
