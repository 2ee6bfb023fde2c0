"""The `csdeploy` command line: parse, call, render. No logic lives here.

Exit codes (documented in the README):
  0  success
  1  the operation failed (cloud or host error, a check that did not pass)
  2  usage error or invalid input (bad blueprint, bad flag, missing secret)
  130 interrupted
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import click

from . import __version__
from .errors import CsdeployError

EXIT_FAILED = 1
EXIT_INVALID = 2


def _invalid_input(exc: BaseException) -> bool:
    from .blueprint import BlueprintError
    from .cloud import NoCloudConfigured
    from .provision.catalog import CatalogError
    from .provision.plan import PlanError
    from .secrets import SecretsError
    from .state import InvalidEnvName

    return isinstance(exc, (BlueprintError, SecretsError, CatalogError, PlanError, InvalidEnvName,
                            NoCloudConfigured))


def _fail(exc: CsdeployError) -> None:
    from .log import redact, terminal_safe

    click.echo(f"csdeploy: error: {terminal_safe(redact(str(exc)))}", err=True)
    if exc.hint:
        click.echo(f"hint: {terminal_safe(redact(exc.hint))}", err=True)
    sys.exit(EXIT_INVALID if _invalid_input(exc) else EXIT_FAILED)


def _run(coro_fn: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run an async command; user-facing errors become a message and an exit code."""
    try:
        return asyncio.run(coro_fn())
    except CsdeployError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        click.echo("csdeploy: interrupted; re-run the command to finish what was started", err=True)
        sys.exit(130)


def _blueprint(path: str, overrides: tuple[str, ...]) -> Any:
    from .blueprint import BlueprintError, load_blueprint

    try:
        return load_blueprint(path, overrides=list(overrides))
    except BlueprintError as exc:
        click.echo(str(exc), err=True)
        sys.exit(EXIT_INVALID)


def _ttl(value: str | None) -> Any:
    if value is None:
        return None
    from .blueprint import parse_duration

    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--ttl") from None


def _env(name: str) -> str:
    from .state import InvalidEnvName, validate_env_name

    try:
        return validate_env_name(name)
    except InvalidEnvName as exc:
        raise click.BadParameter(str(exc), param_hint="--env") from None


SET_OPTION = click.option("--set", "overrides", multiple=True, metavar="PATH=VALUE",
                          help="Override a blueprint value, e.g. --set roles.web.count=2 (repeatable).")
ENV_OPTION = click.option("--env", "env", required=True, metavar="NAME",
                          help="Environment name: lower-case letters, digits, '-' (at most 20).")
JSON_OPTION = click.option("--json", "as_json", is_flag=True,
                           help="Machine output: JSON event lines on stderr, a JSON result on stdout.")
MAX_API_OPTION = click.option("--max-api", default=10, show_default=True, envvar="CSDEPLOY_MAX_API",
                              type=click.IntRange(1, 200), help="CloudStack API calls in flight at once.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="csdeploy")
def main() -> None:
    """Stand up application environments on Apache CloudStack and deploy to them."""


@main.command()
@click.argument("blueprint", type=click.Path(dir_okay=False))
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="PATH=VALUE",
    help="Override a blueprint value, e.g. --set roles.web.count=2 (repeatable).",
)
def validate(blueprint: str, overrides: tuple[str, ...]) -> None:
    """Check BLUEPRINT: schema, unknown keys, references. Errors name file, line and field."""
    from .blueprint import BlueprintError, load_blueprint

    try:
        bp = load_blueprint(blueprint, overrides=list(overrides))
    except BlueprintError as exc:
        click.echo(str(exc), err=True)
        sys.exit(EXIT_INVALID)
    click.echo(f"{blueprint}: valid ({bp.summary()})")


@main.command()
@click.argument("blueprint", type=click.Path(dir_okay=False))
@ENV_OPTION
@click.option("--ttl", default=None, metavar="DURATION", help="Expiry to set, e.g. 12h (default: keep).")
@SET_OPTION
@JSON_OPTION
@MAX_API_OPTION
def plan(blueprint: str, env: str, ttl: str | None, overrides: tuple[str, ...], as_json: bool,
         max_api: int) -> None:
    """Show what create-env would create, change and delete. Changes nothing."""
    from .cloud import Cloud, read_cloud_config
    from .provision.run import plan_env
    from .render import plan_text
    from .state import EnvState

    bp = _blueprint(blueprint, overrides)
    env = _env(env)

    async def go() -> Any:
        async with Cloud(read_cloud_config(), max_in_flight=max_api) as cloud:
            return await plan_env(cloud, bp, env, ttl=_ttl(ttl), state=EnvState(env))

    result = _run(go)
    click.echo(json.dumps(result.to_dict(), indent=2) if as_json else plan_text(result))


