"""How versions reach three web hosts, on the lab, as a user drives it (environment e2e-prog).

The blueprint (tests/e2e/blueprints/progressive.yml): web x3, each with its kamal-proxy, behind
one CloudStack load-balanced address; a worker; `rollout.batch: 1` and a 12 s watch of /up and
/. Each step relies on the ones before it.

  a. create-env v1: the balanced address reaches every web host, each serving v1
  b. `degrading` under load: the watch fails, every host switches back by itself, v1 serves,
     the history (host and store) says rolled_back with the reason; failed requests only
     between the first switch and the last switch back (counted and recorded)
  c. canary 1 of 3: only web-1 serves v2; a deploy is refused while it is paused; --abort: v1
  d. rolling deploy v2 under load: 0 failed, each host's switch in order (JSON progress and
     history); the post_deploy hook gets the deploy's facts
  e. canary v1 on one host, then --promote under load: 0 failed, v1 everywhere
  f. canary 50%: kamal-proxy splits by cookie on every host; --abort: one version again
  g. HTTPS through the load balancer with a certificate from the lab CA: `curl --cacert`
     verifies it, answered by every host
  h. bad input (a canary as large as the pool, a watch path that is not a path, a certificate
     that does not match its key) is exit 2, a failing pre_deploy hook exit 1; nothing on the
     hosts changed

Which host answered is told by the demo's `host:` line (the app container's host name),
matched against the app containers `docker ps` lists on each VM over SSH; the load balancer
spreads connections round-robin, so a few requests per host reach every one of them.

Load: six threads, each GET on a new connection (urllib, no keep-alive) to the balanced
address.
"""

from __future__ import annotations

import http.client
import json
import secrets
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from .conftest import LOAD_RATE, REPO, Lab, environment, page_host, page_version, ssh

ENV = "e2e-prog"
BLUEPRINT = str(REPO / "tests" / "e2e" / "blueprints" / "progressive.yml")
TLS_SETS = ("--set", "roles.web.proxy.host=demo.lab",
            "--set", "roles.web.proxy.ssl.certificate_pem=TLS_CERTIFICATE",
            "--set", "roles.web.proxy.ssl.private_key_pem=TLS_PRIVATE_KEY",
            "--set", "secrets=[REGISTRY_PASSWORD, TLS_CERTIFICATE, TLS_PRIVATE_KEY]")

pytestmark = pytest.mark.story
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Story:
    lab: Lab
    inventory: dict[str, Any] = field(default_factory=dict)

    @property
    def webs(self) -> list[dict[str, Any]]:
        return sorted((h for h in self.inventory["hosts"] if h["role"] == "web"), key=lambda h: h["index"])

    @property
    def balanced_ip(self) -> str:
        [lb] = self.inventory["load_balancers"]
        return str(lb["public_ip"])

    @property
    def url(self) -> str:
        return f"http://{self.balanced_ip}/"

    def app_containers(self) -> dict[str, str]:
        """Running app container id (12 hex digits: its host name) -> the web VM it runs on."""
        out = {}
        for h in self.webs:
            code, stdout, stderr = ssh(self.lab, ENV, h["name"], "docker ps --filter label=role=web --format '{{.ID}}'")
            assert code == 0, f"docker ps on {h['name']}: {stderr}"
            out.update({cid: h["name"] for cid in stdout.split()})
        return out

    def versions(self, *, tries: int = 6, cookie: str | None = None) -> dict[str, set[str | None]]:
        """Web host name -> the versions it answered with, over ``tries`` requests per host
        through the balanced address (a host the load balancer never reached: an empty set)."""
        by_vm = self.app_containers()
        out: dict[str, set[str | None]] = {h["name"]: set() for h in self.webs}
        for i in range(tries * len(self.webs)):
            req = urllib.request.Request(self.url)
            if cookie is not None:
                req.add_header("Cookie", f"kamal-rollout={cookie}-{i}-{secrets.token_hex(3)}")
            with _DIRECT.open(req, timeout=10) as resp:
                body = resp.read().decode()
            host = page_host(body) or "?"
            assert host in by_vm, f"answered by container {host}, on none of the web VMs {by_vm}"
            out[by_vm[host]].add(page_version(body))
        return out


