"""Scheduled backups kept on the accessory's host: `accessories.X.backups.schedule` with no
`to:` (or `to: host`) is run there by a timer (`rollout/commands/hostdump.py` builds every
word), not by `csdeploy serve`: the host needs no credentials and no uploader, and the dumps
are taken even when no csdeploy machine is up.

Here (pure): which schedules run where (`runs_on_host`), where the dumps are kept
(`directory`), the job each host gets at deploy (`install_script`) and what `validate` and
`plan` say of them (`notes`). Reading them back over SSH: `host_backups`.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # `validate` and `plan` read the notes: they load no rollout code
    from .rollout.commands import hostdump as hd
    from .rollout.commands.script import Script

#: csdeploy's name for backups kept on the accessory's host (`to: host`; WHERE says host:PATH).
HOST = "host"
#: Where the dumps go when the accessory has no data disk (root's, never a public path).
NO_DISK_DIR = "/var/lib/csdeploy/backups"


def runs_on_host(policy: Any) -> bool:
    """A schedule whose dumps stay on the accessory's host: no `to:`, or `to: host`."""
    return policy is not None and bool(policy.schedule) and policy.to in (None, HOST)


def destination(policy: Any) -> str | None:
    """The destination `backup`, `backups` and `restore` use by default: the policy's `to:`,
    unless that is the host (then csdeploy's default directory)."""
    return None if policy is None or policy.to in (None, HOST) else policy.to


def data_mount(bp: Any, accessory: str) -> str | None:
    """The mount point of the accessory's data disk: its own, or its role's."""
    acc = bp.accessories[accessory]
    if acc.disk is not None:
        return str(acc.disk.mount)
    role = bp.roles.get(acc.role) if acc.role else None
    return str(role.disk.mount) if role is not None and role.disk is not None else None


def directory(bp: Any, accessory: str) -> str:
    """Where the schedule keeps the accessory's dumps: on its data disk when it has one."""
    mount = data_mount(bp, accessory)
    return f"{mount}/csdeploy-backups/{accessory}" if mount else f"{NO_DISK_DIR}/{accessory}"


def dump_argv(bp: Any, accessory: str) -> tuple[list[str], Any]:
    """The dump on stdout, as `csdeploy backup` takes it, and its `dumps.Method`."""
    from .dump_kinds import method_for, pg_names, redis_auth
    from .rollout.commands import dump as cmd
    from .rollout.contract import accessory_container

    acc, method = method_for(bp, accessory)
    container = accessory_container(bp.service, accessory)
    if method.kind == "postgres":
        return cmd.pg_dump(container, *pg_names(acc)), method
    return cmd.redis_rdb(container, auth=redis_auth(acc)), method


def host_dump(bp: Any, env: str, accessory: str, host_name: str) -> hd.HostDump:
    from .rollout.commands import hostdump as hd

    acc = bp.accessories[accessory]
    argv, method = dump_argv(bp, accessory)
    return hd.HostDump(service=bp.service, env=env, accessory=accessory, kind=method.kind, ext=method.ext,
                       magic=method.magic.decode(), image=acc.image, host=host_name,
                       directory=directory(bp, accessory), where=f"{HOST}:{directory(bp, accessory)}", dump=argv, when=acc.backups.schedule,
                       keep=acc.backups.keep)


def install_script(bp: Any, env: str, host: Any, user: str, have: str) -> Script | None:
    """The script setting the host's backup timers (those of its accessories scheduled on it;
    the others' removed), or None when ``have`` (the host's marker, read with its facts) says
    they are already what the blueprint asks."""
    from .rollout.commands import hostdump as hd
    wanted = {name: hd.job_script(host_dump(bp, env, name, host.name)) for name in host.accessories
              if name in bp.accessories and runs_on_host(bp.accessories[name].backups)}
    fingerprint = hashlib.sha256(json.dumps([user, *((n, s.text()) for n, s in sorted(wanted.items()))])
                                 .encode()).hexdigest()[:16] if wanted else ""
    if fingerprint == have.strip():
        return None
    return hd.install(bp.service, wanted, user, fingerprint)


def notes(bp: Any) -> list[str]:
    """What `validate` and `plan` say of the schedules run on the hosts."""
    out = []
    for name, acc in sorted(bp.accessories.items()):
        if runs_on_host(acc.backups):
            p = acc.backups
            out.append(f"accessories.{name}.backups.schedule {p.schedule!r} (UTC) is run on {name}'s host by a "
                       f"systemd timer (no `to:` off the host: the host needs no credentials): dumps kept in "
                       f"{directory(bp, name)} (root only)" + (f", the newest {p.keep}" if p.keep else "")
                       + "; copy them off with `csdeploy backup --fetch`")
    return out
