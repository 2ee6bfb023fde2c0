"""`csdeploy snapshot | snapshots | recover`: disk snapshots and environments made from them."""

from __future__ import annotations

from datetime import datetime

import click

from .common import (
    BREAK_LOCK_OPTION,
    ENV_OPTION,
    JSON_OPTION,
    MAX_API_OPTION,
    PROGRESS_OPTION,
    SET_OPTION,
    SSH_TIMEOUT_OPTION,
    Lazy,
    echo_json,
    env_name,
    load,
    progress_for,
    run,
    ttl,
    version_or_head,
)

render = Lazy("cloudstack_deploy.render_data")
service = Lazy("cloudstack_deploy.service")


@click.command()
@ENV_OPTION
@click.option("--role", default=None, metavar="R", help="Only the data disk(s) of this role or accessory.")
@click.option("--wait", is_flag=True, help="Return once each snapshot is BackedUp (default: once it is captured).")
@click.option("--no-quiesce", "no_quiesce", is_flag=True,
              help="Touch no host (e.g. it is down): a crash-consistent snapshot, no checkpoint, no freeze.")
@JSON_OPTION
@PROGRESS_OPTION
@MAX_API_OPTION
def snapshot(env: str, role: str | None, wait: bool, no_quiesce: bool, as_json: bool, progress_mode: str,
             max_api: int) -> None:
    """Snapshot every data disk of environment NAME now (PostgreSQL checkpointed, disks frozen meanwhile)."""
    with progress_for(progress_mode, as_json) as progress:
        result = run(service.snapshot(env, role=role, wait=wait, quiesce=not no_quiesce, progress=progress,
                                      max_api=max_api))
    if as_json:
        echo_json(result.to_dict())
    else:
        click.echo(render.snapshot_text(result))


@click.command()
@ENV_OPTION
@JSON_OPTION
@MAX_API_OPTION
def snapshots(env: str, as_json: bool, max_api: int) -> None:
    """List environment NAME's snapshots, newest first (also once the environment is gone)."""
    found = run(service.snapshots(env, max_api=max_api))
    if as_json:
        echo_json([s.to_dict() for s in found])
    else:
        click.echo(render.snapshots_text(env, found))


def _time(_ctx: click.Context, _param: click.Parameter, value: str | None) -> datetime | None:
    """An ISO 8601 time (``2026-12-06T03:00:00Z``, ``2026-12-06 03:00``; UTC unless it says)."""
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a time: write it as 2026-12-06T03:00:00Z "
                                 "(UTC unless an offset is given)", param_hint="--at") from None


@click.command()
@click.argument("blueprint", type=click.Path(dir_okay=False))
@ENV_OPTION
@click.option("--from", "source", required=True, metavar="OLD", callback=env_name,
              help="The environment whose snapshots the data disks are made from (it may be gone; it may be NAME).")
@click.option("--at", "at", default=None, metavar="TIME", callback=_time,
              help="Use the newest snapshots taken at or before TIME (ISO 8601, UTC unless given).")
@click.option("--ttl", "ttl_text", default=None, metavar="DURATION", help="Expiry, as for create-env.")
@click.option("--skip-rollout", is_flag=True, help="Provision only: stop once every VM answers SSH.")
@click.option("--version", "version", default=None, help="Image tag to roll out (default: git HEAD, short).")
@SET_OPTION
@JSON_OPTION
@PROGRESS_OPTION
@MAX_API_OPTION
@SSH_TIMEOUT_OPTION
@BREAK_LOCK_OPTION
def recover(blueprint: str, env: str, source: str, at: datetime | None, ttl_text: str | None, skip_rollout: bool,
            version: str | None, overrides: tuple[str, ...], as_json: bool, progress_mode: str, max_api: int,
            ssh_timeout: float, break_lock: bool) -> None:
    """Create environment NAME from BLUEPRINT as create-env does, each data disk made from OLD's snapshot."""
    bp = load(blueprint, overrides)
    if not skip_rollout:
        version = version_or_head(version, what=" (or pass --skip-rollout)")
    from ..provision.run import CreateOptions

    opts = CreateOptions(ttl=ttl(ttl_text), max_api=max_api, ssh_timeout=ssh_timeout, break_lock=break_lock)
    with progress_for(progress_mode, as_json) as progress:
        outcome = run(service.recover(bp, env, source, at=at, version=version, skip_rollout=skip_rollout,
                                      progress=progress, options=opts, blueprint_path=blueprint,
                                      overrides=overrides))
    if as_json:
        echo_json(render.recover_dict(outcome))
    else:
        click.echo(render.recover_text(outcome))


COMMANDS = [snapshot, snapshots, recover]
