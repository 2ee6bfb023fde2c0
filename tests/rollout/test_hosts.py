"""Hosts that look after themselves: the blueprint's `hosts:` section (sshd hardening,
unattended upgrades with a reboot slot per VM, fail2ban), decided from the host's facts so a
second deploy sends nothing; `hosts upgrade` (one host at a time, out of its load balancer
while it upgrades and reboots); `maintenance --dry-run`.

CloudStack's side was checked against apache/cloudstack: `RebootVMCmd`
(api/src/main/java/org/apache/cloudstack/api/command/user/vm/RebootVMCmd.java) is an async
command taking the VM's `id`; `RemoveFromLoadBalancerRuleCmd` and `AssignToLoadBalancerRuleCmd`
(api/.../command/user/loadbalancer/) take the rule's `id` and `virtualmachineids`.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace
from pathlib import Path

import pytest

from cloudstack_deploy.accessories import postgres_tuning
from cloudstack_deploy.blueprint import BlueprintError, loads_blueprint
from cloudstack_deploy.errors import InvalidInput, OperationFailed
from cloudstack_deploy.inventory import LoadBalancer
from cloudstack_deploy.progress import Recorder
from cloudstack_deploy.rollout import ops, upkeep
from cloudstack_deploy.rollout.commands import facts, hardening
from cloudstack_deploy.rollout.contract import accessory_env
from cloudstack_deploy.rollout.deploy import Rollout
from cloudstack_deploy.rollout.hosts import Result
from cloudstack_deploy.rollout.stages import accessory_script

from .test_commands import BLUEPRINT, INVENTORY, SECRETS, _host, run_script

HOSTS = """
hosts:
  fail2ban: true
  upgrades: {reboot_window: "03:00-05:00", timezone: Europe/Berlin}
