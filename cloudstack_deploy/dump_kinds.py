"""The accessory kinds csdeploy dumps (`csdeploy backup`, and the schedules run on a host):
how each is dumped, what a good dump starts with, and the names a dump needs from the
accessory's env. Pure: `dumps` (over SSH) and `hostdumps` (the host's timer) both read it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .accessories import kind_of
from .errors import InvalidInput


@dataclass(frozen=True)
class Method:
    kind: str
    ext: str
    magic: bytes
    what: str


METHODS = {
    "postgres": Method("postgres", "pgdump", b"PGDMP", "a PostgreSQL custom-format dump (pg_dump -Fc)"),
    "redis": Method("redis", "rdb", b"REDIS", "a Redis RDB file"),
    "valkey": Method("valkey", "rdb", b"REDIS", "a Valkey/Redis RDB file"),
}


def method_for(bp: Any, accessory: str) -> tuple[Any, Method]:
    """The accessory and how it is dumped; InvalidInput for an unknown one or a kind with no method."""
    acc = bp.accessories.get(accessory)
    if acc is None:
        raise InvalidInput(f"no accessory named {accessory!r}", hint="known: " + (", ".join(bp.accessories) or "none"))
    kind = kind_of(acc.image)
    method = METHODS.get(kind.name) if kind is not None else None
    if method is None:
        raise InvalidInput(f"accessory {accessory} ({acc.image}) has no backup method: csdeploy backs up "
                           + ", ".join(sorted(METHODS)) + " accessories",
                           hint="take a disk snapshot instead: csdeploy snapshot --role " + accessory)
    return acc, method


def pg_names(acc: Any) -> tuple[str, str]:
    user = acc.env.clear.get("POSTGRES_USER", "postgres")
    return user, acc.env.clear.get("POSTGRES_DB", user)


def redis_auth(acc: Any) -> str | None:
    """The variable in a Redis/Valkey accessory's container holding its password (`requirepass`),
    when its env sets one: REDISCLI_AUTH, REDIS_PASSWORD or VALKEY_PASSWORD (clear or secret).
    Backup and restore hand it to redis-cli as REDISCLI_AUTH inside the container, never on argv."""
    names = (*acc.env.clear, *acc.env.secret)
    return next((n for n in ("REDISCLI_AUTH", "REDIS_PASSWORD", "VALKEY_PASSWORD") if n in names), None)