@pytest.fixture(scope="module")
def story(lab: Lab) -> Iterator[Story]:
    with environment(lab, ENV):
        yield Story(lab)


class HostsLoad:
    """GET the URL continuously (``threads`` threads, a new connection per request); each
    answer is kept with its wall-clock time, so failures can be placed in a deploy's events.
    At most LOAD_RATE requests a second over all threads (see there): each thread starts one
    every ``threads / LOAD_RATE`` seconds, or as soon as the one before answered."""

    def __init__(self, url: str, threads: int = 6) -> None:
        self.url = url
        self.period = threads / LOAD_RATE
        self.answers: list[tuple[float, str, str]] = []   # (time, url, "v1" | "HTTP 500" | "error ...")
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._work, args=(url,), daemon=True) for _ in range(threads)]

    def _work(self, url: str) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                with _DIRECT.open(url, timeout=10) as resp:
                    what = page_version(resp.read().decode()) or "?"
            except urllib.error.HTTPError as exc:
                what = f"HTTP {exc.code}"
            except OSError as exc:
                what = f"error {type(exc).__name__}"
            with self._lock:
                self.answers.append((time.time(), url, what))
            self._stop.wait(max(0.0, self.period - (time.monotonic() - started)))

    def __enter__(self) -> HostsLoad:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=15)

    def wait_for(self, requests: int, deadline: float = 30) -> None:
        end = time.monotonic() + deadline
        while len(self.answers) < requests and time.monotonic() < end:
            time.sleep(0.05)

    @property
    def failures(self) -> list[tuple[float, str, str]]:
        return [a for a in self.answers if a[2].startswith(("HTTP", "error")) or a[2] == "?"]

    def summary(self) -> str:
        counts = Counter(a[2] for a in self.answers)
        return f"{len(self.answers)} requests to {self.url}: {dict(counts)}"


def under_load(story: Story, *args: str, check: bool = True, after: float = 1.0) -> tuple[Any, HostsLoad]:
    with HostsLoad(story.url) as load:
        load.wait_for(60)
        assert not load.failures, "the app fails before the command: " + load.summary()
        run = story.lab.csdeploy(*args, check=check, timeout=600)
        time.sleep(after)
    print(f"\n[e2e] {args[0]} {' '.join(a for a in args[1:] if a.startswith('--v') or a == '--promote')}: "
          f"{load.summary()}")
    return run, load


def events(run: Any) -> list[dict[str, Any]]:
    """The JSON progress events of a `--json` run (stderr)."""
    out = []
    for line in run.stderr.splitlines():
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict) and data.get("event") == "resource":
            data["at"] = _epoch(data["timestamp"])
            out.append(data)
    return out


def _epoch(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp).timestamp()


def switches(evs: list[dict[str, Any]], action: str = "switch") -> list[dict[str, Any]]:
    return [e for e in evs if e["resource"].startswith("web ") and e["action"] == action]


def host_history(story: Story) -> list[dict[str, Any]]:
    return json.loads(story.lab.csdeploy("history", "--env", ENV, "--source", "host", "--json").stdout)


def containers(story: Story) -> dict[str, str]:
    """Every web host's containers with their ids and states (what 'nothing changed' compares)."""
    out = {}
    for h in story.webs:
        code, stdout, _ = ssh(story.lab, ENV, h["name"], "docker ps -a --format '{{.ID}} {{.Names}} {{.State}}' | sort")
        assert code == 0
        out[h["name"]] = stdout
    return out


# ---- a -----------------------------------------------------------------------------------------
def test_a_create_env_serves_v1_on_three_web_hosts(story: Story) -> None:
    # without the blueprint's 12 s watch: the first version has nothing to switch back to, and
    # what this step asserts is checked here, after the command (steps b, d and g keep the watch)
    run = story.lab.csdeploy("create-env", BLUEPRINT, "--env", ENV, "--version", "v1", "--progress", "plain",
                             "--set", "rollout.watch=null", timeout=900)
    story.inventory = story.lab.inventory(ENV)
    assert [h["name"] for h in story.webs] == [f"{ENV}-web-1", f"{ENV}-web-2", f"{ENV}-web-3"], run.explain()
    [lb] = story.inventory["load_balancers"]
    assert lb["members"] == [h["name"] for h in story.webs] and f"app: {story.url}" in run.stdout, run.explain()
    assert story.versions() == {h["name"]: {"v1"} for h in story.webs}
    assert "switches, in order" in run.stdout, run.explain()
    story.lab.record("progressive", create_env_seconds=round(run.seconds, 1))


