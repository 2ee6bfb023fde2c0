"""The team server's JSON API: what each role may do, the OpenAPI description, jobs with live
progress (server-sent events), deployments from the history store, the audit log."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

from cloudstack_deploy.server import api
from cloudstack_deploy.store import records

from .conftest import Served


async def _sse(served: Served, job_id: str, who: str = "vera") -> list[tuple[str, dict[str, Any]]]:
    """Every (event, data) of a job's stream, until its ``end``."""
    resp = await served.client.get(f"/api/jobs/{job_id}/events", headers=served.auth(who))
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
    text = await asyncio.wait_for(resp.text(), 20)
    found = []
    for block in text.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":") and ": " in line)
        if "event" in lines:
            found.append((lines["event"], json.loads(lines["data"])))
    return found


async def test_every_route_is_in_the_openapi_description_and_nothing_else(served: Served) -> None:
    resp = await served.client.get("/api/openapi.json")   # no token needed for the description
    assert resp.status == 200
    spec = await resp.json()
    assert spec["openapi"].startswith("3.")
    described = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    registered = {(r.method, r.resource.canonical) for r in served.client.app.router.routes()
                  if r.resource is not None and r.resource.canonical.startswith("/api/") and r.method != "HEAD"}
    assert registered and described == registered
    for path, ops in spec["paths"].items():
        for op in ops.values():
            names = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert names == {part[1:-1] for part in path.split("/") if part.startswith("{")}, path


async def test_no_token_a_bad_one_or_a_revoked_one_is_401(served: Served) -> None:
    c = served.client
    assert (await c.get("/api/jobs")).status == 401
    assert (await c.get("/api/jobs", headers={"Authorization": "Bearer csd_nope"})).status == 401
    assert (await c.get("/api/jobs", headers={"Authorization": served.tokens["vera"]})).status == 401  # no scheme
    assert (await c.get("/api/jobs", headers=served.auth("vera"))).status == 200
    resp = await c.delete("/api/tokens/vera", headers=served.auth("ada"))
    assert resp.status == 200
    assert (await c.get("/api/jobs", headers=served.auth("vera"))).status == 401


async def test_tokens_are_stored_hashed_and_shown_once(served: Served) -> None:
    rows = served.store.query("SELECT * FROM api_tokens")
    text = json.dumps(rows)
    for token in served.tokens.values():
        assert token not in text
        assert hashlib.sha256(token.encode()).hexdigest() in text
    resp = await served.client.post("/api/tokens", json={"name": "eve", "role": "viewer"}, headers=served.auth("ada"))
    assert resp.status == 201
    secret = (await resp.json())["secret"]
    listed = await (await served.client.get("/api/tokens", headers=served.auth("ada"))).text()
    assert "eve" in listed and secret not in listed
    assert (await served.client.get("/api/whoami", headers={"Authorization": f"Bearer {secret}"})).status == 200


async def test_roles_and_prefixes_are_checked_on_the_server(served: Served) -> None:
    c = served.client
    deploy = {"env": "dev-a", "version": "v2"}
    assert (await c.post("/api/deployments", json=deploy, headers=served.auth("vera"))).status == 403
    assert (await c.post("/api/deployments", json={**deploy, "env": "prod-a"}, headers=served.auth("dan"))).status == 403
    assert (await c.post("/api/deployments", json=deploy, headers=served.auth("dan"))).status == 202
    assert (await c.delete("/api/environments/dev-a", headers=served.auth("dan"))).status == 403
    assert (await c.get("/api/audit", headers=served.auth("dan"))).status == 403
    assert (await c.post("/api/tokens", json={"name": "x", "role": "admin"}, headers=served.auth("dan"))).status == 403
    assert (await c.post("/api/deployments", json={"env": "prod-a", "version": "v1"},
                         headers=served.auth("ada"))).status == 202
    bad = await c.post("/api/deployments", json={"env": "Dev A", "version": "v1"}, headers=served.auth("ada"))
    assert bad.status == 400 and "environment name" in (await bad.json())["error"]
    bad = await c.post("/api/deployments", json={"env": "dev-a", "version": "v1; rm -rf /"}, headers=served.auth("ada"))
    assert bad.status == 400
    audit = (await (await c.get("/api/audit?limit=50", headers=served.auth("ada"))).json())["audit"]
    denied = {(a["actor"], a["action"], a["target"]) for a in audit if a["outcome"] == "denied"}
    assert ("vera", "POST /api/deployments", None) in denied   # below the route's role
    assert ("dan", "deploy", "prod-a") in denied                # outside its prefix
    assert ("dan", "DELETE /api/environments/{env}", "dev-a") in denied


