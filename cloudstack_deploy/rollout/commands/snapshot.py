"""What `csdeploy snapshot` runs on a host to make a disk snapshot consistent.

PostgreSQL first writes its dirty pages (`CHECKPOINT`, so recovery from the snapshot replays
little WAL); then the disk's filesystem is frozen (`fsfreeze`: writes block, the on-disk state
is complete) while CloudStack takes the snapshot, and thawed right after. A frozen filesystem
must never outlive csdeploy: `freeze` leaves a watchdog on the host that thaws it after
``guard_seconds`` even if csdeploy is killed or loses the connection; `unfreeze` is safe to
run on a disk that is not frozen (a re-run does it first).
"""

from __future__ import annotations

from .script import Argv, Script, q, succeeds

#: The exit code `freeze` stops with when the mount point is not a mounted filesystem.
NOT_MOUNTED = 3


def postgres_checkpoint(container: str, user: str, database: str) -> Argv:
    """``CHECKPOINT`` in a PostgreSQL container, as its superuser over the local socket."""
    return ["docker", "exec", container, "psql", "-U", user, "-d", database, "-v", "ON_ERROR_STOP=1",
            "-qAt", "-c", "CHECKPOINT"]


def freeze(mount: str, guard_seconds: int) -> Script:
    """Flush and freeze the filesystem at ``mount``; a detached watchdog thaws it after
    ``guard_seconds`` whatever happens to the caller."""
    s = Script()
    with s.when(~succeeds(["mountpoint", "-q", mount])):
        s.fail(NOT_MOUNTED, f"{mount} is not a mounted filesystem")
    # a run killed while the disk was frozen leaves it so until its watchdog fires: thaw first
    # (sync and a second freeze would block on a frozen filesystem)
    s.run(["fsfreeze", "--unfreeze", mount], may_fail=True)
    s.run(["sync"])
    s.run(["fsfreeze", "--freeze", mount])
    watchdog = q(["sleep", str(int(guard_seconds))]) + "; " + q(["fsfreeze", "--unfreeze", mount])
    # detached from the SSH session (no open descriptors), so the session ends at once
    s.raw(q(["setsid", "sh", "-c", watchdog]) + " </dev/null >/dev/null 2>&1 &")
    return s


def unfreeze(mount: str) -> Script:
    """Thaw ``mount``; nothing to do (and no error) when it is not frozen."""
    s = Script()
    s.run(["fsfreeze", "--unfreeze", mount], may_fail=True)
    return s
