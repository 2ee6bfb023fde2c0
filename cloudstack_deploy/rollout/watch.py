"""The watch during and after the switches: is the new version still good when users reach it?

It starts with the first switch (probing the hosts switched so far, so a bad version stops
the batches still to come) and lasts until `duration` seconds after the last. Every
`interval` seconds, each round: GET the health path (any 2xx)
and the blueprint's `paths` (their exact status) through each proxy role's entry point, as a
user's browser would (Host header and TLS server name of `proxy.host`; certificates are not
verified: the watch judges the app, and the certificate was checked before the deploy), and
read every new container's restart count and state over SSH (every CONTAINER_EVERY seconds
and at the end: a restart shows in the count whenever it is read). A probe fails on another
status, no answer within the health check's timeout, a container that restarted, stopped or
vanished. More than `max_failures` failed probes end the watch at once with a reason; the
rollout then switches back. The verdicts are pure functions (`http_probe`, `container_probes`,
`Verdict`), the loop around them is `run`.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import aiohttp

from ..blueprint_schema import PathCheck, Watch

#: The cookie kamal-proxy splits a rollout by (`kamal-proxy rollout set`).
ROLLOUT_COOKIE = "kamal-rollout"
BODY_SHOWN = 160
#: Seconds between two reads of the containers (one SSH exec per host): a restart shows in
#: the restart count and start time whenever it is read, so every round would only cost more.
CONTAINER_EVERY = 5.0


@dataclass(frozen=True)
class Target:
    """One place the watch probes a role through: an address, the Host header and TLS server
    name to use, the health path, and (for a percentage canary) the rollout cookie that sends
    every probe to the canary."""

    role: str
    address: str
    health: str | None
    paths: tuple[PathCheck, ...]
    host: str | None = None
    tls: bool = False
    cookie: str | None = None
    timeout: float = 5.0

    def url(self, path: str) -> str:
        return f"{'https' if self.tls else 'http'}://{self.address}{path}"


@dataclass(frozen=True)
class Probe:
    at: float            # seconds into the watch
    what: str            # "GET http://127.200.0.5/ (web)", "container demo-web-v2 on demo-web-1"
    ok: bool
    detail: str = ""     # "HTTP 500: ...", "restarted (restart count 0 -> 2)"

    def __str__(self) -> str:
        return f"{self.what}: {self.detail}" if self.detail else self.what


@dataclass
class Verdict:
    """The watch's running tally; `failed` beyond `max_failures` ends it."""

    max_failures: int
    probes: int = 0
    rounds: int = 0
    failures: list[Probe] = field(default_factory=list)

    def add(self, probe: Probe) -> None:
        self.probes += 1
        if not probe.ok:
            self.failures.append(probe)

    @property
    def failed(self) -> bool:
        return len(self.failures) > self.max_failures

    def reason(self) -> str:
        if not self.failures:
            return ""
        first = self.failures[0]
        more = len(self.failures) - 1
        return (f"watch failed after {first.at:.0f}s: {first}" + (f" (and {more} more failed probe"
                                                                     + ("s" if more > 1 else "") + ")" if more else ""))


@dataclass
class WatchResult:
    ok: bool
    seconds: float
    rounds: int
    probes: int
    failed: list[Probe]
    reason: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "seconds": round(self.seconds, 1), "rounds": self.rounds, "probes": self.probes,
                "failed": [str(p) for p in self.failed[:20]], "reason": self.reason}


def http_probe(at: float, what: str, expected: int | None, status: int | None, body: str = "",
               error: str = "") -> Probe:
    """``expected`` None: any 2xx (the health path, as kamal-proxy judges it)."""
    if status is None:
        return Probe(at, what, False, error or "no answer")
    good = 200 <= status < 300 if expected is None else status == expected
    want = "2xx" if expected is None else str(expected)
    shown = " ".join(body.split())[:BODY_SHOWN]
    return Probe(at, what, good, "" if good else f"HTTP {status}, expected {want}" + (f": {shown}" if shown else ""))


#: A container's restart state as `docker inspect` shows it: (restart count, state, started at).
State = tuple[int, str, str]


def parse_states(lines: str) -> dict[str, State | None]:
    """``NAME|COUNT STATE STARTED`` lines (`docker.restart_states`); None for a vanished one."""
    out: dict[str, State | None] = {}
    for line in lines.splitlines():
        name, sep, rest = line.partition("|")
        if not sep:
            continue
        parts = rest.split()
        out[name] = (int(parts[0]), parts[1], parts[2]) if len(parts) == 3 and parts[0].isdigit() else None
    return out


