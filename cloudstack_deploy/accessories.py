"""Accessory kinds: what csdeploy knows about well-known database, cache, search, queue and
storage images, shared by the importers (an accessory's port, where its data lives, the
variables its image needs) and the rollout (the variables it gives apps for an accessory of
that kind).

A kind is recognised by the image's family, not one exact name: `postgres`, `pgvector/pgvector`,
`postgis/postgis`, `timescale/timescaledb`, `bitnami/postgresql` and `ghcr.io/x/postgres` are
all PostgreSQL. Each kind's env contract is the official image's own (its docker-entrypoint):

- PostgreSQL needs POSTGRES_PASSWORD unless POSTGRES_PASSWORD_FILE is given or
  POSTGRES_HOST_AUTH_METHOD is `trust`; the rollout hands apps POSTGRES_* and DATABASE_URL.
- MySQL needs one of MYSQL_ROOT_PASSWORD(_FILE), MYSQL_ALLOW_EMPTY_PASSWORD,
  MYSQL_RANDOM_ROOT_PASSWORD. MariaDB takes the MARIADB_* names and the MYSQL_* ones as
  their aliases: one root password, never a second one under the other name.
- MongoDB, RabbitMQ and MinIO take a user and a password together (both or neither).
- Every `NAME_FILE` variable excludes `NAME` (the entrypoints refuse both).
- Redis/Valkey (and KeyDB, Dragonfly, Redis Stack) serve REDIS_URL to apps; memcached keeps
  nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import images

if TYPE_CHECKING:
    from .blueprint_schema import Accessory


@dataclass(frozen=True)
class Kind:
    name: str
    port: int
    data: str | None
    """The data directory inside the container (None: nothing worth a disk)."""
    disk_gb: int
    always_disk: bool
    """Databases always get a disk; caches only when the source gave them a volume."""
    secret: tuple[str, ...] = ()
    """The variable that holds the image's root/admin password when none is given."""
    provides: tuple[str, ...] = ()
    """Variables the rollout gives apps for an accessory of this kind (the app's own are dropped)."""
    pair: tuple[str, str] | None = None
    """(user, password) variables the image takes together or not at all."""
    enough: tuple[str, ...] = ()
    """Variables any one of which satisfies the image's password rule (the secret is then not added)."""


KINDS = {k.name: k for k in (
    Kind("postgres", 5432, "/var/lib/postgresql/data", 10, True, ("POSTGRES_PASSWORD",),
         ("DATABASE_URL", "POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_DB", "POSTGRES_USER", "POSTGRES_PASSWORD"),
         enough=("POSTGRES_PASSWORD", "POSTGRES_PASSWORD_FILE")),
    Kind("mysql", 3306, "/var/lib/mysql", 10, True, ("MYSQL_ROOT_PASSWORD",),
         enough=("MYSQL_ROOT_PASSWORD", "MYSQL_ROOT_PASSWORD_FILE", "MYSQL_ALLOW_EMPTY_PASSWORD",
                 "MYSQL_RANDOM_ROOT_PASSWORD")),
    Kind("mariadb", 3306, "/var/lib/mysql", 10, True, ("MARIADB_ROOT_PASSWORD",),
         enough=("MARIADB_ROOT_PASSWORD", "MARIADB_ROOT_PASSWORD_FILE", "MYSQL_ROOT_PASSWORD",
                 "MYSQL_ROOT_PASSWORD_FILE", "MARIADB_ALLOW_EMPTY_ROOT_PASSWORD", "MYSQL_ALLOW_EMPTY_PASSWORD",
                 "MARIADB_RANDOM_ROOT_PASSWORD", "MYSQL_RANDOM_ROOT_PASSWORD")),
    Kind("redis", 6379, "/data", 5, False, (), ("REDIS_URL",)),
    Kind("valkey", 6379, "/data", 5, False, (), ("REDIS_URL",)),
    Kind("memcached", 11211, None, 0, False),
    Kind("mongo", 27017, "/data/db", 10, True, pair=("MONGO_INITDB_ROOT_USERNAME", "MONGO_INITDB_ROOT_PASSWORD")),
    Kind("elasticsearch", 9200, "/usr/share/elasticsearch/data", 10, True),
    Kind("opensearch", 9200, "/usr/share/opensearch/data", 10, True),
    Kind("rabbitmq", 5672, "/var/lib/rabbitmq", 5, True, pair=("RABBITMQ_DEFAULT_USER", "RABBITMQ_DEFAULT_PASS")),
    Kind("minio", 9000, "/data", 10, True, pair=("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD")),
    Kind("clickhouse", 8123, "/var/lib/clickhouse", 10, True),
)}

