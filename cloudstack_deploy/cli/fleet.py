"""`csdeploy reap | nightly | history`: expired environments, nightly runs, the history store."""

from __future__ import annotations

from typing import Any

import click

from ..errors import OperationFailed
from ..store.records import HISTORY_KINDS, STATUSES
from .common import (
    BLUEPRINT_OPTION,
    JSON_OPTION,
    MAX_API_OPTION,
    PROGRESS_OPTION,
    SET_OPTION,
    SSH_TIMEOUT_OPTION,
    Lazy,
    echo_json,
    env_name,
    progress_for,
    remote_server,
    run,
    ttl,
    version_or_head,
)

render = Lazy("cloudstack_deploy.render")
service = Lazy("cloudstack_deploy.service")


@click.command()
@click.option("--dry-run", is_flag=True, help="Show what would be torn down (and what is skipped); delete nothing.")
@click.option("--prefix", default=None, metavar="P", help="Only environments named P or P-... (e.g. a nightly's).")
@click.option("--max-parallel", default=4, show_default=True, type=click.IntRange(1, 50),
              help="Environments torn down at once.")
@JSON_OPTION
@PROGRESS_OPTION
@MAX_API_OPTION
def reap(dry_run: bool, prefix: str | None, max_parallel: int, as_json: bool, progress_mode: str,
         max_api: int) -> None:
    """Tear down every environment whose csdeploy:expires has passed, found from the cloud's tags.

    An environment being created or deployed right now (its lock is held) is skipped and
    reported. Exits 1 naming whatever a teardown left in the cloud.
    """
    with progress_for(progress_mode, as_json) as progress:
        result = run(service.reap(prefix=prefix, dry_run=dry_run, max_parallel=max_parallel, max_api=max_api,
                                  progress=progress))
    if as_json:
        echo_json(result.to_dict())
    else:
        click.echo(render.reap_text(result))
    if not result.ok:
        raise OperationFailed(render.reap_failures(result),
                              hint="re-run `csdeploy reap`; if it persists, remove these with cloudmonkey/cs")


@click.command()
@click.argument("blueprint", type=click.Path(dir_okay=False))
@click.option("--prefix", required=True, metavar="P",
              help="Environment names are P-MMDD-<run id> (P: at most 11 characters).")
@click.option("--ttl", "ttl_text", default="20h", show_default=True, metavar="DURATION",
              help="Expiry of the environment: a later `csdeploy reap` (or nightly) deletes it after this.")
@click.option("--version", "version", default=None, help="Image tag to deploy (default: git HEAD, short).")
@click.option("--check", "checks", multiple=True, metavar="'METHOD /PATH STATUS [TEXT]'",
              help="HTTP check through the proxy host, e.g. 'GET /up 200' (repeatable; default: the "
                   "proxy role's health check path answers 200).")
@click.option("--check-cmd", "check_cmds", multiple=True, metavar="ROLE:CMD",
              help="A command that must exit 0 in the role's current container (repeatable).")
@click.option("--keep/--teardown", default=False, show_default=True,
              help="Keep the environment until its TTL, or tear it down at the end (default).")
@click.option("--keep-on-failure", is_flag=True, help="Keep the environment when a phase or check failed.")
@click.option("--junit", default=None, type=click.Path(dir_okay=False), metavar="FILE",
              help="Write a JUnit XML report (one test case per phase and check).")
@SET_OPTION
@JSON_OPTION
@PROGRESS_OPTION
@MAX_API_OPTION
@SSH_TIMEOUT_OPTION
def nightly(blueprint: str, prefix: str, ttl_text: str, version: str | None, checks: tuple[str, ...],
            check_cmds: tuple[str, ...], keep: bool, keep_on_failure: bool, junit: str | None,
            overrides: tuple[str, ...], as_json: bool, progress_mode: str, max_api: int, ssh_timeout: float) -> None:
    """Reap expired P-* environments, create a fresh one, deploy, check, report, tear down.

    Exit 0 when every phase and check passed, 1 when one failed (the report says which),
    2 for bad input (nothing is created).
    """
    version = version_or_head(version)
    lifetime = ttl(ttl_text)
    assert lifetime is not None
    with progress_for(progress_mode, as_json) as progress:
        result = run(service.nightly(blueprint, prefix, version=version, overrides=overrides, ttl=lifetime,
                                     checks=checks, check_cmds=check_cmds, keep=keep, keep_on_failure=keep_on_failure,
                                     junit=junit, progress=progress, max_api=max_api, ssh_timeout=ssh_timeout))
    if as_json:
        echo_json(result.to_dict())
    else:
        click.echo(render.nightly_text(result))
    click.get_current_context().exit(result.exit_code)


def _since(_ctx: click.Context, _param: click.Parameter, value: str | None) -> object:
    try:
        return ttl(value)
    except click.BadParameter as exc:
        raise click.BadParameter(exc.message, param_hint="--since") from None


@click.command()
@click.option("--env", "env", default=None, metavar="NAME", callback=env_name, help="Only this environment.")
@click.option("--service", "service_name", default=None, help="Only this service.")
@click.option("--status", default=None, type=click.Choice([*STATUSES, "running", "passed", "interrupted"]),
              help="Only deployments (or runs) with this status; interrupted: in progress, but its process "
                   "is gone.")
@click.option("--since", default=None, metavar="DURATION", callback=_since, help="Only the last DURATION, e.g. 7d.")
@click.option("--show", default="deployments", show_default=True, type=click.Choice(HISTORY_KINDS),
              help="Deployments (with their events), environments' lives, or nightly/reap runs.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10000))
@click.option("--source", default="store", show_default=True, type=click.Choice(["store", "host"]),
              help="store: the shared history store (CSDEPLOY_STATE_URL); host: the records on --env's "
                   "primary host (what rollback reads).")
@BLUEPRINT_OPTION
@JSON_OPTION
def history(env: str | None, service_name: str | None, status: str | None, since: object, show: str, limit: int,
            source: str, blueprint: str | None, as_json: bool) -> None:
    """Deployments, environments and runs recorded in the history store (newest first)."""
    if source == "host":
        if env is None:
            raise click.UsageError("--source host needs --env NAME")
        host_records = run(service.history(env, blueprint=blueprint))
        if as_json:
            echo_json([{k: v for k, v in r.__dict__.items() if v is not None} for r in host_records])
        else:
            click.echo(render.history_text(env, host_records))
        return
    remote = remote_server()
    if remote is not None:
        if show != "deployments":
            raise click.UsageError("--server: only --show deployments")
        found = _remote_deployments(remote, env=env, service=service_name, status=status, since=since, limit=limit)
    else:
        found = run(service.recorded(show, env=env, service=service_name, status=status,  # type: ignore[arg-type]
                                     since=since, limit=limit))
    if as_json:
        echo_json([r.to_dict() for r in found])
    else:
        click.echo(render.recorded_text(show, found))


def _remote_deployments(remote: Any, *, since: Any, **filters: Any) -> list[Any]:
    """The server's deployments, as the records `csdeploy history` renders."""
    import math

    from ..store.records import Deployment, Event

    params = {**filters, "since": f"{max(1, math.ceil(since.total_seconds() / 60))}m" if since else None}
    listed = run(remote.call("GET", "/api/deployments", params=params))["deployments"]
    return [Deployment(**{**{k: v for k, v in d.items() if k in Deployment.__dataclass_fields__},
                          "events": [Event(**e) for e in d.get("events", [])]}) for d in listed]


COMMANDS = [reap, nightly, history]
