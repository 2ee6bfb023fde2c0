"""The CLI's side of the team server: `csdeploy --server URL deploy ...` sends the command to
a `csdeploy serve` and follows its job's server-sent events into the usual progress view.

The token comes from ``CSDEPLOY_TOKEN`` or ``--token-file`` (never a flag's value: argv is
visible to every user of the machine). Answers map onto the CLI's errors: 400 is bad input
(exit 2), 401/403 and a failed job are a failed operation (exit 1).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aiohttp

from ..errors import InvalidInput, OperationFailed
from ..progress import Event, Progress

TOKEN_VAR = "CSDEPLOY_TOKEN"
SERVER_VAR = "CSDEPLOY_SERVER"


@dataclass(frozen=True)
class RemoteServer:
    url: str
    token: str

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}

    def _fail(self, status: int, data: Any) -> Exception:
        message = data.get("error") if isinstance(data, dict) else None
        message = message or f"HTTP {status}"
        where = f"server {self.url}"
        if status == 400:
            return InvalidInput(f"{where}: {message}")
        if status == 401:
            return OperationFailed(f"{where} refused the token", hint=f"check {TOKEN_VAR} (csdeploy token list)")
        if status == 403:
            return OperationFailed(f"{where}: {message}", hint="ask an admin for a token with that role or prefix")
        return OperationFailed(f"{where}: {message}")

    async def call(self, method: str, path: str, *, body: dict[str, Any] | None = None,
                   params: dict[str, Any] | None = None) -> dict[str, Any]:
        query = {k: str(v) for k, v in (params or {}).items() if v is not None}
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session, \
                    session.request(method, self.url + path, json=body, params=query,
                                    headers=self._headers()) as resp:
                try:
                    data = await resp.json(content_type=None)
                except (json.JSONDecodeError, ValueError):
                    data = None
                if resp.status >= 300:
                    raise self._fail(resp.status, data)
                return data
        except aiohttp.ClientError as exc:
            raise OperationFailed(f"server {self.url} cannot be reached: {exc}",
                                  hint=f"check --server / {SERVER_VAR}") from None

    async def run_job(self, path: str, body: dict[str, Any], progress: Progress, *,
                      method: str = "POST") -> dict[str, Any]:
        """Queue a job, follow its events into ``progress``; the finished job (a failed one raises)."""
        started = await self.call(method, path, body=body)
        job = started["job"]
        progress.note(f"{job['kind']} of {job['env']}: job {job['id']} queued on {self.url}")
        done = await self.follow(job["id"], progress)
        if done["status"] != "succeeded":
            raise OperationFailed(f"{done['kind']} of {done['env']} {done['status']}: {done.get('error') or ''}"
                                  .rstrip(": "), hint=f"{self.url}/jobs/{done['id']}")
        return done

    async def follow(self, job_id: str, progress: Progress) -> dict[str, Any]:
        last = 0
        for _ in range(1000):   # reconnects, resuming after the last event seen
            try:
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_read=60)) as s, \
                        s.get(f"{self.url}/api/jobs/{job_id}/events", headers={
                            **self._headers(), "Last-Event-ID": str(last)}) as resp:
                    if resp.status >= 300:
                        raise self._fail(resp.status, None)
                    event, data = "", ""
                    async for raw in resp.content:
                        line = raw.decode("utf-8", "replace").rstrip("\n")
                        if line.startswith("event: "):
                            event = line[7:]
                        elif line.startswith("data: "):
                            data = line[6:]
                        elif line.startswith("id: "):
                            last = int(line[4:])
                        elif line == "" and event:
                            item = json.loads(data)
                            if event == "end":
                                return item
                            _show(item, progress)
                            event, data = "", ""
            except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, TimeoutError):
                continue
        raise OperationFailed(f"lost the progress of job {job_id}", hint=f"{self.url}/jobs/{job_id}")


def _show(item: dict[str, Any], progress: Progress) -> None:
    if item.get("type") == "progress":
        progress.emit(Event(resource=item.get("resource", ""), action=item.get("action", ""),
                            status=item.get("status", ""), detail=item.get("detail", ""), env=item.get("env")))
    elif item.get("type") == "note":
        progress.note(item.get("text", ""), level=item.get("level", "info"))


def remote_from(url: str | None, token_file: str | None, environ: dict[str, str]) -> RemoteServer | None:
    if not url:
        return None
    if not url.startswith(("http://", "https://")):
        raise InvalidInput(f"--server {url!r}: an http:// or https:// URL")
    token = ""
    if token_file:
        try:
            with open(token_file, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as exc:
            raise InvalidInput(f"--token-file {token_file}: {exc.strerror}") from None
    token = token or environ.get(TOKEN_VAR, "").strip()
    if not token:
        raise InvalidInput("--server needs a token", hint=f"set {TOKEN_VAR}, or pass --token-file FILE")
    from ..log import register_secrets

    register_secrets([token])
    return RemoteServer(url.rstrip("/"), token)
