"""Fixtures for the end-to-end tests: the lab, the CLI as a subprocess, environments that are
always torn down, a client loop that loads the app during deploys, and checks made with the
`cs` client and the docker CLI (never with csdeploy's own code).

Which CSDEPLOY_HOME: the default one (``$CSDEPLOY_HOME`` as the shell has it, else
``~/.csdeploy``), not a temporary one. The lab is one per machine: its registry container
(``csdeploy-lab-registry``), the registry's port 5000 and the simulator's port 8080 are
global, so a second CSDEPLOY_HOME would start a second registry and simulator that fight the
first over them. The tests use the developer's lab (``csdeploy lab up`` is idempotent: when
it runs, it is reused; when not, it is started and left up, as ``csdeploy lab up`` leaves it;
``CSDEPLOY_E2E_LAB_DOWN=1`` stops it again at the end if this session started it) and
isolate by environment name: ``e2e-demo`` and ``e2e-bare``, never a developer's ``demo``.
Each environment is torn down before its module (leftovers of a killed run) and after it,
in a ``finally``, whatever happened.

Which cloud: only ever the lab. The CLI runs with ``CLOUDSTACK_*`` and the secrets the lab
provides removed from its environment, so csdeploy resolves the lab as its default cloud and
takes the lab's secrets (the path a user takes). If a ``cloudstack.ini`` would make it target
another cloud, the CLI gets the lab's endpoint explicitly, with the lab's secrets.

The modules are stories: each test is one step and relies on the state the previous steps
left. Tests marked ``story`` are skipped once an earlier step of their module failed (the
``-x`` semantics, per module), so one failure is reported once, not as a cascade; the
environment is still torn down by the module's fixture.
"""

from __future__ import annotations

import asyncio
import configparser
import json
import os
import shlex
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "cloudstack_deploy"]
FIGURES = Path("/tmp/csdeploy-e2e-figures.json")
TAG_ENV = "csdeploy:env"
LAB_SECRET_NAMES = ("REGISTRY_PASSWORD", "POSTGRES_PASSWORD")


# ---- story semantics: a failed step skips the rest of its module ------------------------------
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "story: a step of a module-long story (skipped after a failed step)")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if item.get_closest_marker("story") and report.failed and report.when in ("setup", "call"):
        module = item.getparent(pytest.Module)
        if module is not None and not hasattr(module, "_story_failed"):
            module._story_failed = item.name  # type: ignore[attr-defined]
    return report


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("story"):
        module = item.getparent(pytest.Module)
        failed = getattr(module, "_story_failed", None)
        if failed:
            pytest.skip(f"step {failed} failed; this step needs the state it leaves")


# ---- the CLI ---------------------------------------------------------------------------------
@dataclass
class Run:
    args: list[str]
    code: int
    stdout: str
    stderr: str
    seconds: float

    def explain(self) -> str:
        return (f"$ csdeploy {shlex.join(self.args)}\nexit {self.code} after {self.seconds:.1f}s\n"
                f"--- stdout (tail)\n{self.stdout[-4000:]}\n--- stderr (tail)\n{self.stderr[-8000:]}")

    def json(self) -> Any:
        """The JSON result: the last line of stdout that is JSON (or the whole stdout)."""
        try:
            return json.loads(self.stdout)
        except json.JSONDecodeError:
            pass
        for line in reversed(self.stdout.strip().splitlines()):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
        raise AssertionError("no JSON on stdout\n" + self.explain())


