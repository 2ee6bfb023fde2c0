"""One SSH connection per host, reused for every command; all hosts in parallel with a bound.

Host keys are verified against the environment's pinned known_hosts (written by the
provisioner from keys csdeploy generated itself); an unknown or changed key is refused.
Every exec has a timeout, so a hung host is named instead of hanging the deploy.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncssh

from ..errors import CsdeployError
from ..log import redact
from .commands.script import Argv, Script, q

T = TypeVar("T")


class HostError(CsdeployError):
    """A command failed (or could not run) on a host; names the host and the step."""

    def __init__(self, host: str, what: str, detail: str = "", *, hint: str | None = None) -> None:
        text = f"{host}: {what}" + (f"\n{_indent(detail)}" if detail.strip() else "")
        super().__init__(redact(text), hint=hint)
        self.host = host


def _indent(text: str, limit: int = 40) -> str:
    lines = text.rstrip().splitlines()[-limit:]
    return "\n".join("    " + line for line in lines)


@dataclass(frozen=True)
class Host:
    name: str
    role: str
    address: str
    port: int
    user: str
    private_ip: str
    accessories: tuple[str, ...] = ()
    proxy: bool = False

    @classmethod
    def from_inventory(cls, h: dict[str, Any], user: str) -> Host:
        return cls(name=h["name"], role=h["role"], address=h["public_ip"], port=int(h["ssh_port"]), user=user,
                   private_ip=h["private_ip"], accessories=tuple(h.get("accessories", ())),
                   proxy=bool(h.get("proxy")))


@dataclass
class Result:
    exit_status: int
    stdout: str
    stderr: str

    @property
    def last_step(self) -> str | None:
        steps = [line[7:] for line in self.stderr.splitlines() if line.startswith("::step ")]
        return steps[-1] if steps else None

    @property
    def stderr_clean(self) -> str:
        return "\n".join(line for line in self.stderr.splitlines() if not line.startswith("::step "))


class Connection:
    def __init__(self, host: Host, conn: asyncssh.SSHClientConnection, counter: Counter[str]) -> None:
        self.host = host
        self._conn = conn
        self._counter = counter

    async def run(self, command: Script | Argv | str, *, input: str | None = None, timeout: float = 600,
                  check: bool = True, what: str = "command") -> Result:
        """Run a script (sent on stdin to `sh -s`), an argv list, or a builder-made shell line."""
        if isinstance(command, Script):
            line, stdin = "sh -s", command.text()
        elif isinstance(command, str):
            line, stdin = command, input
        else:
            line, stdin = q(command), input
        self._counter[self.host.name] += 1
        try:
            proc = await asyncio.wait_for(self._conn.run(line, input=stdin, check=False), timeout)
        except TimeoutError:
            raise HostError(self.host.name, f"{what} did not finish within {timeout:.0f}s",
                            hint="the host may be overloaded or a download is stuck; re-run") from None
        except (asyncssh.Error, OSError) as exc:
            raise HostError(self.host.name, f"{what}: SSH failed: {exc}") from None
        result = Result(proc.exit_status if proc.exit_status is not None else 255,
                        str(proc.stdout or ""), str(proc.stderr or ""))
        if check and result.exit_status != 0:
            step = f" at step {result.last_step}" if result.last_step else ""
            raise HostError(self.host.name, f"{what} failed{step} (exit {result.exit_status})",
                            result.stderr_clean or result.stdout)
        return result

    async def stream(self, argv: Argv, on_line: Callable[[str], None]) -> int:
        """Run ``argv`` and hand each output line to ``on_line`` as it arrives (logs -f)."""
        self._counter[self.host.name] += 1
        async with self._conn.create_process(q(argv), stderr=asyncssh.STDOUT) as proc:
            async for line in proc.stdout:
                if line:  # asyncssh's iterator yields one '' at EOF (an empty log line is '\n')
                    on_line(line.rstrip("\n"))
            await proc.wait()
            return proc.exit_status or 0


class Hosts:
    """``async with Hosts(hosts, key, known_hosts) as pool: await pool.each(fn)``."""

    def __init__(self, hosts: Sequence[Host], *, client_key: Path, known_hosts: Path, concurrency: int = 20,
                 connect_timeout: float = 20.0) -> None:
        self.hosts = list(hosts)
        self.client_key = client_key
        self.known_hosts = known_hosts
        self.concurrency = concurrency
        self.connect_timeout = connect_timeout
        self.exec_calls: Counter[str] = Counter()
        self._conns: dict[str, Connection] = {}
        self._sem = asyncio.Semaphore(concurrency)

    async def __aenter__(self) -> Hosts:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for c in self._conns.values():
            c._conn.close()
        for c in self._conns.values():
            await c._conn.wait_closed()
        self._conns.clear()

    async def connect(self, host: Host) -> Connection:
        if host.name in self._conns:
            return self._conns[host.name]
        try:
            conn = await asyncio.wait_for(asyncssh.connect(
                host.address, host.port, username=host.user, client_keys=[str(self.client_key)],
                known_hosts=str(self.known_hosts), agent_path=None, config=None,
                keepalive_interval=15), self.connect_timeout)
        except asyncssh.HostKeyNotVerifiable as exc:
            raise HostError(host.name, f"host key of {host.address}:{host.port} is not the pinned one: {exc}",
                            hint="the VM was replaced or someone is in the middle; re-run create-env to re-pin "
                                 "if you replaced it") from None
        except (TimeoutError, asyncssh.Error, OSError) as exc:
            raise HostError(host.name, f"cannot connect over SSH to {host.user}@{host.address}:{host.port}: "
                            f"{exc or type(exc).__name__}",
                            hint="is the VM running and the firewall open to this machine? try create-env") from None
        self._conns[host.name] = Connection(host, conn, self.exec_calls)
        return self._conns[host.name]

    async def each(self, fn: Callable[[Connection], Awaitable[T]], hosts: Sequence[Host] | None = None) -> list[T]:
        """Run ``fn`` on every host concurrently (bounded); raise the first error after all finish."""
        targets = list(hosts) if hosts is not None else self.hosts

        async def one(h: Host) -> T:
            async with self._sem:
                return await fn(await self.connect(h))

        results = await asyncio.gather(*(one(h) for h in targets), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            if len(errors) == 1:
                raise errors[0]
            raise CsdeployError("\n".join(str(e) for e in errors),
                                hint=next((e.hint for e in errors if isinstance(e, CsdeployError) and e.hint), None))
        return results  # type: ignore[return-value]
