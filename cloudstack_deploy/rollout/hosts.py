"""One SSH connection per host, reused for every command; all hosts in parallel with a bound.

Host keys are verified against the environment's pinned known_hosts (written by the
provisioner from keys csdeploy generated itself); an unknown or changed key is refused.
Every exec has a timeout, so a hung host is named instead of hanging the deploy.

`DryRun` is the same pool that only reads: it runs read-only steps (the facts, the history)
and records every other script, so `deploy --dry-run` shows exactly what would be sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import stat
import termios
import time
import tty as tty_mode
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import asyncssh

from ..errors import CsdeployError, OperationFailed
from ..inventory import Host
from ..log import get_logger, redact
from .commands.script import RUNNER, Argv, Script, q

T = TypeVar("T")
#: A host that answers no SSH keepalive for KEEPALIVE_SECONDS x KEEPALIVE_COUNT (15 s) is lost:
#: the rollout names it instead of waiting for its step's timeout.
KEEPALIVE_SECONDS = 5
KEEPALIVE_COUNT = 3
log = get_logger("rollout.hosts")


class HostError(OperationFailed):
    """A command failed (or could not run) on a host; names the host and the step."""

    def __init__(self, host: str, what: str, detail: str = "", *, hint: str | None = None) -> None:
        text = f"{host}: {what}" + (f"\n{_indent(detail)}" if detail.strip() else "")
        super().__init__(redact(text), hint=hint)
        self.host = host


def _indent(text: str, limit: int = 40) -> str:
    lines = text.rstrip().splitlines()[-limit:]
    return "\n".join("    " + line for line in lines)


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


def _command(command: Script | Argv, input: str | None) -> tuple[str, str | None]:
    """The remote command line and its stdin: a script goes on stdin to ``sh -s``."""
    if isinstance(command, Script):
        return RUNNER, command.text()
    return q(command), input


def lost(exc: BaseException) -> bool:
    """The SSH connection went away (the host stopped answering: keepalives unanswered, the
    peer gone), as opposed to a refusal: lost mid-command, or closed before a command's
    session was opened (a session asked for while the host was paused is refused with
    "SSH connection closed" once the keepalive gives up)."""
    if isinstance(exc, asyncssh.ConnectionLost):
        return True
    return isinstance(exc, asyncssh.ChannelOpenError) and exc.code == asyncssh.OPEN_CONNECT_FAILED \
        and "connection closed" in str(exc.reason).lower()


class Connection:
    def __init__(self, host: Host, conn: asyncssh.SSHClientConnection | None, counter: Counter[str]) -> None:
        self.host = host
        self._conn = conn
        self._counter = counter

    async def run(self, command: Script | Argv, *, input: str | None = None, timeout: float = 600,
                  check: bool = True, what: str = "command", read_only: bool = False) -> Result:
        """Run a script (sent on stdin to `sh -s`) or one argv command. ``read_only``: it
        changes nothing on the host (a dry run runs it too)."""
        line, stdin = _command(command, input)
        self._counter[self.host.name] += 1
        log.debug("host script", host=self.host.name, step=what, script=stdin if line == RUNNER else line)
        started = time.monotonic()
        assert self._conn is not None
        try:
            proc = await asyncio.wait_for(self._conn.run(line, input=stdin, check=False), timeout)
        except TimeoutError:
            log.info("host step", host=self.host.name, step=what, error="timeout", seconds=round(timeout, 3))
            raise HostError(self.host.name, f"{what} did not finish within {timeout:.0f}s",
                            hint="the host may be overloaded or a download is stuck; re-run") from None
        except (asyncssh.Error, OSError) as exc:
            log.info("host step", host=self.host.name, step=what, error=str(exc),
                     seconds=round(time.monotonic() - started, 3))
            if lost(exc):
                raise HostError(self.host.name, f"stopped answering: the SSH connection was lost ({what}): {exc}",
                                hint="is the VM running? the next deploy or rollback ends what is left over") from None
            raise HostError(self.host.name, f"{what}: SSH failed: {exc}") from None
        result = Result(proc.exit_status if proc.exit_status is not None else 255,
                        str(proc.stdout or ""), str(proc.stderr or ""))
        if proc.exit_status is None and proc.exit_signal is None:  # the connection went away
            step = f" during step {result.last_step}" if result.last_step else ""
            log.info("host step", host=self.host.name, step=what, error="connection lost",
                     seconds=round(time.monotonic() - started, 3))
            raise HostError(self.host.name, f"stopped answering: the SSH connection was lost{step} ({what})",
                            result.stderr_clean, hint="is the VM running? what it was doing may still finish "
                            "there; the next deploy or rollback ends what is left over")
        log.info("host step", host=self.host.name, step=what, exit=result.exit_status,
                 seconds=round(time.monotonic() - started, 3))
        if check and result.exit_status != 0:
            step = f" at step {result.last_step}" if result.last_step else ""
            raise HostError(self.host.name, f"{what} failed{step} (exit {result.exit_status})",
                            result.stderr_clean or result.stdout)
        return result

    async def stream(self, command: Script, on_line: Callable[[str], None]) -> int:
        """Run ``command`` and hand each output line to ``on_line`` as it arrives (logs -f)."""
        line, stdin = _command(command, None)
        self._counter[self.host.name] += 1
        assert self._conn is not None
        async with self._conn.create_process(line, input=stdin, stderr=asyncssh.STDOUT) as proc:
            async for out in proc.stdout:
                if out:  # asyncssh's iterator yields one '' at EOF (an empty log line is '\n')
                    on_line(out.rstrip("\n"))
            await proc.wait()
            return proc.exit_status or 0

    async def pipe(self, command: Argv, *, source: AsyncIterator[bytes] | None = None,
                   sink: Callable[[bytes], Awaitable[None]] | None = None, what: str = "command") -> Result:
        """Run ``command`` with bytes streamed: ``source``'s chunks to its stdin (then end of
        file), its stdout chunk by chunk to ``sink`` (a dump or a restore: never whole in
        memory). Its exit status and stderr come back; SSH failures are a HostError."""
        self._counter[self.host.name] += 1
        log.debug("host pipe", host=self.host.name, step=what, command=q(command))
        assert self._conn is not None
        started = time.monotonic()
        try:
            async with self._conn.create_process(q(command), encoding=None) as proc:
                async def feed() -> None:
                    try:
                        if source is not None:
                            async for chunk in source:
                                proc.stdin.write(chunk)
                                await proc.stdin.drain()
                        proc.stdin.write_eof()
                    except (BrokenPipeError, ConnectionResetError, asyncssh.Error):
                        pass  # it stopped reading (a dump it refused): its exit status tells why

                async def drain() -> None:
                    while chunk := await proc.stdout.read(1 << 16):
                        if sink is not None:
                            await sink(chunk)

                _, _, err = await asyncio.gather(feed(), drain(), proc.stderr.read())
                await proc.wait()
        except (asyncssh.Error, OSError) as exc:
            if lost(exc):
                raise HostError(self.host.name, f"stopped answering: the SSH connection was lost ({what}): {exc}",
                                hint="is the VM running?") from None
            raise HostError(self.host.name, f"{what}: SSH failed: {exc}") from None
        log.info("host step", host=self.host.name, step=what, exit=proc.exit_status,
                 seconds=round(time.monotonic() - started, 3))
        if proc.exit_status is None and proc.exit_signal is None:
            raise HostError(self.host.name, f"stopped answering: the SSH connection was lost ({what})")
        return Result(proc.exit_status if proc.exit_status is not None else 255, "",
                      bytes(err or b"").decode("utf-8", "replace"))


    async def interactive(self, command: Argv, *, tty: bool = False, attach: bool = True,
                          stdin: int = 0, stdout: int = 1, stderr: int = 2) -> int:
        """Run ``command`` with this terminal attached; returns its exit code. ``attach``: local
        ``stdin`` goes to it (else it sees end of file at once); its output goes to ``stdout`` and
        ``stderr`` as it comes. With ``tty``: a remote terminal of the local one's type and size
        (resized with it), and the local terminal in raw mode while it runs, restored however
        the session ends."""
        line = q(command)
        self._counter[self.host.name] += 1
        log.debug("host interactive", host=self.host.name, command=line, tty=tty)
        assert self._conn is not None
        opts: dict[str, object] = {}
        if tty:
            opts = {"term_type": os.environ.get("TERM") or "xterm", "term_size": _terminal_size(stdout)}
        loop = asyncio.get_running_loop()
        try:
            with _raw_mode(stdin if tty and attach else None):
                proc = await self._conn.create_process(line, encoding=None, **opts)  # type: ignore[arg-type]
                watching = False
                try:
                    if attach:
                        watching = _feed(loop, proc, stdin)
                    else:
                        proc.stdin.write_eof()
                    if tty and hasattr(signal, "SIGWINCH"):
                        loop.add_signal_handler(signal.SIGWINCH,
                                                lambda: proc.change_terminal_size(*_terminal_size(stdout)))
                    await asyncio.gather(_pump(proc.stdout, stdout), _pump(proc.stderr, stderr))
                    await proc.wait()
                finally:
                    if watching:
                        loop.remove_reader(stdin)
                    if tty and hasattr(signal, "SIGWINCH"):
                        loop.remove_signal_handler(signal.SIGWINCH)
                    proc.close()
        except (asyncssh.Error, OSError) as exc:
            raise HostError(self.host.name, f"interactive session: SSH failed: {exc}") from None
        if proc.exit_status is None and proc.exit_signal is None:
            raise HostError(self.host.name, "stopped answering: the SSH connection was lost (interactive session)")
        return proc.exit_status if proc.exit_status is not None else 255


class PipeStream:
    """The stdout of ``command`` on ``conn``'s host (`Connection.pipe`), as an async iterator of
    chunks (at most a few held: a dump is never whole in memory); once it ends, ``result`` is
    the command's exit status and stderr. An SSH failure is raised at the end of the chunks;
    a consumer that stops early cancels the command."""

    def __init__(self, conn: Connection, command: Argv, *, what: str) -> None:
        self.conn, self.command, self.what = conn, command, what
        self.result: Result | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunks: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=8)
        error: list[BaseException] = []

        async def run() -> None:
            try:
                self.result = await self.conn.pipe(self.command, sink=chunks.put, what=self.what)
            except Exception as exc:
                error.append(exc)
            finally:
                await chunks.put(None)

        task = asyncio.create_task(run())
        try:
            while (chunk := await chunks.get()) is not None:
                yield chunk
        finally:
            if not task.done():
                task.cancel()
        await task
        if error:
            raise error[0]

    def failure(self) -> str | None:
        """None when the command ran and exited 0; else what its stderr's last line (or its
        not running) says."""
        res = self.result
        if res is not None and res.exit_status == 0:
            return None
        return (res.stderr.strip().splitlines() or [""])[-1] if res is not None else "it did not run"


def _terminal_size(fd: int) -> tuple[int, int]:
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return 80, 24
    return size.columns, size.lines


@contextlib.contextmanager
def _raw_mode(fd: int | None) -> Iterator[None]:
    """The terminal on ``fd`` in raw mode (every key goes to the remote side as typed, Ctrl-C
    included), its settings restored on the way out; nothing when ``fd`` is None or no terminal."""
    if fd is None or not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    try:
        tty_mode.setraw(fd, termios.TCSANOW)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _feed(loop: asyncio.AbstractEventLoop, proc: asyncssh.SSHClientProcess[bytes], fd: int) -> bool:
    """Send what arrives on ``fd`` to the process, then end of file. A regular file (a redirect
    from a file) or /dev/null is sent at once; anything else (a terminal, a pipe) is read as it
    becomes readable. True when ``fd`` is being watched (the caller stops watching it)."""
    def at_once() -> bool:
        while chunk := os.read(fd, 65536):
            proc.stdin.write(chunk)
        proc.stdin.write_eof()
        return False

    if stat.S_ISREG(os.fstat(fd).st_mode):
        return at_once()

    def readable() -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        try:
            if data:
                proc.stdin.write(data)
                return
            proc.stdin.write_eof()
        except (asyncssh.Error, OSError):  # the remote side ended meanwhile
            pass
        loop.remove_reader(fd)

    try:
        loop.add_reader(fd, readable)
    except OSError:  # a file that cannot be polled (/dev/null): it never waits either
        return at_once()
    return True


async def _pump(reader: asyncssh.SSHReader[bytes], fd: int) -> None:
    while data := await reader.read(65536):
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(fd, view):]
            except BlockingIOError:
                await asyncio.sleep(0.01)


class Hosts:
    """``async with Hosts(hosts, key, known_hosts) as pool: await pool.each(fn)``."""

    def __init__(self, hosts: Sequence[Host], *, user: str, client_key: Path, known_hosts: Path,
                 concurrency: int = 20, connect_timeout: float = 20.0) -> None:
        self.hosts = list(hosts)
        self.user = user
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
        conns = [c._conn for c in self._conns.values() if c._conn is not None]
        for c in conns:
            c.close()
        for c in conns:
            await c.wait_closed()
        self._conns.clear()

    async def connect(self, host: Host) -> Connection:
        if host.name in self._conns:
            return self._conns[host.name]
        started = time.monotonic()
        try:
            conn = await asyncio.wait_for(asyncssh.connect(
                host.public_ip, host.ssh_port, username=self.user, client_keys=[str(self.client_key)],
                known_hosts=str(self.known_hosts), agent_path=None, config=None,
                keepalive_interval=KEEPALIVE_SECONDS,
                keepalive_count_max=KEEPALIVE_COUNT), self.connect_timeout)
        except asyncssh.HostKeyNotVerifiable as exc:
            raise HostError(host.name, f"host key of {host.ssh_address} is not the pinned one: {exc}",
                            hint="the VM was replaced or someone is in the middle; re-run create-env to re-pin "
                                 "if you replaced it") from None
        except (TimeoutError, asyncssh.Error, OSError) as exc:
            raise HostError(host.name, f"cannot connect over SSH to {self.user}@{host.ssh_address}: "
                            f"{exc or type(exc).__name__}",
                            hint="is the VM running and the firewall open to this machine? try create-env") from None
        log.info("ssh connected", host=host.name, address=host.ssh_address, seconds=round(time.monotonic() - started, 3))
        self._conns[host.name] = self._wrap(Connection(host, conn, self.exec_calls))
        return self._conns[host.name]

    def _wrap(self, conn: Connection) -> Connection:
        return conn

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
            raise OperationFailed("\n".join(str(e) for e in errors),
                                  hint=next((e.hint for e in errors if isinstance(e, CsdeployError) and e.hint), None))
        return results  # type: ignore[return-value]


@dataclass
class PlannedScript:
    host: str
    what: str
    text: str


class DryRun(Hosts):
    """A pool that reads for real (the facts a rollout decides from, the history) and records
    every other script instead of running it: what `deploy --dry-run` prints."""

    def __init__(self, hosts: Sequence[Host], *, user: str, client_key: Path, known_hosts: Path,
                 concurrency: int = 20) -> None:
        super().__init__(hosts, user=user, client_key=client_key, known_hosts=known_hosts, concurrency=concurrency)
        self.planned: list[PlannedScript] = []

    def _wrap(self, conn: Connection) -> Connection:
        return _Recorder(conn, self)


class _Recorder(Connection):
    def __init__(self, real: Connection, pool: DryRun) -> None:
        super().__init__(real.host, real._conn, pool.exec_calls)
        self._pool = pool

    async def run(self, command: Script | Argv, *, input: str | None = None, timeout: float = 600,
                  check: bool = True, what: str = "command", read_only: bool = False) -> Result:
        if read_only:
            return await super().run(command, input=input, timeout=timeout, check=check, what=what)
        line, stdin = _command(command, input)
        text = stdin if line == RUNNER else line
        log.debug("host script", host=self.host.name, step=what, script=text, dry_run=True)
        self._pool.planned.append(PlannedScript(self.host.name, what, text))
        return Result(0, "", "")

    async def stream(self, command: Script, on_line: Callable[[str], None]) -> int:
        await self.run(command, what="stream")
        return 0

    async def interactive(self, command: Argv, *, tty: bool = False, attach: bool = True,
                          stdin: int = 0, stdout: int = 1, stderr: int = 2) -> int:
        await self.run(command, what="interactive" + (" (with a terminal)" if tty else ""))
        return 0