"""


def _problems(text: str) -> list[str]:
    with pytest.raises(BlueprintError) as info:
        loads_blueprint(BLUEPRINT + text, filename="bp.yml")
    return [str(p) for p in info.value.problems]


@pytest.mark.parametrize(("section", "expected"), [
    ('hosts:\n  upgrades: {reboot_window: "3-5"}\n', "bp.yml:32: hosts.upgrades.reboot_window: '3-5' is not a "
                                                     "reboot window"),
    ('hosts:\n  upgrades: {reboot_window: "05:00-05:00"}\n', "bp.yml:32: hosts.upgrades.reboot_window"),
    ('hosts:\n  upgrades: {reboot_window: "03:00-25:00"}\n', "is not a reboot window"),
    ('hosts:\n  upgrades: {reboot_window: "03:00-05:00", timezone: Mars/Base}\n',
     "hosts.upgrades.timezone: 'Mars/Base' is not a time zone name"),
    ("hosts:\n  upgrades: {timezone: UTC}\n", "hosts.upgrades.reboot_window: missing required field"),
    ("hosts:\n  fail2ban: yes please\n", "hosts.fail2ban"),
    ("hosts:\n  ssh_hardnening: false\n", "unknown key 'ssh_hardnening' (did you mean 'ssh_hardening'?)"),
])
def test_bad_hosts_settings_are_refused_with_their_line(section: str, expected: str) -> None:
    problems = _problems(section)
    assert any(expected in p for p in problems), problems


def test_the_section_defaults_to_key_only_ssh_and_nothing_else() -> None:
    spec = loads_blueprint(BLUEPRINT).hosts
    assert spec.ssh_hardening and not spec.fail2ban and spec.upgrades is None and spec.upgrade_command is None
    spec = loads_blueprint(BLUEPRINT + HOSTS).hosts
    assert spec.fail2ban and spec.upgrades is not None and spec.upgrades.reboot_window == (180, 300)
    assert spec.upgrades.timezone == "Europe/Berlin"


def test_two_vms_of_a_role_never_share_a_reboot_time() -> None:
    up = loads_blueprint(BLUEPRINT + HOSTS).hosts.upgrades
    assert up is not None
    times = [hardening.reboot_time(up, i, 3) for i in range(3)]
    assert times == ["03:00", "03:40", "04:20"]
    late = replace(up, reboot_window=(23 * 60, 60))  # past midnight
    assert [hardening.reboot_time(late, i, 4) for i in range(4)] == ["23:00", "23:30", "00:00", "00:30"]
    assert hardening.reboot_time(up, 0, 1) == "03:00"


def _rollout(text: str = BLUEPRINT, inventory=INVENTORY) -> Rollout:  # type: ignore[no-untyped-def]
    return Rollout(loads_blueprint(text), inventory, SECRETS, Recorder())


def test_the_facts_decide_a_second_deploy_sends_nothing_and_a_changed_section_sends_it_again() -> None:
    r = _rollout(BLUEPRINT + HOSTS)
    web = INVENTORY.host("demo-web-1")
    fresh = r.decide(web, facts.HostFacts(), "v1")
    assert fresh.harden and fresh.needed
    done = hardening.wanted(r.bp.hosts, *r.host_slot(web))
    assert not r.decide(web, facts.HostFacts(hardening=done), "v1").harden
    changed = _rollout(BLUEPRINT + HOSTS.replace("fail2ban: true", "fail2ban: false"))
    assert changed.decide(web, facts.HostFacts(hardening=done), "v1").harden
    # a blueprint that asks nothing leaves a host it never touched alone
    off = _rollout(BLUEPRINT + "hosts: {ssh_hardening: false}\n")
    assert not off.decide(web, facts.HostFacts(), "v1").harden


def test_the_facts_script_reads_the_marker(tmp_path: Path) -> None:
    script = facts.script(images=[], accessories=[], containers=[], mounts=[], hardening=True)
    text = script.text().replace(hardening.MARKER, str(tmp_path / "marker"))
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    res = run_script(type(script)(lines=text.splitlines()[2:]), env, tmp_path)
    assert facts.parse(res.stdout).hardening == ""
    (tmp_path / "marker").write_text("abc123\n")
    res = run_script(type(script)(lines=text.splitlines()[2:]), env, tmp_path)
    assert facts.parse(res.stdout).hardening == "abc123"


def test_each_vm_of_a_role_gets_its_own_slot_in_its_prepare_script() -> None:
    hosts = tuple(_host(f"demo-web-{i}", "web", f"10.1.1.{i + 10}", (), True) for i in (1, 2, 3))
    inv = replace(INVENTORY, hosts=hosts + INVENTORY.hosts[1:])
    inv = replace(inv, hosts=tuple(replace(h, index=i + 1) if h.role == "web" else h for i, h in enumerate(inv.hosts)))
    r = _rollout(BLUEPRINT + HOSTS, inv)
    slots = [r.host_slot(inv.host(f"demo-web-{i}")) for i in (1, 2, 3)]
    assert slots == [(0, 3), (1, 3), (2, 3)]
    assert r.host_slot(inv.host("demo-db-1")) == (0, 1)
    texts = [hardening.harden(r.bp.hosts, *slot).text() for slot in slots]
    assert ['Unattended-Upgrade::Automatic-Reboot-Time "03:00";' in texts[0],
            'Unattended-Upgrade::Automatic-Reboot-Time "03:40";' in texts[1],
            'Unattended-Upgrade::Automatic-Reboot-Time "04:20";' in texts[2]] == [True, True, True]


def test_sshd_is_checked_then_reloaded_never_restarted() -> None:
    text = hardening.harden(loads_blueprint(BLUEPRINT).hosts, 0, 1).text()
    for key, value in hardening.SSHD_SETTINGS:
        assert f"\n{key} {value}\n" in text
    assert text.index("sshd -t") < text.index("systemctl reload ssh")
    assert "restart ssh" not in text and "jail.d/csdeploy.conf <<" not in text and "Automatic-Reboot" not in text
    full = hardening.harden(loads_blueprint(BLUEPRINT + HOSTS).hosts, 0, 1).text()
    assert "/usr/share/zoneinfo/Europe/Berlin" in full and "[sshd]\nenabled = true\nmaxretry = 3" in full
    # turned off: csdeploy's drop-in goes (the image's own settings apply again)
    off = hardening.harden(loads_blueprint(BLUEPRINT + "hosts: {ssh_hardening: false}\n").hosts, 0, 1).text()
    assert f"rm -f {hardening.SSHD_DROPIN}" in off and "PasswordAuthentication" not in off


def test_the_upgrade_command_has_one_default_and_the_blueprint_replaces_it() -> None:
    default = hardening.upgrade(None).text()
    assert "export DEBIAN_FRONTEND=noninteractive" in default
    assert "apt-get update -qq && apt-get -y" in default and "upgrade" in default
    own = hardening.upgrade(loads_blueprint(BLUEPRINT + "hosts: {upgrade_command: [touch, /tmp/x]}\n")
                            .hosts.upgrade_command).text()
    assert "touch /tmp/x" in own and "apt-get" not in own


# ---- wait until a rebooted host serves --------------------------------------------------------

def _shims(tmp_path: Path, *, curl_ok: bool) -> dict[str, str]:
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    (bindir / "docker").write_text("#!/bin/sh\ncase \"$1\" in ps) echo demo-web-v1;; inspect) echo 'healthy running';;"
                                   " esac\n")
    (bindir / "curl").write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path}/curl.log\nexit {0 if curl_ok else 7}\n")
    for f in bindir.iterdir():
        f.chmod(0o755)
    return {"PATH": f"{bindir}:{os.environ['PATH']}", "HOME": str(tmp_path)}


def test_a_rebooted_host_serves_once_its_container_runs_and_kamal_proxy_answers(tmp_path: Path) -> None:
    script = hardening.wait_serving({"service": "demo", "role": "web"}, timeout=30, host_header="shop.example",
                                    path="/up")
    res = run_script(script, _shims(tmp_path, curl_ok=True), tmp_path)
    assert res.returncode == 0 and "serving demo-web-v1" in res.stdout, res.stderr
    assert "-H Host: shop.example http://127.0.0.1/up" in (tmp_path / "curl.log").read_text()


def test_a_host_that_does_not_serve_stops_the_upgrade(tmp_path: Path) -> None:
    script = hardening.wait_serving({"service": "demo", "role": "web"}, timeout=0, path="/up")
    res = run_script(script, _shims(tmp_path, curl_ok=False), tmp_path)
    assert res.returncode == hardening.NOT_SERVING and "not serving 0s after the reboot" in res.stderr


# ---- hosts upgrade: one host at a time, out of the pool meanwhile -----------------------------

WEBS = tuple(replace(_host(f"demo-web-{i}", "web", f"10.1.1.{i + 10}", (), True), index=i) for i in (1, 2))
LB_INVENTORY = replace(INVENTORY, hosts=WEBS + INVENTORY.hosts[1:],
                       load_balancers=(LoadBalancer("web", "127.0.0.50", (80,), ("demo-web-1", "demo-web-2")),))


class _Conn:
    """Records what runs; the host's boot mark changes once it was rebooted (``boots``)."""

    def __init__(self, host, events: list[str], boots: dict[str, int]) -> None:  # type: ignore[no-untyped-def]
        self.host, self.events, self.boots = host, events, boots

    async def run(self, command, *, what: str = "", **kw) -> Result:  # type: ignore[no-untyped-def]
        if what != "read the boot":
            self.events.append(f"{self.host.name}: {what}")
        if what in ("read the boot", "ssh after the reboot"):
            return Result(0, f"boot-{self.boots.get(self.host.name, 0)}\n", "")
        return Result(0, "", "")


