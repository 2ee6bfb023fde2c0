"""The watch's verdicts (pure), and the watch itself against a real HTTP server on loopback."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web

from cloudstack_deploy.blueprint_schema import PathCheck, Watch
from cloudstack_deploy.rollout import watch


def test_the_health_path_takes_any_2xx_and_paths_their_exact_status() -> None:
    assert watch.http_probe(1, "GET /up", None, 204).ok
    assert not watch.http_probe(1, "GET /up", None, 500, "boom").ok
    assert watch.http_probe(1, "GET /gone", 404, 404).ok
    bad = watch.http_probe(1, "GET /", 200, 503, "db down\n  retry later")
    assert not bad.ok and bad.detail == "HTTP 503, expected 200: db down retry later"
    assert watch.http_probe(1, "GET /", 200, None, error="ClientConnectorError").detail == "ClientConnectorError"


def test_containers_must_keep_running_without_restarts() -> None:
    base = {"a": (0, "running", "t0"), "b": (1, "running", "t1")}
    same = watch.container_probes(3, "h1", base, base)
    assert all(p.ok for p in same)
    now = {"a": (2, "running", "t9"), "b": (1, "exited", "t1"), "c": None}
    probes = {p.what.split()[1]: p for p in watch.container_probes(3, "h1", base, now)}
    assert probes["a"].detail == "restarted (restart count 0 -> 2)"
    assert probes["b"].detail == "is exited (restarted 1 times)"
    assert probes["c"].detail == "is gone" and "on h1" in probes["c"].what


def test_restart_states_are_parsed_from_the_host_lines() -> None:
    out = watch.parse_states("demo-web-v2|0 running 2024-01-01T00:00:00Z\ndemo-web-v3|\nnoise\n")
    assert out == {"demo-web-v2": (0, "running", "2024-01-01T00:00:00Z"), "demo-web-v3": None}


def test_the_verdict_tolerates_max_failures_and_names_the_first() -> None:
    v = watch.Verdict(max_failures=1)
    v.add(watch.Probe(0, "GET /", True))
    v.add(watch.Probe(2, "GET http://x/ (web)", False, "HTTP 500, expected 200"))
    assert not v.failed
    v.add(watch.Probe(4, "GET http://y/ (web)", False, "HTTP 500, expected 200"))
    assert v.failed and v.probes == 3
    assert v.reason() == "watch failed after 2s: GET http://x/ (web): HTTP 500, expected 200 (and 1 more failed probe)"


@pytest.fixture
async def app_server() -> AsyncIterator[tuple[str, dict[str, float]]]:
    """/up always 200; / answers 500 once `degrade_at` (monotonic) passed; remembers headers."""
    state: dict[str, object] = {"degrade_at": float("inf"), "cookies": [], "hosts": []}

    async def up(request: web.Request) -> web.Response:
        return web.Response(text="OK")

    async def index(request: web.Request) -> web.Response:
        state["cookies"].append(request.cookies.get("kamal-rollout"))  # type: ignore[union-attr]
        state["hosts"].append(request.headers.get("Host"))  # type: ignore[union-attr]
        if time.monotonic() >= state["degrade_at"]:  # type: ignore[operator]
            return web.Response(status=500, text="degraded")
        return web.Response(text="demo v2")

    app = web.Application()
    app.router.add_get("/up", up)
    app.router.add_get("/", index)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"127.0.0.1:{port}", state  # type: ignore[misc]
    finally:
        await runner.cleanup()


class _Clock:
    """The watch's clock under the test's control: it moves only when the watch sleeps, so the
    rounds a watch makes depend on its spec, never on how loaded the machine is."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep_unless(self, seconds: float, wake: asyncio.Event | None, stop: asyncio.Event | None) -> bool:
        """As watch._sleep_unless: ``seconds`` pass, unless ``wake`` or ``stop`` is set within a
        few real milliseconds (the test's next step), which ends the sleep with no time passed."""
        self.slept.append(seconds)
        events = [e for e in (wake, stop) if e is not None]
        if not events:
            await asyncio.sleep(0)
        else:
            waiters = [asyncio.ensure_future(e.wait()) for e in events]
            await asyncio.wait(waiters, timeout=0.005, return_when=asyncio.FIRST_COMPLETED)
            for w in waiters:
                w.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
            # set now, even if after the timeout fired (the test may have run in between): woken
            if any(e.is_set() for e in events):
                return stop is not None and stop.is_set()
        self.now += seconds
        return False


async def _until(what: str, condition: Callable[[], bool]) -> None:
    """Wait for ``condition`` (a few ms a check), failing after 10 s of wall time."""
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.005)


