"""Accessory kinds: what csdeploy knows about well-known database and cache images, shared by
the importers (an accessory's port, where its data lives, its secrets) and the rollout (the
variables it gives apps for an accessory of that kind).

The contract is the official images' own: PostgreSQL takes POSTGRES_DB/USER/PASSWORD (and
the rollout hands apps POSTGRES_* and DATABASE_URL), MySQL/MariaDB MYSQL_*/MARIADB_*, MongoDB
MONGO_INITDB_ROOT_*; Redis/Valkey serve REDIS_URL to apps; memcached keeps nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import images


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
    """Variables the image needs as secrets."""
    provides: tuple[str, ...] = ()
    """Variables the rollout gives apps for an accessory of this kind (the app's own are dropped)."""


KINDS = {k.name: k for k in (
    Kind("postgres", 5432, "/var/lib/postgresql/data", 10, True, ("POSTGRES_PASSWORD",),
         ("DATABASE_URL", "POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_DB", "POSTGRES_USER", "POSTGRES_PASSWORD")),
    Kind("mysql", 3306, "/var/lib/mysql", 10, True, ("MYSQL_ROOT_PASSWORD",)),
    Kind("mariadb", 3306, "/var/lib/mysql", 10, True, ("MARIADB_ROOT_PASSWORD",)),
    Kind("redis", 6379, "/data", 5, False, (), ("REDIS_URL",)),
    Kind("valkey", 6379, "/data", 5, False, (), ("REDIS_URL",)),
    Kind("memcached", 11211, None, 0, False),
    Kind("mongo", 27017, "/data/db", 10, True, ("MONGO_INITDB_ROOT_PASSWORD",)),
)}
ALIASES = {"postgresql": "postgres", "postgis": "postgres", "mongodb": "mongo", "bitnami/redis": "redis"}


def image_base(image: str) -> str:
    """The repository's last path part without tag: ``registry.lab:5000/postgres:15`` -> ``postgres``."""
    try:
        return images.base_name(image)
    except ValueError:
        return image.rsplit("/", 1)[-1].split("@", 1)[0].split(":", 1)[0]


def kind_of(image: str) -> Kind | None:
    """The kind of an accessory image, by its repository's last part (None: unknown)."""
    base = image_base(image)
    return KINDS.get(ALIASES.get(base, base))


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
