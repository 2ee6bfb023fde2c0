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
