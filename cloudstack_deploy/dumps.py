"""`csdeploy backup | backups | restore`: logical backups of an accessory's data.

A backup is the accessory's own dump (PostgreSQL's custom format, Redis' RDB) streamed from
its container over SSH straight into the destination (`backup_dest`): nothing is written on
the host, nothing is held whole in memory. Beside each dump, a manifest (JSON) says what it
is: environment, accessory, kind, image, time, size, sha256 and who took it. `keep` prunes
the oldest of that environment's accessory after a backup succeeds.

A restore checks before it touches anything: the manifest's kind must be the accessory's, the
bytes must start with the kind's magic and match the manifest's sha256 and size, and for
PostgreSQL `pg_restore --list` must read the whole dump on the host; a Redis RDB is put next to
Redis' data under a name Redis does not load and `redis-check-rdb` must read all of it. Only
then is the app put behind kamal-proxy's maintenance answer, the dump restored (`pg_restore
--clean --if-exists --no-owner`, one transaction; Redis stopped, the RDB loaded and, with an
append-only file, that rewritten from it: `rollout/commands/dump.py`), and maintenance lifted,
whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from hashlib import sha256
from pathlib import Path
from typing import Any

from . import backup_dest as bd
from .dump_kinds import METHODS, Method, method_for, redis_auth
from .dump_kinds import pg_names as _pg_names
from .errors import CsdeployError, InvalidInput, OperationFailed
from .rollout import lifecycle, ops
from .rollout.commands import dump as cmd
from .rollout.contract import accessory_container
from .rollout.deploy import Rollout
from .rollout.hosts import Connection, PipeStream
from .rollout.lifecycle import accessory_host

FORMAT = 1
MAINTENANCE_MESSAGE = "Restoring data: back in a few minutes"


@dataclass
class Manifest:
    env: str
    accessory: str
    kind: str
    image: str
    created_at: str
    size: int
    sha256: str
    key: str
    by: str = ""
    host: str = ""
    destination: str = ""
    format: int = FORMAT

    @property
    def id(self) -> str:
        """``ENV/ACCESSORY/STAMP``: how `restore` names it."""
        return self.key.rsplit(".", 1)[0]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**fields)


@dataclass
class BackupResult:
    manifest: Manifest
    pruned: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {**self.manifest.to_dict(), "pruned": self.pruned}


@dataclass
class RestoreResult:
    env: str
    accessory: str
    backup: str
    kind: str
    size: int
    maintenance: str
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def stamp(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def _key(env: str, accessory: str, when: datetime, method: Method) -> str:
    return f"{env}/{accessory}/{stamp(when)}.{method.ext}"


async def _connect(r: Rollout, pool: Any, accessory: str) -> Connection:
    return await pool.connect(accessory_host(r, accessory))


async def take(r: Rollout, accessory: str, store: bd.Store, *, by: str, keep: int | None = None,
               now: datetime | None = None) -> BackupResult:
    """Dump ``accessory`` into ``store``; then prune to the newest ``keep`` of it."""
    acc, method = method_for(r.bp, accessory)
    if keep is not None and keep < 1:
        raise InvalidInput(f"--keep {keep}: keep at least 1 backup")
    host = accessory_host(r, accessory)
    await asyncio.to_thread(store.check)
    container = accessory_container(r.bp.service, accessory)
    argv = (cmd.pg_dump(container, *_pg_names(acc)) if method.kind == "postgres"
            else cmd.redis_rdb(container, auth=redis_auth(acc)))
    when = now or datetime.now(UTC)
    key = _key(r.env, accessory, when, method)

    async def source(stream: PipeStream) -> AsyncIterator[bytes]:
        head = b""
        async for chunk in stream:
            if len(head) < len(method.magic):
                head += chunk[: len(method.magic)]
            yield chunk
        if (detail := stream.failure()) is not None:
            res = stream.result
            raise OperationFailed(f"{host.name}: the dump of {accessory} failed"
                                  + (f" (exit {res.exit_status})" if res is not None else "") + f": {detail}",
                                  hint=f"is the accessory running? csdeploy accessory details {accessory}")
        if not head.startswith(method.magic):
            raise OperationFailed(f"{host.name}: the dump of {accessory} is not {method.what}",
                                  hint="the accessory's image may not be what its name says")

    async with r.pool(concurrency=1) as pool:
        conn = await pool.connect(host)
        size, digest = await bd.upload(store, key, source(PipeStream(conn, argv, what=f"dump of {accessory}")))
    manifest = Manifest(env=r.env, accessory=accessory, kind=method.kind, image=acc.image,
                        created_at=when.astimezone(UTC).isoformat().replace("+00:00", "Z"), size=size,
                        sha256=digest, key=key, by=by, host=host.name, destination=store.url)
    await bd.write_small(store, key + ".json", json.dumps(manifest.to_dict(), indent=2).encode())
    pruned = await prune(store, r.env, accessory, keep) if keep else []
    return BackupResult(manifest, pruned)


async def listing(store: bd.Store, env: str, accessory: str | None = None) -> list[Manifest]:
    """``env``'s backups in ``store`` (of ``accessory``), newest first, from their manifests."""
    prefix = f"{env}/{accessory}/" if accessory else f"{env}/"
    keys = await asyncio.to_thread(store.keys, prefix)
    present = set(keys)
    found = []
    for key in keys:
        if key.endswith(".json") and key[:-5] in present:  # a dump without its manifest is unfinished
            try:
                found.append(Manifest.from_dict(json.loads(await bd.read_small(store, key))))
            except (ValueError, TypeError) as exc:
                raise OperationFailed(f"{store.url}: the manifest {key} cannot be read: {exc}") from None
    return sorted(found, key=lambda m: m.created_at, reverse=True)


