"""`csdeploy deploy | rollback | status | logs | exec | proxy reboot | accessory ... | maintenance`."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from datetime import timedelta

    from ..rollout.deploy import RolloutResult

from ..log import redact, redact_data
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
    _names,
    echo_json,
    not_remote,
    progress_for,
    remote_server,
    run,
    version_or_head,
)

render = Lazy("cloudstack_deploy.render")
service = Lazy("cloudstack_deploy.service")

def _duration(_ctx: click.Context, param: click.Parameter, value: str | None) -> timedelta | None:
    """Click callback: a duration (30m, 2h, 1d) or a usage error (exit 2)."""
    if value is None:
        return None
    from ..blueprint import parse_duration

    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param=param) from None


CONTINUE_OPTION = click.option("--continue-on-error", is_flag=True,
                               help="When a host refuses the new version, keep the hosts that already switched "
                                    "on it (default: switch them back too).")


PLAN_DRY_RUN_OPTION = click.option(
    "--dry-run", is_flag=True,
    help="Read the hosts' facts and print the plan, per host and stage; run nothing. With --json: the plan as "
         "JSON; with --scripts (or -v): every script too (secrets redacted).")
SCRIPTS_OPTION = click.option("--scripts", is_flag=True, help="With --dry-run: print each host's scripts too.")


def _report(result: RolloutResult, as_json: bool, what: str, dry_run: bool, scripts: bool = False) -> None:
    if dry_run:
        ctx = click.get_current_context(silent=True)
        scripts = scripts or bool(ctx and ctx.find_root().obj and ctx.find_root().obj.get("verbose"))
        if as_json:
            echo_json(redact_data(render.rollout_plan_dict(result, scripts)))
        else:
            click.echo(redact(render.rollout_plan_text(result, what, scripts)))
    elif as_json:
        echo_json(render.rollout_dict(result))
    else:
        click.echo(render.rollout_text(result, what))


def _report_job(job: dict[str, object], as_json: bool) -> None:
    if as_json:
        echo_json(job)
        return
    result = job.get("result") or {}
    version = result.get("version") if isinstance(result, dict) else None
    click.echo(f"{job['kind']} of {job['env']}{' to ' + str(version) if version else ''}: {job['status']} "
               f"(job {job['id']}, by {job['requested_by']})")


@click.command()
@click.argument("blueprint", type=click.Path(dir_okay=False), required=False)
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
@PLAN_DRY_RUN_OPTION
@SCRIPTS_OPTION
@JSON_OPTION
@PROGRESS_OPTION
def deploy(blueprint: str, env: str, version: str | None, build: bool, canary: str | None, promote: bool,
           abort_: bool, continue_on_error: bool, overrides: tuple[str, ...], roles: tuple[str, ...],
           hosts: tuple[str, ...], break_lock: bool, dry_run: bool, scripts: bool, as_json: bool,
           progress_mode: str) -> None:
    """Deploy VERSION of the app to environment NAME (rollout only; provision with create-env).

    Proxy roles switch host by host behind a load balancer (`rollout.batch` to change it), a
    `rollout.watch` judges the new version and switches every host back when it fails.
    With --server, BLUEPRINT is not needed: the server deploys with the environment's own."""
    remote = remote_server()
    if remote is not None:
        not_remote(build=build, promote=promote, abort=abort_, continue_on_error=continue_on_error, set=overrides,
                   roles=roles, hosts=hosts, break_lock=break_lock, dry_run=dry_run, scripts=scripts)
        body = {"env": env, "version": version_or_head(version), "kind": "deploy", "canary": canary}
        with progress_for(progress_mode, as_json) as progress:
            job = run(remote.run_job("/api/deployments", body, progress))
        _report_job(job, as_json)
        return
    if blueprint is None:
        raise click.UsageError("Missing argument 'BLUEPRINT'.")
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
        _report(result, as_json, "promote" if promote else "abort", dry_run, scripts)
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
    _report(result, as_json, "deploy", dry_run, scripts)