# The image's last path part (without tag) -> its kind. Variants keep their upstream's entrypoint
# and variables (pgvector, PostGIS, TimescaleDB build on the postgres image; Redis Stack, redismod,
# KeyDB and Dragonfly speak Redis' protocol).
FAMILIES = {
    "postgres": "postgres", "postgresql": "postgres", "postgis": "postgres", "pgvector": "postgres",
    "timescaledb": "postgres", "timescaledb-ha": "postgres", "timescaledb-postgis": "postgres",
    "postgresql-repmgr": "postgres",
    "mysql": "mysql", "mysql-server": "mysql", "percona-server": "mysql",
    "mariadb": "mariadb",
    "redis": "redis", "redis-stack": "redis", "redis-stack-server": "redis", "redismod": "redis",
    "keydb": "redis", "dragonfly": "redis",
    "valkey": "valkey",
    "memcached": "memcached",
    "mongo": "mongo", "mongodb": "mongo", "mongodb-community-server": "mongo",
    "elasticsearch": "elasticsearch", "opensearch": "opensearch",
    "rabbitmq": "rabbitmq",
    "minio": "minio",
    "clickhouse-server": "clickhouse",
}
# Bitnami's images keep their data under /bitnami and take their own variable names.
_BITNAMI_DATA = {"postgres": "/bitnami/postgresql", "mysql": "/bitnami/mysql", "mariadb": "/bitnami/mariadb",
                 "redis": "/bitnami/redis/data", "valkey": "/bitnami/valkey/data", "mongo": "/bitnami/mongodb",
                 "rabbitmq": "/bitnami/rabbitmq/mnesia", "minio": "/bitnami/minio/data",
                 "elasticsearch": "/bitnami/elasticsearch/data", "opensearch": "/bitnami/opensearch/data"}


def image_base(image: str) -> str:
    """The repository's last path part without tag: ``registry.lab:5000/postgres:15`` -> ``postgres``."""
    try:
        return images.base_name(image)
    except ValueError:
        return image.rsplit("/", 1)[-1].split("@", 1)[0].split(":", 1)[0]


def kind_of(image: str) -> Kind | None:
    """The kind of an accessory image, by its family (None: unknown)."""
    name = FAMILIES.get(image_base(image))
    if name is None:
        return None
    kind = KINDS[name]
    if _is_bitnami(image) and name in _BITNAMI_DATA:
        from dataclasses import replace

        return replace(kind, data=_BITNAMI_DATA[name], secret=(), enough=(), pair=None)
    return kind


def unkept_data(image: str, volumes: tuple[str, ...] | list[str]) -> str | None:
    """The data directory of a known accessory image that none of ``volumes`` (``SRC:DST[:ro]``)
    holds, or None. Such data lives in the container's anonymous volume and is lost whenever the
    container is created again (`accessory upgrade`, `remove` then `start`, a changed setting)."""
    kind = kind_of(image)
    if kind is None or kind.data is None:
        return None
    targets = [v.split(":")[1].rstrip("/") for v in volumes if v.count(":") >= 1]
    if any(kind.data == t or kind.data.startswith(t + "/") for t in targets if t):
        return None
    return kind.data


def unkept_notes(accessories: Mapping[str, Accessory]) -> list[str]:
    """What `validate` and `plan` say of accessories whose data no volume keeps."""
    out = []
    for name, acc in accessories.items():
        kind = kind_of(acc.image)
        if kind is None or not (kind.always_disk or acc.backups is not None):
            continue   # a cache whose data nobody backs up may start empty
        path = unkept_data(acc.image, acc.volumes)
        if path is not None:
            out.append(f"accessories.{name}: {path} (where {acc.image} keeps its data) is on no "
                       f"volume, so its data is lost whenever the container is created again (accessory "
                       f"upgrade, remove then start, a changed setting); keep it on a named volume "
                       f"(`volumes: [\"{name}-data:{path}\"]`) or a directory of the accessory's disk")
    return out


def _is_bitnami(image: str) -> bool:
    return bool(re.match(r"^(?:[^/]+\.[^/]+/|docker\.io/)?bitnami(?:legacy)?/", image))


@dataclass(frozen=True)
class Need:
    """What an accessory's environment lacks (or has too much of) for its image to start."""

    add_secret: tuple[str, ...] = ()
    add_clear: tuple[tuple[str, str], ...] = ()
    drop: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()


