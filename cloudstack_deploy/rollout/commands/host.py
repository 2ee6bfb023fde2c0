"""Files csdeploy keeps on a host and the checks it makes there (not Docker's).

Everything lives under ``~/.csdeploy/<service>`` of the deploy user: env files (0600), the
deploy lock (a directory: ``mkdir`` is atomic), the deploy history (JSON lines) and, on the
primary host, a paused canary (``canary.json``: what `deploy --promote`/`--abort` finish).
"""

from __future__ import annotations

from collections.abc import Sequence

from ...inventory import DISK_UNIT
from .script import Script, succeeds

LOCK_EXIT = 75          # EX_TEMPFAIL: the deploy lock is held by someone else
DISK_EXIT = 68          # a data disk is not mounted
CANARY_EXIT = 76        # a canary is paused: only --promote or --abort may run
NO_CANARY_EXIT = 77     # --promote/--abort, but no canary is paused

#: What the deploy lock says about a paused canary: refuse to run while one is paused,
#: require one (promote, abort), or not look (accessory reboots).
CANARY_REFUSE, CANARY_REQUIRE, CANARY_IGNORE = "refuse", "require", "ignore"


def base_dir(service: str) -> str:
    return f".csdeploy/{service}"


def env_dir(service: str) -> str:
    return f"{base_dir(service)}/env"


def env_file(service: str, name: str) -> str:
    return f"{env_dir(service)}/{name}.env"


def lock_dir(service: str) -> str:
    return f"{base_dir(service)}/lock"


def history_file(service: str) -> str:
    return f"{base_dir(service)}/history.jsonl"


def ensure_dirs(service: str) -> Script:
    return make_dirs([env_dir(service)])


def make_dirs(paths: Sequence[str]) -> Script:
    s = Script()
    for path in paths:
        s.run(["mkdir", "-p", path])
    return s


def require_mounts(disks: Sequence[tuple[str, str]]) -> Script:
    """Every (label, mount point) mounted, else one retry of the disk unit, else stop.

    Accessories keep their data there: never write into the root disk's empty directory.
    """
    s = Script()
    for label, mount in disks:
        s.step(f"disk {label}")
        mounted = succeeds(["mountpoint", "-q", mount])
        with s.when(~mounted):
            s.run(["systemctl", "restart", DISK_UNIT], may_fail=True)
        with s.when(~mounted):
            s.fail(DISK_EXIT, f"data disk {label} is not mounted at {mount}: is the volume attached? "
                              f"(journalctl -u {DISK_UNIT})")
    return s


def canary_file(service: str) -> str:
    return f"{base_dir(service)}/canary.json"


def lock(service: str, owner_json: str, *, break_lock: bool, canary: str = CANARY_REFUSE) -> Script:
    """Take the deploy lock (atomic ``mkdir``); when held, print the holder and exit LOCK_EXIT.

    With the lock taken, ``canary`` checks the paused canary: ``refuse`` prints it and exits
    CANARY_EXIT when there is one, ``require`` exits NO_CANARY_EXIT when there is none; both
    release the lock first.
    """
    path = lock_dir(service)
    s = Script().run(["mkdir", "-p", base_dir(service)])
    if break_lock:
        s.run(["rm", "-rf", path])
    with s.when(succeeds(["mkdir", path])):
        s.write_file(f"{path}/owner.json", owner_json)
    with s.otherwise():
        s.run(["cat", f"{path}/owner.json"], may_fail=True)
        s.exit(LOCK_EXIT)
    paused = succeeds(["test", "-f", canary_file(service)])
    if canary == CANARY_REFUSE:
        with s.when(paused):
            s.run(["cat", canary_file(service)])
            s.run(["rm", "-rf", path])
            s.exit(CANARY_EXIT)
    elif canary == CANARY_REQUIRE:
        with s.when(~paused):
            s.run(["rm", "-rf", path])
            s.exit(NO_CANARY_EXIT)
    return s


def unlock(service: str, record_json: str | None, *, canary_json: str | None = None,
           canary_done: bool = False) -> Script:
    """Append the deploy record (one JSON line) to the history, then release the lock.
    ``canary_json``: a canary is now paused (written first); ``canary_done``: it was
    promoted or aborted (its file goes)."""
    s = Script().run(["mkdir", "-p", base_dir(service)])
    if canary_json is not None:
        s.write_file(canary_file(service), canary_json)
    if canary_done:
        s.run(["rm", "-f", canary_file(service)])
    if record_json is not None:
        s.append_line(history_file(service), record_json)
    return s.run(["rm", "-rf", lock_dir(service)])


def read_canary(service: str) -> Script:
    """The paused canary's JSON (nothing when none is paused)."""
    return Script().run(["cat", canary_file(service)], may_fail=True)


def read_history(service: str) -> Script:
    return Script().run(["cat", history_file(service)], may_fail=True)