@main.command("create-env")
@click.argument("blueprint", type=click.Path(dir_okay=False))
@ENV_OPTION
@click.option("--ttl", default=None, metavar="DURATION",
              help="Delete after this long (e.g. 12h, 2d); tags every resource with csdeploy:expires.")
@click.option("--skip-rollout", is_flag=True, help="Provision only: stop once every VM answers SSH.")
@click.option("--version", "version", default=None, help="Image tag to roll out (default: git HEAD, short).")
@SET_OPTION
@JSON_OPTION
@click.option("--progress", "progress_mode", type=click.Choice(["auto", "tty", "plain", "json"]), default="auto",
              show_default=True, help="How to show progress on stderr.")
@MAX_API_OPTION
@click.option("--max-ssh", default=20, show_default=True, envvar="CSDEPLOY_MAX_SSH", type=click.IntRange(1, 500),
              help="SSH connections at once.")
@click.option("--ssh-timeout", default=300.0, show_default=True, type=float,
              help="Seconds to wait for every VM to answer SSH.")
@click.option("--break-lock", is_flag=True, help="Take over the environment's lock from a run that died.")
def create_env(blueprint: str, env: str, ttl: str | None, skip_rollout: bool, version: str | None,
               overrides: tuple[str, ...],
               as_json: bool, progress_mode: str, max_api: int, max_ssh: int, ssh_timeout: float,
               break_lock: bool) -> None:
    """Create (or converge) environment NAME from BLUEPRINT, then wait until every VM answers SSH."""
    from .cli_rollout import default_version, load_secrets_for, report
    from .cloud import Cloud, read_cloud_config
    from .envctx import EnvContext, remember_blueprint
    from .progress import make_progress
    from .provision.run import CreateOptions
    from .provision.run import create_env as run_create
    from .render import create_text
    from .rollout.deploy import Rollout, RolloutOptions
    from .state import EnvState

    bp = _blueprint(blueprint, overrides)
    env = _env(env)
    opts = CreateOptions(ttl=_ttl(ttl), max_api=max_api, max_ssh=max_ssh, ssh_timeout=ssh_timeout,
                         break_lock=break_lock)
    if not skip_rollout:
        version = version or default_version()
        if not version:
            raise click.UsageError("no --version given and not in a git repository (or pass --skip-rollout)")
    progress = make_progress("json" if as_json else progress_mode)
    secrets: dict[str, str] = {}
    rolled: list[Any] = []

    async def go() -> Any:
        if not skip_rollout:  # secrets are checked before anything is created
            secrets.update(load_secrets_for(bp))
        state = EnvState(env)
        async with Cloud(read_cloud_config(), max_in_flight=max_api) as cloud:
            result = await run_create(cloud, bp, env, state, progress, opts)
        remember_blueprint(state, blueprint, overrides)
        if not skip_rollout:
            ctx = EnvContext(env=env, state=state, bp=bp, inventory=result.inventory)
            rollout = Rollout(bp, result.inventory, secrets, progress, client_key=ctx.client_key,
                              known_hosts=state.known_hosts_path)
            rolled.append(await rollout.run(RolloutOptions(version=version or "")))
        return result

    try:
        result = _run(go)
    finally:
        progress.close()
    created = result.plan.count("create", "replace")
    if as_json:  # one JSON document on stdout, rollout included
        doc: dict[str, Any] = {"inventory": result.inventory, "plan": result.plan.to_dict(),
                               "seconds": round(result.seconds, 2), "api_calls": result.api_calls}
        if rolled:
            doc["rollout"] = {"version": rolled[0].version, "seconds": round(rolled[0].seconds, 2),
                              "ssh_exec_calls": rolled[0].exec_calls, "accessories": rolled[0].accessories}
        click.echo(json.dumps(doc, indent=2))
        return
    click.echo(create_text(result.inventory, result.seconds, result.api_calls, created))
    if rolled:
        report(rolled[0], False, "rollout")
        web = next((h for h in result.inventory["hosts"] if h.get("proxy")), None)
        if web:
            click.echo(f"app: http://{web['public_ip']}/")


@main.command()
@ENV_OPTION
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@JSON_OPTION
@click.option("--progress", "progress_mode", type=click.Choice(["auto", "tty", "plain", "json"]), default="auto",
              show_default=True)