async def prune(store: bd.Store, env: str, accessory: str, keep: int) -> list[str]:
    """Delete all but the newest ``keep`` backups of ``env``'s ``accessory``; their ids."""
    old = (await listing(store, env, accessory))[keep:]
    for m in old:
        await asyncio.to_thread(store.delete, m.key)
        await asyncio.to_thread(store.delete, m.key + ".json")
    return [m.id for m in old]


async def choose(store: bd.Store, env: str, accessory: str, backup: str | None) -> tuple[bd.Store, Manifest | None,
                                                                                        str]:
    """The store, manifest (None for a bare file) and key of what `restore` reads: ``backup``
    as an id of ``store``, a file on this machine, or (None) the newest of ``env``'s ``accessory``."""
    if backup is None:
        found = await listing(store, env, accessory)
        if not found:
            raise InvalidInput(f"no backup of {env}'s {accessory} in {store.url}",
                               hint=f"take one with `csdeploy backup --env {env} --accessory {accessory}`")
        return store, found[0], found[0].key
    path = await asyncio.to_thread(_local_file, backup)
    if path is not None:
        return bd.LocalDir(path.parent, backup), None, path.name
    for m in await listing(store, backup.split("/", 1)[0]):
        if backup in (m.id, m.key):
            return store, m, m.key
    raise InvalidInput(f"no backup {backup!r} in {store.url} and no such file",
                       hint="list them with `csdeploy backups --env ENV`")


def _local_file(text: str) -> Path | None:
    path = Path(text).expanduser().absolute()
    return path if path.is_file() else None


def _checked(source: AsyncIterator[bytes], method: Method, manifest: Manifest | None,
             label: str) -> AsyncIterator[bytes]:
    """``source``, checked as it passes: the kind's magic first, then the manifest's size and
    sha256 at the end. InvalidInput for what is not a dump of that kind."""
    async def gen() -> AsyncIterator[bytes]:
        head, digest, size = b"", sha256(), 0
        async with contextlib.aclosing(source):  # a reader that stops early ends the download too
            async for chunk in source:
                if len(head) < len(method.magic):
                    head += chunk[: len(method.magic) - len(head)]
                    if len(head) == len(method.magic) and head != method.magic:
                        raise InvalidInput(f"{label} is not {method.what}: nothing was changed")
                digest.update(chunk)
                size += len(chunk)
                yield chunk
        if not head.startswith(method.magic):
            raise InvalidInput(f"{label} is not {method.what} (too short): nothing was changed")
        if manifest is not None and (size, digest.hexdigest()) != (manifest.size, manifest.sha256):
            raise InvalidInput(f"{label} does not match its manifest (size {size} vs {manifest.size}, "
                               "or its sha256 differs): damaged or changed; nothing was changed")
    return gen()


