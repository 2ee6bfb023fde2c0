"""`csdeploy preview up | down`: an environment per pull request, for CI."""

from __future__ import annotations

import click

from ..errors import InvalidInput
from .common import (
    BREAK_LOCK_OPTION,
    JSON_OPTION,
    MAX_API_OPTION,
    PROGRESS_OPTION,
    SET_OPTION,
    SSH_TIMEOUT_OPTION,
    Lazy,
    echo_json,
    load,
    progress_for,
    run,
    ttl,
    version_or_head,
)

service = Lazy("cloudstack_deploy.service")

NAME_OPTION = click.option("--name", "name", default=None, metavar="NAME",
                           help="The preview environment's name, e.g. pr-123.")
PR_OPTION = click.option("--pr", "pr", default=None, metavar="NUMBER",
                         help="The pull request's number: the preview is named pr-NUMBER.")
GITHUB_OPTION = click.option("--github-output", "github", is_flag=True,
                             help="Write url= and env= to $GITHUB_OUTPUT and a Markdown summary to "
                                  "$GITHUB_STEP_SUMMARY (GitHub Actions).")
DOTENV_OPTION = click.option("--dotenv", "dotenv", default=None, metavar="FILE", type=click.Path(dir_okay=False),
                             help="Append PREVIEW_URL= and PREVIEW_ENV= to FILE (GitLab's dotenv report).")


def _name(name: str | None, pr: str | None) -> str:
    from ..preview import preview_name

    try:
        return preview_name(name, pr)
    except InvalidInput as exc:
        raise click.UsageError(str(exc) + (f" ({exc.hint})" if exc.hint else "")) from None


@click.group()
def preview() -> None:
    """Preview environments: one per pull request, with a TTL that `csdeploy reap` honours."""


@preview.command("up")
@click.argument("blueprint", type=click.Path(dir_okay=False))
@NAME_OPTION
@PR_OPTION
@click.option("--ttl", "ttl_text", default="3d", show_default=True, metavar="DURATION",
              help="Expiry from now, renewed by every `up`; `csdeploy reap` removes the preview after it.")
@click.option("--version", "version", default=None, help="Image tag to roll out (default: git HEAD, short).")
@click.option("--from-env", "from_env", default=None, metavar="ENV",
              help="Make each new data disk from ENV's newest snapshot of the same role and disk "
                   "(as `csdeploy recover` does); later pushes keep the preview's own disks.")
@click.option("--skip-rollout", is_flag=True, help="Provision (and name) only; no rollout.")
@GITHUB_OPTION
@DOTENV_OPTION
@SET_OPTION
@JSON_OPTION
@PROGRESS_OPTION
@MAX_API_OPTION
@SSH_TIMEOUT_OPTION
@BREAK_LOCK_OPTION
def up(blueprint: str, name: str | None, pr: str | None, ttl_text: str, version: str | None, from_env: str | None,
       skip_rollout: bool, github: bool, dotenv: str | None, overrides: tuple[str, ...], as_json: bool,
       progress_mode: str, max_api: int, ssh_timeout: float, break_lock: bool) -> None:
    """Create or update the preview environment from BLUEPRINT and print its URL.

    A new push redeploys the same environment (the same VMs); the first one creates it."""
    from ..preview import ci_files, write_ci_files
    from ..provision.run import CreateOptions

    env = _name(name, pr)
    expiry = ttl(ttl_text)
    files = ci_files(github, dotenv)
    bp = load(blueprint, overrides)
    if not skip_rollout:
        version = version_or_head(version, what=" (or pass --skip-rollout)")
    opts = CreateOptions(max_api=max_api, ssh_timeout=ssh_timeout, break_lock=break_lock)
    with progress_for(progress_mode, as_json) as progress:
        result, _ = run(service.preview_up(bp, env, version=version, ttl=expiry, from_env=from_env,
                                           skip_rollout=skip_rollout, progress=progress, options=opts,
                                           blueprint_path=blueprint, overrides=overrides))
    write_ci_files(files, env=env, url=result.url, up=True, version=result.version, created=result.created,
                   expires=result.expires)
    if as_json:
        echo_json(result.to_dict())
        return
    what = "created" if result.created else "updated (same VMs)"
    click.echo(f"preview {env} {what}; expires {result.expires or 'never'}")
    click.echo(result.url or "(no proxy role: no URL)")


@preview.command("down")
@NAME_OPTION
@PR_OPTION
@GITHUB_OPTION
@DOTENV_OPTION
@JSON_OPTION
@PROGRESS_OPTION
@MAX_API_OPTION
def down(name: str | None, pr: str | None, github: bool, dotenv: str | None, as_json: bool, progress_mode: str,
         max_api: int) -> None:
    """Remove the preview environment, its DNS records too, and prove nothing is left.

    A preview that is already gone is fine (exit 0): a closed pull request may be closed twice."""
    from ..preview import ci_files, write_ci_files

    env = _name(name, pr)
    files = ci_files(github, dotenv)
    with progress_for(progress_mode, as_json) as progress:
        result = run(service.preview_down(env, progress=progress, max_api=max_api))
    write_ci_files(files, env=env, url="", up=False, removed=len(result.deleted))
    if as_json:
        echo_json(result.to_dict())
    elif result.existed:
        dns = f"; DNS records removed: {', '.join(result.dns_removed)}" if result.dns_removed else ""
        click.echo(f"preview {env} removed ({len(result.deleted)} resources deleted; nothing left){dns}")
    else:
        click.echo(f"preview {env}: already gone, nothing to remove")


COMMANDS = [preview]
