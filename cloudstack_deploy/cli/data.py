"""`csdeploy snapshot | snapshots | recover`: disk snapshots and environments made from them."""

from __future__ import annotations

import click

from .common import (
    ENV_OPTION,
    JSON_OPTION,
    MAX_API_OPTION,
    PROGRESS_OPTION,
    Lazy,
    echo_json,
    progress_for,
    run,
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


COMMANDS = [snapshot, snapshots]
