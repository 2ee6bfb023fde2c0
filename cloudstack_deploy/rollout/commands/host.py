"""Files csdeploy keeps on a host and the checks it makes there (not Docker's).

Everything lives under ``~/.csdeploy/<service>`` of the deploy user: env files (0600), the
deploy lock (a directory: ``mkdir`` is atomic), the deploy history (JSON lines) and, on the
primary host, a paused canary (``canary.json``: what `deploy --promote`/`--abort` finish),
and work handed to the host to finish after a command returned (``finishing/*.sh``, run one
at a time under ``finishing.lock``: stopping old containers after a good rollout).
"""

from __future__ import annotations

from collections.abc import Sequence

from ...inventory import DISK_UNIT
from .script import Script, Var, empty, nonempty, q, succeeds

LOCK_EXIT = 75          # EX_TEMPFAIL: the deploy lock is held by someone else
DISK_EXIT = 68          # a data disk is not mounted
CANARY_EXIT = 76        # a canary is paused: only --promote or --abort may run
NO_CANARY_EXIT = 77     # --promote/--abort, but no canary is paused
LOST_EXIT = 78          # the deploy lock is no longer ours: another run took it over

#: The line after a refused lock's owner JSON: seconds since its lease was last renewed,
#: measured by the host's own clock (so clock skew between machines does not matter).
LEASE_AGE = "lease-age"

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


def started_file(service: str, container: str) -> str:
    """Where a worker's start time waits for the exec that judges its readiness (`docker.note_start`)."""
    return f"{base_dir(service)}/{container}.started"


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


def lock_owner_file(service: str) -> str:
    return f"{lock_dir(service)}/owner.json"


def lock_renewed_file(service: str) -> str:
    return f"{lock_dir(service)}/renewed"


def holds(token: str) -> str:
    """A `grep -F` pattern that matches the owner JSON of the holder whose id is ``token``."""
    return f'"id": "{token}"'


def lock(service: str, owner_json: str, *, break_lock: bool, canary: str = CANARY_REFUSE,
         take_over: str | None = None) -> Script:
    """Take the deploy lock (atomic ``mkdir``); when held, print the holder and exit LOCK_EXIT.

    The lock is a lease: its holder touches ``renewed`` every few seconds (`renew`). A refused
    lock prints the owner JSON, then ``lease-age N``: seconds since the lease was last renewed
    (or since the lock was written, for a holder that never renewed). ``take_over`` is the id of
    a holder the caller found dead: the lock is taken from that holder, and from no one else,
    by one run only (an atomic ``mkdir`` of ``taken-<id>`` inside the lock). With the lock
    taken, ``canary`` checks the paused canary: ``refuse`` prints it and exits CANARY_EXIT when
    there is one, ``require`` exits NO_CANARY_EXIT when there is none; both release the lock.
    """
    path = lock_dir(service)
    owner, renewed = lock_owner_file(service), lock_renewed_file(service)
    s = Script().run(["mkdir", "-p", base_dir(service)])
    if break_lock:
        s.run(["rm", "-rf", path])
    with s.when(succeeds(["mkdir", path])):
        s.write_file(owner, owner_json)
        s.run(["touch", renewed])
    with s.otherwise():
        if take_over is None:
            _refuse(s, service)
        else:
            with s.when(succeeds(["grep", "-qF", "-e", holds(take_over), owner])
                        & succeeds(["mkdir", f"{path}/taken-{take_over}"])):
                s.write_file(owner, owner_json)
                s.run(["touch", renewed])
            with s.otherwise():
                _refuse(s, service)
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


def _refuse(s: Script, service: str) -> None:
    """Print the holder and how long ago its lease was renewed, then exit LOCK_EXIT."""
    print_holder(s, service)
    s.exit(LOCK_EXIT)


def print_holder(s: Script, service: str) -> None:
    """Print the lock's owner JSON, then ``lease-age N``: seconds since its lease was renewed."""
    now, seen = Var("lock_now"), Var("lock_seen")
    s.run(["cat", lock_owner_file(service)], may_fail=True)
    s.emit("")  # the owner file may lack its last newline
    s.capture(now, ["date", "+%s"])
    s.capture(seen, ["stat", "-c", "%Y", lock_renewed_file(service)])
    with s.when(empty(seen)):
        s.capture(seen, ["stat", "-c", "%Y", lock_owner_file(service)])
    with s.when(empty(seen)):  # the holder died between mkdir and writing its owner file
        s.capture(seen, ["stat", "-c", "%Y", lock_dir(service)])
    with s.when(nonempty(now) & nonempty(seen)):
        s.raw(f"printf '{LEASE_AGE} %s\\n' \"$((lock_now - lock_seen))\"")