class _Pool:
    def __init__(self, events: list[str], boots: dict[str, int]) -> None:
        self.events, self.boots = events, boots

    async def __aenter__(self) -> _Pool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def connect(self, host) -> _Conn:  # type: ignore[no-untyped-def]
        return _Conn(host, self.events, self.boots)


class _Rotation:
    def __init__(self, events: list[str], members: set[str], boots: dict[str, int] | None = None) -> None:
        self.events, self.members, self.boots = events, members, boots if boots is not None else {}

    async def leave(self, host) -> bool:  # type: ignore[no-untyped-def]
        if host.name not in self.members:
            return False
        self.events.append(f"{host.name}: leave")
        return True

    async def join(self, host) -> None:  # type: ignore[no-untyped-def]
        self.events.append(f"{host.name}: join")

    async def reboot(self, host) -> None:  # type: ignore[no-untyped-def]
        self.events.append(f"{host.name}: reboot")
        self.boots[host.name] = self.boots.get(host.name, 0) + 1


def test_upgrade_takes_one_host_at_a_time_out_of_the_pool_until_it_serves_again() -> None:
    r = _rollout(BLUEPRINT, LB_INVENTORY)
    events: list[str] = []
    boots: dict[str, int] = {}
    r.pool = lambda: _Pool(events, boots)  # type: ignore[method-assign]
    result = asyncio.run(upkeep.upgrade(r, _Rotation(events, {"demo-web-1", "demo-web-2"}, boots), drain=0))
    web = [e for e in events if e.startswith("demo-web-")]
    assert web == [f"demo-web-{i}: {step}" for i in (1, 2) for step in
                   ("leave", "upgrade packages", "reboot", "ssh after the reboot", "wait until it serves", "join")]
    # role by role: the web role before the worker, then the accessory's own VM; none is in a pool
    order = [e.split(":")[0] for e in events]
    assert order.index("demo-web-2") < order.index("demo-worker-1") < order.index("demo-db-1")
    assert "demo-db-1: leave" not in events and "demo-db-1: reboot" in events
    assert [h.steps for h in result.hosts][0] == ["left the load balancer", "upgraded", "rebooted", "serves again",
                                                  "joined the load balancer"]


