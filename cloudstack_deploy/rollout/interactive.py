"""Sessions a person runs with their terminal attached, on exactly one host: `exec -i` (in the
role's running container, or `--new`: a fresh one of the role's image and env, removed after),
`accessory exec -i`, `console`, `psql`. The exit code is the command's."""

from __future__ import annotations

from collections.abc import Sequence

from ..accessories import kind_of
from ..errors import InvalidInput
from ..inventory import Host
from .commands import docker as d
from .commands import host as host_cmds
from .commands import interactive as ic
from .commands.script import Script
from .contract import accessory_container, image_ref, labels, role_env, volume_name
from .deploy import Rollout
from .lifecycle import accessory_host, current_version


def _is_postgres(image: str) -> bool:
    """The postgres family as the importers and backups know it (pgvector, PostGIS, TimescaleDB,
    Bitnami's ...): one list, in accessories.py."""
    try:
        kind = kind_of(image)
    except ValueError:
        return False
    return kind is not None and kind.name == "postgres"


def one_host(r: Rollout, role: str, *, primary: bool = False, hosts: tuple[str, ...] = ()) -> Host:
    """The one host an interactive session runs on: the only host of ``role``, its first
    (``primary``), or the one named in ``hosts``."""
    if role in r.bp.accessories:
        return accessory_host(r, role)
    if role not in r.bp.roles:
        raise InvalidInput(f"no role or accessory named {role!r}",
                           hint="known: " + ", ".join([*r.bp.roles, *r.bp.accessories]))
    candidates = r.inv.role_hosts(role)
    if not candidates:
        raise InvalidInput(f"no host runs role {role!r} in environment {r.env}")
    names = [h.name for h in candidates]
    if hosts:
        if len(hosts) != 1:
            raise InvalidInput(f"an interactive session runs on exactly one host; --hosts names {len(hosts)}",
                               hint="one of " + ", ".join(names))
        if hosts[0] not in names:
            raise InvalidInput(f"role {role} does not run on {hosts[0]}", hint="its hosts: " + ", ".join(names))
        return next(h for h in candidates if h.name == hosts[0])
    if primary or len(candidates) == 1:
        return candidates[0]
    raise InvalidInput(f"an interactive session runs on exactly one host; role {role} runs on {len(names)} "
                       f"({', '.join(names)})", hint="add --primary (the first) or --hosts NAME")


async def _session(r: Rollout, host: Host, script: Script, *, tty: bool, attach: bool) -> int:
    async with r.pool(concurrency=1) as pool:
        conn = await pool.connect(host)
        return await conn.interactive(ic.remote(script), tty=tty, attach=attach)


async def exec_(r: Rollout, role: str, argv: Sequence[str], *, interactive: bool = True, tty: bool = False,
                new: bool = False, primary: bool = False, hosts: tuple[str, ...] = ()) -> int:
    """``argv`` on one host of ``role`` with stdin attached (``interactive``) and a terminal
    (``tty``): in its running container, or with ``new`` in a fresh container of the role."""
    host = one_host(r, role, primary=primary, hosts=hosts)
    if role in r.bp.accessories:
        if new:
            raise InvalidInput("--new makes a container of an app role; an accessory runs one container",
                               hint=f"csdeploy accessory exec {role} -i -- ...")
        script = ic.in_accessory(accessory_container(r.bp.service, role), argv, interactive=interactive, tty=tty)
    elif new:
        script = await _new_script(r, host, role, argv, interactive=interactive, tty=tty)
    else:
        script = ic.in_role(labels(r.bp.service, r.env, role), role, argv, interactive=interactive, tty=tty)
    return await _session(r, host, script, tty=tty, attach=interactive)


async def _new_script(r: Rollout, host: Host, role_name: str, argv: Sequence[str], *, interactive: bool,
                      tty: bool) -> Script:
    role = r.bp.roles[role_name]
    async with r.pool(concurrency=1) as pool:
        version = current_version(await r.history(pool))
    env = role_env(r.bp, role_name, r.inv, r.secrets, version or "oneoff")
    mounts = [d.Mount(volume_name(r.bp.service, v), v.path, v.readonly) for v in role.volumes]
    return ic.in_new(labels(r.bp.service, r.env, role_name), role_name, argv,
                     image=image_ref(role.image, version) if version else None, env=env.clear,
                     env_file=host_cmds.env_file(r.bp.service, role_name), mounts=mounts,
                     interactive=interactive, tty=tty)


def default_role(r: Rollout) -> str:
    """The role a console opens in: the first proxy role, else the first role."""
    return next((name for name, role in r.bp.roles.items() if role.proxy is not None), next(iter(r.bp.roles)))


async def console(r: Rollout, role: str | None, *, primary: bool = False, hosts: tuple[str, ...] = ()) -> int:
    """A shell in ``role``'s running container (default: `default_role`, on its first host)."""
    if role is None and not hosts:
        primary = True
    return await exec_(r, role or default_role(r), ic.SHELL, interactive=True, tty=True, primary=primary,
                       hosts=hosts)


def postgres_accessory(r: Rollout, name: str | None) -> str:
    """The PostgreSQL accessory ``name``, or the blueprint's only one."""
    found = [a.name for a in r.bp.accessories.values() if _is_postgres(a.image)]
    if name is not None:
        if name not in r.bp.accessories:
            raise InvalidInput(f"no accessory named {name!r}", hint="known: " + (", ".join(r.bp.accessories) or "none"))
        return name
    if len(found) == 1:
        return found[0]
    if not found:
        raise InvalidInput("no PostgreSQL accessory in this blueprint (an image of the postgres family)",
                           hint="pass --accessory NAME for another image that has psql")
    raise InvalidInput(f"{len(found)} PostgreSQL accessories ({', '.join(found)})", hint="pass --accessory NAME")


async def psql(r: Rollout, name: str | None, args: Sequence[str] = (), *, tty: bool = True) -> int:
    """psql in the PostgreSQL accessory as its POSTGRES_USER on its POSTGRES_DB (the same defaults
    the apps' DATABASE_URL uses)."""
    acc = r.bp.accessories[postgres_accessory(r, name)]
    clear = dict(acc.env.clear)
    user = clear.get("POSTGRES_USER", "postgres")
    database = clear.get("POSTGRES_DB", user)
    return await exec_(r, acc.name, ic.psql(user, database, args), interactive=True, tty=tty)
