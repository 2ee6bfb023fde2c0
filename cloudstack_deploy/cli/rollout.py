"""`csdeploy deploy | rollback | status | logs | exec | proxy reboot | accessory ... | maintenance`."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from ..rollout.deploy import RolloutResult

from ..log import redact
from .common import (
    BLUEPRINT_OPTION,
    BREAK_LOCK_OPTION,
    DRY_RUN_OPTION,
    ENV_OPTION,
    HOSTS_OPTION,
    JSON_OPTION,
    PROGRESS_OPTION,
    ROLES_OPTION,
    SET_OPTION,
    Lazy,
    echo_json,
    progress_for,
    run,
    version_or_head,
)

render = Lazy("cloudstack_deploy.render")
service = Lazy("cloudstack_deploy.service")

CONTINUE_OPTION = click.option("--continue-on-error", is_flag=True,
                               help="When a host refuses the new version, keep the hosts that already switched "
                                    "on it (default: switch them back too).")


def _report(result: RolloutResult, as_json: bool, what: str, dry_run: bool) -> None:
    if dry_run:
        click.echo(redact(render.dry_run_text(result, what)))
    elif as_json:
        echo_json(render.rollout_dict(result))
    else:
        click.echo(render.rollout_text(result, what))


@click.command()
@click.argument("blueprint", type=click.Path(dir_okay=False))
@ENV_OPTION
@click.option("--version", "version", default=None,
              help="Image tag to deploy (default: git HEAD, short; with --build: the build context's commit).")
@click.option("--build", "build", is_flag=True,
              help="First build the image from the blueprint's `build` section and push it (see `csdeploy build`).")
@click.option("--canary", "canary", default=None, metavar="N|P%",
              help="Only a canary: N hosts of each proxy role, or P% of every host's requests (kamal-proxy's "
                   "split, by cookie); watched, then paused until --promote or --abort.")
@click.option("--promote", is_flag=True, help="Finish the paused canary: the rest of the hosts take its version.")
@click.option("--abort", "abort_", is_flag=True, help="Undo the paused canary: its hosts go back.")
@CONTINUE_OPTION
@SET_OPTION
@ROLES_OPTION
@HOSTS_OPTION
@BREAK_LOCK_OPTION
@DRY_RUN_OPTION
@JSON_OPTION
@PROGRESS_OPTION
def deploy(blueprint: str, env: str, version: str | None, build: bool, canary: str | None, promote: bool,
           abort_: bool, continue_on_error: bool, overrides: tuple[str, ...], roles: tuple[str, ...],
           hosts: tuple[str, ...], break_lock: bool, dry_run: bool, as_json: bool, progress_mode: str) -> None:
    """Deploy VERSION of the app to environment NAME (rollout only; provision with create-env).

    Proxy roles switch host by host behind a load balancer (`rollout.batch` to change it), a
    `rollout.watch` judges the new version and switches every host back when it fails."""
    if build and dry_run:
        raise click.UsageError("--build builds and pushes for real; --dry-run cannot be combined with it")
    if promote or abort_:
        if promote and abort_:
            raise click.UsageError("--promote and --abort: choose one")
        clash = [flag for flag, given in (("--version", version), ("--build", build), ("--canary", canary),
                                          ("--roles", roles), ("--hosts", hosts)) if given]
        if clash:
            raise click.UsageError(f"--{'promote' if promote else 'abort'} finishes the paused canary as it was "
                                   f"made; {', '.join(clash)} cannot be combined with it")
        with progress_for(progress_mode, as_json) as progress:
            result = run(service.finish_canary(env, "promote" if promote else "abort", blueprint=blueprint,
                                               overrides=overrides, break_lock=break_lock, progress=progress,
                                               dry_run=dry_run))
        _report(result, as_json, "promote" if promote else "abort", dry_run)
        return
    if build:
        with progress_for(progress_mode, as_json) as progress:
            built, result = run(service.build_and_deploy(env, version=version, blueprint=blueprint,
                                                         overrides=overrides, break_lock=break_lock,
                                                         progress=progress, roles=roles, hosts=hosts,
                                                         canary=canary, continue_on_error=continue_on_error))
        if as_json:
            echo_json({**render.rollout_dict(result), "build": render.build_dict(built)})
        else:
            click.echo(render.build_text(built))
            _report(result, False, "deploy", False)
        return
    version = version_or_head(version)
    with progress_for(progress_mode, as_json) as progress:
        result = run(service.deploy(env, version, blueprint=blueprint, overrides=overrides, break_lock=break_lock,
                                    progress=progress, dry_run=dry_run, roles=roles, hosts=hosts, canary=canary,
                                    continue_on_error=continue_on_error))
    _report(result, as_json, "deploy", dry_run)


@click.command()
@ENV_OPTION
@click.option("--to", "to", default=None, help="Version to go back to (default: the previous successful one).")
@BLUEPRINT_OPTION
@ROLES_OPTION
@HOSTS_OPTION
@CONTINUE_OPTION
@BREAK_LOCK_OPTION
@DRY_RUN_OPTION
@JSON_OPTION
@PROGRESS_OPTION
def rollback(env: str, to: str | None, blueprint: str | None, roles: tuple[str, ...], hosts: tuple[str, ...],
             continue_on_error: bool, break_lock: bool, dry_run: bool, as_json: bool, progress_mode: str) -> None:
    """Go back to the previous successful version (or --to VERSION), with the same zero-downtime switch."""
    with progress_for(progress_mode, as_json) as progress:
        result = run(service.rollback(env, to, blueprint=blueprint, break_lock=break_lock, progress=progress,
                                      dry_run=dry_run, roles=roles, hosts=hosts, continue_on_error=continue_on_error))
    _report(result, as_json, "rollback to", dry_run)


@click.command()
@ENV_OPTION
@BLUEPRINT_OPTION
@JSON_OPTION
def status(env: str, blueprint: str | None, as_json: bool) -> None:
    """Per host: containers, versions, health, and kamal-proxy's targets."""
    hosts = run(service.status(env, blueprint=blueprint))
    if as_json:
        echo_json([h.__dict__ for h in hosts])
    else:
        click.echo(render.status_text(hosts))


