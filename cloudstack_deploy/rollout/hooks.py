"""The blueprint's `hooks`: local commands before and after a deploy, rollback or promotion.

Why blueprint keys and not Kamal's `.kamal/hooks/` files: the blueprint is the one file a
deploy reads (validated with file:line, overridable with `--set`, shown by `deploy --dry-run`,
remembered for day-2 commands), so a hook travels with it instead of depending on the
directory csdeploy happens to run in. A hook runs with `sh -c` in the blueprint's directory,
its output shown line by line as it comes (redacted), with the deploy's facts as `CSDEPLOY_*`
variables and no secret (`commands/hook.py`). A failing `pre_deploy` stops the run before the
deploy lock is taken; a failing `post_deploy` fails the command after the deploy was recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path

from ..blueprint_schema import Blueprint
from ..errors import OperationFailed
from ..progress import Progress
from .commands import hook as hook_cmds
from .hosts import PlannedScript

PRE, POST = "pre_deploy", "post_deploy"
OUTPUT_MAX = 2000   # lines of a hook's output shown


def command(bp: Blueprint, name: str) -> str | None:
    return getattr(bp.hooks, name)


def workdir(bp: Blueprint) -> Path:
    return bp.source.parent if bp.source is not None else Path.cwd()


async def run(bp: Blueprint, name: str, facts: Mapping[str, str], progress: Progress, *,
              planned: list[PlannedScript] | None = None) -> None:
    """Run hook ``name`` if the blueprint has one; ``planned`` (a dry run): only record it."""
    cmd = command(bp, name)
    if cmd is None:
        return
    if planned is not None:
        shown = "\n".join(f"export CSDEPLOY_{k.upper()}={v!r}" for k, v in facts.items())
        planned.append(PlannedScript("local", f"{name} hook (in {workdir(bp)})", f"{shown}\n{cmd}\n"))
        return
    env = hook_cmds.environment(os.environ, facts, bp.secrets)
    argv = [str(w) for w in hook_cmds.argv(cmd)]
    progress.note(f"hook {name}: {cmd}")
    started = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(*argv, cwd=workdir(bp), env=env, stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                                                    start_new_session=True)
    except OSError as exc:
        raise OperationFailed(f"hook {name} could not start: {exc}") from None
    assert proc.stdout is not None
    shown = 0

    async def read() -> None:
        nonlocal shown
        assert proc.stdout is not None
        async for raw in proc.stdout:
            shown += 1
            if shown <= OUTPUT_MAX:
                progress.note(f"hook {name} | {raw.decode(errors='replace').rstrip()}")

    try:
        await asyncio.wait_for(asyncio.gather(read(), proc.wait()), bp.hooks.timeout)
    except BaseException as exc:  # a timeout or an interrupt: the hook and whatever it started go
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        if not isinstance(exc, TimeoutError):
            raise
        raise OperationFailed(f"hook {name} did not finish within {bp.hooks.timeout:g}s"
                              + ("; nothing was changed on the hosts" if name == PRE else ""),
                              hint="hooks.timeout sets how long a hook may take") from None
    if proc.returncode != 0:
        raise OperationFailed(f"hook {name} failed (exit {proc.returncode}) after {time.monotonic() - started:.1f}s"
                              + ("; nothing was changed on the hosts" if name == PRE else
                                 "; the deploy itself is done and recorded"),
                              hint=f"its output is above; the command: {cmd}")
