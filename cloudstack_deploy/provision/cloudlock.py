"""The environment's lock in the cloud: a `csdeploy:lock` tag on its network.

The local flock (`state.py`) keeps two runs on one machine apart; this tag keeps runs on
different machines (CI runners, laptops) apart, and tells `reap` which environments are
being changed right now. The value names the holder: ``user@host pid N since TIME``.

`create-env` holds it while it converges; `deploy`, `rollback` and `accessory reboot` hold
it around the rollout (`rollout_lock`, best effort: a cloud that cannot be reached is a
warning there, since the deploy lock on the primary host still keeps deploys apart).
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

from ..cloud import Cloud, CloudConfig, CloudError, JobFailed
from ..errors import CsdeployError, Locked
from .actual import Actual
from .desired import TAG_ENV, TAG_LOCK, format_time, parse_time

LOCK_STALE_AFTER = timedelta(hours=2)


def lock_value() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()} pid {os.getpid()} since {format_time(datetime.now(UTC))}"


def holder_died_here(held: str) -> bool:
    """Whether a lock value names a process on this machine that no longer exists.

    A run killed with SIGKILL (or a crash) cannot remove its lock tag; the next run on the same
    machine can tell that run is gone and take over, instead of demanding --break-lock.
    """
    try:
        who, rest = held.split(" pid ", 1)
        pid = int(rest.split()[0])
    except (ValueError, IndexError):
        return False
    if who.rpartition("@")[2] != socket.gethostname() or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # exists (another user's process) or cannot tell: assume alive
    return False


def lock_since(held: str) -> datetime | None:
    return parse_time(held.rsplit("since ", 1)[-1]) if "since " in held else None


def lock_is_stale(held: str, now: datetime | None = None) -> bool:
    since = lock_since(held)
    return since is not None and (now or datetime.now(UTC)) - since > LOCK_STALE_AFTER


async def take_cloud_lock(cloud: Cloud, actual: Actual, value: str, break_lock: bool) -> str | None:
    """Tag the network with our lock; return the lock taken over from a dead run, if any."""
    assert actual.network is not None
    nid = actual.network["id"]
    return await take_network_lock(cloud, actual.env, nid, actual.tag(nid, TAG_LOCK), value, break_lock)


async def take_network_lock(cloud: Cloud, env: str, nid: str, held: str | None, value: str,
                            break_lock: bool) -> str | None:
    """Tag network ``nid`` with lock ``value`` unless ``held`` by a live run (then `Locked`)."""
    taken_over = None
    if held and (break_lock or holder_died_here(held)):
        taken_over = held
        await cloud.job("deleteTags", resourceids=[nid], resourcetype="Network", tags=[{"key": TAG_LOCK}])
    elif held:
        raise Locked(f"environment '{env}' is locked in the cloud by {held}"
                      + (" (stale: older than 2h)" if lock_is_stale(held) else ""),
                      hint="wait for that run to finish; if it died, re-run with --break-lock")
    try:
        await cloud.job("createTags", resourceids=[nid], resourcetype="Network",
                        tags=[{"key": TAG_LOCK, "value": value}])
    except JobFailed as exc:
        raise Locked(f"environment '{env}' was locked by another csdeploy run just now ({exc.text})",
                      hint="wait for that run to finish, then re-run") from None
    return taken_over


async def release_cloud_lock(cloud: Cloud, network_id: str | None, value: str) -> None:
    if network_id is None:
        return
    try:
        await cloud.job("deleteTags", resourceids=[network_id], resourcetype="Network",
                        tags=[{"key": TAG_LOCK, "value": value}])
    except CloudError:
        pass  # the network may be gone (a racing duplicate removed itself)


async def network_lock(cloud: Cloud, env: str) -> tuple[str | None, str | None]:
    """The environment's network id (by its tag) and the lock it holds, in two list calls."""
    tagged = await cloud.list("listTags", resourcetype="Network", key=TAG_ENV, value=env)
    ids = sorted({t["resourceid"] for t in tagged if t.get("value") == env})
    if not ids:
        return None, None
    locks = await cloud.list("listTags", resourcetype="Network", resourceid=ids[0], key=TAG_LOCK)
    held = next((t.get("value") for t in locks if t.get("key") == TAG_LOCK), None)
    return ids[0], held


@asynccontextmanager
async def rollout_lock(config: CloudConfig | None, env: str, *, break_lock: bool,
                       warn: Callable[[str], None],
                       dead: Callable[[str], Awaitable[bool]] | None = None) -> AsyncIterator[asyncio.Future[None]]:
    """Hold the environment's cloud lock around a rollout, so `reap` on any machine sees it.

    Yields a gate: the lock is taken in the background (a list call and a tag job) while the
    rollout reads its hosts, and the caller awaits the gate before it changes anything.
    Another run's live lock makes the gate raise `Locked`; anything else that keeps the lock
    from being taken (no cloud configured, the cloud does not answer, no tagged network) is
    a warning and the rollout goes on without it. The lock is released on the way out.
    ``dead`` judges a lock held from another machine: true when the rollout proved that run
    dead (it took over the run's deploy lock on the primary host), and the lock is taken over.
    """
    unseen = "the rollout goes on, but `csdeploy reap` on other machines cannot see it running"
    if config is None:
        warn(f"no cloud configured: {unseen}")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        yield done
        return
    value = lock_value()
    taken: list[str] = []
    cloud = Cloud(config, max_in_flight=4, retries=1)
    await cloud.__aenter__()

    async def acquire() -> None:
        try:
            nid, held = await network_lock(cloud, env)
            if nid is None:
                warn(f"environment '{env}' has no tagged network in the cloud: {unseen}")
                return
            proven = bool(held and not break_lock and not holder_died_here(held) and dead is not None
                          and await dead(held))
            taken_over = await take_network_lock(cloud, env, nid, held, value, break_lock or proven)
            taken.append(nid)
            if taken_over:
                warn(f"took over the environment's cloud lock from {taken_over}")
        except Locked:
            raise
        except CsdeployError as exc:
            warn(f"could not take the environment's lock in the cloud ({str(exc).splitlines()[0]}): {unseen}")

    gate = asyncio.ensure_future(acquire())
    try:
        yield gate
    finally:
        try:
            with contextlib.suppress(BaseException):  # its error was the caller's to see, or moot
                await gate
            if taken:
                await release_cloud_lock(cloud, taken[0], value)
        finally:
            await cloud.__aexit__(None, None, None)