@click.command()
@ENV_OPTION
@click.option("--to", "to", default=None, help="Version to go back to (default: the previous successful one).")
@BLUEPRINT_OPTION
@ROLES_OPTION
@HOSTS_OPTION
@CONTINUE_OPTION
@BREAK_LOCK_OPTION
@PLAN_DRY_RUN_OPTION
@SCRIPTS_OPTION
@JSON_OPTION
@PROGRESS_OPTION
def rollback(env: str, to: str | None, blueprint: str | None, roles: tuple[str, ...], hosts: tuple[str, ...],
             continue_on_error: bool, break_lock: bool, dry_run: bool, scripts: bool, as_json: bool,
             progress_mode: str) -> None:
    """Go back to the previous successful version (or --to VERSION), with the same zero-downtime switch."""
    remote = remote_server()
    if remote is not None:
        not_remote(blueprint=blueprint, roles=roles, hosts=hosts, continue_on_error=continue_on_error,
                   break_lock=break_lock, dry_run=dry_run, scripts=scripts)
        with progress_for(progress_mode, as_json) as progress:
            job = run(remote.run_job("/api/deployments", {"env": env, "version": to, "kind": "rollback"}, progress))
        _report_job(job, as_json)
        return
    with progress_for(progress_mode, as_json) as progress:
        result = run(service.rollback(env, to, blueprint=blueprint, break_lock=break_lock, progress=progress,
                                      dry_run=dry_run, roles=roles, hosts=hosts, continue_on_error=continue_on_error))
    _report(result, as_json, "rollback to", dry_run, scripts)


@click.command()
@ENV_OPTION
@BLUEPRINT_OPTION
@JSON_OPTION
def status(env: str, blueprint: str | None, as_json: bool) -> None:
    """Per host: containers, versions, health, and kamal-proxy's targets."""
    hosts = run(service.status(env, blueprint=blueprint))
    if as_json:
        if any(b.get("run_by") == "serve" for h in hosts for b in h.backups):
            _serve_runs(env, blueprint, hosts)
        echo_json([h.__dict__ for h in hosts])
    else:
        click.echo(render.status_text(hosts))
        _scheduled_backups(env, blueprint)


def _serve_runs(env: str, blueprint: str | None, hosts: list[Any]) -> None:
    """`status --json`: each schedule `csdeploy serve` runs gets its last run and next due (the
    history store's), or why they cannot be read."""
    from ..errors import CsdeployError

    try:
        states = {s.accessory: s.to_dict() for s in run(service.scheduled_backups(env, blueprint=blueprint))}
    except CsdeployError as exc:
        states = {}
        problem = str(exc).splitlines()[0]
    else:
        problem = ""
    for h in hosts:
        for b in h.backups:
            if b.get("run_by") == "serve":
                b["last_run"] = states.get(b["accessory"]) or ({"error": problem} if problem else {})


def _scheduled_backups(env: str, blueprint: str | None) -> None:
    """The blueprint's scheduled backups under `status`: last run and next due (the history
    store's); a store that cannot be read is said, the status stands."""
    from ..errors import CsdeployError
    from ..render_data import scheduled_backups_text

    try:
        states = run(service.scheduled_backups(env, blueprint=blueprint))
    except CsdeployError as exc:
        click.echo(f"scheduled backups: cannot be read: {str(exc).splitlines()[0]}")
        return
    if states:
        click.echo(scheduled_backups_text(states))


@click.command()
@ENV_OPTION
@click.option("--role", "role", required=True, help="Role or accessory name.")
@click.option("-f", "--follow", is_flag=True, help="Keep streaming new lines.")
@click.option("-n", "--lines", default=100, show_default=True, type=click.IntRange(0, 100000))
@click.option("--since", default=None, metavar="DURATION", callback=_duration,
              help="Only lines of this last stretch (30m, 2h, 1d).")
