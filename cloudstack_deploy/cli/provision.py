"""`csdeploy validate | plan | create-env | teardown | envs`."""

from __future__ import annotations

import sys

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
    load,
    progress_for,
    remote_server,
    run,
    ttl,
    version_or_head,
)

render = Lazy("cloudstack_deploy.render")
service = Lazy("cloudstack_deploy.service")

BLUEPRINT_ARG = click.argument("blueprint", type=click.Path(dir_okay=False))


@click.command()
@BLUEPRINT_ARG
@SET_OPTION
def validate(blueprint: str, overrides: tuple[str, ...]) -> None:
    """Check BLUEPRINT: schema, unknown keys, references. Errors name file, line and field."""
    from ..accessories import unkept_notes
    from ..server.schedule import notes

    bp = load(blueprint, overrides)
    click.echo(f"{blueprint}: valid ({bp.summary()})")
    for text in [*notes(bp), *unkept_notes(bp.accessories)]:
        click.echo(f"note: {text}")


@click.command()
@BLUEPRINT_ARG
@ENV_OPTION
@click.option("--ttl", "ttl_text", default=None, metavar="DURATION", help="Expiry to set, e.g. 12h (default: keep); `csdeploy reap` deletes it after that.")
@SET_OPTION
@JSON_OPTION
@MAX_API_OPTION
def plan(blueprint: str, env: str, ttl_text: str | None, overrides: tuple[str, ...], as_json: bool,
         max_api: int) -> None:
    """Show what create-env would create, change and delete. Changes nothing."""
    bp = load(blueprint, overrides)
    result = run(service.plan(bp, env, ttl=ttl(ttl_text), max_api=max_api))
    records = run(service.dns_records(bp, env))
    from ..accessories import unkept_notes
    from ..server.schedule import notes

    scheduled = [*notes(bp, env), *unkept_notes(bp.accessories)]
    if as_json:
        doc = result.to_dict()
        if bp.dns is not None:
            doc["dns"] = [r.to_dict() for r in records]
        if scheduled:
            doc["notes"] = scheduled
        echo_json(doc)
    else:
        click.echo(render.plan_text(result))
        for text in scheduled:
            click.echo(f"note: {text}")
        for r in records:
            click.echo(f"dns: A {r.name} -> {r.address or f'the entry point of role {r.role}'} "
                       f"({bp.dns.provider}, zone {bp.dns.zone})")


@click.command("create-env")
@BLUEPRINT_ARG
@ENV_OPTION
@click.option("--ttl", "ttl_text", default=None, metavar="DURATION",
              help="Expiry (e.g. 12h, 2d), tagged as csdeploy:expires. Nothing is deleted by itself: the "
                   "first `csdeploy reap` after that time tears the environment down.")
@click.option("--skip-rollout", is_flag=True, help="Provision only: stop once every VM answers SSH.")
@click.option("--version", "version", default=None, help="Image tag to roll out (default: git HEAD, short).")
@SET_OPTION
@JSON_OPTION
@PROGRESS_OPTION
@MAX_API_OPTION
@click.option("--max-ssh", default=20, show_default=True, envvar="CSDEPLOY_MAX_SSH", type=click.IntRange(1, 500),
              help="SSH connections at once.")