async def test_a_good_version_is_watched_for_the_whole_duration(app_server, monkeypatch) -> None:
    address, state = app_server
    clock = _Clock()
    monkeypatch.setattr(watch, "time", clock)
    monkeypatch.setattr(watch, "_sleep_unless", clock.sleep_unless)
    target = watch.Target("web", address, "/up", (PathCheck(path="/"),), host="demo.lab", cookie="csdeploy-x")
    result = await watch.run(Watch(duration=1.0, interval=0.25, containers=False), lambda: [target], None)
    assert result.ok and result.reason is None
    # a round at 0, 0.25, 0.5, 0.75 and 1.0 s: the whole second, each round probing both paths
    assert result.seconds == 1.0 and clock.slept == [0.25] * 4, clock.slept
    assert result.rounds == 5 and result.probes == 2 * 5, result
    assert set(state["cookies"]) == {"csdeploy-x"} and set(state["hosts"]) == {"demo.lab"}


async def test_a_degrading_version_fails_the_watch_early_with_the_reason(app_server) -> None:
    address, state = app_server
    state["degrade_at"] = time.monotonic() + 0.5
    target = watch.Target("web", address, "/up", (PathCheck(path="/"),))
    started = time.monotonic()
    result = await watch.run(Watch(duration=30, interval=0.2, containers=False), lambda: [target], None)
    assert not result.ok and time.monotonic() - started < 5, "a failed watch ends at once"
    assert result.reason is not None and "HTTP 500, expected 200: degraded" in result.reason
    assert f"GET http://{address}/ (web)" in result.reason


async def test_containers_are_read_every_few_seconds_and_at_the_end(app_server, monkeypatch) -> None:
    address, _ = app_server
    monkeypatch.setattr(watch, "CONTAINER_EVERY", 0.5)
    clock = _Clock()
    monkeypatch.setattr(watch, "time", clock)
    monkeypatch.setattr(watch, "_sleep_unless", clock.sleep_unless)
    started = clock.now
    reads: list[float] = []

    async def states() -> dict[str, dict[str, watch.State | None]]:
        reads.append(round(clock.now - started, 6))
        return {"h1": {"c": (0, "running", "t0")}}

    result = await watch.run(Watch(duration=1.2, interval=0.1), lambda: [watch.Target("web", address, "/up", ())], states)
    assert result.ok and result.rounds == 13, result  # a round every 0.1 s, from 0 to 1.2
    # every CONTAINER_EVERY, not every round, and in the rounds within one interval of the end
    assert reads == [0, 0.5, 1.0, 1.1, 1.2], reads


async def test_containers_that_restart_fail_the_watch(app_server, monkeypatch) -> None:
    address, _ = app_server
    monkeypatch.setattr(watch, "CONTAINER_EVERY", 0)
    reads = iter([{"h1": {"c": (0, "running", "t0")}}, {"h1": {"c": (0, "running", "t0")}},
                  {"h1": {"c": (1, "running", "t5")}}])

    async def states() -> dict[str, dict[str, watch.State | None]]:
        await asyncio.sleep(0)
        return next(reads)

    result = await watch.run(Watch(duration=10, interval=0.1), lambda: [watch.Target("web", address, "/up", ())], states)
    assert not result.ok and result.rounds == 3
    assert re.fullmatch(r"watch failed after \d+s: container c on h1: restarted \(restart count 0 -> 1\)",
                        result.reason or ""), result.reason


async def test_no_answer_is_a_failed_probe() -> None:
    target = watch.Target("web", "127.0.0.1:9", "/up", (), timeout=1)
    result = await watch.run(Watch(duration=5, interval=0.1, containers=False), lambda: [target], None)
    assert not result.ok and "GET http://127.0.0.1:9/up (web)" in (result.reason or "")


async def test_the_watch_probes_hosts_as_they_switch_and_lasts_its_duration_after_the_last(app_server,
                                                                                           monkeypatch) -> None:
    address, state = app_server
    clock = _Clock()
    monkeypatch.setattr(watch, "time", clock)
    monkeypatch.setattr(watch, "_sleep_unless", clock.sleep_unless)
    switched: list[watch.Target] = []
    switching = asyncio.Event()
    spec = Watch(duration=0.6, interval=0.1, containers=False, health=False, paths=(PathCheck(path="/"),))
    task = asyncio.ensure_future(watch.run(spec, lambda: list(switched), None, switching=switching))
    await _until("three rounds", lambda: len(clock.slept) >= 3)
    assert state["hosts"] == [], "nothing switched yet: nothing probed"
    switched.append(watch.Target("web", address, "/up", spec.paths, host="h1"))
    rounds = len(clock.slept)
    await _until("three rounds more", lambda: len(clock.slept) >= rounds + 3)
    assert state["hosts"] and not task.done(), "the clock starts with the last switch"
    settled = clock.now
    switching.set()
    result = await task
    assert result.ok and round(clock.now - settled, 6) == 0.6, (clock.now - settled, clock.slept)
    assert set(state["hosts"]) == {"h1"} and result.probes == len(state["hosts"])


async def test_a_stopped_watch_ends_at_once(app_server) -> None:
    address, _ = app_server
    stop = asyncio.Event()
    task = asyncio.ensure_future(watch.run(Watch(duration=30, interval=5, containers=False),
                                           lambda: [watch.Target("web", address, "/up", ())], None, stop=stop))
    await asyncio.sleep(0.2)
    started = time.monotonic()
    stop.set()
    await asyncio.wait_for(task, 2)
    assert time.monotonic() - started < 1
