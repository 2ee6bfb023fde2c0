"""What `csdeploy backup` and `restore` run on an accessory's host: every word of it.

A dump is streamed: the dump tool writes to its standard output inside the container and the
bytes go over SSH straight to csdeploy (`docker exec` without a terminal), so nothing of it
is written on the host. A restore is the reverse: the bytes arrive on the standard input of
`docker exec -i`. PostgreSQL's custom format (`pg_dump -Fc`) and Redis' RDB (`redis-cli
--rdb -`, Redis 7 and later) are the two kinds csdeploy knows.
"""

from __future__ import annotations

from .script import Argv, Script, q

#: Where a Redis RDB is put in the container's data directory before Redis is restarted on it.
REDIS_INCOMING = "csdeploy-restore.rdb"


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


def redis_rdb(container: str) -> Argv:
    """A point-in-time RDB snapshot of the Redis in ``container`` on stdout (Redis 7+)."""
    return ["docker", "exec", container, "redis-cli", "--rdb", "-"]


def redis_receive(container: str, data_dir: str) -> Argv:
    """Stores an RDB read from stdin next to Redis' data, under a name Redis does not load."""
    return ["docker", "exec", "-i", container, "sh", "-c", "cat > " + q([f"{data_dir}/{REDIS_INCOMING}"])]


def redis_load(container: str, data_dir: str) -> Script:
    """Make Redis serve the received RDB: refused when Redis keeps an append-only file (it
    would load that instead); else the RDB takes the data file's name, Redis stops without
    saving (keeping it) and its container is started again on it."""
    s = Script()
    incoming = f"{data_dir}/{REDIS_INCOMING}"
    s.raw("aof=$(" + q(["docker", "exec", container, "redis-cli", "CONFIG", "GET", "appendonly"]) + " | tail -n 1)")
    s.raw('if [ "$aof" = yes ]; then echo "Redis keeps an append-only file (appendonly yes): '
          'an RDB restore would be ignored" >&2; '
          + q(["docker", "exec", container, "rm", "-f", incoming]) + "; exit 4; fi")
    s.raw("name=$(" + q(["docker", "exec", container, "redis-cli", "CONFIG", "GET", "dbfilename"]) + " | tail -n 1)")
    s.raw(q(["docker", "exec", container, "sh", "-c", 'mv "$1" "$2/$3"', "sh", incoming, data_dir]) + ' "$name"')
    s.raw(q(["docker", "exec", container, "redis-cli", "SHUTDOWN", "NOSAVE"]) + " >/dev/null 2>&1 || true")
    s.raw(q(["docker", "start", container]) + " >/dev/null")
    s.raw("i=0; until " + q(["docker", "exec", container, "redis-cli", "PING"])
          + " >/dev/null 2>&1; do i=$((i+1)); [ $i -gt 60 ] && { echo 'Redis did not come back' >&2; exit 5; }; "
          "sleep 1; done")
    return s