def env_needs(kind: Kind, clear: dict[str, str], secret: list[str] | tuple[str, ...]) -> Need:
    """The image's rules applied to an accessory's environment (names in ``clear`` and
    ``secret``): the password it needs when none is given, the other half of a user +
    password pair, and a plain NAME given next to NAME_FILE (dropped)."""
    names = set(clear) | set(secret)
    add_secret: list[str] = []
    add_clear: list[tuple[str, str]] = []
    drop: list[str] = []
    reasons: list[str] = []
    for name in sorted(names):
        if name.endswith("_FILE") and name[:-5] in names:
            drop.append(name[:-5])
            reasons.append(f"{name[:-5]} dropped: the {kind.name} image refuses it next to {name}")
    if kind.secret and not names & set(kind.enough):
        trust = kind.name == "postgres" and clear.get("POSTGRES_HOST_AUTH_METHOD") == "trust"
        if not trust:
            add_secret += kind.secret
            reasons.append(f"{kind.secret[0]} added as a secret: the {kind.name} image needs it")
    if kind.pair:
        user, password = kind.pair
        has_user = user in names or f"{user}_FILE" in names
        has_password = password in names or f"{password}_FILE" in names
        if has_user and not has_password:
            add_secret.append(password)
            reasons.append(f"{password} added as a secret: the {kind.name} image takes {user} only with it")
        elif has_password and not has_user:
            add_clear.append((user, "admin"))
            reasons.append(f"{user}=admin added: the {kind.name} image takes {password} only with a user")
        elif not has_user and not has_password:
            reasons.append(f"no {user} and {password}: the {kind.name} image runs with its defaults (MongoDB "
                           "without authentication), as the source has it; set both to require a login")
    return Need(tuple(add_secret), tuple(add_clear), tuple(drop), tuple(reasons))


# ---- PostgreSQL tuned from its VM ------------------------------------------------------------
# The prior pipeline's rules (shared_buffers a quarter of the memory, effective_cache_size three
# quarters, connections by memory, work_mem the memory over connections over 4,
# maintenance_work_mem a sixteenth capped at 2 GB), plus the CPUs for parallel workers. The
# memory is the smaller of the VM's and the container's own limit, when it has one.

MiB = 1024 * 1024
GiB = 1024 * MiB
#: What csdeploy sets, in the order `-c` options are passed.
POSTGRES_SETTINGS = ("max_connections", "shared_buffers", "effective_cache_size", "work_mem",
                     "maintenance_work_mem", "max_worker_processes", "max_parallel_workers",
                     "max_parallel_workers_per_gather")


def _size(nbytes: int) -> str:
    """PostgreSQL's units: whole MB (at least 1)."""
    return f"{max(1, nbytes // MiB)}MB"


def postgres_tuning(memory: int, cpus: int) -> dict[str, str]:
    """The settings for a server with ``memory`` bytes and ``cpus`` CPUs."""
    connections = 100 if memory < 4 * GiB else 200 if memory < 16 * GiB else 400
    cpus = max(1, cpus)
    return {
        "max_connections": str(connections),
        "shared_buffers": _size(memory // 4),
        "effective_cache_size": _size(memory * 3 // 4),
        "work_mem": _size(memory // connections // 4),
        "maintenance_work_mem": _size(min(memory // 16, 2 * GiB)),
        "max_worker_processes": str(max(8, cpus)),
        "max_parallel_workers": str(cpus),
        "max_parallel_workers_per_gather": str(max(1, cpus // 2)),
    }


def set_by_command(cmd: tuple[str, ...] | None) -> set[str]:
    """The settings an accessory's own command sets (``-c name=value``, ``-cname=value`` or
    ``--name=value``): those the blueprint chose, which the tuning leaves alone."""
    words = list(cmd or ())
    out: set[str] = set()
    for i, word in enumerate(words):
        if word == "-c" and i + 1 < len(words):
            out.add(words[i + 1].split("=", 1)[0].strip().lower())
        elif word.startswith("-c") and "=" in word:
            out.add(word[2:].split("=", 1)[0].strip().lower())
        elif word.startswith("--") and "=" in word:
            out.add(word[2:].split("=", 1)[0].strip().lower().replace("-", "_"))
    return out


def tuning_args(image: str, cmd: tuple[str, ...] | None, memory: int, cpus: int,
                limit: int | None = None) -> tuple[str, ...]:
    """``-c name=value`` words for a PostgreSQL accessory (none for another kind, or without
    the VM's memory); ``limit``: the container's own memory limit."""
    kind = kind_of(image)
    if kind is None or kind.name != "postgres" or memory <= 0:
        return ()
    if limit:
        memory = min(memory, limit)
    chosen = set_by_command(cmd)
    out: list[str] = []
    for name, value in postgres_tuning(memory, cpus).items():
        if name not in chosen:
            out += ["-c", f"{name}={value}"]
    return tuple(out)
