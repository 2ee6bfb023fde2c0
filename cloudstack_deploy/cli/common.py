"""What every command shares: the root group, its error handler, global and shared options.

Exit codes come from the error classes (`errors.py`): 0 success, 1 the operation failed,
2 invalid input, 130 interrupted. One handler renders every error the same way.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Coroutine, Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import click

from .. import __version__
from ..errors import CsdeployError, Interrupted, InvalidInput

if TYPE_CHECKING:  # imported by the commands that use them: `csdeploy --help` pays for none
    from datetime import timedelta

    from ..progress import Progress

T = TypeVar("T")


class Lazy:
    """A module imported when a command first uses it: `csdeploy --help` or `validate` never
    pays for the CloudStack client, SSH or the history store (about half a second)."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        import importlib

        return getattr(importlib.import_module(self._name), attr)


def render_error(exc: CsdeployError) -> None:
    """``csdeploy: error: ...`` and ``hint: ...`` on stderr; errors that name a file:line already
    (a blueprint's problems) are printed as they are, one per line."""
    from ..log import redact, terminal_safe

    text = terminal_safe(redact(str(exc)))
    click.echo(text if getattr(exc, "located", False) else f"csdeploy: error: {text}", err=True)
    if exc.hint:
        click.echo(f"hint: {terminal_safe(redact(exc.hint))}", err=True)


def _plugins() -> dict[str, Any]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group="csdeploy.commands")}


class Root(click.Group):
    """The `csdeploy` group: turns every csdeploy error raised by any command into its exit code,
    and finds plugin command groups (entry points ``csdeploy.commands``) when first used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *_plugins()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in (plugins := _plugins()):
            self.add_command(plugins[cmd_name].load(), cmd_name)
        return self.commands.get(cmd_name)

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        """`csdeploy NAME --env E ...` where NAME is no command: the blueprint's alias NAME, as
        `csdeploy alias NAME --env E ...` (Kamal users type `kamal console`). Without `--env`
        an unknown name stays "No such command", with its did-you-mean."""
        name = args[0] if args else ""
        if (name and not name.startswith("-") and self.get_command(ctx, name) is None and "alias" in self.commands
                and any(a == "--env" or a.startswith("--env=") for a in args[1:])):
            return "alias", self.commands["alias"], list(args)
        return super().resolve_command(ctx, args)

    def main(self, args: Any = None, *rest: Any, **options: Any) -> Any:
        """The command line of this process (``args`` None: sys.argv), or a caller's own ``args``.

        When the process's own command has ended, every object it made is moved out of the
        cyclic garbage collector's reach (`gc.freeze`) before the interpreter shuts down: its
        shutdown runs several full collections over every module's objects, 0.05-0.2 s of a
        command's wall time on this machine, the more the more objects it made (a `status`
        over SSH ended 0.12-0.17 s after its last exit handler, 0.02-0.03 s with the freeze;
        docs/benchmarks.md, "Start-up"). Exit handlers still run, files are
        still flushed and closed; only garbage in reference cycles is left to the process's
        exit. A caller's own ``args`` (click's CliRunner, an embedding program) keep theirs."""
        if args is not None:
            return super().main(args, *rest, **options)
        try:
            return super().main(None, *rest, **options)
        finally:
            import gc

            gc.freeze()

    def invoke(self, ctx: click.Context) -> Any:
        words = ctx.args[:ctx.args.index("--")] if "--" in ctx.args else ctx.args   # after `--`: the user's
        ctx.meta[HELP_ONLY] = any(arg in ("-h", "--help") for arg in words)
        try:
            return super().invoke(ctx)
        except CsdeployError as exc:
            render_error(exc)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            exc = Interrupted("interrupted")
            render_error(exc)
            ctx.exit(exc.exit_code)


@click.group(cls=Root, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="csdeploy")
@click.option("-v", "--verbose", count=True,
              help="-v: each CloudStack API call and host step; -vv: also the scripts sent to hosts (redacted).")
@click.option("--log-format", type=click.Choice(["console", "json"]), default="console", show_default=True,
              envvar="CSDEPLOY_LOG_FORMAT", help="json: one JSON object per log line (for CI).")
@click.option("--server", default=None, envvar="CSDEPLOY_SERVER", metavar="URL",
              help="Send deploy, rollback, teardown, envs and history to a `csdeploy serve` (token: "
                   "CSDEPLOY_TOKEN or --token-file).")
@click.option("--token-file", default=None, type=click.Path(dir_okay=False), metavar="FILE",
              help="The --server token, read from FILE (never pass a token as a flag's value).")
@click.pass_context
def main(ctx: click.Context, verbose: int, log_format: str, server: str | None, token_file: str | None) -> None:
    """Stand up application environments on Apache CloudStack and deploy to them."""
    if not _asks_for_help(ctx):  # help only: no logging to set up (structlog costs a tenth of a second)
        from ..log import configure_logging

        configure_logging(json=log_format == "json", verbose=verbose)
    ctx.obj = {"verbose": verbose, "server": server, "token_file": token_file}


HELP_ONLY = "csdeploy.help_only"


def _asks_for_help(ctx: click.Context) -> bool:
    """The command line shows a command's help (``csdeploy deploy --help``) and runs nothing
    (`Root.invoke` looked at the words before click consumed them)."""
    return bool(ctx.meta.get(HELP_ONLY))


def remote_server() -> Any:
    """The team server this command goes to (`--server`), or None to run here."""
    ctx = click.get_current_context(silent=True)
    obj = (ctx.find_root().obj or {}) if ctx else {}
    if not obj.get("server"):
        return None
    import os

    from ..server.client import remote_from

    return remote_from(obj["server"], obj.get("token_file"), dict(os.environ))


def not_remote(**given: Any) -> None:
    """A usage error naming the flags that a `--server` command cannot take."""
    clash = [f"--{name.replace('_', '-')}" for name, value in given.items() if value]
    if clash:
        raise click.UsageError(f"{', '.join(clash)}: not available through --server (run here, with the keys)")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run an async service call (errors reach the root group's handler)."""
    import asyncio

    return asyncio.run(coro)