@BLUEPRINT_OPTION
def logs(env: str, role: str, follow: bool, lines: int, since: timedelta | None, blueprint: str | None) -> None:
    """Show the logs of a role's current containers (or an accessory's), prefixed by host."""
    run(service.logs(env, role, lines=lines, follow=follow, emit=click.echo, blueprint=blueprint, since=since))


INTERACTIVE_OPTION = click.option("-i", "--interactive", is_flag=True,
                                  help="Attach this terminal's stdin (one host: --primary or --hosts NAME).")
TTY_OPTION = click.option("-t", "--tty", is_flag=True,
                          help="A terminal too (implies -i): for shells, consoles, psql.")
PRIMARY_OPTION = click.option("--primary", is_flag=True, help="On the role's first host.")
ONE_HOST_OPTION = click.option("--hosts", "hosts", callback=_names, metavar="HOST",
                               help="On this host (VM name, e.g. demo-web-2).")


@click.command("exec", context_settings={"ignore_unknown_options": True})
@ENV_OPTION
@click.option("--role", "role", required=True, help="Role or accessory name.")
@INTERACTIVE_OPTION
@TTY_OPTION
@click.option("--new", is_flag=True, help="In a fresh container of the role's image, env and volumes, "
                                         "removed afterwards (not the running one).")
@PRIMARY_OPTION
@ONE_HOST_OPTION
@BLUEPRINT_OPTION
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_cmd(env: str, role: str, interactive: bool, tty: bool, new: bool, primary: bool, hosts: tuple[str, ...],
             blueprint: str | None, command: tuple[str, ...]) -> None:
    """Run COMMAND in the role's current container: on each of its hosts (csdeploy exec --env X --role web -- ls),
    or on one host with this terminal attached (-i, --tty: csdeploy exec -it --env X --role web -- sh)."""
    if interactive or tty or new or primary or hosts:
        sys.exit(run(service.exec_session(env, role, list(command), interactive=interactive or tty, tty=tty,
                                          new=new, primary=primary, hosts=hosts, blueprint=blueprint)))
    sys.exit(run(service.exec_(env, role, list(command), emit=click.echo, blueprint=blueprint)))


@click.command(context_settings={"ignore_unknown_options": True})
@ENV_OPTION
@click.option("--role", "role", default=None, help="Role (default: the first proxy role, else the first role).")
@PRIMARY_OPTION
@ONE_HOST_OPTION
@BLUEPRINT_OPTION
@click.pass_context
def console(ctx: click.Context, env: str, role: str | None, primary: bool, hosts: tuple[str, ...],
            blueprint: str | None) -> None:
    """A console in the app: the blueprint's `aliases.console` if it has one, else `sh` in the role's
    running container, with this terminal attached."""
    aliases = run(service.aliases(env, blueprint=blueprint))
    if "console" in aliases and role is None:
        _run_alias(ctx, aliases, "console", env, blueprint, ())
        return
    sys.exit(run(service.console(env, role=role, primary=primary, hosts=hosts, blueprint=blueprint)))


def _run_alias(ctx: click.Context, aliases: dict[str, str], name: str, env: str, blueprint: str | None,
               extra: tuple[str, ...]) -> None:
    """Run the csdeploy command line ``aliases[name]`` (with --env, and --blueprint when given, added
    before its ``--``) as if typed."""
    import shlex

    if name not in aliases:
        raise click.UsageError(f"no alias {name!r} in the blueprint"
                               + (f" (aliases: {', '.join(sorted(aliases))})" if aliases else " (it has no `aliases:`)"))
    words = shlex.split(aliases[name])
    added = ["--env", env, *(["--blueprint", blueprint] if blueprint else [])]
    at = words.index("--") if "--" in words else len(words)
    args = [*words[:at], *added, *words[at:], *extra]
    root = ctx.find_root().command
    root.main(args=args, prog_name="csdeploy", standalone_mode=False, obj=ctx.find_root().obj)