def renew(service: str, token: str) -> Script:
    """Renew the lease of the lock held by ``token``; exit LOST_EXIT if it is not held by it
    (another run took it over, or someone broke it)."""
    s = Script()
    with s.when(succeeds(["grep", "-qF", "-e", holds(token), lock_owner_file(service)])):
        s.run(["touch", lock_renewed_file(service)])
    with s.otherwise():
        s.run(["cat", lock_owner_file(service)], may_fail=True)
        s.exit(LOST_EXIT)
    return s


def record_interrupted(service: str, record_json: str) -> Script:
    """Append the record of a deploy that died holding the lock to the history."""
    return Script().run(["mkdir", "-p", base_dir(service)]).append_line(history_file(service), record_json)


def unlock(service: str, record_json: str | None, *, canary_json: str | None = None,
           canary_done: bool = False, token: str | None = None) -> Script:
    """Append the deploy record (one JSON line) to the history, then release the lock.
    ``canary_json``: a canary is now paused (written first); ``canary_done``: it was
    promoted or aborted (its file goes). With ``token``, the lock is released only if that
    holder still has it (a run taken over as dead must not release its successor's lock)."""
    s = Script().run(["mkdir", "-p", base_dir(service)])
    if canary_json is not None:
        s.write_file(canary_file(service), canary_json)
    if canary_done:
        s.run(["rm", "-f", canary_file(service)])
    if record_json is not None:
        s.append_line(history_file(service), record_json)
    if token is None:
        return s.run(["rm", "-rf", lock_dir(service)])
    with s.when(succeeds(["grep", "-qF", "-e", holds(token), lock_owner_file(service)])
                | ~succeeds(["test", "-e", lock_owner_file(service)])):
        s.run(["rm", "-rf", lock_dir(service)])
    return s


def read_canary(service: str) -> Script:
    """The paused canary's JSON (nothing when none is paused)."""
    return Script().run(["cat", canary_file(service)], may_fail=True)


def read_history(service: str) -> Script:
    return Script().run(["cat", history_file(service)], may_fail=True)


# ---- work the host finishes after the command returned ------------------------------------

#: How long the next command waits for the host to finish what an earlier one handed it.
FINISH_WAIT = 120


def finishing_dir(service: str) -> str:
    return f"{base_dir(service)}/finishing"


def finishing_lock(service: str) -> str:
    return f"{base_dir(service)}/finishing.lock"


def finish_later(service: str, name: str, work: Script) -> Script:
    """Hand ``work`` to the host: written to ``finishing/NAME.sh`` and started detached (its own
    session, none of this one's descriptors), so the SSH session ends at once while the host
    finishes it. The file removes itself when the work succeeded; until then `finish_left`
    (the next command's facts, `status`) waits for it, or runs it again when it never ended
    (the host rebooted, the work failed). One at a time on a host, under ``finishing.lock``."""
    path = f"{finishing_dir(service)}/{name}.sh"
    job = Script().extend(work).run(["rm", "-f", path])
    s = make_dirs([finishing_dir(service)])
    s.write_file(path, job.text(), mode="600")
    s.raw(q(["setsid", "flock", finishing_lock(service), "sh", path]) + " </dev/null >/dev/null 2>&1 &")
    return s


def finish_left(service: str, wait: int = FINISH_WAIT) -> Script:
    """Finish what an earlier command handed the host (`finish_later`): wait for the job still
    running (at most ``wait`` s), run again a file whose job never ended. Prints nothing;
    never fails (what cannot be finished now is tried again by the next command)."""
    s = Script()
    left, job = Var("left"), Var("job")
    s.capture(left, ["find", finishing_dir(service), "-maxdepth", "1", "-type", "f", "-name", "*.sh"])
    with s.each_word(job, left):
        s.run(["flock", "-w", str(int(wait)), finishing_lock(service), "sh", "-c", '[ ! -f "$1" ] || sh "$1"',
               "sh", job], quiet=True, may_fail=True)
    return s