# ---- b -----------------------------------------------------------------------------------------
def test_b_a_degrading_version_is_watched_and_switched_back_by_itself(story: Story) -> None:
    run, load = under_load(story, "deploy", BLUEPRINT, "--env", ENV, "--version", "degrading", "--json",
                           check=False)
    assert run.code == 1, "a failed watch must exit 1\n" + run.explain()
    assert "watch failed" in run.stderr and "HTTP 500, expected 200" in run.stderr, run.explain()
    evs = events(run)
    switched = [e for e in switches(evs) if e["status"] == "done"]
    reverted = [e for e in switches(evs, "revert") if e["status"] == "done"]
    assert switched and {e["resource"] for e in reverted} == {e["resource"] for e in switched}, run.explain()
    assert any(e["resource"] == "watch" and e["status"] == "failed" for e in evs), run.explain()
    # failed requests only while the new version served: from the first switch to the last switch back
    window = (min(e["at"] for e in switches(evs) if e["status"] == "running"), max(e["at"] for e in reverted))
    outside = [f for f in load.failures if not window[0] - 0.5 <= f[0] <= window[1] + 1.0]
    story.lab.record("progressive", degrading_failed_requests=len(load.failures),
                     degrading_requests=len(load.answers), degrading_window_seconds=round(window[1] - window[0], 1),
                     degrading_failures_seconds=round(max((f[0] for f in load.failures), default=0)
                                                      - min((f[0] for f in load.failures), default=0), 1),
                     degrading_hosts_switched=len(switched), degrading_load=load.summary())
    assert outside == [], f"requests failed outside the watch window {window}: {outside[:5]}; {load.summary()}"
    assert story.versions() == {h["name"]: {"v1"} for h in story.webs}, "v1 must serve again on every host"

    last = host_history(story)[-1]
    assert (last["version"], last["status"]) == ("degrading", "rolled_back"), last
    assert last["error"].startswith("watch failed after") and "HTTP 500" in last["error"], last
    assert sorted(last["reverted"]) == sorted(last["switched"]), last
    stored = json.loads(story.lab.csdeploy("history", "--env", ENV, "--json").stdout)[0]
    assert (stored["version"], stored["status"]) == ("degrading", "rolled_back"), stored
    assert "watch failed" in stored["error"] and any(e["type"] == "rollback" for e in stored["events"]), stored


# ---- c -----------------------------------------------------------------------------------------
def test_c_a_canary_of_one_host_serves_v2_alone_until_aborted(story: Story) -> None:
    run = story.lab.csdeploy("deploy", BLUEPRINT, "--env", ENV, "--version", "v2", "--canary", "1", "--json")
    result = run.json()
    assert result["status"] == "paused" and result["canary"] == f"canary of v2 on {ENV}-web-1", result
    assert [s["host"] for s in result["switches"]] == [f"{ENV}-web-1"], result
    web1, web2, web3 = (h["name"] for h in story.webs)
    assert story.versions() == {web1: {"v2"}, web2: {"v1"}, web3: {"v1"}}

    refused = story.lab.csdeploy("deploy", BLUEPRINT, "--env", ENV, "--version", "v2", check=False)
    assert refused.code == 1, refused.explain()
    assert f"has a paused canary of v2 on {web1}" in refused.stderr and "--promote" in refused.stderr, \
        refused.explain()
    assert story.versions() == {web1: {"v2"}, web2: {"v1"}, web3: {"v1"}}, "the refused deploy changed a host"

    aborted = story.lab.csdeploy("deploy", BLUEPRINT, "--env", ENV, "--abort", "--json").json()
    assert aborted["status"] == "rolled_back" and aborted["reverted"] == [web1], aborted
    assert story.versions() == {h["name"]: {"v1"} for h in story.webs}
    code, out, _ = ssh(story.lab, ENV, web1, "docker ps -a --format '{{.Names}}'")
    assert "demo-web-v2" not in out.split(), f"the canary's container remains: {out}"
    kinds = [(r["kind"], r["status"]) for r in host_history(story)[-2:]]
    assert kinds == [("deploy", "paused"), ("abort", "rolled_back")], kinds