@MAX_API_OPTION
def teardown(env: str, yes: bool, as_json: bool, progress_mode: str, max_api: int) -> None:
    """Delete everything environment NAME owns in the cloud, then check that nothing is left."""
    from .cloud import Cloud, read_cloud_config
    from .progress import make_progress
    from .provision.teardown import teardown_env
    from .state import EnvState

    env = _env(env)
    if not yes:
        if not sys.stdin.isatty():
            click.echo(f"csdeploy: refusing to delete environment '{env}' without --yes (no terminal to ask)",
                       err=True)
            sys.exit(EXIT_INVALID)
        click.confirm(f"Delete environment '{env}' and everything it owns?", abort=True)
    progress = make_progress("json" if as_json else progress_mode)

    async def go() -> Any:
        async with Cloud(read_cloud_config(), max_in_flight=max_api) as cloud:
            return await teardown_env(cloud, env, progress)

    try:
        result = _run(go)
    finally:
        progress.close()
    EnvState(env).remove()
    if as_json:
        click.echo(json.dumps({"env": env, "deleted": result.deleted, "api_calls": result.api_calls}))
    else:
        click.echo(f"environment {env} removed ({len(result.deleted)} resources deleted; nothing left)")


@main.command()
@JSON_OPTION
def envs(as_json: bool) -> None:
    """List the environments in the cloud (found by their tags)."""
    from .cloud import Cloud, read_cloud_config
    from .provision.envs import list_envs
    from .render import envs_text

    async def go() -> Any:
        async with Cloud(read_cloud_config()) as cloud:
            return await list_envs(cloud)

    found = _run(go)
    click.echo(json.dumps([e.to_dict() for e in found], indent=2) if as_json else envs_text(found))


@main.group()
def lab() -> None:
    """The local lab: a CloudStack simulator (and real hosts) on this machine."""


@lab.command("simulator")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=int, help="Port (0 picks a free one).")
@click.option("--backend", type=click.Choice(["memory", "docker"]), default="memory", show_default=True,
              help="memory: records only; docker: every VM is a real host (a systemd container).")
@click.option("--state", "state_file", type=click.Path(dir_okay=False), help="Persist the cloud to this JSON file.")
@click.option("--api-key", default="lab-api-key", show_default=True)
@click.option("--secret-key", default="lab-secret-key", show_default=True)
@click.option("--vm-boot-seconds", default=1.0, show_default=True, type=float, help="Time a VM spends Starting.")
@click.option("--job-seconds", default=0.2, show_default=True, type=float, help="Time an async job stays pending.")
@click.option("--fault", "faults", multiple=True, metavar="COMMAND:KIND:CODE:TIMES",
              help="Inject a fault, KIND one of http, job, drop, slow; TIMES a count or 'always' (repeatable).")
@click.option("--limit", "limits", multiple=True, metavar="TYPE=MAX",
              help="Account resource limit, e.g. user_vm=10 (repeatable; -1 is unlimited).")
@click.option("--public-range", default=None, help="Loopback CIDR for public IPs (default 127.200.0.0/16).")
@click.option("--no-ssh", is_flag=True, help="Do not serve SSH on public addresses.")
@click.option("--write-profile", is_flag=True,
              help="Make this simulator csdeploy's default cloud (when no CLOUDSTACK_* config is set).")
def lab_simulator(write_profile: bool, **kwargs: object) -> None:
    """Serve a CloudStack API simulator until interrupted."""
    from .lab.simulator.faults import FaultSpecError
    from .lab.simulator.server import SimulatorConfig, serve_forever

    try:
        config = SimulatorConfig.from_cli(**kwargs)
    except FaultSpecError as exc:
        raise click.BadParameter(str(exc), param_hint="'--fault'") from None
    except ValueError as exc:  # only --limit values raise this
        raise click.BadParameter(str(exc), param_hint="'--limit'") from None
    try:
        serve_forever(config, write_profile=write_profile)
    except KeyboardInterrupt:  # only before the signal handlers are in place; after, it stops cleanly (0)
        sys.exit(130)
    except ValueError as exc:  # e.g. an unreadable --state file
        click.echo(f"csdeploy: cannot start the simulator: {exc}", err=True)
        sys.exit(EXIT_INVALID)
    except OSError as exc:
        click.echo(f"csdeploy: cannot start the simulator: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    except CsdeployError as exc:  # e.g. no Docker engine for --backend docker
        _fail(exc)


from . import cli_lab, cli_rollout  # noqa: E402,F401  (register lab up/down, deploy, rollback, ...)

if __name__ == "__main__":  # pragma: no cover
    # Run the commands registered on the importable module (cli_rollout registers there).
    from cloudstack_deploy.cli import main as _main

    _main()
