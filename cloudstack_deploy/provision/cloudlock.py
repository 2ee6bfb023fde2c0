"""The environment's lock in the cloud: a `csdeploy:lock` tag on its network.

The local flock (`state.py`) keeps two runs on one machine apart; this tag keeps runs on
different machines (CI runners, laptops) apart, and tells `reap` which environments are
being changed right now. The value names the holder: ``user@host pid N since TIME``.
"""

from __future__ import annotations

import getpass
import os
import socket
from datetime import UTC, datetime, timedelta

from ..cloud import Cloud, CloudError, JobFailed
from ..errors import Locked
from .actual import Actual
from .desired import TAG_LOCK, format_time, parse_time

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


async def take_cloud_lock(cloud: Cloud, actual: Actual, value: str, break_lock: bool) -> str | None:
    """Tag the network with our lock; return the lock taken over from a dead run, if any."""
    assert actual.network is not None
    nid = actual.network["id"]
    held = actual.tag(nid, TAG_LOCK)
    taken_over = None
    if held and (break_lock or holder_died_here(held)):
        taken_over = held
        await cloud.job("deleteTags", resourceids=[nid], resourcetype="Network", tags=[{"key": TAG_LOCK}])
    elif held:
        since = parse_time(held.rsplit("since ", 1)[-1]) if "since " in held else None
        stale = since is not None and datetime.now(UTC) - since > LOCK_STALE_AFTER
        raise Locked(f"environment '{actual.env}' is locked in the cloud by {held}"
                      + (" (stale: older than 2h)" if stale else ""),
                      hint="wait for that run to finish; if it died, re-run with --break-lock")
    try:
        await cloud.job("createTags", resourceids=[nid], resourcetype="Network",
                        tags=[{"key": TAG_LOCK, "value": value}])
    except JobFailed as exc:
        raise Locked(f"environment '{actual.env}' was locked by another csdeploy run just now ({exc.text})",
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