# ---- d -----------------------------------------------------------------------------------------
def test_d_a_rolling_deploy_under_load_switches_host_by_host_and_drops_nothing(story: Story) -> None:
    facts = story.lab.home / "post-deploy.env"
    run, load = under_load(story, "deploy", BLUEPRINT, "--env", ENV, "--version", "v2", "--json",
                           "--set", f"hooks.post_deploy=env | grep ^CSDEPLOY_ | sort > {facts}")
    story.lab.record("progressive", rolling_seconds=round(run.seconds, 1), rolling_failed=len(load.failures),
                     rolling_load=load.summary())
    assert load.failures == [], "requests failed during the rolling deploy: " + load.summary()
    seen = Counter(a[2] for a in load.answers)
    assert seen["v1"] > 0 and seen["v2"] > 0, "the switch did not happen under load: " + load.summary()
    evs = switches(events(run))
    names = [h["name"] for h in story.webs]
    done = [e for e in evs if e["status"] == "done"]
    assert [e["resource"].split()[1] for e in done] == names, [(e["resource"], e["status"]) for e in evs]
    for before, after in zip(done, [e for e in evs if e["status"] == "running"][1:], strict=False):
        assert after["at"] >= before["at"], "a host switched before the one before it was done"
    result = run.json()
    assert [s["host"] for s in result["switches"]] == names and result["watch"]["ok"], result
    assert host_history(story)[-1]["switched"] == names
    assert story.versions() == {n: {"v2"} for n in names}
    hook = dict(line.split("=", 1) for line in facts.read_text().splitlines())
    assert hook["CSDEPLOY_VERSION"] == "v2" and hook["CSDEPLOY_COMMAND"] == "deploy", hook
    assert set(hook["CSDEPLOY_HOSTS"].split(",")) >= set(names) and "CSDEPLOY_RUNTIME" in hook, hook
    assert "REGISTRY_PASSWORD" not in facts.read_text()


# ---- e -----------------------------------------------------------------------------------------
def test_e_a_promoted_canary_reaches_every_host_without_a_failed_request(story: Story) -> None:
    story.lab.csdeploy("deploy", BLUEPRINT, "--env", ENV, "--version", "v1", "--canary", "1")
    web1 = story.webs[0]["name"]
    assert story.versions()[web1] == {"v1"} and story.versions()[story.webs[1]["name"]] == {"v2"}
    run, load = under_load(story, "deploy", BLUEPRINT, "--env", ENV, "--promote", "--json")
    story.lab.record("progressive", promote_seconds=round(run.seconds, 1), promote_failed=len(load.failures),
                     promote_load=load.summary())
    assert load.failures == [], load.summary()
    result = run.json()
    assert [s["host"] for s in result["switches"]] == [h["name"] for h in story.webs[1:]], result
    assert story.versions() == {h["name"]: {"v1"} for h in story.webs}
    assert host_history(story)[-1]["kind"] == "promote"


# ---- f -----------------------------------------------------------------------------------------
def test_f_a_percentage_canary_splits_every_host_by_cookie(story: Story) -> None:
    result = story.lab.csdeploy("deploy", BLUEPRINT, "--env", ENV, "--version", "v2", "--canary", "50%",
                                "--json").json()
    assert result["status"] == "paused" and {s["status"] for s in result["switches"]} == {"split"}, result
    split = story.versions(tries=40, cookie="user")
    assert all(seen == {"v1", "v2"} for seen in split.values()), split
    assert all(seen == {"v1"} for seen in story.versions().values()), "no cookie: the current version"
    story.lab.csdeploy("deploy", BLUEPRINT, "--env", ENV, "--abort")
    assert all(seen == {"v1"} for seen in story.versions(tries=20, cookie="user").values())


