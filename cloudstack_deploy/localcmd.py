"""Commands run on this machine (docker build/push, git): one way to run them with a timeout."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence


async def run_local(argv: Sequence[str], *, env: Mapping[str, str] | None = None, stdin: bytes | None = None,
                    timeout: float | None, merge_stderr: bool = False) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of a local command (stderr folded into stdout with
    ``merge_stderr``); TimeoutError after ``timeout`` seconds, the command killed."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT if merge_stderr else asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})})
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode(errors="replace"), (err or b"").decode(errors="replace")
