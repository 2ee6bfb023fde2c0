"""The nightly's checks: HTTP through the proxy host, and commands in a role's container.

    --check 'GET /up 200'                  method, path, expected status
    --check 'GET / 200 demo v1'            ... and text the body must contain
    --check-cmd 'web:python3 -c "import app"'   a command in the role's current container

Both are parsed before anything is created: a malformed one is invalid input (exit 2).
HTTP checks go to the first proxy host's public address (what a user's browser reaches),
with the Host header of the role's `proxy.hosts` when it names one, never through an HTTP
proxy from the environment.
"""

from __future__ import annotations

import asyncio
import re
import shlex
from dataclasses import dataclass

import aiohttp

from ..blueprint import Blueprint
from ..errors import InvalidInput

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
BODY_SHOWN = 600
_PATH = re.compile(r"/[^\s]*")
CHECK_HINT = "write --check 'METHOD /PATH STATUS [TEXT]', e.g. --check 'GET /up 200' or --check 'GET / 200 demo v1'"


@dataclass(frozen=True)
class HttpCheck:
    method: str
    path: str
    status: int
    text: str | None = None

    @property
    def name(self) -> str:
        return f"{self.method} {self.path} {self.status}" + (f" {self.text!r}" if self.text else "")


@dataclass(frozen=True)
class CmdCheck:
    role: str
    argv: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.role}: {shlex.join(self.argv)}"


@dataclass
class Outcome:
    ok: bool
    message: str         # one line: what was expected, what came
    detail: str = ""     # the answer (body, command output)


def parse_check(spec: str) -> HttpCheck:
    words = spec.split(None, 3)
    if len(words) < 3:
        raise InvalidInput(f"--check {spec!r}: expected METHOD /PATH STATUS [TEXT]", hint=CHECK_HINT)
    method, path, status = words[0].upper(), words[1], words[2]
    if method not in METHODS:
        raise InvalidInput(f"--check {spec!r}: {words[0]!r} is not an HTTP method ({', '.join(METHODS)})",
                           hint=CHECK_HINT)
    if not _PATH.fullmatch(path):
        raise InvalidInput(f"--check {spec!r}: the path must start with '/', got {path!r}", hint=CHECK_HINT)
    if not status.isdigit() or not 100 <= int(status) <= 599:
        raise InvalidInput(f"--check {spec!r}: the expected status must be 100-599, got {status!r}", hint=CHECK_HINT)
    text = words[3].strip() if len(words) == 4 else None
    return HttpCheck(method, path, int(status), text or None)


def parse_check_cmd(spec: str, bp: Blueprint) -> CmdCheck:
    role, sep, command = spec.partition(":")
    role = role.strip()
    hint = "write --check-cmd ROLE:COMMAND, e.g. --check-cmd 'web:python3 -c \"import app\"'"
    if not sep or not role or not command.strip():
        raise InvalidInput(f"--check-cmd {spec!r}: expected ROLE:COMMAND", hint=hint)
    known = [*bp.roles, *bp.accessories]
    if role not in known:
        raise InvalidInput(f"--check-cmd {spec!r}: the blueprint has no role or accessory {role!r}",
                           hint="known: " + ", ".join(known))
    try:
        argv = tuple(shlex.split(command))
    except ValueError as exc:
        raise InvalidInput(f"--check-cmd {spec!r}: {exc}", hint=hint) from None
    return CmdCheck(role, argv)


def default_checks(bp: Blueprint) -> list[HttpCheck]:
    """Without --check: the first proxy role's health check path must answer 200."""
    role = next((r for r in bp.roles.values() if r.proxy is not None), None)
    if role is None or role.proxy is None:
        return []
    return [HttpCheck("GET", role.proxy.healthcheck.path or "/up", 200)]


def host_header(bp: Blueprint) -> str | None:
    role = next((r for r in bp.roles.values() if r.proxy is not None), None)
    return role.proxy.hosts[0] if role is not None and role.proxy is not None and role.proxy.hosts else None


async def run_http(check: HttpCheck, base_url: str, *, host: str | None = None, timeout: float = 15.0,
                   attempts: int = 3) -> Outcome:
    """One request (connection errors retried ``attempts`` times, a second apart)."""
    url = base_url.rstrip("/") + check.path
    headers = {"Host": host} if host else {}
    last = ""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout), trust_env=False) as session:
        for attempt in range(attempts):
            try:
                async with session.request(check.method, url, headers=headers, allow_redirects=False) as resp:
                    body = await resp.text(errors="replace")
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                last = f"{type(exc).__name__}: {exc}"
                if attempt + 1 < attempts:
                    await asyncio.sleep(1.0)
                continue
            shown = body[:BODY_SHOWN] + ("..." if len(body) > BODY_SHOWN else "")
            if resp.status != check.status:
                return Outcome(False, f"{check.method} {url}: expected HTTP {check.status}, got HTTP {resp.status}",
                               f"HTTP {resp.status}\n{shown}")
            if check.text and check.text not in body:
                return Outcome(False, f"{check.method} {url}: HTTP {resp.status} but the body lacks {check.text!r}",
                               f"HTTP {resp.status}\n{shown}")
            return Outcome(True, f"{check.method} {url}: HTTP {resp.status}", shown)
    return Outcome(False, f"{check.method} {url}: no answer after {attempts} attempts ({last})")