# ---- g -----------------------------------------------------------------------------------------
def test_g_https_with_the_lab_cas_certificate_verifies_on_every_host(story: Story) -> None:
    story.lab.csdeploy("lab", "cert", "demo.lab")
    run = story.lab.csdeploy("deploy", BLUEPRINT, "--env", ENV, "--version", "v2", *TLS_SETS, "--json")
    assert run.json()["watch"]["ok"], run.explain()
    batches = {(s["batch"], s["batches"]) for s in run.json()["switches"]}
    assert batches == {(1, 1)}, f"turning TLS on behind one balancer is one batch, not {batches}"
    ca = story.lab.home / "lab" / "ca" / "ca.crt"
    by_vm, answered = story.app_containers(), Counter()
    for _ in range(4 * len(story.webs)):  # through the load balancer's 443 rule, verified against the lab CA
        curl = subprocess.run(["curl", "-sS", "--noproxy", "*", "--cacert", str(ca), "--resolve",
                               f"demo.lab:443:{story.balanced_ip}", "https://demo.lab/"],
                              capture_output=True, text=True, timeout=30)
        assert curl.returncode == 0 and page_version(curl.stdout) == "v2", curl.stderr
        answered[by_vm.get(page_host(curl.stdout) or "?", "an unknown container")] += 1
    assert set(answered) == {h["name"] for h in story.webs}, f"HTTPS answered by {dict(answered)}"
    for h in story.webs:
        code, out, _ = ssh(story.lab, ENV, h["name"], "stat -c '%a' .csdeploy/proxy/apps-config/demo-web/tls/key.pem")
        assert out.strip() == "600", f"{h['name']}: the key file is {out.strip()}"
    plain = http.client.HTTPConnection(story.balanced_ip, 80, timeout=10)
    plain.request("GET", "/", headers={"Host": "demo.lab"})
    answer = plain.getresponse()
    assert answer.status == 301 and answer.getheader("Location") == "https://demo.lab/", \
        f"plain HTTP is redirected to HTTPS: {answer.status} {answer.getheader('Location')}"
    plain.close()


# ---- h -----------------------------------------------------------------------------------------
def test_h_bad_input_is_refused_and_changes_nothing(story: Story) -> None:
    before, records = containers(story), len(host_history(story))
    story.lab.csdeploy("lab", "cert", "other.lab", "--cert-secret", "OTHER_CERTIFICATE",
                       "--key-secret", "OTHER_PRIVATE_KEY")
    mismatched = ("--set", "roles.web.proxy.host=demo.lab",
                  "--set", "roles.web.proxy.ssl.certificate_pem=TLS_CERTIFICATE",
                  "--set", "roles.web.proxy.ssl.private_key_pem=OTHER_PRIVATE_KEY",
                  "--set", "secrets=[REGISTRY_PASSWORD, TLS_CERTIFICATE, OTHER_PRIVATE_KEY]")
    cases = [
        (("--version", "v1", "--canary", "3", *TLS_SETS), 2, "--canary 3: role web has 3 hosts here"),
        (("--version", "v1", "--set", "rollout.watch.paths=[notapath]"), 2,
         "rollout.watch.paths[0]: expected a URL path starting with /"),
        (("--version", "v1", *mismatched), 2,
         "the certificate in TLS_CERTIFICATE does not match the private key in OTHER_PRIVATE_KEY"),
        (("--version", "v1", *TLS_SETS, "--set", "hooks.pre_deploy=echo refusing; exit 3"), 1,
         "hook pre_deploy failed (exit 3)"),
    ]
    for args, code, says in cases:
        run = story.lab.csdeploy("deploy", BLUEPRINT, "--env", ENV, *args, check=False)
        assert run.code == code and says in run.stderr, run.explain()
        assert "BEGIN" not in run.stderr + run.stdout, "a PEM was shown"
    assert "hook pre_deploy | refusing" in run.stderr, run.explain()
    assert containers(story) == before, "a refused deploy changed a host"
    assert len(host_history(story)) == records, "a refused deploy was recorded on the host"
