"""A local process as a stand-in for a host's `Connection.pipe`: ``source`` fed to its stdin,
its stdout handed to ``sink`` chunk by chunk, the exit code and stderr returned as a Result."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from cloudstack_deploy.rollout.hosts import Result


async def pipe_local(argv: list[str], env: dict[str, str] | None, *, source: AsyncIterator[bytes] | None = None,
                     sink: Callable[[bytes], Awaitable[None]] | None = None) -> Result:
    proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, env=env)
    assert proc.stdin and proc.stdout and proc.stderr

    async def feed() -> None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            if source is not None:
                async for chunk in source:
                    proc.stdin.write(chunk)
                    await proc.stdin.drain()
            proc.stdin.close()

    async def drain() -> None:
        while chunk := await proc.stdout.read(1 << 16):
            if sink is not None:
                await sink(chunk)

    tasks = [asyncio.ensure_future(feed()), asyncio.ensure_future(drain()), asyncio.ensure_future(proc.stderr.read())]
    try:
        _, _, err = await asyncio.gather(*tasks)
    except BaseException:
        # gather leaves the other two running; and the process counts as finished only once
        # every pipe is closed (3.12 waited forever on the stdin a failed source left open)
        for task in tasks:
            task.cancel()
        with contextlib.suppress(ProcessLookupError):   # it may have ended already (3.13 raises)
            proc.kill()
        proc.stdin.close()
        await asyncio.gather(*tasks, return_exceptions=True)
        await proc.wait()
        raise
    return Result(await proc.wait(), "", err.decode())
