"""What `csdeploy backup` and `restore` run on an accessory's host: every word of it.

A dump is streamed: the dump tool writes to its standard output inside the container and the
bytes go over SSH straight to csdeploy (`docker exec` without a terminal), so nothing of it
is written on the host. A restore is the reverse: the bytes arrive on the standard input of
`docker exec -i`. PostgreSQL's custom format (`pg_dump -Fc`) and Redis' RDB (`redis-cli
--rdb -`, Redis 7 and later) are the two kinds csdeploy knows.
"""

from __future__ import annotations

from .script import Argv, Cond, Script, q

#: Where a Redis RDB is put in the container's data directory before Redis is restarted on it.
REDIS_INCOMING = "csdeploy-restore.rdb"
#: The exit code of `redis_check` for a file Redis' checker refuses.
NOT_AN_RDB = 3


def pg_dump(container: str, user: str, database: str) -> Argv:
    """The database in PostgreSQL's custom format (compressed, restorable table by table) on stdout."""
    return ["docker", "exec", container, "pg_dump", "--format=custom", "-U", user, "-d", database]


def pg_restore_list(container: str) -> Argv:
    """Reads a dump from stdin and lists its contents: fails (changing nothing) on anything
    that is not a custom-format dump."""
    return ["docker", "exec", "-i", container, "pg_restore", "--list"]


def pg_restore(container: str, user: str, database: str) -> Argv:
    """Restores a custom-format dump from stdin: objects it holds are dropped first (if they
    exist) and made again; ownership is the restoring user's. One transaction, so a failure
    leaves the database as it was."""
    return ["docker", "exec", "-i", container, "pg_restore", "--clean", "--if-exists", "--no-owner",
            "--single-transaction", "--exit-on-error", "-U", user, "-d", database]


def redis_cli(container: str, *args: str, auth: str | None = None) -> Argv:
    """``redis-cli ARGS`` in ``container``. ``auth``: the container's variable holding Redis'
    password (`requirepass`): redis-cli reads it from REDISCLI_AUTH, set inside the container
    from that variable, so the password is never a word of any command line."""
    if auth is None:
        return ["docker", "exec", container, "redis-cli", *args]
    if not auth.replace("_", "").isalnum() or not auth[0].isalpha():
        raise ValueError(f"{auth!r} is not a variable name")
    return ["docker", "exec", container, "sh", "-c", f'REDISCLI_AUTH="${auth}" exec redis-cli "$@"', "sh", *args]


def redis_rdb(container: str, *, auth: str | None = None) -> Argv:
    """A point-in-time RDB snapshot of the Redis in ``container`` on stdout (Redis 7+)."""
    return redis_cli(container, "--rdb", "-", auth=auth)


def redis_dir(container: str, *, auth: str | None = None) -> Argv:
    """Redis' data directory as Redis itself has it (a user's ``--dir`` honoured): the last line."""
    return redis_cli(container, "CONFIG", "GET", "dir", auth=auth)


def redis_receive(container: str, data_dir: str) -> Argv:
    """Stores an RDB read from stdin next to Redis' data, under a name Redis does not load."""
    return ["docker", "exec", "-i", container, "sh", "-c", 'cat > "$1"', "sh", f"{data_dir}/{REDIS_INCOMING}"]


def redis_check(container: str, data_dir: str) -> Script:
    """Redis' own checker reads the whole received RDB (a damaged file, or one of a newer RDB
    version than this Redis loads, is refused here, before anything changes); a refused file
    is removed. Exits NOT_AN_RDB then, with the checker's last words on stderr."""
    s = Script()
    incoming = f"{data_dir}/{REDIS_INCOMING}"
    s.raw("out=$(" + q(["docker", "exec", container, "redis-check-rdb", incoming]) + " 2>&1) || {")
    s.raw("  " + q(["docker", "exec", container, "rm", "-f", incoming]) + " || true")
    # the checker's reason is the line after its error marker ("[offset 96] Unexpected EOF ...")
    s.raw("  { printf '%s\\n' \"$out\" | grep -A 1 'RDB ERROR DETECTED' || printf '%s\\n' \"$out\"; } "
          "| tail -n 1 >&2; exit " + str(NOT_AN_RDB) + "; }")
    return s


def redis_discard(container: str, data_dir: str) -> Argv:
    """Remove a received RDB that will not be loaded."""
    return ["docker", "exec", container, "rm", "-f", f"{data_dir}/{REDIS_INCOMING}"]


def restore_container(container: str) -> str:
    """The short-lived container `redis_load` loads the RDB in (no network, the volumes of ``container``)."""
    return f"{container}-csdeploy-restore"


def _wait_pong(name: str, seconds: int, what: str, auth: str | None = None) -> str:
    """A shell line: wait until Redis in ``name`` answers PONG (it answers LOADING while it reads
    its files); fail() when ``name`` stops or after ``seconds``."""
    ping = q(redis_cli(name, "PING", auth=auth))
    running = q(["docker", "inspect", "--format", "{{.State.Running}}", name])
    return (f"i=0; until [ \"$({ping} 2>/dev/null)\" = PONG ]; do i=$((i+1)); "
            f"[ \"$({running} 2>/dev/null)\" = true ] || fail {q([what + ' stopped'])}; "
            f"[ $i -gt {int(seconds * 2)} ] && fail {q([what + f' did not answer within {seconds} s'])}; "
            "sleep 0.5; done")