def test_a_host_still_on_its_old_boot_is_not_taken_for_rebooted(monkeypatch: pytest.MonkeyPatch) -> None:
    """A reboot call that returned before the guest went down: SSH still answers, from the boot
    before. Taken for back, the host would join the pool and then drop its requests."""
    monkeypatch.setattr(upkeep, "SSH_TIMEOUT", 0.2)
    monkeypatch.setattr(upkeep, "RETRY_PAUSE", 0.05)
    r = _rollout(BLUEPRINT, LB_INVENTORY)
    events: list[str] = []
    boots: dict[str, int] = {}
    r.pool = lambda: _Pool(events, boots)  # type: ignore[method-assign]

    class NoReboot(_Rotation):
        async def reboot(self, host) -> None:  # type: ignore[no-untyped-def]
            self.events.append(f"{host.name}: reboot")   # the boot mark stays as it was

    with pytest.raises(OperationFailed, match="demo-web-1: not back within 0.2s of the reboot"):
        asyncio.run(upkeep.upgrade(r, NoReboot(events, {"demo-web-1", "demo-web-2"}, boots), drain=0))
    assert "demo-web-1: join" not in events and not any(e.startswith("demo-web-2") for e in events)


def test_upgrade_of_selected_roles_and_an_unknown_role_refused_before_anything() -> None:
    r = _rollout(BLUEPRINT, LB_INVENTORY)
    assert [role for role, _ in upkeep.upgrade_order(r, ("web",))] == ["web"]
    with pytest.raises(InvalidInput, match="--roles webb: no VM of environment demo has that role"):
        upkeep.upgrade_order(r, ("webb",))


def test_a_dry_run_lists_the_cloud_calls_and_scripts_in_order_and_contacts_nothing() -> None:
    r = Rollout(loads_blueprint(BLUEPRINT), LB_INVENTORY, SECRETS, Recorder(), dry_run=True)
    r.pool = None  # type: ignore[assignment,method-assign]   # a dry run never connects
    result = asyncio.run(upkeep.upgrade(r, _Rotation([], set()), roles=("web",)))
    steps = [(p.host, p.what) for p in result.planned]
    assert steps[:5] == [("demo-web-1", "cloud: removeFromLoadBalancerRule"), ("demo-web-1", "upgrade packages"),
                         ("demo-web-1", "cloud: rebootVirtualMachine"), ("demo-web-1", "wait until it serves"),
                         ("demo-web-1", "cloud: assignToLoadBalancerRule")]
    assert steps[5][0] == "demo-web-2" and len(steps) == 10
    assert "apt-get" in result.planned[1].text