async def restore(r: Rollout, accessory: str, store: bd.Store, manifest: Manifest | None, key: str, *,
                  label: str, maintenance: bool = True,
                  on_note: Callable[[str], None] | None = None) -> RestoreResult:
    """Verify, then restore ``key`` of ``store`` into ``accessory`` behind maintenance."""
    acc, method = method_for(r.bp, accessory)
    if manifest is not None and manifest.kind != method.kind:
        raise InvalidInput(f"{label} is a {manifest.kind} backup ({manifest.env}'s {manifest.accessory}); "
                           f"accessory {accessory} is {method.kind}: nothing was changed")
    container = accessory_container(r.bp.service, accessory)
    host = accessory_host(r, accessory)
    data_dir = ""
    result = RestoreResult(r.env, accessory, label, method.kind, manifest.size if manifest else 0, "off")

    def note(text: str) -> None:
        result.notes.append(text)
        if on_note is not None:
            on_note(text)

    async with r.pool(concurrency=1) as pool:
        conn = await pool.connect(host)
        # 1. verify: the bytes, and for PostgreSQL the dump as pg_restore reads it, before any change
        if method.kind == "postgres":
            async with contextlib.aclosing(_checked(bd.download(store, key), method, manifest, label)) as checked:
                res = await conn.pipe(cmd.pg_restore_list(container), source=checked, what=f"check of {label}")
            if res.exit_status != 0:
                last = (res.stderr.strip().splitlines() or ["?"])[-1]
                raise InvalidInput(f"{label} is not a dump pg_restore can read ({last}): nothing was changed")
        if method.kind != "postgres":  # Redis: received next to its data and read by Redis' checker
            data_dir = await _redis_receive(conn, container, store, key, method, manifest, label,
                                            auth=redis_auth(acc))
        # 2. the app kept off the data while it is replaced: behind kamal-proxy's maintenance
        # answer, or, with no proxy host to give one, its roles stopped
        guard = guard_for(r, maintenance)
        if guard.reason:
            note(guard.reason)
        stopped = await _guard_on(r, guard)
        result.maintenance = {"maintenance": "on during the restore",
                              "stop": "app roles stopped during the restore: " + ", ".join(guard.roles)
                              }.get(guard.how, "not used")
        try:
            await _load(conn, method, acc, container, data_dir, store, key, manifest, label)
        finally:
            try:
                await _guard_off(r, guard, stopped)
            except CsdeployError as exc:
                first = str(exc).splitlines()[0]
                if guard.how == "maintenance":
                    note(f"maintenance could not be lifted: {first}; run `csdeploy maintenance off --env {r.env}`")
                    result.maintenance = "still on"
                else:
                    note(f"the app roles could not be started again: {first}; "
                         f"run `csdeploy app start --env {r.env}`")
                    result.maintenance = "app roles still stopped: " + ", ".join(guard.roles)
    return result


@dataclass(frozen=True)
class Guard:
    """How the app is kept off an accessory's data while a restore replaces it."""
    how: str                     # "maintenance", "stop" (the app roles), or "none"
    roles: tuple[str, ...] = ()  # the app roles stopped ("stop")
    hosts: tuple[str, ...] = ()  # the proxy hosts ("maintenance") or the app roles' hosts ("stop")
    reason: str = ""             # why, when it is not kamal-proxy's maintenance answer

    def steps(self, when: str) -> list[str]:
        """What is done ``before`` or ``after`` the data is replaced, in words."""
        on = when == "before"
        if self.how == "maintenance":
            return [f"maintenance {'on' if on else 'off'} on {', '.join(self.hosts)}"]
        if self.how == "stop":
            return [f"{'stop' if on else 'start'} app roles {', '.join(self.roles)} on {', '.join(self.hosts)}"
                    + ("" if on else " (what was stopped; also when the restore fails)")]
        return []


def guard_for(r: Rollout, maintenance: bool) -> Guard:
    """Pure: kamal-proxy's maintenance answer on the proxy hosts; with none (no proxy role,
    nothing could answer for the app), every app role stopped (all the environment's roles that
    are not an accessory's own VM); nothing with ``--no-maintenance``."""
    if not maintenance:
        return Guard("none", reason="--no-maintenance: the app kept serving during the restore")
    if r.inv.proxy_hosts:
        return Guard("maintenance", hosts=tuple(h.name for h in r.inv.proxy_hosts))
    apps = [h for h in r.inv.hosts if h.app_role]
    if not apps:
        return Guard("none", reason=f"environment {r.env} runs no app role: nothing to stop")
    roles = tuple(dict.fromkeys(role for h in apps for role in h.app_roles))
    return Guard("stop", roles=roles, hosts=tuple(h.name for h in apps),
                 reason=f"environment {r.env} has no proxy host (no maintenance answer): "
                        f"app roles {', '.join(roles)} stopped during the restore")


async def _guard_on(r: Rollout, guard: Guard) -> tuple[str, ...]:
    """Put ``guard`` in place; the hosts on which app containers were stopped."""
    if guard.how == "maintenance":
        await ops.maintenance(r, True, MAINTENANCE_MESSAGE)
    elif guard.how == "stop":
        done = await lifecycle.app(r, "stop", roles=guard.roles)
        return tuple(name for name, outcome in done.hosts.items() if "stopped" in outcome.values())
    return ()


async def _guard_off(r: Rollout, guard: Guard, stopped: tuple[str, ...]) -> None:
    if guard.how == "maintenance":
        await ops.maintenance(r, False, "")
    elif guard.how == "stop" and stopped:
        await lifecycle.app(r, "start", hosts=stopped)


