"""Three web VMs behind one load-balanced address on the lab, scaled under load (e2e-lb).

Each test is one step of the story (see conftest: a failed step skips the rest). The web
role of the demo blueprint gets ``count: 3``: csdeploy provisions one public address with a
CloudStack load-balancer rule per port over the three VMs, and the lab's virtual router (the
simulator's public network) spreads the TCP connections over them. Which VM answered is told
by the demo's ``host:`` line, the container's host name, matched against the app container
ids ``docker ps`` lists on each VM over SSH.

  a. create-env with 3 web VMs -> "app: http://<balanced address>/", 200 "demo v1"
  b. requests through the address reach all three VMs
  c. scale 3 -> 2 under continuous load: 0 failed requests; web-3 left the pool, then went
  d. scale 2 -> 3 under continuous load: 0 failed requests; web-3 joined after its rollout
  d2. the VMs came up hardened (sshd -T: key-only, root by key only, MaxAuthTries 3; a password
      login is refused); `hosts upgrade --roles web` under continuous load: each web VM left
      the pool, ran the upgrade command (a harmless stand-in: the lab's VMs have no mirror to
      reach), was rebooted through the cloud's rebootVirtualMachine and joined again, one at a
      time: 0 failed requests
  e. teardown: nothing of the environment is left in the cloud (rules included) or in docker

The load: two aiohttp clients, keep-alive off (a new TCP connection per request through the
balanced address), GET /; a non-200, a connection error or a timeout is a failure.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from .conftest import (
    REPO,
    Lab,
    Load,
    cloud_leftovers,
    docker_leftovers,
    environment,
    http,
    page_host,
    page_version,
    ssh,
)

ENV = "e2e-lb"
BLUEPRINT = str(REPO / "blueprints" / "demo.yml")
WEBS = ["e2e-lb-web-1", "e2e-lb-web-2", "e2e-lb-web-3"]
MIN_REQUESTS = 300

pytestmark = pytest.mark.story


@dataclass
class Story:
    lab: Lab
    url: str = ""
    inventory: dict[str, Any] = field(default_factory=dict)
    seen: dict[str, Any] = field(default_factory=dict)   # every inventory's hosts, for the leftovers check

    def create(self, count: int, *extra: str, timeout: float = 900) -> Any:
        run = self.lab.csdeploy("create-env", BLUEPRINT, "--env", ENV, "--version", "v1", "--progress", "plain",
                                "--set", f"roles.web.count={count}", "--set", "roles.worker.count=0", *extra,
                                timeout=timeout)
        self.inventory = self.lab.inventory(ENV)
        for h in self.inventory["hosts"]:
            self.seen[h["vm_id"]] = h
        return run

    def containers(self) -> dict[str, str]:
        """App container id (12 hex digits, its host name) -> the VM it runs on."""
        out = {}
        for name in [h["name"] for h in self.inventory["hosts"] if h["role"] == "web"]:
            code, stdout, stderr = ssh(self.lab, ENV, name, "docker ps --filter label=role=web --format '{{.ID}}'")
            assert code == 0, f"docker ps on {name}: {stderr}"
            out.update({cid.strip(): name for cid in stdout.split() if cid.strip()})
        return out


@pytest.fixture(scope="module")
def story(lab: Lab) -> Iterator[Story]:
    with environment(lab, ENV):
        yield Story(lab)


class Membership:
    """Polls, with `cs`, when a VM first appears among a rule's members (wall-clock time)."""

    def __init__(self, lab: Lab, rule_id: str, vm_name: str) -> None:
        self.cs, self.rule_id, self.vm_name = lab.cs(), rule_id, vm_name
        self.joined: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> Membership:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _poll(self) -> None:
        while not self._stop.is_set() and self.joined is None:
            found = self.cs.listLoadBalancerRuleInstances(id=self.rule_id).get("loadbalancerruleinstance", [])
            if any(vm["name"] == self.vm_name for vm in found):
                self.joined = time.time()
            time.sleep(0.1)