def test_maintenance_dry_run_shows_each_proxy_host_s_script() -> None:
    r = Rollout(loads_blueprint(BLUEPRINT), INVENTORY, SECRETS, Recorder(), dry_run=True)
    planned = ops.maintenance_plan(r, True, "Back at 14:00")
    assert [(p.host, p.what) for p in planned] == [("demo-web-1", "maintenance on")]
    assert "kamal-proxy stop demo-web --message='Back at 14:00'" in planned[0].text
    with pytest.raises(InvalidInput):
        ops.maintenance_plan(r, True, "two\nlines")


# ---- PostgreSQL tuned from its VM's memory and CPUs --------------------------------------------

GiB = 1024 ** 3


def test_postgres_settings_follow_the_vm_s_memory_and_cpus() -> None:
    small = postgres_tuning(2 * GiB, 1)
    assert small == {"max_connections": "100", "shared_buffers": "512MB", "effective_cache_size": "1536MB",
                     "work_mem": "5MB", "maintenance_work_mem": "128MB", "max_worker_processes": "8",
                     "max_parallel_workers": "1", "max_parallel_workers_per_gather": "1"}
    big = postgres_tuning(64 * GiB, 16)
    assert big["max_connections"] == "400" and big["shared_buffers"] == "16384MB"
    assert big["maintenance_work_mem"] == "2048MB", "capped at 2 GB"
    assert big["max_parallel_workers"] == "16" and big["max_parallel_workers_per_gather"] == "8"
    assert postgres_tuning(8 * GiB, 4)["max_connections"] == "200"


def test_the_db_accessory_runs_tuned_unless_the_blueprint_sets_a_value() -> None:
    r = _rollout()
    db = INVENTORY.host("demo-db-1")
    work = r.decide(db, facts.HostFacts(memory=4 * GiB, cpus=2), "v1")
    cmd = work.tuned["db"].cmd or ()
    assert ("-c", "shared_buffers=1024MB") == cmd[cmd.index("shared_buffers=1024MB") - 1:][:2]
    assert "effective_cache_size=3072MB" in cmd and "max_connections=200" in cmd
    # what the dry run shows is what runs: the accessory's docker run carries the settings
    text = accessory_script(r.bp, "demo", work.tuned["db"], accessory_env(work.tuned["db"], SECRETS),
                            db.private_ip).text()
    assert "-c shared_buffers=1024MB" in text
    # the blueprint's own value wins; redis is not tuned
    own = _rollout(BLUEPRINT.replace("    port: 5432\n", "    port: 5432\n    cmd: [postgres, -c, shared_buffers=3GB]\n"))
    cmd = own.decide(db, facts.HostFacts(memory=4 * GiB, cpus=2), "v1").tuned["db"].cmd or ()
    assert cmd.count("-c") == 8 and "shared_buffers=3GB" in cmd and "shared_buffers=1024MB" not in cmd
    web = r.decide(INVENTORY.host("demo-web-1"), facts.HostFacts(memory=4 * GiB, cpus=2), "v1")
    assert web.tuned["redis"].cmd is None
    # the same facts twice: the same configuration, so a second deploy leaves the database alone
    again = r.decide(db, facts.HostFacts(memory=4 * GiB, cpus=2), "v1").tuned["db"]
    assert again == work.tuned["db"]


def test_the_facts_read_the_vm_s_memory_and_cpus(tmp_path: Path) -> None:
    script = facts.script(images=[], accessories=[], containers=[], mounts=[], machine=True)
    res = run_script(script, {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}, tmp_path)
    f = facts.parse(res.stdout)
    assert f.memory > 64 * 1024 * 1024 and f.cpus == len(os.sched_getaffinity(0)), res.stdout


def test_a_deploy_user_other_than_root_gets_a_warning_not_a_failed_deploy() -> None:
    inv = replace(INVENTORY, ssh=replace(INVENTORY.ssh, user="deploy"))
    progress = Recorder()
    r = Rollout(loads_blueprint(BLUEPRINT), inv, SECRETS, progress)
    assert not r.decide(inv.host("demo-web-1"), facts.HostFacts(), "v1").harden
    assert not r.decide(inv.host("demo-db-1"), facts.HostFacts(), "v1").harden
    said = [text for level, text in progress.notes if level == "warning" and "needs root on the hosts" in text]
    assert len(said) == 1 and "csdeploy logs in as deploy" in said[0], progress.notes