@click.command("alias", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@ENV_OPTION
@BLUEPRINT_OPTION
@click.argument("extra", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def alias_cmd(ctx: click.Context, name: str, env: str, blueprint: str | None, extra: tuple[str, ...]) -> None:
    """Run the blueprint's alias NAME (its `aliases:` map: a name -> a csdeploy command line, like Kamal's);
    EXTRA words are added at its end."""
    aliases = run(service.aliases(env, blueprint=blueprint))
    _run_alias(ctx, aliases, name, env, blueprint, extra)


@click.command(context_settings={"ignore_unknown_options": True})
@ENV_OPTION
@click.option("--accessory", "accessory_name", default=None, metavar="NAME",
              help="The PostgreSQL accessory (default: the blueprint's only one).")
@click.option("--no-tty", is_flag=True, help="No terminal: for SQL on stdin (csdeploy psql --env X --no-tty < q.sql).")
@BLUEPRINT_OPTION
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def psql(env: str, accessory_name: str | None, no_tty: bool, blueprint: str | None, args: tuple[str, ...]) -> None:
    """psql in the PostgreSQL accessory as its POSTGRES_USER on its POSTGRES_DB, this terminal attached;
    ARGS go to psql (csdeploy psql --env X -- -c 'select 1')."""
    sys.exit(run(service.psql(env, accessory=accessory_name, args=args, tty=not no_tty, blueprint=blueprint)))


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
@DRY_RUN_OPTION
@JSON_OPTION
def maintenance(state: str, env: str, message: str, blueprint: str | None, dry_run: bool, as_json: bool) -> None:
    """Maintenance mode: kamal-proxy answers every request with 503 (and --message) on every proxy host.

    A deploy meanwhile keeps it on (the new version starts behind the 503 page); `off` resumes."""
    if state == "off" and message:
        raise click.UsageError("--message goes with `maintenance on`")
    if dry_run:
        planned = run(service.maintenance_plan(env, state == "on", message=message, blueprint=blueprint))
        if as_json:
            echo_json({"env": env, "maintenance": state, "dry_run": True,
                       "planned": [step.__dict__ for step in planned]})
            return
        lines = [f"maintenance {state} --dry-run: nothing was run; these scripts would be sent "
                 "(each on stdin to `sh -s`)"]
        for step in planned:
            lines += [f"\n### {step.host}: {step.what}", step.text.rstrip("\n")]
        click.echo(redact("\n".join(lines)))
        return
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


YES_OPTION = click.option("--yes", is_flag=True, help="Do not ask for confirmation.")


def _confirm(yes: bool, dry_run: bool, question: str) -> None:
    if yes or dry_run:
        return
    if not sys.stdin.isatty():
        raise click.UsageError(f"{question.rstrip('?')}: refusing without --yes (no terminal to ask)")
    click.confirm(question, abort=True)


def _lifecycle(result: object, what: str, as_json: bool) -> None:
    if as_json:
        echo_json(result.__dict__ | {"planned": [p.__dict__ for p in result.planned]})  # type: ignore[attr-defined]
    else:
        click.echo(redact(render.lifecycle_text(result, what)))


@click.group("app")
def app_group() -> None:
    """The app roles' containers: stop, start, remove, details."""


def _app_command(action: str, doc: str, *, changes: bool = True, confirm: str | None = None) -> None:
    def command(env: str, roles: tuple[str, ...], hosts: tuple[str, ...], blueprint: str | None,
                as_json: bool, dry_run: bool = False, break_lock: bool = False, yes: bool = False) -> None:
        if confirm:
            _confirm(yes, dry_run, confirm.format(env=env))
        result = run(service.app_lifecycle(env, action, roles=roles, hosts=hosts, blueprint=blueprint,
                                           dry_run=dry_run, break_lock=break_lock))
        _lifecycle(result, f"app {action}", as_json)

    command.__doc__ = doc
    for option in reversed([ENV_OPTION, ROLES_OPTION, HOSTS_OPTION, BLUEPRINT_OPTION, JSON_OPTION,
                            *([DRY_RUN_OPTION, BREAK_LOCK_OPTION] if changes else []),
                            *([YES_OPTION] if confirm else [])]):
        command = option(command)
    app_group.command(action)(command)


_app_command("stop", "Stop the role's running containers on each selected host (kamal-proxy then answers 502).")
_app_command("start", "Start the role's current container on each selected host (the version the history says "
                      "runs); a proxy role's route is pointed at it again, health-checked.")
_app_command("remove", "Remove the role's containers, its kamal-proxy route and its scheduled jobs on each "
                       "selected host (a deploy brings them back).",
             confirm="Remove the app containers of environment '{env}' (selected roles and hosts)?")
_app_command("details", "Each selected host's containers of its role: name, image, state, status.", changes=False)


@click.command()
@ENV_OPTION
@BLUEPRINT_OPTION
@DRY_RUN_OPTION
@BREAK_LOCK_OPTION
@JSON_OPTION
def prune(env: str, blueprint: str | None, dry_run: bool, break_lock: bool, as_json: bool) -> None:
    """Remove old stopped containers and unused images beyond the blueprint's retain_versions."""
    result = run(service.prune(env, blueprint=blueprint, dry_run=dry_run, break_lock=break_lock))
    if as_json or dry_run:
        _lifecycle(result, "prune", as_json)
        return
    for host, done in result.hosts.items():
        click.echo(f"{host}: removed {done.get('containers', '0')} containers, {done.get('images', '0')} images")


@click.group()
def accessory() -> None:
    """Accessories (databases, caches) of an environment."""


def _accessory_command(action: str, doc: str) -> None:
    def command(name: str, env: str, blueprint: str | None, dry_run: bool, break_lock: bool, as_json: bool,
                delete_data: bool = False, yes: bool = False) -> None:
        if action == "remove":
            _confirm(yes, dry_run, f"Remove accessory {name} of environment '{env}'"
                     + (" AND DELETE ITS DATA?" if delete_data else " (its data stays)?"))
        result = run(service.accessory_lifecycle(env, name, action, delete_data=delete_data, blueprint=blueprint,
                                                 dry_run=dry_run, break_lock=break_lock))
        _lifecycle(result, f"accessory {action} {name}", as_json)

    command.__doc__ = doc
    options = [click.argument("name"), ENV_OPTION, BLUEPRINT_OPTION, DRY_RUN_OPTION, BREAK_LOCK_OPTION, JSON_OPTION]
    if action == "remove":
        options += [click.option("--delete-data", is_flag=True,
                                 help="Also delete its volumes' files (on its data disk); the disk itself stays."),
                    YES_OPTION]
    for option in reversed(options):
        command = option(command)
    accessory.command(action)(command)


_accessory_command("start", "Start accessory NAME's stopped container.")
_accessory_command("stop", "Stop accessory NAME's container (the apps using it lose it until `start`).")
_accessory_command("restart", "Restart accessory NAME's container (the same container; `reboot` makes a fresh one).")
_accessory_command("remove", "Remove accessory NAME's container; its data stays unless --delete-data.")
_accessory_command("upgrade", "Pull the blueprint's image of accessory NAME and re-create its container "
                              "with it; the data stays.")


@accessory.command("exec", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@ENV_OPTION
@INTERACTIVE_OPTION
@TTY_OPTION
@BLUEPRINT_OPTION
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def accessory_exec(name: str, env: str, interactive: bool, tty: bool, blueprint: str | None,
                   command: tuple[str, ...]) -> None:
    """Run COMMAND in accessory NAME's container (-i: with this terminal's stdin; --tty: a terminal too)."""
    sys.exit(run(service.exec_session(env, name, list(command), interactive=interactive or tty, tty=tty,
                                      blueprint=blueprint)))


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


COMMANDS = [deploy, rollback, status, logs, exec_cmd, proxy, accessory, maintenance, app_group, prune, console,
            alias_cmd, psql]
