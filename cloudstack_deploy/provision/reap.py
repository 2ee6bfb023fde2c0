"""Reap: tear down every environment whose `csdeploy:expires` has passed.

Found from the cloud's tags alone (`list_envs`: two API calls), so it works from any CI
runner with no local state. An environment someone is changing right now is skipped and
reported, never torn down under a running job:

- its network carries a `csdeploy:lock` tag (create-env, deploy, rollback hold it) whose
  holder is alive: a holder on this machine whose process is gone is dead, and a lock
  older than `LOCK_STALE_AFTER` is stale (a run killed on another machine); both are reaped;
- on this machine, another csdeploy holds its local lock (`state.py`'s flock).

The others are torn down concurrently (``max_parallel`` at a time), each under the cloud
lock and the local lock, and verified exactly as `teardown` verifies (a re-list by tag,
name and network); anything left is reported per environment.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..cloud import Cloud
from ..errors import CsdeployError, Locked
from ..progress import Progress
from ..state import EnvState
from .cloudlock import (
    holder_died_here,
    lock_is_stale,
    lock_value,
    release_cloud_lock,
    take_network_lock,
)
from .desired import parse_time
from .envs import EnvSummary, list_envs
from .teardown import remaining, teardown_env

REMOVED, SKIPPED, FAILED, WOULD = "removed", "skipped", "failed", "would remove"


@dataclass
class ReapItem:
    env: str
    created: str | None
    expires: str | None
    age_seconds: float | None
    result: str = ""
    reason: str = ""
    deleted: int = 0
    leftovers: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ReapResult:
    now: str
    environments: int                     # all environments found
    items: list[ReapItem] = field(default_factory=list)
    seconds: float = 0.0
    dry_run: bool = False
    names: list[str] = field(default_factory=list)   # every environment's name (taken names)

    def of(self, result: str) -> list[ReapItem]:
        return [i for i in self.items if i.result == result]

    @property
    def ok(self) -> bool:
        return not self.of(FAILED)

    def to_dict(self) -> dict[str, Any]:
        return {"now": self.now, "environments": self.environments, "expired": len(self.items),
                "removed": len(self.of(REMOVED)), "skipped": len(self.of(SKIPPED)), "failed": len(self.of(FAILED)),
                "dry_run": self.dry_run, "seconds": round(self.seconds, 2),
                "items": [i.to_dict() for i in self.items]}


def matches(env: str, prefix: str | None) -> bool:
    """``prefix`` selects its own environments: ``nightly`` matches ``nightly-1130-x7k``, not
    ``nightlyx``; an exact name matches too."""
    return prefix is None or env == prefix or env.startswith(prefix.rstrip("-") + "-")


def expired(envs: list[EnvSummary], now: datetime, prefix: str | None = None) -> list[EnvSummary]:
    return [e for e in envs if e.expired(now) and matches(e.env, prefix)]


def busy_reason(env: EnvSummary, now: datetime) -> str | None:
    """Why ``env`` must not be torn down now (its lock is held by a live run), or None."""
    if env.lock and not holder_died_here(env.lock) and not lock_is_stale(env.lock, now):
        return f"locked by {env.lock}"
    return None


def _item(env: EnvSummary, now: datetime) -> ReapItem:
    created = parse_time(env.created or "")
    return ReapItem(env=env.env, created=env.created, expires=env.expires,
                    age_seconds=round((now - created).total_seconds(), 1) if created else None)


#: Called with (cloud, env, network id, progress) before an environment is torn down: what
#: lives outside the cloud and is named by its tags (DNS records) goes first.
BeforeTeardown = Callable[[Cloud, str, "str | None", Progress], Awaitable[Any]]


async def reap(cloud: Cloud, progress: Progress, *, prefix: str | None = None, dry_run: bool = False,
               max_parallel: int = 4, now: datetime | None = None,
               before_teardown: BeforeTeardown | None = None) -> ReapResult:
    started = asyncio.get_running_loop().time()
    now = now or datetime.now(UTC)
    envs = await list_envs(cloud)
    result = ReapResult(now=now.strftime("%Y-%m-%dT%H:%M:%SZ"), environments=len(envs), dry_run=dry_run,
                        names=[e.env for e in envs])
    gate = asyncio.Semaphore(max(1, max_parallel))

    async def one(env: EnvSummary) -> ReapItem:
        item = _item(env, now)
        busy = busy_reason(env, now)
        if busy:
            item.result, item.reason = SKIPPED, busy
            return item
        if env.lock:
            item.reason = ("its lock's holder is gone: " if holder_died_here(env.lock) else "stale lock: ") + env.lock
        if dry_run:
            item.result = WOULD
            return item
        async with gate:
            t0 = asyncio.get_running_loop().time()
            await _reap_one(cloud, env, item, progress, before_teardown)
            item.seconds = round(asyncio.get_running_loop().time() - t0, 2)
        return item

    result.items = list(await asyncio.gather(*(one(e) for e in expired(envs, now, prefix))))
    result.seconds = asyncio.get_running_loop().time() - started
    return result


async def _reap_one(cloud: Cloud, env: EnvSummary, item: ReapItem, progress: Progress,
                    before_teardown: BeforeTeardown | None = None) -> None:
    state = EnvState(env.env)
    if env.network_id is None:  # only its snapshots (or VMs without a network) are left: no lock to take
        try:
            done = await teardown_env(cloud, env.env, progress, delete_snapshots=True)
        except CsdeployError as exc:
            item.result, item.reason = FAILED, str(exc).splitlines()[0]
            item.leftovers = await _left(cloud, env.env)
            return
        item.result, item.deleted = REMOVED, len(done.deleted)
        state.remove()
        return
    value = lock_value()
    with contextlib.ExitStack() as stack:
        try:
            if state.dir.exists():  # a run on this machine holds its flock: never under it
                stack.enter_context(state.lock(owner="csdeploy reap"))
            assert env.network_id is not None
            await take_network_lock(cloud, env.env, env.network_id, env.lock, value, break_lock=bool(env.lock))
        except Locked as exc:
            item.result, item.reason = SKIPPED, str(exc).splitlines()[0]
            return
        except CsdeployError as exc:
            item.result, item.reason = FAILED, f"could not lock it: {str(exc).splitlines()[0]}"
            item.leftovers = await _left(cloud, env.env)
            return
        try:
            if before_teardown is not None:
                await before_teardown(cloud, env.env, env.network_id, progress)
            done = await teardown_env(cloud, env.env, progress, delete_snapshots=True)  # ephemeral: all of it
        except CsdeployError as exc:
            item.result, item.reason = FAILED, str(exc).splitlines()[0]
            item.leftovers = await _left(cloud, env.env)
            await release_cloud_lock(cloud, env.network_id, value)
            return
        item.result, item.deleted = REMOVED, len(done.deleted)
        state.remove()


async def _left(cloud: Cloud, env: str) -> list[str]:
    try:
        return await remaining(cloud, env, snapshots=True)
    except CsdeployError as exc:
        return [f"(could not re-list: {str(exc).splitlines()[0]})"]