@SSH_TIMEOUT_OPTION
@BREAK_LOCK_OPTION
def create_env(blueprint: str, env: str, ttl_text: str | None, skip_rollout: bool, version: str | None,
               overrides: tuple[str, ...], as_json: bool, progress_mode: str, max_api: int, max_ssh: int,
               ssh_timeout: float, break_lock: bool) -> None:
    """Create (or converge) environment NAME from BLUEPRINT, wait until every VM answers SSH, roll out."""
    bp = load(blueprint, overrides)
    if not skip_rollout:
        version = version_or_head(version, what=" (or pass --skip-rollout)")
    from ..provision.run import CreateOptions

    opts = CreateOptions(ttl=ttl(ttl_text), max_api=max_api, max_ssh=max_ssh, ssh_timeout=ssh_timeout,
                         break_lock=break_lock)
    with progress_for(progress_mode, as_json) as progress:
        outcome = run(service.create_env(bp, env, version=version, skip_rollout=skip_rollout, progress=progress,
                                         options=opts, blueprint_path=blueprint, overrides=overrides))
    result, rolled = outcome.provision, outcome.rollout
    created = result.plan.count("create", "replace")
    if as_json:  # one JSON document on stdout, rollout included
        from ..state import inventory_to_dict

        doc = {"inventory": inventory_to_dict(result.inventory), "plan": result.plan.to_dict(),
               "seconds": round(result.seconds, 2), "api_calls": result.api_calls}
        if rolled:
            doc["rollout"] = render.rollout_dict(rolled)
        if outcome.dns is not None:
            doc["dns"] = outcome.dns.to_dict()
        echo_json(doc)
        return
    click.echo(render.create_text(result.inventory, result.seconds, result.api_calls, created))
    for rec in outcome.dns.records if outcome.dns is not None else []:
        click.echo(f"dns: {rec.name} -> {rec.address}")
    if rolled:
        click.echo(render.rollout_text(rolled, "rollout"))
        if result.inventory.app_url:
            click.echo(f"app: {result.inventory.app_url}")


@click.command()
@ENV_OPTION
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--delete-snapshots", is_flag=True,
              help="Delete its disk snapshots too (by default they are kept for `csdeploy recover`).")
@JSON_OPTION
@PROGRESS_OPTION
@MAX_API_OPTION
def teardown(env: str, yes: bool, delete_snapshots: bool, as_json: bool, progress_mode: str, max_api: int) -> None:
    """Delete everything environment NAME owns in the cloud, then check that nothing is left
    (its disk snapshots are kept unless --delete-snapshots)."""
    if not yes:
        if not sys.stdin.isatty():
            raise click.UsageError(f"refusing to delete environment '{env}' without --yes (no terminal to ask)")
        click.confirm(f"Delete environment '{env}' and everything it owns?", abort=True)
    remote = remote_server()
    if remote is not None:
        with progress_for(progress_mode, as_json) as progress:
            job = run(remote.run_job(f"/api/environments/{env}", {}, progress, method="DELETE"))
        if as_json:
            echo_json(job)
        else:
            click.echo(f"environment {env} removed by {remote.url} (job {job['id']})")
        return
    with progress_for(progress_mode, as_json) as progress:
        result = run(service.teardown(env, progress=progress, max_api=max_api, delete_snapshots=delete_snapshots))
    if as_json:
        echo_json({"env": env, "deleted": result.deleted, "api_calls": result.api_calls,
                   "kept_snapshots": result.kept_snapshots})
    else:
        click.echo(f"environment {env} removed ({len(result.deleted)} resources deleted; nothing left)")
        if result.kept_snapshots:
            click.echo(f"{result.kept_snapshots} snapshot(s) kept: `csdeploy snapshots --env {env}` lists them, "
                       f"`csdeploy recover` makes an environment from them, `teardown --delete-snapshots` removes them")


@click.command()
@JSON_OPTION
def envs(as_json: bool) -> None:
    """List the environments in the cloud (found by their tags); expired ones are marked."""
    remote = remote_server()
    if remote is not None:
        from ..provision.envs import EnvSummary

        listed = run(remote.call("GET", "/api/environments"))["environments"]
        found = [EnvSummary(**{k: v for k, v in e.items() if k in EnvSummary.__dataclass_fields__}) for e in listed]
    else:
        found = run(service.environments())
    if as_json:
        echo_json([e.to_dict() for e in found])
    else:
        click.echo(render.envs_text(found))


COMMANDS = [validate, plan, create_env, teardown, envs]
