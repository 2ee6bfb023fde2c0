"""The history store as commands use it: best effort, never in the way of a deploy.

Every create-env, deploy, rollback, teardown, reap and nightly writes through one `Journal`.
The store is opened on first use; if it cannot be reached (or a write fails) the journal
says so once, as a warning naming the store by its masked URL, and records nothing more for
that command: the command itself goes on. The primary host's deploy record is written
either way and stays the truth for what runs there (`rollback` reads only that).

Store calls are blocking (sqlite3, psycopg) and run in one worker thread, so a slow
database never stalls the SSH sessions and API polling of the event loop.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, TypeVar

from ..errors import CsdeployError
from ..log import get_logger
from .db import Store
from .records import (
    backup_recorded,
    deployment_exists,
    deployment_finished,
    deployment_pending,
    deployment_started,
    env_created,
    env_torn_down,
    run_finished,
    run_started,
)
from .url import StoreURL, store_url

T = TypeVar("T")
log = get_logger("store")


class Journal:
    """Best-effort writes to the history store; ``warn`` is told once when it cannot be used."""

    def __init__(self, url: StoreURL | None, *, warn: Callable[[str], None] | None = None) -> None:
        self.url = url
        self._warn = warn
        self._store: Store | None = None
        self._broken = url is None
        self._pool: ThreadPoolExecutor | None = None
        self.warning: str | None = None

    @classmethod
    def from_environment(cls, warn: Callable[[str], None] | None = None) -> Journal:
        """The journal of ``CSDEPLOY_STATE_URL`` (or the default SQLite file); a malformed URL
        is a warning here too: recording history never fails a command."""
        try:
            url = store_url()
        except CsdeployError as exc:
            journal = cls(None, warn=warn)
            journal._disable(f"{exc}; this run is not recorded in the history store")
            return journal
        return cls(url, warn=warn)

    @property
    def enabled(self) -> bool:
        return not self._broken

    def _disable(self, text: str) -> None:
        self._broken = True
        self.warning = text
        if self._warn is not None:
            self._warn(text)
        else:
            log.warning("history store unavailable", detail=text)

    def _sync(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        if self._broken:
            return None
        try:
            if self._store is None:
                assert self.url is not None
                self._store = Store(self.url).open()
            return fn(self._store, *args, **kwargs)
        except CsdeployError as exc:
            self._disable(f"{exc}; this run is not recorded in the history store "
                          "(the primary host keeps its deploy record)")
            return None

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        if self._broken:
            return None
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="csdeploy-store")
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()  # who acts (records.ACTING_AS) follows the call
        return await loop.run_in_executor(self._pool, lambda: context.run(self._sync, fn, *args, **kwargs))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._store is not None:
            self._store.close()
            self._store = None

    # ---- what commands record ----------------------------------------------------------------
    async def env_created(self, *, name: str, cloud: str, service: str | None, network_id: str | None,
                          expires: datetime | None) -> None:
        await self._call(env_created, name=name, cloud=cloud, service=service, network_id=network_id,
                         expires=expires)

    async def env_torn_down(self, *, name: str, cloud: str, how: str) -> None:
        await self._call(env_torn_down, name=name, cloud=cloud, how=how)

    async def deployment_pending(self, *, env: str, cloud: str, service: str, version: str,
                                 kind: str) -> str | None:
        return await self._call(deployment_pending, env=env, cloud=cloud, service=service,
                                version=version, kind=kind)

    async def deployment_started(self, dep_id: str | None, metadata: dict[str, Any]) -> None:
        if dep_id is not None:
            await self._call(deployment_started, dep_id, metadata)

    async def deployment_finished(self, dep_id: str | None, *, ok: bool, seconds: float | None,
                                  error: str | None, metadata: dict[str, Any], rolled_back: bool = False) -> None:
        if dep_id is not None:
            await self._call(deployment_finished, dep_id, ok=ok, seconds=seconds, error=error,
                             metadata=metadata, rolled_back=rolled_back)

    async def deployment_exists(self, dep_id: str) -> bool:
        return bool(await self._call(deployment_exists, dep_id))

    async def run_started(self, *, kind: str, cloud: str, prefix: str | None, env: str | None = None) -> str | None:
        return await self._call(run_started, kind=kind, cloud=cloud, prefix=prefix, env=env)

    async def run_finished(self, run_id: str | None, *, passed: bool, summary: dict[str, Any],
                           env: str | None = None) -> None:
        if run_id is not None:
            await self._call(run_finished, run_id, passed=passed, summary=summary, env=env)

    async def backup_recorded(self, **fields: Any) -> None:
        """A backup or restore as it ended (see `records.backup_recorded`)."""
        await self._call(backup_recorded, **fields)


def check_reachable(url: StoreURL | None) -> None:
    """Open the store (migrating it) and close it; `OperationFailed` if it cannot be used."""
    if url is not None:
        Store(url).open().close()