def app_ready_at(story: Story, host: str) -> float:
    """When the app container on ``host`` started (docker's StartedAt, as a wall-clock time)."""
    code, out, err = ssh(story.lab, ENV, host, "docker inspect -f '{{.State.StartedAt}}' "
                         "$(docker ps -q --filter label=role=web)")
    assert code == 0 and out.strip(), f"docker inspect on {host}: {err}"
    stamp = out.strip().splitlines()[0]
    whole, _, frac = stamp.rstrip("Z").partition(".")
    started = datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
    return started + float(f"0.{frac or 0}")


def scale_under_load(story: Story, count: int) -> Load:
    with Load(story.url) as load:
        load.keep_going_until(20, deadline=30)
        assert load.ok >= 20 and load.failed == 0, "the app does not answer before scaling: " + load.summary()
        run = story.create(count)
        load.keep_going_until(MIN_REQUESTS)
    print(f"\n[e2e] scale to {count}: {load.summary()}; answered by {dict(load.hosts)}\n{run.stderr[-3000:]}")
    story.lab.record("load_balancer", **{f"scale_to_{count}_seconds": round(run.seconds, 1),
                                         f"scale_to_{count}_load": load.summary(),
                                         f"scale_to_{count}_containers_answering": len(load.hosts)})
    return load


# ---- a -----------------------------------------------------------------------------------------
def test_a_three_web_vms_behind_one_address(story: Story) -> None:
    run = story.create(3)
    story.lab.record("load_balancer", create_env_seconds=round(run.seconds, 1))
    [lb] = story.inventory["load_balancers"]
    assert lb["role"] == "web" and lb["members"] == WEBS, lb
    assert lb["public_ip"] not in {h["public_ip"] for h in story.inventory["hosts"]}
    story.url = f"http://{lb['public_ip']}/"
    assert f"app: {story.url}" in run.stdout, run.explain()
    status, body = http("GET", story.url)
    assert status == 200 and page_version(body) == "v1", f"GET {story.url}: {status} {body!r}"
    # the VMs' own addresses serve SSH only: HTTP goes through the pool
    web1 = next(h for h in story.inventory["hosts"] if h["name"] == WEBS[0])
    with pytest.raises(OSError):
        http("GET", f"http://{web1['public_ip']}/", timeout=3)


# ---- b -----------------------------------------------------------------------------------------
def test_b_requests_reach_all_three(story: Story) -> None:
    answered = [page_host(http("GET", story.url)[1]) for _ in range(30)]
    by_vm = story.containers()
    assert set(by_vm.values()) == set(WEBS), by_vm
    reached = {by_vm.get(h or "?", f"unknown host {h}") for h in answered}
    assert reached == set(WEBS), f"answered by {answered}; containers {by_vm}"


# ---- c -----------------------------------------------------------------------------------------
def test_c_scale_down_under_load_drops_nothing(story: Story) -> None:
    before = story.containers()
    load = scale_under_load(story, 2)
    assert load.failed == 0, "requests failed while scaling down: " + load.summary()
    assert load.total >= MIN_REQUESTS, load.summary()
    assert len(load.hosts) >= 3, f"the load was not spread over the pool: {dict(load.hosts)}"
    assert story.inventory["load_balancers"][0]["members"] == WEBS[:2]
    assert WEBS[2] not in {h["name"] for h in story.inventory["hosts"]}
    after = [page_host(http("GET", story.url)[1]) for _ in range(12)]
    assert {before.get(h or "?") for h in after} <= set(WEBS[:2]), after


# ---- d -----------------------------------------------------------------------------------------
def test_d_scale_up_under_load_drops_nothing(story: Story) -> None:
    rule = next(r for r in story.lab.cs().listLoadBalancerRules()["loadbalancerrule"] if r["publicport"] == "80")
    with Membership(story.lab, rule["id"], WEBS[2]) as membership:
        load = scale_under_load(story, 3)
    # the new VM joined the pool only once its app ran (create-env: after the rollout on it)
    assert membership.joined is not None, "web-3 never appeared among the rule's members"
    assert membership.joined > app_ready_at(story, WEBS[2]), "web-3 joined before its app container started"
    assert load.failed == 0, "requests failed while scaling up: " + load.summary()
    assert load.total >= MIN_REQUESTS, load.summary()
    assert len(load.hosts) >= 2, f"the load was not spread over the pool: {dict(load.hosts)}"
    assert story.inventory["load_balancers"][0]["members"] == WEBS
    by_vm = story.containers()
    reached = {by_vm.get(page_host(http("GET", story.url)[1]) or "?") for _ in range(30)}
    assert reached == set(WEBS), reached


