"""The dumps a schedule keeps on an accessory's host (`hostdumps`), read back over SSH:
`listing` (for `backups`: WHERE is ``host:PATH``), `fetch` (a copy to this machine or object
storage, checked against its manifest: `backup --fetch`, and a `restore` of a host's dump) and
`last_runs` (for `status`). Every word run on the host is built in `rollout/commands/hostdump.py`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from . import backup_dest as bd
from .errors import CsdeployError, OperationFailed
from .hostdumps import HOST, directory, runs_on_host
from .rollout.commands import hostdump as hd


def _backed_up(bp: Any) -> list[str]:
    from .accessories import kind_of
    from .dump_kinds import METHODS

    out = []
    for name, acc in sorted(bp.accessories.items()):
        kind = kind_of(acc.image)
        if kind is not None and kind.name in METHODS:
            out.append(name)
    return out


async def listing(r: Any, accessory: str | None = None) -> tuple[list[Any], list[str]]:
    """The dumps kept on the accessory hosts (`dumps.Manifest`, destination ``host:PATH``),
    newest first, and the notes of hosts that could not be read."""
    from .dumps import Manifest
    from .rollout.lifecycle import accessory_host

    names = [a for a in _backed_up(r.bp) if accessory in (None, a) and r.inv.accessory_host(a) is not None]
    found: list[Any] = []
    problems: list[str] = []
    if not names:
        return found, problems
    async with r.pool(concurrency=4) as pool:
        async def one(name: str) -> None:
            host = accessory_host(r, name)
            where = directory(r.bp, name)
            try:
                conn = await pool.connect(host)
                res = await conn.run(hd.manifests(where, r.inv.ssh.user), check=False, what=f"dumps of {name}")
            except CsdeployError as exc:
                problems.append(f"{host.name}: the dumps of {name} on the host cannot be read: "
                                f"{str(exc).splitlines()[0]}")
                return
            if res.exit_status != 0:
                problems.append(f"{host.name}: the dumps of {name} on the host cannot be read: "
                                + (res.stderr.strip().splitlines() or ["?"])[-1])
                return
            for line in res.stdout.splitlines():
                try:
                    m = Manifest.from_dict(json.loads(line))
                except (ValueError, TypeError):
                    continue
                if m.accessory == name:
                    found.append(replace(m, destination=f"{HOST}:{where}", host=host.name))

        await asyncio.gather(*(one(n) for n in names))
    return sorted(found, key=lambda m: m.created_at, reverse=True), problems


async def fetch(r: Any, accessory: str, store: bd.Store, *, only: str | None = None) -> list[Any]:
    """Copy the dumps of ``accessory`` kept on its host (``only``: that id) to ``store``, each
    checked against its manifest's size and sha256; those already there are skipped. The
    manifests as written at ``store``."""
    from .dumps import listing as stored
    from .rollout.lifecycle import accessory_host

    on_host, problems = await listing(r, accessory)
    if problems:
        raise OperationFailed(problems[0])
    if only is not None:
        on_host = [m for m in on_host if only in (m.id, m.key)]
    await asyncio.to_thread(store.check)
    have = {m.key for m in await stored(store, r.env, accessory)}
    todo = [m for m in on_host if m.key not in have]
    copied = []
    host = accessory_host(r, accessory)
    where = directory(r.bp, accessory)
    async with r.pool(concurrency=1) as pool:
        conn = await pool.connect(host)
        for m in todo:
            name = m.key.rsplit("/", 1)[-1]
            size, digest = await bd.upload(store, m.key, _stream(conn, hd.read(where, name, r.inv.ssh.user),
                                                                   f"{host.name}:{where}/{name}"))
            if (size, digest) != (m.size, m.sha256):
                await asyncio.to_thread(store.delete, m.key)
                raise OperationFailed(f"{host.name}: {where}/{name} does not match its manifest (size {size} vs "
                                      f"{m.size}, or its sha256 differs): damaged on the host; not copied")
            out = replace(m, destination=store.url)
            await bd.write_small(store, m.key + ".json", json.dumps(out.to_dict(), indent=2).encode())
            copied.append(out)
    return copied


async def _stream(conn: Any, argv: list[str], label: str) -> AsyncIterator[bytes]:
    """The stdout of ``argv`` on ``conn``'s host, chunk by chunk; OperationFailed when it fails."""
    from .rollout.hosts import PipeStream  # asyncssh: only when a host is read

    stream = PipeStream(conn, argv, what=f"copy of {label}")
    async for chunk in stream:
        yield chunk
    if (detail := stream.failure()) is not None:
        raise OperationFailed(f"could not read {label}: {detail}")


async def last_runs(r: Any) -> dict[str, dict[str, Any]]:
    """Each schedule run on a host: its last run's outcome ({} before the first), by accessory."""
    from .rollout.lifecycle import accessory_host

    names = [a for a, acc in sorted(r.bp.accessories.items())
             if runs_on_host(acc.backups) and r.inv.accessory_host(a) is not None]
    out: dict[str, dict[str, Any]] = {}
    if not names:
        return out
    async with r.pool(concurrency=4) as pool:
        async def one(name: str) -> None:
            try:
                conn = await pool.connect(accessory_host(r, name))
                res = await conn.run(hd.last_run(directory(r.bp, name), r.inv.ssh.user), check=False,
                                     what=f"last scheduled backup of {name}")
                out[name] = json.loads(res.stdout) if res.stdout.strip() else {}
            except (CsdeployError, ValueError) as exc:
                out[name] = {"result": "unknown", "detail": str(exc).splitlines()[0]}

        await asyncio.gather(*(one(n) for n in names))
    return out

