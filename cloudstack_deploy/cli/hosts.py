"""`csdeploy hosts upgrade`: the VMs' package updates, one host at a time."""

from __future__ import annotations

import click

from ..log import redact
from .common import (
    BLUEPRINT_OPTION,
    BREAK_LOCK_OPTION,
    DRY_RUN_OPTION,
    ENV_OPTION,
    JSON_OPTION,
    ROLES_OPTION,
    SET_OPTION,
    Lazy,
    echo_json,
    run,
)

service = Lazy("cloudstack_deploy.service")


@click.group()
def hosts() -> None:
    """The environment's VMs themselves (their operating system)."""


@hosts.command("upgrade")
@ENV_OPTION
@ROLES_OPTION
@BLUEPRINT_OPTION
@SET_OPTION
@DRY_RUN_OPTION
@BREAK_LOCK_OPTION
@JSON_OPTION
def upgrade(env: str, roles: tuple[str, ...], blueprint: str | None, overrides: tuple[str, ...], dry_run: bool,
            break_lock: bool, as_json: bool) -> None:
    """Apply package updates role by role, one host at a time: a host behind its role's load
    balancer leaves it first, is upgraded, rebooted through the cloud, waited for (SSH, its
    app healthy) and joins again before the next host starts.

    What runs is the blueprint's hosts.upgrade_command (default: apt-get update and upgrade,
    never asking)."""
    emit = (lambda line: None) if as_json or dry_run else (lambda line: click.echo(line, err=True))
    result = run(service.hosts_upgrade(env, roles=roles, blueprint=blueprint, overrides=overrides, dry_run=dry_run,
                                       break_lock=break_lock, emit=emit))
    if dry_run:
        lines = ["hosts upgrade --dry-run: nothing was run; in this order, one host at a time:"]
        for step in result.planned:
            lines.append(f"\n### {step.host}: {step.what}")
            if step.text:
                lines.append(step.text.rstrip("\n"))
        click.echo(redact("\n".join(lines)))
        return
    if as_json:
        echo_json({"env": env, "seconds": round(result.seconds, 1),
                   "hosts": [{"host": h.host, "role": h.role, "steps": h.steps, "seconds": round(h.seconds, 1)}
                             for h in result.hosts]})
        return
    for h in result.hosts:
        click.echo(f"{h.host} ({h.role}): {', '.join(h.steps)} in {h.seconds:.0f}s")
    click.echo(f"upgraded {len(result.hosts)} host{'s' if len(result.hosts) != 1 else ''} of environment {env}")


COMMANDS = [hosts]