def redis_load(container: str, data_dir: str, *, server: str = "redis-server", wait_seconds: int = 300,
               auth: str | None = None) -> Script:
    """Make Redis serve the received RDB, as Redis' documentation has it: the server stopped,
    the RDB in place of its data file, started again; with an append-only file (Redis loads
    that and ignores the RDB: redis/redis#12098, #12506) the AOF is rewritten from the RDB.

    The container is stopped with `docker stop` (not ``SHUTDOWN NOSAVE``, after which a restart
    policy would start it at once on the old files): Redis saves what it has and nothing
    writes its files any more. A short-lived container of the same image, with no network and
    the stopped one's volumes, then runs Redis on the received file with ``--appendonly no``
    (so it loads the RDB); when the accessory keeps an AOF, ``CONFIG SET appendonly yes`` makes
    it write a new AOF from that data (a rewrite; the old AOF's files are then deleted by Redis);
    the file takes the data file's name and the accessory's container is started again and
    must answer PONG. A failure before that point starts the accessory again on its old files.
    ``server``: the command the image's entrypoint knows as the server (``valkey-server`` for
    Valkey's image, whose entrypoint drops root only for that name; its redis-* names are links).
    ``auth``: as `redis_cli`'s, for the accessory's own Redis (the loading one has no password)."""
    s = Script()
    temp = restore_container(container)
    incoming = f"{data_dir}/{REDIS_INCOMING}"

    def conf(var: str, name: str) -> None:
        s.raw(f"{var}=$(" + q(redis_cli(container, "CONFIG", "GET", name, auth=auth)) + " | tail -n 1)")

    conf("name", "dbfilename")
    conf("aof", "appendonly")
    conf("aofname", "appendfilename")
    conf("aofdir", "appenddirname")  # Redis 7's multi-part AOF directory; empty before 7
    s.raw("image=$(" + q(["docker", "inspect", "--format", "{{.Image}}", container]) + ")")
    s.raw('[ -n "$name" ] && [ -n "$image" ] || { echo "could not read Redis\' settings in '
          + container + '" >&2; exit 4; }')
    s.raw("fail() { printf '%s\\n' \"$1\" >&2; "
          + q(["docker", "logs", "--tail", "5", temp]) + " >&2 2>&1 || true; "
          + q(["docker", "rm", "-f", temp]) + " >/dev/null 2>&1 || true; "
          + q(["docker", "start", container]) + " >/dev/null 2>&1 || true; exit 5; }")
    s.run(["docker", "rm", "-f", temp], quiet=True, may_fail=True)  # left by a killed run
    s.step("stop")
    s.run(["docker", "stop", container], quiet=True)
    s.step("load")
    s.raw("set -- " + q([server]) + " --dir " + q([data_dir]) + " --dbfilename " + q([REDIS_INCOMING])
          + " --appendonly no --save '' --appendfilename \"$aofname\"")
    s.raw('[ -z "$aofdir" ] || set -- "$@" --appenddirname "$aofdir"')
    s.raw(q(["docker", "run", "--detach", "--name", temp, "--network", "none", "--volumes-from", container])
          + ' "$image" "$@" >/dev/null || fail "could not start Redis on the backup"')
    s.raw(_wait_pong(temp, wait_seconds, "Redis loading the backup"))
    # the file must be what that Redis loaded: a data directory outside the container's volumes
    # is not shared with it (it would start empty, and rewrite the AOF empty)
    s.raw(q(["docker", "exec", temp, "test", "-s", incoming])
          + " || fail 'the loading container does not see the backup: Redis keeps its data outside a volume'")
    with s.when(Cond('[ "$aof" = yes ]')):
        s.step("aof-rewrite")
        s.raw(q(["docker", "exec", temp, "redis-cli", "CONFIG", "SET", "appendonly", "yes"])
              + " >/dev/null || fail 'could not turn the append-only file on'")
        info = q(["docker", "exec", temp, "redis-cli", "INFO", "persistence"])
        s.raw(f"i=0; while info=$({info} | tr -d '\\r'); "
              "printf '%s\\n' \"$info\" | grep -q -e '^aof_rewrite_in_progress:1' -e '^aof_rewrite_scheduled:1'; "
              f"do i=$((i+1)); [ $i -gt {int(wait_seconds * 2)} ] && fail 'the append-only file was not rewritten "
              f"within {wait_seconds} s'; sleep 0.5; done")
        s.raw("printf '%s\\n' \"$info\" | grep -q '^aof_last_bgrewrite_status:ok' "
              "|| fail 'Redis could not rewrite its append-only file from the backup'")
    s.raw(q(["docker", "exec", temp, "sh", "-c", 'mv "$1" "$2/$3"', "sh", incoming, data_dir]) + ' "$name"'
          + " || fail 'could not put the backup in place of the data file'")
    s.run(["docker", "stop", temp], quiet=True, may_fail=True)
    s.run(["docker", "rm", "-f", temp], quiet=True)
    s.step("start")
    s.run(["docker", "start", container], quiet=True)
    s.raw("fail() { printf '%s\\n' \"$1\" >&2; exit 5; }")
    s.raw(_wait_pong(container, wait_seconds, "Redis", auth))
    return s