def run_cli(args: list[str], env: dict[str, str], *, timeout: float) -> Run:
    started = time.monotonic()
    try:
        proc = subprocess.run([*CLI, *args], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        run = Run(args, -9, out, err, time.monotonic() - started)
        raise AssertionError(f"timed out after {timeout:.0f}s (killed)\n" + run.explain()) from None
    return Run(args, proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)


@dataclass
class Lab:
    env: dict[str, str]              # the CLI's environment
    home: Path                       # CSDEPLOY_HOME
    endpoint: str
    key: str
    secret: str
    figures: dict[str, Any] = field(default_factory=dict)

    def csdeploy(self, *args: str, check: bool = True, timeout: float = 300) -> Run:
        """Run the CLI; with ``check`` a non-zero exit fails the test with the whole output."""
        run = run_cli(list(args), self.env, timeout=timeout)
        if check and run.code != 0:
            raise AssertionError(f"csdeploy {args[0]} failed\n" + run.explain())
        return run

    def cs(self) -> Any:
        from cs import CloudStack

        return CloudStack(endpoint=self.endpoint, key=self.key, secret=self.secret, fetch_result=True,
                          poll_interval=0.2, job_timeout=300)

    def inventory(self, env: str) -> dict[str, Any]:
        return json.loads((self.home / "envs" / env / "inventory.json").read_text())

    def record(self, section: str, **values: Any) -> None:
        """Keep a figure for the lead: printed (``-s`` shows it) and written to FIGURES."""
        self.figures.setdefault(section, {}).update(values)
        print(f"\n[e2e figures] {section}: {json.dumps(values, sort_keys=True)}")
        try:
            have = json.loads(FIGURES.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            have = {}
        have.setdefault(section, {}).update(values)
        have["written"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        FIGURES.write_text(json.dumps(have, indent=2, sort_keys=True) + "\n")


def _base_env() -> dict[str, str]:
    drop = {"CLOUDSTACK_CONFIG", "CLOUDSTACK_REGION", *LAB_SECRET_NAMES}
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDSTACK_") and k not in drop}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _resolved_cloud(env: dict[str, str]) -> tuple[bool, str]:
    code = ("from cloudstack_deploy.cloud import read_cloud_config as r; c = r(); "
            "print(c.is_lab, c.endpoint)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=60)
    if proc.returncode != 0:
        return False, proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "?"
    is_lab, endpoint = proc.stdout.split()
    return is_lab == "True", endpoint


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    """The lab, up (started or reused), and the CLI's environment that targets it."""
    from cloudstack_deploy.lab.ca import lab_dir
    from cloudstack_deploy.lab.docker import engine_available
    from cloudstack_deploy.lab.manage import lab_secrets, running_pid
    from cloudstack_deploy.state import state_root

    problem = asyncio.run(engine_available())
    if problem:
        pytest.skip(f"the end-to-end tests need a Docker engine: {problem}")
    started_here = running_pid() is None
    env = _base_env()
    up = run_cli(["lab", "up", "--progress", "plain"], env, timeout=1800)
    assert up.code == 0, "csdeploy lab up failed\n" + up.explain()
    parser = configparser.ConfigParser()
    parser.read(lab_dir() / "cloudstack.ini")
    profile = parser["lab"]
    is_lab, endpoint = _resolved_cloud(env)
    if not is_lab:  # a cloudstack.ini points elsewhere: never deploy there, name the lab explicitly
        print(f"\n[e2e] csdeploy would target {endpoint}; pointing the CLI at the lab explicitly")
        env.update(CLOUDSTACK_ENDPOINT=profile["endpoint"], CLOUDSTACK_KEY=profile["key"],
                   CLOUDSTACK_SECRET=profile["secret"], CLOUDSTACK_POLL_INTERVAL="0.25", **lab_secrets())
        _, endpoint = _resolved_cloud(env)
    assert endpoint == profile["endpoint"], f"the CLI targets {endpoint}, not the lab {profile['endpoint']}"
    the_lab = Lab(env=env, home=state_root(), endpoint=profile["endpoint"], key=profile["key"],
                  secret=profile["secret"])
    FIGURES.unlink(missing_ok=True)  # figures of this session only
    the_lab.record("lab", up_seconds=round(up.seconds, 1), started_here=started_here)
    try:
        yield the_lab
    finally:
        if started_here and os.environ.get("CSDEPLOY_E2E_LAB_DOWN") == "1":
            run_cli(["lab", "down"], env, timeout=600)


@contextmanager
def environment(lab: Lab, name: str) -> Iterator[str]:
    """Environment ``name``: cleared before (a killed run's leftovers), torn down after, always."""
    clear = lab.csdeploy("teardown", "--env", name, "--yes", "--progress", "plain", check=False)
    assert clear.code == 0, f"could not clear leftovers of environment {name}\n" + clear.explain()
    try:
        yield name
    finally:
        done = lab.csdeploy("teardown", "--env", name, "--yes", "--progress", "plain", check=False)
        if done.code != 0:
            raise AssertionError(f"final teardown of {name} failed\n" + done.explain())


# ---- HTTP ------------------------------------------------------------------------------------
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(method: str, url: str, body: bytes | None = None, timeout: float = 10) -> tuple[int, str]:
    """(status, body) of one request; HTTP errors are returned, connection errors raise.
    Never through an HTTP proxy from the environment: the lab's addresses are local."""
    req = urllib.request.Request(url, data=body, method=method)
    try:
        with _DIRECT.open(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def page_version(body: str) -> str | None:
    """``v1`` from the index page's first line ``demo v1``."""
    first = body.split("\n", 1)[0].split()
    return first[1] if len(first) == 2 and first[0] == "demo" else None


def wait_for_page(url: str, version: str, deadline: float = 60) -> str:
    """The index page once it answers 200 with ``demo VERSION`` (bounded); fails otherwise."""
    last = "no answer"
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            status, body = http("GET", url)
            if status == 200 and page_version(body) == version:
                return body
            last = f"HTTP {status}: {body[:300]!r}"
        except OSError as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.5)
    raise AssertionError(f"{url} does not show 'demo {version}' after {deadline:.0f}s; last: {last}")


class Load:
    """GET ``url`` continuously from a background thread while a command runs in the test.

    aiohttp, ``workers`` concurrent clients, keep-alive OFF (``force_close``): every request is
    a new TCP connection through the lab's public IP (NAT) into kamal-proxy, so a refused or
    reset connection during a switch is seen. Any non-200 answer, a connection error or a
    timeout counts as a failure. Bodies are classified by version (``demo v1`` -> ``v1``).
    """

    def __init__(self, url: str, *, workers: int = 2, timeout: float = 10.0) -> None:
        self.url = url
        self.workers = workers
        self.timeout = timeout
        self.ok = 0
        self.failures: list[str] = []
        self.failed = 0
        self.versions: Counter[str] = Counter()
        self.first_seen: dict[str, int] = {}
        self.last_seen: dict[str, int] = {}
        self.max_latency = 0.0
        self.started = 0.0
        self.seconds = 0.0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._thread_main, name="e2e-load", daemon=True)
        self._error: BaseException | None = None

    @property
    def total(self) -> int:
        return self.ok + self.failed

    def __enter__(self) -> Load:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.timeout + 10)
        self.seconds = time.monotonic() - self.started

    def keep_going_until(self, requests: int, deadline: float = 120) -> None:
        """Block until at least ``requests`` were made (the command has returned by then)."""
        end = time.monotonic() + deadline
        while self.total < requests and time.monotonic() < end and self._thread.is_alive():
            time.sleep(0.05)

    def summary(self) -> str:
        rate = self.total / self.seconds if self.seconds else 0.0
        return (f"{self.total} requests in {self.seconds:.1f}s ({rate:.0f}/s, {self.workers} clients, keep-alive off): "
                f"{self.ok} ok, {self.failed} failed; versions {dict(self.versions)}; "
                f"first/last seen {self.first_seen}/{self.last_seen}; max latency {self.max_latency:.2f}s"
                + (f"; load loop error: {self._error!r}" if self._error else "")
                + (f"; failures (first 15): {self.failures[:15]}" if self.failures else ""))

    def _count(self, version: str | None, failure: str | None, latency: float) -> None:
        with self._lock:
            n = self.total
            self.max_latency = max(self.max_latency, latency)
            if failure is not None:
                self.failed += 1
                if len(self.failures) < 50:
                    self.failures.append(f"#{n} +{time.monotonic() - self.started:.1f}s {failure}")
                return
            self.ok += 1
            key = version or "?"
            self.versions[key] += 1
            self.first_seen.setdefault(key, n)
            self.last_seen[key] = n

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported in summary(); the test then fails on the count
            self._error = exc

    async def _main(self) -> None:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=self.timeout)
        connector = aiohttp.TCPConnector(force_close=True, limit=self.workers)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            await asyncio.gather(*(self._worker(session) for _ in range(self.workers)))

    async def _worker(self, session: Any) -> None:
        import aiohttp

        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                async with session.get(self.url) as resp:
                    body = await resp.text(errors="replace")
                    latency = time.monotonic() - t0
                    if resp.status == 200:
                        self._count(page_version(body), None, latency)
                    else:
                        self._count(None, f"HTTP {resp.status}: {body[:120]!r}", latency)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                self._count(None, f"{type(exc).__name__}: {exc}", time.monotonic() - t0)
                await asyncio.sleep(0.05)


# ---- checks from outside csdeploy ------------------------------------------------------------
def _items(resp: dict[str, Any], key: str) -> list[dict[str, Any]]:
    return list(resp.get(key) or [])


def _tagged(item: dict[str, Any], env: str) -> bool:
    return any(t.get("key") == TAG_ENV and t.get("value") == env for t in item.get("tags") or [])


def cloud_leftovers(lab: Lab, env: str, inventory: dict[str, Any]) -> dict[str, list[str]]:
    """What of ``env`` the cloud still lists (by tag, by name, and by the ids/addresses its
    inventory had), asked with the `cs` client directly."""
    cs = lab.cs()
    hosts = inventory.get("hosts", [])
    vm_ids = {h["vm_id"] for h in hosts}
    vm_names = {h["name"] for h in hosts}
    ips = {h["public_ip"] for h in hosts}
    disks = {d["name"] for h in hosts for d in h.get("disks", [])}
    net_name = f"csdeploy-{env}"
    net_id = (inventory.get("network") or {}).get("id")
    left: dict[str, list[str]] = {}

    def add(kind: str, found: list[str]) -> None:
        if found:
            left[kind] = found

    add("network", [n["name"] for n in _items(cs.listNetworks(listall=True), "network")
                    if n["name"] == net_name or n["id"] == net_id or _tagged(n, env)])
    add("vm", [f"{v['name']} ({v.get('state')})" for v in _items(cs.listVirtualMachines(listall=True),
                                                                    "virtualmachine")
               if v["id"] in vm_ids or v["name"] in vm_names or _tagged(v, env)])
    add("public_ip", [i["ipaddress"] for i in _items(cs.listPublicIpAddresses(listall=True), "publicipaddress")
                      if i["ipaddress"] in ips or i.get("associatednetworkid") == net_id
                      or i.get("associatednetworkname") == net_name or _tagged(i, env)])
    add("volume", [v["name"] for v in _items(cs.listVolumes(listall=True), "volume")
                   if v["name"] in disks or v.get("virtualmachineid") in vm_ids or _tagged(v, env)])
    add("keypair", [k["name"] for k in _items(cs.listSSHKeyPairs(listall=True), "sshkeypair")
                    if k["name"] == net_name])
    add("firewall_rule", [f"{r.get('ipaddress')}:{r.get('startport')}" for r in
                          _items(cs.listFirewallRules(listall=True), "firewallrule")
                          if r.get("ipaddress") in ips or _tagged(r, env)])
    add("tag", [f"{t.get('resourcetype')} {t.get('resourceid')}" for t in
                _items(cs.listTags(listall=True, key=TAG_ENV, value=env), "tag")])
    return left


def docker_leftovers(inventory: dict[str, Any]) -> dict[str, list[str]]:
    """The lab's docker objects of the environment's VMs and network that still exist."""
    hosts = inventory.get("hosts", [])
    vm_ids = {h["vm_id"] for h in hosts}
    vm_names = {h["name"] for h in hosts}
    out = subprocess.run(["docker", "ps", "-a", "--filter", "label=csdeploy.lab.role=vm", "--format",
                          '{{.Names}} {{.Label "csdeploy.lab.vm"}} {{.Label "csdeploy.lab.vm-name"}}'],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    left: dict[str, list[str]] = {}
    containers = [line for line in out.splitlines()
                  if len(line.split()) == 3 and (line.split()[1] in vm_ids or line.split()[2] in vm_names)]
    if containers:
        left["vm_container"] = containers
    volumes = subprocess.run(["docker", "volume", "ls", "-q"], capture_output=True, text=True, timeout=60,
                             check=True).stdout.split()
    vols = [v for v in volumes if any(v == f"csdeploy-lab-vm-{i}-docker" for i in vm_ids)]
    if vols:
        left["docker_volume"] = vols
    net_id = (inventory.get("network") or {}).get("id")
    if net_id:
        nets = subprocess.run(["docker", "network", "ls", "-q", "--filter", f"name=csdeploy-lab-net-{net_id[:12]}"],
                              capture_output=True, text=True, timeout=60, check=True).stdout.split()
        if nets:
            left["docker_network"] = nets
    return left


def ssh(lab: Lab, env: str, host: str, command: str, timeout: float = 120) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``command`` on VM ``host`` over SSH, with the
    environment's key and its pinned known_hosts (as csdeploy connects, without csdeploy)."""
    import asyncssh

    inv = lab.inventory(env)
    h = next(h for h in inv["hosts"] if h["name"] == host)

    async def go() -> tuple[int, str, str]:
        async with asyncssh.connect(h["public_ip"], int(h["ssh_port"]), username=inv["ssh"]["user"],
                                    client_keys=[inv["ssh"]["key"]], known_hosts=inv["ssh"]["known_hosts"],
                                    connect_timeout=15) as conn:
            res = await conn.run(command, check=False, timeout=timeout)
            return int(res.exit_status or 0), str(res.stdout), str(res.stderr)

    return asyncio.run(go())