# ---- d2 ----------------------------------------------------------------------------------------
#: The stand-in for apt-get: leaves a trace, contacts nothing.
UPGRADE_STANDIN = "hosts.upgrade_command=sh -c 'date +%s >> /var/tmp/csdeploy-upgraded'"


def offered_auth(story: Story, host: str) -> str:
    """What the VM's sshd offers a client that has only a password: OpenSSH's `Permission
    denied (...)` line lists the methods the server still allows."""
    h = next(h for h in story.inventory["hosts"] if h["name"] == host)
    res = subprocess.run(["ssh", "-F", "/dev/null", "-p", str(h["ssh_port"]), "-o", "BatchMode=yes",
                          "-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password,keyboard-interactive",
                          "-o", f"UserKnownHostsFile={story.inventory['ssh']['known_hosts']}",
                          "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=10",
                          f"root@{h['public_ip']}", "true"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 255, res
    return res.stderr


def test_d2_hardened_hosts_upgrade_one_at_a_time_under_load(story: Story) -> None:
    for host in WEBS:
        code, out, err = ssh(story.lab, ENV, host, "sshd -T")
        assert code == 0, err
        settings = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
        assert settings["passwordauthentication"] == "no" and settings["kbdinteractiveauthentication"] == "no"
        assert settings["permitrootlogin"] in ("prohibit-password", "without-password")
        assert settings["maxauthtries"] == "3"
    denied = offered_auth(story, WEBS[0])
    assert "Permission denied (publickey)." in denied, denied
    started = time.time()
    with Load(story.url) as load:
        load.keep_going_until(20, deadline=30)
        run = story.lab.csdeploy("hosts", "upgrade", "--env", ENV, "--roles", "web", "--set", UPGRADE_STANDIN,
                                 timeout=600)
        load.keep_going_until(MIN_REQUESTS)
    print(f"\n[e2e] hosts upgrade: {load.summary()}\n{run.stdout}\n{run.stderr[-3000:]}")
    story.lab.record("load_balancer", hosts_upgrade_seconds=round(run.seconds, 1),
                     hosts_upgrade_load=load.summary())
    assert load.failed == 0, "requests failed while the web VMs upgraded: " + load.summary()
    for host in WEBS:
        assert f"{host} (web): left the load balancer, upgraded, rebooted, serves again, joined the load balancer" \
            in run.stdout, run.explain()
        code, out, _ = ssh(story.lab, ENV, host, "cat /var/tmp/csdeploy-upgraded")
        assert code == 0 and len(out.split()) == 1, f"the upgrade command ran {out.split()} times on {host}"
        assert app_ready_at(story, host) > started, f"{host}: its app container did not restart (no reboot?)"
    # one at a time: each VM's upgrade began after the previous one had joined again
    stamps = [int(ssh(story.lab, ENV, host, "cat /var/tmp/csdeploy-upgraded")[1]) for host in WEBS]
    assert stamps == sorted(stamps), stamps
    rule = next(r for r in story.lab.cs().listLoadBalancerRules()["loadbalancerrule"] if r["publicport"] == "80")
    found = story.lab.cs().listLoadBalancerRuleInstances(id=rule["id"]).get("loadbalancerruleinstance", [])
    assert sorted(vm["name"] for vm in found) == WEBS


# ---- e -----------------------------------------------------------------------------------------
def test_e_teardown_leaves_nothing(story: Story) -> None:
    run = story.lab.csdeploy("teardown", "--env", ENV, "--yes", "--progress", "plain")
    assert "load-balancer e2e-lb-web-80: delete done" in run.stderr, run.explain()
    everything = {**story.inventory, "hosts": list(story.seen.values())}
    left = cloud_leftovers(story.lab, ENV, everything)
    assert left == {}, f"the cloud still lists resources of {ENV}: {left}\n" + run.explain()
    left = docker_leftovers(story.lab, everything)
    assert left == {}, f"the lab still has docker objects of {ENV}: {left}\n" + run.explain()
