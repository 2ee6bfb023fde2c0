"""`csdeploy backup | backups | restore`: logical backups of an accessory (dumps.py)."""

from __future__ import annotations

import click

from .common import (
    BLUEPRINT_OPTION,
    BREAK_LOCK_OPTION,
    ENV_OPTION,
    JSON_OPTION,
    PROGRESS_OPTION,
    Lazy,
    echo_json,
    env_name,
    progress_for,
    run,
)

render = Lazy("cloudstack_deploy.render_data")
service = Lazy("cloudstack_deploy.service")

TO_OPTION = click.option(
    "--to", "to", default=None, metavar="URL",
    help="Where backups are kept: a directory, s3://BUCKET/PREFIX[?endpoint=URL], gs://, "
         "azure://CONTAINER/PREFIX[?endpoint=URL], "
         "local://CONTAINER/PREFIX?root=DIR (default: $CSDEPLOY_HOME/backups). Credentials come from the "
         "environment (AWS_ACCESS_KEY_ID, ...), never the URL.")
ACCESSORY_OPTION = click.option("--accessory", "accessory", required=True, metavar="NAME",
                                help="The accessory (PostgreSQL or Redis/Valkey).")


@click.command()
@ENV_OPTION
@ACCESSORY_OPTION
@TO_OPTION
@click.option("--keep", type=click.IntRange(min=1), default=None, metavar="N",
              help="Then delete all but the newest N backups of this accessory at the destination.")
@click.option("--fetch", is_flag=True,
              help="Take no dump: copy the dumps the blueprint's schedule keeps on the accessory's host "
                   "(each checked against its manifest) to the destination; those already there are skipped.")
@BLUEPRINT_OPTION
@JSON_OPTION
def backup(env: str, accessory: str, to: str | None, keep: int | None, fetch: bool, blueprint: str | None,
           as_json: bool) -> None:
    """Dump an accessory's data (pg_dump custom format, Redis RDB) straight into the destination;
    with --fetch, copy the dumps its schedule keeps on the host instead."""
    if fetch:
        if keep is not None:
            raise click.UsageError("--keep applies to a dump taken now, not to --fetch")
        copied = run(service.fetch_backups(env, accessory, to=to, blueprint=blueprint))
        if as_json:
            echo_json([m.to_dict() for m in copied])
        else:
            click.echo(render.fetched_text(env, accessory, copied))
        return
    result = run(service.backup_accessory(env, accessory, to=to, keep=keep, blueprint=blueprint))
    if as_json:
        echo_json(result.to_dict())
    else:
        click.echo(render.backup_text(result))


@click.command()
@ENV_OPTION
@click.option("--accessory", "accessory", default=None, metavar="NAME", help="Only this accessory's.")
@TO_OPTION
@BLUEPRINT_OPTION
@JSON_OPTION
def backups(env: str, accessory: str | None, to: str | None, blueprint: str | None, as_json: bool) -> None:
    """List environment NAME's backups, newest first (also once it is gone): in --to URL, or else
    in the default directory and each destination the environment's blueprint gives
    (`accessories.X.backups.to`), and the dumps a schedule keeps on an accessory's host (WHERE:
    host:PATH)."""
    listed = run(service.backups(env, to=to, accessory=accessory, blueprint=blueprint))
    if as_json:
        echo_json([m.to_dict() for m in listed.found])
    else:
        click.echo(render.backups_text(env, listed.found, listed.searched))
    for text in listed.notes:
        click.echo(f"warning: {text}", err=True)


@click.command()
@ENV_OPTION
@ACCESSORY_OPTION
@click.argument("backup_id", metavar="[BACKUP]", required=False)
@TO_OPTION
@click.option("--from", "source", default=None, metavar="ENV", callback=env_name,
              help="Without BACKUP: the newest backup of this environment's accessory (default: NAME's).")
@click.option("--no-maintenance", is_flag=True, help="Leave the app serving while the data is replaced.")
@click.option("--dry-run", is_flag=True, help="Say what would be checked, stopped and restored, in order; "
              "change nothing.")
@click.option("--yes", is_flag=True, help="Required: the accessory's data is replaced.")
@BLUEPRINT_OPTION
@BREAK_LOCK_OPTION
@JSON_OPTION
@PROGRESS_OPTION
def restore(env: str, accessory: str, backup_id: str | None, to: str | None, source: str | None,
            no_maintenance: bool, dry_run: bool, yes: bool, blueprint: str | None, break_lock: bool,
            as_json: bool, progress_mode: str) -> None:
    """Replace an accessory's data with BACKUP (an id from `csdeploy backups`, or a dump file; default:
    the newest), checked first, with the app behind a maintenance answer meanwhile (with no proxy
    host: the app roles stopped, and started again after)."""
    if dry_run:
        steps = run(service.restore(env, accessory, backup_id, to=to, source_env=source,
                                    maintenance=not no_maintenance, blueprint=blueprint, dry_run=True))
        if as_json:
            echo_json({"dry_run": True, "steps": steps})
        else:
            click.echo(render.restore_plan_text(env, accessory, steps))
        return
    if not yes:
        raise click.UsageError(f"refusing to replace the data of {env}'s {accessory} without --yes")
    with progress_for(progress_mode, as_json) as progress:
        result = run(service.restore(env, accessory, backup_id, to=to, source_env=source,
                                     maintenance=not no_maintenance, blueprint=blueprint, break_lock=break_lock,
                                     progress=progress))
    if as_json:
        echo_json(result.to_dict())
    else:
        click.echo(render.restore_text(result))


COMMANDS = [backup, backups, restore]