async def test_a_deploy_job_streams_its_progress_and_lands_in_history(served: Served) -> None:
    c = served.client
    resp = await c.post("/api/deployments", json={"env": "dev-a", "version": "v7"}, headers=served.auth("dan"))
    job = (await resp.json())["job"]
    stream = await _sse(served, job["id"])
    kinds = [e for e, _ in stream]
    assert kinds[0] == "note" and "progress" in kinds and kinds[-1] == "end"
    assert stream[-1][1]["status"] == "succeeded"
    assert [d["seq"] for e, d in stream if e != "end"] == list(range(1, len(stream)))
    deps = (await (await c.get("/api/deployments?env=dev-a", headers=served.auth("vera"))).json())["deployments"]
    assert [(d["version"], d["status"], d["deployed_by"]) for d in deps] == [("v7", "deployed", "dan")]
    one = await (await c.get(f"/api/deployments/{deps[0]['id']}", headers=served.auth("vera"))).json()
    assert [e["type"] for e in one["events"]] == ["deploy_started", "deploy_completed"]
    assert (await c.get("/api/deployments?status=failed", headers=served.auth("vera"))).status == 200
    assert (await (await c.get("/api/deployments?status=failed", headers=served.auth("vera"))).json())["deployments"] == []
    assert (await c.get("/api/deployments?status=nope", headers=served.auth("vera"))).status == 400
    assert (await c.get("/api/deployments/nope", headers=served.auth("vera"))).status == 404


async def test_a_failing_job_says_why_and_a_resumed_stream_skips_what_was_seen(served: Served) -> None:
    c = served.client
    resp = await c.post("/api/jobs", json={"env": "dev-b", "params": {"fail": "step broke", "seconds": 0.1}},
                        headers=served.auth("dan"))
    job_id = (await resp.json())["job"]["id"]
    stream = await _sse(served, job_id)
    assert stream[-1][1]["status"] == "failed" and stream[-1][1]["error"] == "step broke"
    resumed = await c.get(f"/api/jobs/{job_id}/events", headers={**served.auth("vera"), "Last-Event-ID": "3"})
    text = await resumed.text()
    assert "id: 3\n" not in text and "id: 4\n" in text


async def test_cancel_a_queued_and_a_running_job(served: Served) -> None:
    c = served.client
    long = await c.post("/api/jobs", json={"env": "dev-c", "params": {"seconds": 30, "steps": 30}},
                        headers=served.auth("dan"))
    running = (await long.json())["job"]["id"]
    queued = (await (await c.post("/api/jobs", json={"env": "dev-c"}, headers=served.auth("dan"))).json())["job"]["id"]
    for _ in range(100):
        if (await (await c.get(f"/api/jobs/{running}", headers=served.auth("vera"))).json())["job"]["status"] == "running":
            break
        await asyncio.sleep(0.05)
    assert (await c.post(f"/api/jobs/{queued}/cancel", headers=served.auth("vera"))).status == 403
    after = await (await c.post(f"/api/jobs/{queued}/cancel", headers=served.auth("dan"))).json()
    assert after["job"]["status"] == "cancelled"
    await c.post(f"/api/jobs/{running}/cancel", headers=served.auth("dan"))
    stream = await _sse(served, running)
    assert stream[-1][1]["status"] == "cancelled"
    assert len([e for e, d in stream if e == "progress" and d["status"] == "done"]) < 30


async def test_deployment_filters_are_the_history_commands(served: Served) -> None:
    for env, version, ok in (("dev-a", "v1", True), ("dev-a", "v2", False), ("dev-b", "v1", True)):
        dep = records.deployment_pending(served.store, env=env, cloud="c", service="shop", version=version,
                                         kind="deploy", by="ci")
        records.deployment_started(served.store, dep, {})
        records.deployment_finished(served.store, dep, ok=ok, seconds=1.0, error=None if ok else "x", metadata={})
    get = served.client.get
    found = (await (await get("/api/deployments?env=dev-a&status=deployed", headers=served.auth("vera"))).json())
    assert [d["version"] for d in found["deployments"]] == ["v1"]
    found = (await (await get("/api/deployments?service=shop&limit=2", headers=served.auth("vera"))).json())
    assert len(found["deployments"]) == 2
    found = (await (await get("/api/deployments?since=1h", headers=served.auth("vera"))).json())
    assert len(found["deployments"]) == 3
    assert (await get("/api/deployments?since=soon", headers=served.auth("vera"))).status == 400


def test_test_jobs_are_off_unless_asked(monkeypatch: Any) -> None:
    monkeypatch.delenv(api.TEST_JOBS_VAR, raising=False)
    assert not api.test_jobs_enabled()