@click.command()
@ENV_OPTION
@click.option("--role", "role", required=True, help="Role or accessory name.")
@click.option("-f", "--follow", is_flag=True, help="Keep streaming new lines.")
@click.option("-n", "--lines", default=100, show_default=True, type=click.IntRange(0, 100000))
@BLUEPRINT_OPTION
def logs(env: str, role: str, follow: bool, lines: int, blueprint: str | None) -> None:
    """Show the logs of a role's current containers (or an accessory's), prefixed by host."""
    run(service.logs(env, role, lines=lines, follow=follow, emit=click.echo, blueprint=blueprint))


@click.command("exec", context_settings={"ignore_unknown_options": True})
@ENV_OPTION
@click.option("--role", "role", required=True, help="Role or accessory name.")
@BLUEPRINT_OPTION
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_cmd(env: str, role: str, blueprint: str | None, command: tuple[str, ...]) -> None:
    """Run COMMAND in the role's current container on each of its hosts: csdeploy exec --env X --role web -- ls."""
    sys.exit(run(service.exec_(env, role, list(command), emit=click.echo, blueprint=blueprint)))


@click.group()
def proxy() -> None:
    """kamal-proxy on the proxy hosts."""


@proxy.command("reboot")
@ENV_OPTION
@BLUEPRINT_OPTION
def proxy_reboot(env: str, blueprint: str | None) -> None:
    """Replace kamal-proxy on every proxy host (its routes come back from its state volume)."""
    hosts = run(service.proxy_reboot(env, blueprint=blueprint))
    click.echo(f"kamal-proxy rebooted on {', '.join(hosts) or 'no host'}")


@click.command()
@click.argument("state", type=click.Choice(["on", "off"]))
@ENV_OPTION
@click.option("--message", default="", help="What kamal-proxy's 503 page says (one line), e.g. 'Back at 14:00 UTC'.")
@BLUEPRINT_OPTION
@JSON_OPTION
def maintenance(state: str, env: str, message: str, blueprint: str | None, as_json: bool) -> None:
    """Maintenance mode: kamal-proxy answers every request with 503 (and --message) on every proxy host.

    A deploy meanwhile keeps it on (the new version starts behind the 503 page); `off` resumes."""
    if state == "off" and message:
        raise click.UsageError("--message goes with `maintenance on`")
    result = run(service.maintenance(env, state == "on", message=message, blueprint=blueprint))
    if as_json:
        echo_json({"env": env, "maintenance": state, "message": message, "hosts": result})
        return
    for host, services in result.items():
        for name, outcome in services.items():
            text = {"on": "answers 503" + (f" ({message})" if message else ""), "off": "serves again",
                    "none": "not served here yet" + (" (its first deploy starts in maintenance)"
                                                     if state == "on" else "")}.get(outcome, outcome)
            click.echo(f"{host}: {name} {text}")
        if not services:
            click.echo(f"{host}: no proxy role here")
    click.echo(f"maintenance {state} for environment {env}")


@click.group()
def accessory() -> None:
    """Accessories (databases, caches) of an environment."""


@accessory.command("reboot")
@click.argument("name")
@ENV_OPTION
@BLUEPRINT_OPTION
@PROGRESS_OPTION
def accessory_reboot(name: str, env: str, blueprint: str | None, progress_mode: str) -> None:
    """Restart accessory NAME with a fresh container; its data (volumes) stays."""
    with progress_for(progress_mode) as progress:
        result = run(service.accessory_reboot(env, name, blueprint=blueprint, progress=progress))
    click.echo(f"accessory {name}: {result.accessories.get(name, '?')}")


COMMANDS = [deploy, rollback, status, logs, exec_cmd, proxy, accessory, maintenance]
