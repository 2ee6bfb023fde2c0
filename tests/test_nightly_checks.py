"""The nightly's HTTP checks against a real HTTP server on loopback, and its JUnit report as
a CI system reads it (junitparser), whatever the logs put in it."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from aiohttp import web
from junitparser import Error, Failure, JUnitXml, Skipped

from cloudstack_deploy.log import clear_secrets, register_secret
from cloudstack_deploy.nightly.checks import HttpCheck, parse_check, run_http
from cloudstack_deploy.nightly.report import (
    CHECK,
    FAILED,
    PHASE,
    SKIPPED,
    Case,
    NightlyResult,
    write_junit,
)
from cloudstack_deploy.nightly.run import PREFIX_MAX, env_name, validate_prefix


async def serve(checks: list[HttpCheck]) -> list[tuple[bool, str, str]]:
    seen_hosts: list[str] = []

    async def up(request: web.Request) -> web.Response:
        seen_hosts.append(request.headers.get("Host", ""))
        return web.Response(text="ok")

    async def broken(_request: web.Request) -> web.Response:
        return web.Response(status=500, text="unhealthy: database unreachable")

    async def page(_request: web.Request) -> web.Response:
        return web.Response(text="demo v1\n")

    app = web.Application()
    app.add_routes([web.get("/up", up), web.get("/broken", broken), web.get("/", page), web.post("/", page)])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        out = []
        for check in checks:
            o = await run_http(check, f"http://127.0.0.1:{port}/", host="shop.example")
            out.append((o.ok, o.message, o.detail))
        assert set(seen_hosts) <= {"shop.example"}
        return out
    finally:
        await runner.cleanup()


def test_http_checks_compare_status_and_body() -> None:
    results = asyncio.run(serve([parse_check("GET /up 200"), parse_check("GET / 200 demo v1"),
                                 parse_check("GET / 200 demo v2"), parse_check("GET /broken 200"),
                                 parse_check("post / 200"), parse_check("GET /missing 404")]))
    assert [ok for ok, _, _ in results] == [True, True, False, False, True, True]
    assert "body lacks 'demo v2'" in results[2][1] and "demo v1" in results[2][2]
    assert "expected HTTP 200, got HTTP 500" in results[3][1]
    assert "unhealthy: database unreachable" in results[3][2]


def test_a_check_without_an_answer_says_so() -> None:
    # the port stays bound (never listening) while the check runs: connections are refused and
    # no other process on a shared machine can take it (one did once, and answered 404)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        outcome = asyncio.run(run_http(parse_check("GET /up 200"), f"http://127.0.0.1:{port}", attempts=2))
    assert not outcome.ok and "no answer after 2 attempts" in outcome.message


def test_prefix_and_names() -> None:
    from datetime import UTC, datetime

    assert validate_prefix("e2e-nightly") == "e2e-nightly" and PREFIX_MAX == 11
    name = env_name("e2e-nightly", datetime(2026, 11, 30, 23, 59, tzinfo=UTC), taken={"x"})
    assert name.startswith("e2e-nightly-1130-") and len(name) == 20


def test_the_junit_report_is_what_ci_systems_read(tmp_path: Path) -> None:
    register_secret("hunter2-registry")
    try:
        result = NightlyResult(env="n-1130-abc", prefix="n", version="v1", blueprint="demo.yml",
                               started="2026-11-30T02:17:00Z", ttl="20h", seconds=12.5)
        result.cases = [
            Case("create-env", PHASE, seconds=3.2),
            Case("deploy", PHASE, status=FAILED, seconds=4.0, message="web-1: deploy failed",
                 detail="web-1: deploy failed\n\x1b[31m(HTTP 500)\x1b[0m\x00 login hunter2-registry\n"),
            Case("GET /up 200", CHECK, status=SKIPPED, message="deploy failed"),
            Case("teardown", PHASE, status=FAILED, kind="error", message="KeyError: 'x'", detail="Traceback ..."),
        ]
        junit = tmp_path / "deep" / "report.xml"
        write_junit(result, junit)
    finally:
        clear_secrets()
    text = junit.read_text()
    assert "hunter2-registry" not in text and "\x1b" not in text and "\x00" not in text
    xml = JUnitXml.fromfile(str(junit))
    (suite,) = list(xml)
    assert (suite.name, suite.tests, suite.failures, suite.errors, suite.skipped) == (
        "csdeploy nightly n-1130-abc", 4, 1, 1, 1)
    cases = {c.name: c for c in suite}
    (failure,) = cases["deploy"].result
    assert isinstance(failure, Failure) and failure.message == "web-1: deploy failed"
    assert "(HTTP 500)" in failure.text and "[REDACTED]" in failure.text
    (error,) = cases["teardown"].result
    assert isinstance(error, Error)
    assert isinstance(cases["GET /up 200"].result[0], Skipped)
    assert cases["create-env"].is_passed and cases["create-env"].time == pytest.approx(3.2)
    assert cases["create-env"].classname == "csdeploy.nightly.phase"
