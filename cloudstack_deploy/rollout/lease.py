"""The deploy lock as a lease: its holder renews it, and a holder that stopped is seen as dead.

A deploy that is killed (SIGKILL, a cancelled CI job, a laptop closed) cannot release the lock
on the primary host. Rather than keep every later deploy out for the whole `lock_ttl`, the
running deploy renews its lease every `RENEW_EVERY` seconds over the SSH connection it already
has (`Renewal`); the next deploy, from any machine, takes over a lock whose lease has not been
renewed for `LEASE` seconds, and at once one whose holder ran on this very machine and whose
process is gone. It says so, naming the dead holder, and the history records that deploy as
interrupted. `--break-lock` remains for everything else.

What the host says is parsed and judged here (pure); the scripts are `commands/host.py`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import getpass
import json
import os
import re
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..log import get_logger
from ..progress import Progress
from .commands import host as host_cmds
from .history import DeployRecord
from .hosts import Connection

log = get_logger(__name__)

RENEW_EVERY = 10.0
"""Seconds between renewals of a held lock."""
LEASE = 45
"""Seconds without renewal after which a holder counts as dead (a few missed renewals: a
slow host or a brief network outage does not lose the lock)."""
RENEW_SLACK = 5
"""Seconds a renewal may be late (a slow SSH round trip) before it counts as missed."""
INTERRUPTED = "interrupted"
_TOKEN_RE = re.compile(r"^[0-9a-f]{8,64}$")


def machine() -> str:
    """This machine and process namespace, as a holder's owner JSON records it: two runs that
    see the same value see the same processes, so a pid recorded by one is checkable by the
    other (a container with the host's name but its own pid namespace is another machine)."""
    try:
        boot = open("/proc/sys/kernel/random/boot_id").read().strip()[:8]
        pidns = os.readlink("/proc/self/ns/pid")
    except OSError:
        boot, pidns = "?", "?"
    return f"{socket.gethostname()}/{boot}/{pidns}"


def owner(version: str, ttl: int, *, now: float) -> dict[str, Any]:
    """The owner JSON of a lock taken now by this process."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "?"
    return {"user": user, "host": socket.gethostname(), "version": version, "since": int(now), "ttl": ttl,
            "pid": os.getpid(), "machine": machine(), "lease": LEASE, "id": uuid.uuid4().hex}


@dataclass(frozen=True)
class Holder:
    """Who holds a lock, as a refused lock script printed it."""

    data: dict[str, Any]
    lease_age: int | None      # seconds since its lease was renewed, by the host's clock

    @classmethod
    def parse(cls, stdout: str) -> Holder:
        data: dict[str, Any] = {}
        age = None
        for line in stdout.splitlines():
            line = line.strip()
            if line.startswith(host_cmds.LEASE_AGE + " "):
                with contextlib.suppress(ValueError):
                    age = int(line.split()[1])
            elif line.startswith("{") and not data:
                try:
                    parsed = json.loads(line)
                except ValueError:
                    continue
                data = parsed if isinstance(parsed, dict) else {}
        return cls(data, age)

    @property
    def who(self) -> str:
        d = self.data
        return f"{d.get('user', '?')}@{d.get('host', '?')} deploying {d.get('version', '?')}"

    @property
    def token(self) -> str | None:
        token = self.data.get("id")
        return token if isinstance(token, str) and _TOKEN_RE.fullmatch(token) else None


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # another user's process, or cannot tell: assume alive
    return True


def why_dead(holder: Holder, *, here: str | None = None,
             alive: Callable[[int], bool] = _pid_alive) -> str | None:
    """Why ``holder`` is dead (its process is gone from this machine, or its lease expired),
    or None if it may be alive. A holder from a csdeploy without leases (no id) is never
    judged here: its lock's `ttl` and `--break-lock` apply as before."""
    if holder.token is None:
        return None
    d = holder.data
    pid = d.get("pid")
    if isinstance(pid, int) and pid > 0 and d.get("machine") == (here if here is not None else machine()) \
            and not alive(pid):
        return f"its process {pid} on {d.get('host', '?')} is gone"
    lease = d.get("lease")
    if isinstance(lease, int) and holder.lease_age is not None and holder.lease_age > lease:
        return f"its lease was last renewed {holder.lease_age} s ago (it renews every few seconds)"
    return None


def next_look(holder: Holder, *, probed: bool) -> float | None:
    """Seconds to wait before looking at a refused lock again, or None to give up (refuse).

    A live holder renews every RENEW_EVERY seconds. A lease renewed within that (plus slack)
    is looked at once more just after its next renewal was due (``probed`` after that): if
    it was renewed, the holder lives and the deploy is refused; if not, the deploy waits for
    the lease to run out and takes the lock over. A deploy started just after one was killed
    thus proceeds within a minute, and one started beside a live deploy is refused within
    RENEW_EVERY seconds. Holders without a lease (an older csdeploy) are not waited for.
    """
    lease = holder.data.get("lease")
    if holder.token is None or not isinstance(lease, int) or holder.lease_age is None:
        return None
    due = RENEW_EVERY + RENEW_SLACK
    if holder.lease_age <= due:
        return None if probed else float(due - holder.lease_age + 1)
    return float(max(lease - holder.lease_age + 1, 1))


def interrupted_record(holder: Holder, reason: str, by: str) -> DeployRecord:
    """The history record of the deploy that died holding the lock."""
    d = holder.data
    since = d.get("since")
    at = datetime.fromtimestamp(since, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if isinstance(since, int) else "?"
    version = str(d.get("version", "?"))
    kind = "deploy"
    if version.startswith("accessory-"):
        kind = "accessory"
    return DeployRecord(version=version, kind=kind, by=str(d.get("user", "?")), at=at, status=INTERRUPTED,
                        error=f"stopped while holding the deploy lock ({reason}); its lock was taken over "
                              f"by {by}")


class TakeOvers:
    """The holders whose deploy lock this command took over, for the environment's cloud lock:
    a cloud lock held by the same dead run (same user, host and pid) is taken over too, from
    any machine, instead of refusing the deploy that already proved its holder dead."""

    def __init__(self) -> None:
        self.holders: list[Holder] = []
        self._settled = asyncio.Event()

    def settle(self, taken: Holder | None = None) -> None:
        """The deploy lock is decided (taken, refused, or never tried)."""
        if taken is not None:
            self.holders.append(taken)
        self._settled.set()

    async def dead(self, held: str, wait: float = 600.0) -> bool:
        """Whether the cloud lock value ``held`` (``user@host pid N since T``) names a run whose
        deploy lock was taken over; waits until the deploy lock is decided."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._settled.wait(), wait)
        return any(held.startswith(f"{h.data.get('user')}@{h.data.get('host')} pid {h.data.get('pid')} ")
                   for h in self.holders if isinstance(h.data.get("pid"), int))


#: The current command's take-overs (set around a rollout by `service`; None elsewhere).
TAKE_OVERS: contextvars.ContextVar[TakeOvers | None] = contextvars.ContextVar("csdeploy_take_overs", default=None)


class Renewal:
    """Renew a held lock every RENEW_EVERY seconds on the primary's connection, until stopped."""

    def __init__(self, conn: Connection, service: str, token: str, progress: Progress,
                 every: float | None = None) -> None:
        self._conn, self._service, self._token, self._progress = conn, service, token, progress
        self._every = every if every is not None else RENEW_EVERY
        self._task: asyncio.Task[None] | None = None
        self.lost: str | None = None   # who took the lock over, if someone did

    def start(self) -> Renewal:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="csdeploy-lock-renewal")
        return self

    async def _loop(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self._every)
            try:
                res = await self._conn.run(host_cmds.renew(self._service, self._token), check=False,
                                           timeout=max(self._every * 2, 10), what="renew the deploy lock")
            except Exception as exc:  # a slow or lost connection: keep trying, say it once
                if not failing:
                    self._progress.note(f"could not renew the deploy lock on {self._conn.host.name}: {exc}",
                                        level="warning")
                failing = True
                continue
            failing = False
            if res.exit_status == host_cmds.LOST_EXIT:
                self.lost = Holder.parse(res.stdout).who
                self._progress.note(f"the deploy lock on {self._conn.host.name} was taken over by {self.lost}: "
                                    "this deploy no longer holds it", level="warning")
                return
            if res.exit_status != 0:
                log.info("lock renewal failed", host=self._conn.host.name, exit=res.exit_status)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task