def restore_plan(r: Rollout, accessory: str, label: str, manifest: Manifest | None, *,
                 maintenance: bool = True) -> list[str]:
    """Pure: what `restore --dry-run` says a restore of ``label`` into ``accessory`` does, in order."""
    acc, method = method_for(r.bp, accessory)
    host = accessory_host(r, accessory).name
    container = accessory_container(r.bp.service, accessory)
    guard = guard_for(r, maintenance)
    check = ("pg_restore --list reads all of it" if method.kind == "postgres"
             else f"put beside Redis' data in {container}, redis-check-rdb reads all of it")
    steps = [f"check {label}: {method.what}" + (", size and sha256 as its manifest says" if manifest else "")
             + f"; on {host}: {check} (nothing changed if not)"]
    steps += guard.steps("before")
    if method.kind == "postgres":
        steps.append(f"restore into {container} on {host}: pg_restore --clean --if-exists --no-owner "
                     "--single-transaction")
    else:
        steps.append(f"restore into {container} on {host}: stop it, load the RDB in a container of its image "
                     "(AOF rewritten from it when Redis keeps one), start it, wait for PONG")
    steps += guard.steps("after")
    if guard.reason and guard.how != "stop":
        steps.append(f"note: {guard.reason}")
    return steps


async def _redis_receive(conn: Connection, container: str, store: bd.Store, key: str, method: Method,
                         manifest: Manifest | None, label: str, *, auth: str | None = None) -> str:
    """Put the checked RDB next to Redis' data (under a name Redis does not load) and have Redis'
    checker read it; InvalidInput (the file removed, nothing else changed) when it is not one.
    Returns Redis' data directory."""
    name = conn.host.name
    res = await conn.run(cmd.redis_dir(container, auth=auth), check=False, what=f"data directory of {container}")
    data_dir = (res.stdout.strip().splitlines() or [""])[-1].strip()
    if res.exit_status != 0 or not data_dir.startswith("/"):
        detail = (res.stderr.strip().splitlines() or [res.stdout.strip()])[-1]
        raise OperationFailed(f"{name}: could not ask Redis in {container} where it keeps its data: {detail}",
                              hint="is the accessory running? csdeploy accessory details " + container)
    try:
        async with contextlib.aclosing(_checked(bd.download(store, key), method, manifest, label)) as source:
            res = await conn.pipe(cmd.redis_receive(container, data_dir), source=source, what=f"upload of {label}")
    except BaseException:
        with contextlib.suppress(Exception):
            await conn.run(cmd.redis_discard(container, data_dir), check=False, what="removal of a refused file")
        raise
    if res.exit_status != 0:
        raise OperationFailed(f"{name}: could not put {label} in {container}: {res.stderr.strip()}")
    res = await conn.run(cmd.redis_check(container, data_dir), check=False, what=f"check of {label}")
    if res.exit_status == cmd.NOT_AN_RDB:
        last = (res.stderr.strip().splitlines() or ["?"])[-1].strip()
        raise InvalidInput(f"{label} is not an RDB file this Redis can load ({last}): nothing was changed")
    if res.exit_status != 0:
        raise OperationFailed(f"{name}: the check of {label} failed (exit {res.exit_status}): {res.stderr.strip()}")
    return data_dir


async def _load(conn: Connection, method: Method, acc: Any, container: str, data_dir: str,
                store: bd.Store, key: str, manifest: Manifest | None, label: str) -> None:
    if method.kind == "postgres":
        async with contextlib.aclosing(_checked(bd.download(store, key), method, manifest, label)) as source:
            res = await conn.pipe(cmd.pg_restore(container, *_pg_names(acc)), source=source,
                                  what=f"restore of {label}")
        if res.exit_status != 0:
            raise OperationFailed(f"{conn.host.name}: pg_restore of {label} failed (exit {res.exit_status}); "
                                  "it ran in one transaction: the database is as it was",
                                  hint=(res.stderr.strip().splitlines() or [""])[-1] or None)
        return
    server = "valkey-server" if method.kind == "valkey" else "redis-server"
    res = await conn.run(cmd.redis_load(container, data_dir, server=server, auth=redis_auth(acc)), check=False, what=f"load of {label}",
                         timeout=900)
    if res.exit_status != 0:
        detail = " ".join(line.strip() for line in res.stderr.strip().splitlines() if not line.startswith("::step"))
        raise OperationFailed(f"{conn.host.name}: Redis did not load {label} (exit {res.exit_status}"
                              + (f", at step {res.last_step}" if res.last_step else "") + f"): {detail}",
                              hint=f"`docker logs {container}` on {conn.host.name} says more; a failure before "
                                   "the load step leaves Redis on its old data")

__all__ = ["METHODS", "BackupResult", "Guard", "guard_for", "restore_plan", "Manifest", "RestoreResult", "choose", "listing", "method_for", "prune",
           "restore", "take"]
