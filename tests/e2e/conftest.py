"""Fixtures for the end-to-end tests: the lab, the CLI as a subprocess, environments that are
always torn down, a client loop that loads the app during deploys, and checks made with the
`cs` client and the docker CLI (never with csdeploy's own code).

Which lab: one of the session's own, in a temporary CSDEPLOY_HOME (tests.support.lab): its
own registry, simulator, ports, public addresses and docker labels, started by the ``lab``
fixture and removed at the end (``lab down --purge``; the shared images stay cached). The
developer's lab (~/.csdeploy) and another suite's lab on the same machine are never touched.
Each environment is torn down before its module (leftovers of a killed run) and after it, in
a ``finally``, whatever happened.

Which cloud: only ever that lab. The CLI runs with ``CLOUDSTACK_*`` and the secrets the lab
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
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.support.cli import REPO
from tests.support.lab import FIGURES, Lab, own_lab

__all__ = ["REPO", "Lab"]  # for the modules here


# ---- story semantics: a failed step skips the rest of its module ------------------------------
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


# ---- the lab ---------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def lab(docker_engine: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A lab of the session's own, up, and the CLI's environment that targets it."""
    FIGURES.unlink(missing_ok=True)  # figures of this session only
    with own_lab(tmp_path_factory.mktemp("e2e-home")) as the_lab:
        assert the_lab.up is not None
        the_lab.record("lab", up_seconds=round(the_lab.up.seconds, 1), lab_id=the_lab.config.id,
                       api_port=the_lab.config.api_port, registry_port=the_lab.config.registry_port)
        yield the_lab


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


def page_host(body: str) -> str | None:
    """The answering container's host name from the index page's ``host: NAME`` line."""
    return next((line.split(":", 1)[1].strip() for line in body.splitlines() if line.startswith("host:")), None)


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


#: Requests per second a load makes at most, over all its clients: one every 10 ms, so an
#: outage of 10 ms or more during a switch is seen. Unpaced, two clients made 300 a second on a
#: quiet machine, and serving them (the client, the lab's NAT, kamal-proxy, the app, its
#: database) made test_demo_lifecycle.py take 138 s of CPU, against 103 s at this pace (84 s at
#: 70 a second), in the same time (7 December); in the whole suite, where the CPU is what every
#: test waits for, that CPU came out of the others.
LOAD_RATE = 100.0


class Load:
    """GET ``url`` continuously from a background thread while a command runs in the test.

    aiohttp, ``workers`` concurrent clients, keep-alive OFF (``force_close``): every request is
    a new TCP connection through the lab's public IP (NAT) into kamal-proxy, so a refused or
    reset connection during a switch is seen. Any non-200 answer, a connection error or a
    timeout counts as a failure. Bodies are classified by version (``demo v1`` -> ``v1``).
    At most ``rate`` requests a second over all clients (LOAD_RATE): each client starts one
    every ``workers / rate`` seconds, or as soon as the one before answered when it took longer.
    """

    def __init__(self, url: str, *, workers: int = 2, timeout: float = 10.0, rate: float = LOAD_RATE) -> None:
        self.url = url
        self.workers = workers
        self.timeout = timeout
        self.period = workers / rate
        self.ok = 0
        self.failures: list[str] = []
        self.failed = 0
        self.versions: Counter[str] = Counter()
        self.hosts: Counter[str] = Counter()       # by the ``host:`` line: which container answered
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
        return (f"{self.total} requests in {self.seconds:.1f}s ({rate:.0f}/s, {self.workers} clients "
                f"paced at {self.workers / self.period:.0f}/s, keep-alive off): "
                f"{self.ok} ok, {self.failed} failed; versions {dict(self.versions)}; "
                f"first/last seen {self.first_seen}/{self.last_seen}; max latency {self.max_latency:.2f}s"
                + (f"; load loop error: {self._error!r}" if self._error else "")
                + (f"; failures (first 15): {self.failures[:15]}" if self.failures else ""))

    def _count(self, version: str | None, failure: str | None, latency: float, host: str | None = None) -> None:
        with self._lock:
            n = self.total
            self.max_latency = max(self.max_latency, latency)
            if failure is not None:
                self.failed += 1
                if len(self.failures) < 50:
                    self.failures.append(f"#{n} +{time.monotonic() - self.started:.1f}s {failure}")
                return
            self.ok += 1
            if host:
                self.hosts[host] += 1
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
                        self._count(page_version(body), None, latency, page_host(body))
                    else:
                        self._count(None, f"HTTP {resp.status}: {body[:120]!r}", latency)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                self._count(None, f"{type(exc).__name__}: {exc}", time.monotonic() - t0)
                await asyncio.sleep(0.05)
            await asyncio.sleep(max(0.0, self.period - (time.monotonic() - t0)))


# ---- checks from outside csdeploy ------------------------------------------------------------
def cloud_leftovers(lab: Lab, env: str, inventory: dict[str, Any]) -> dict[str, list[str]]:
    """What of ``env`` the cloud still lists, asked with the `cs` client directly."""
    return lab.view().leftovers(env, inventory)


def docker_leftovers(lab: Lab, inventory: dict[str, Any]) -> dict[str, list[str]]:
    """This lab's docker objects of the environment's VMs and network that still exist."""
    hosts = inventory.get("hosts", [])
    vm_ids = {h["vm_id"] for h in hosts}
    vm_names = {h["name"] for h in hosts}
    mine = f"label=csdeploy.lab.home={lab.config.id}"
    out = subprocess.run(["docker", "ps", "-a", "--filter", mine, "--filter", "label=csdeploy.lab.role=vm",
                          "--format", '{{.Names}} {{.Label "csdeploy.lab.vm"}} {{.Label "csdeploy.lab.vm-name"}}'],
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