def container_probes(at: float, host: str, baseline: Mapping[str, State | None],
                     now: Mapping[str, State | None]) -> list[Probe]:
    """One probe per container: it must still run, with the restart count and start time it
    had when the watch began."""
    out = []
    for name, state in now.items():
        what = f"container {name} on {host}"
        before = baseline.get(name)
        if state is None:
            out.append(Probe(at, what, False, "is gone"))
        elif state[1] != "running":
            out.append(Probe(at, what, False, f"is {state[1]} (restarted {state[0]} times)"))
        elif before is not None and (state[0] != before[0] or state[2] != before[2]):
            out.append(Probe(at, what, False, f"restarted (restart count {before[0]} -> {state[0]})"))
        else:
            out.append(Probe(at, what, True))
    return out


def _tls_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def _get(session: aiohttp.ClientSession, target: Target, path: str, at: float, expected: int | None,
               tls: ssl.SSLContext) -> Probe:
    url = target.url(path)
    what = f"GET {url} ({target.role})"
    headers = {"Host": target.host} if target.host else {}
    if target.cookie:
        headers["Cookie"] = f"{ROLLOUT_COOKIE}={target.cookie}"
    extra: dict[str, object] = {"ssl": tls, "server_hostname": target.host} if target.tls else {}
    try:
        async with session.get(url, headers=headers, allow_redirects=False,
                               timeout=aiohttp.ClientTimeout(total=target.timeout), **extra) as resp:
            body = await resp.text(errors="replace")
            return http_probe(at, what, expected, resp.status, body)
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        return http_probe(at, what, expected, None, error=f"{type(exc).__name__}: {exc}".strip())


async def _sleep_unless(seconds: float, wake: asyncio.Event | None, stop: asyncio.Event | None) -> bool:
    """Sleep ``seconds``, less if ``wake`` or ``stop`` is set; True when ``stop`` is set. (Not
    `asyncio.wait_for`: a cancel that meets the event's own completion can be lost there.)"""
    events = [e for e in (wake, stop) if e is not None]
    if not events:
        await asyncio.sleep(seconds)
        return False
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
    return stop is not None and stop.is_set()


ContainerReader = Callable[[], Awaitable[dict[str, dict[str, State | None]]]]
"""Reads host name -> container name -> state for every new container (over SSH)."""


async def run(spec: Watch, targets: Callable[[], Sequence[Target]], containers: ContainerReader | None,
              report: Callable[[str], None] = lambda text: None, switching: asyncio.Event | None = None,
              stop: asyncio.Event | None = None) -> WatchResult:
    """Watch until ``spec.duration`` passed after the last switch (``switching`` set; None:
    already) or the verdict failed. ``targets`` is asked each round: while batches still
    switch, the watch probes the hosts that switched so far. ``stop``: the rollout failed
    otherwise; the watch ends at once (its result then judges nothing)."""
    verdict = Verdict(spec.max_failures)
    started = time.monotonic()
    settled = started if switching is None or switching.is_set() else None
    baseline: dict[str, dict[str, State | None]] = {}
    checked: float | None = None
    tls = _tls_context()
    async with aiohttp.ClientSession(trust_env=False) as session:
        while True:
            if stop is not None and stop.is_set():
                break
            if settled is None and switching is not None and switching.is_set():
                settled = time.monotonic()
            at = time.monotonic() - started
            jobs: list[Awaitable[Probe]] = []
            for t in targets():
                if spec.health and t.health:
                    jobs.append(_get(session, t, t.health, at, None, tls))
                jobs += [_get(session, t, c.path, at, c.status, tls) for c in t.paths]
            remaining = spec.duration - (time.monotonic() - settled) if settled is not None else spec.duration
            last = settled is not None and remaining <= spec.interval
            sample = spec.containers and containers is not None and (
                last or checked is None or at - checked >= CONTAINER_EVERY - 0.01)
            if sample:
                assert containers is not None
                checked = at
                now, found = await asyncio.gather(containers(), asyncio.gather(*jobs))
            else:
                now, found = None, await asyncio.gather(*jobs)
            probes = list(found)
            for host, states in (now or {}).items():
                seen = baseline.setdefault(host, {})
                for name, state in states.items():
                    seen.setdefault(name, state)   # a container's baseline: when the watch first saw it
                probes += container_probes(at, host, seen, states)
            for probe in probes:
                verdict.add(probe)
            verdict.rounds += 1
            elapsed = time.monotonic() - started
            phase = "switching" if settled is None else f"{elapsed:.0f}s, {max(0.0, remaining):.0f}s to go"
            report(f"{phase}: {verdict.probes} probes, {len(verdict.failures)} failed")
            if verdict.failed or (settled is not None and time.monotonic() - settled >= spec.duration):
                break
            wait = spec.interval if settled is None else min(spec.interval, max(0.0, remaining))
            # the last switch starts the clock (wake for it); ``stop`` ends the watch unjudged
            if await _sleep_unless(wait, switching if settled is None else None, stop):
                break
    return WatchResult(ok=not verdict.failed, seconds=time.monotonic() - started, rounds=verdict.rounds,
                       probes=verdict.probes, failed=list(verdict.failures),
                       reason=verdict.reason() if verdict.failed else None)