@contextlib.contextmanager
def progress_for(mode: str, as_json: bool = False) -> Iterator[Progress]:
    """The progress view a command asked for; plain lines when -v logs interleave with it."""
    ctx = click.get_current_context(silent=True)
    verbose = bool(ctx and ctx.find_root().obj and ctx.find_root().obj.get("verbose"))
    from ..progress import make_progress

    if as_json:
        mode = "json"
    elif verbose and mode == "auto":
        mode = "plain"
    progress = make_progress(mode)
    try:
        yield progress
    finally:
        progress.close()


def load(path: str, overrides: tuple[str, ...]) -> Any:
    from ..blueprint import load_blueprint

    return load_blueprint(path, overrides=list(overrides))


def ttl(value: str | None) -> timedelta | None:
    if value is None:
        return None
    from ..blueprint import parse_duration

    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--ttl") from None


def env_name(_ctx: click.Context, _param: click.Parameter, name: str | None) -> str | None:
    """Click callback: a valid environment name or a usage error (exit 2)."""
    if name is None:
        return None
    from ..state import validate_env_name

    try:
        return validate_env_name(name)
    except InvalidInput as exc:
        raise click.BadParameter(str(exc), param_hint="--env") from None


def version_or_head(version: str | None, *, what: str = "") -> str:
    from ..service import default_version

    version = version or default_version()
    if not version:
        raise click.UsageError("no --version given and not in a git repository" + what)
    return version


def echo_json(data: Any) -> None:
    import json

    click.echo(json.dumps(data, indent=2))


SET_ONLY_OPTION = click.option("--set", "overrides", multiple=True, metavar="PATH=VALUE",
                               help="Override a blueprint value, e.g. --set roles.web.count=2 (repeatable).")


def _destination(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    from ..blueprint_overlay import DESTINATION_RE

    if value is not None and not DESTINATION_RE.fullmatch(value):
        raise click.BadParameter("1-40 letters, digits, '-' or '_', starting with a letter or digit")
    return value


def SET_OPTION(f: Callable[..., Any]) -> Callable[..., Any]:  # noqa: N802 (used like the other options)
    """`--set PATH=VALUE` and `--destination/-d NAME` (Kamal's convention: the overlay file
    BLUEPRINT.NAME.yml beside the blueprint is merged onto it). The command receives the
    destination as the first of its ``overrides``, so everything that passes overrides on
    (and the environment's record of them) carries it."""

    @functools.wraps(f)
    def command(*args: Any, destination: str | None = None, **kwargs: Any) -> Any:
        if destination is not None:
            from ..blueprint_overlay import destination_override

            kwargs["overrides"] = (destination_override(destination), *kwargs.get("overrides", ()))
        return f(*args, **kwargs)

    command = SET_ONLY_OPTION(command)
    return click.option("--destination", "-d", "destination", default=None, metavar="DEST", callback=_destination,
                        help="Merge the overlay BLUEPRINT.DEST.yml (beside the blueprint) onto it, "
                             "as Kamal does with config/deploy.DEST.yml.")(command)


ENV_OPTION = click.option("--env", "env", required=True, metavar="NAME", callback=env_name,
                          help="Environment name: lower-case letters, digits, '-' (at most 20).")
JSON_OPTION = click.option("--json", "as_json", is_flag=True,
                           help="Machine output: JSON event lines on stderr, a JSON result on stdout.")
MAX_API_OPTION = click.option("--max-api", default=32, show_default=True, envvar="CSDEPLOY_MAX_API",
                              type=click.IntRange(1, 200),
                              help="CloudStack API calls in flight at most (halved while the cloud throttles).")
PROGRESS_OPTION = click.option("--progress", "progress_mode", type=click.Choice(["auto", "tty", "plain", "json"]),
                               default="auto", show_default=True, help="How to show progress on stderr.")
BLUEPRINT_OPTION = click.option("--blueprint", "blueprint", default=None, type=click.Path(dir_okay=False),
                                help="Blueprint file (default: the one the environment was deployed from).")
SSH_TIMEOUT_OPTION = click.option("--ssh-timeout", default=300.0, show_default=True, type=float,
                                  help="Seconds to wait for every VM to answer SSH.")
BREAK_LOCK_OPTION = click.option("--break-lock", is_flag=True, help="Take over the lock from a run that died.")
def _names(_ctx: click.Context, _param: click.Parameter, value: str | None) -> tuple[str, ...]:
    return tuple(n.strip() for n in (value or "").split(",") if n.strip())


ROLES_OPTION = click.option("--roles", "-r", "roles", callback=_names, metavar="ROLE,...",
                            help="Only these roles' hosts (accessories elsewhere are not touched).")
HOSTS_OPTION = click.option("--hosts", "hosts", callback=_names, metavar="HOST,...",
                            help="Only these hosts (VM names, e.g. demo-web-2).")
DRY_RUN_OPTION = click.option("--dry-run", is_flag=True,
                              help="Print, per host, the scripts that would run (secrets redacted); run nothing.")

