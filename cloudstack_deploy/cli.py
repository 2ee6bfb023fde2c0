"""The `csdeploy` command line: parse, call, render. No logic lives here.

Exit codes (documented in the README):
  0  success
  1  the operation failed (cloud or host error, a check that did not pass)
  2  usage error or invalid input (bad blueprint, bad flag, missing secret)
  130 interrupted
"""

from __future__ import annotations

import sys

import click

from . import __version__

EXIT_FAILED = 1
EXIT_INVALID = 2


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


@main.group()
def lab() -> None:
    """The local lab: a CloudStack simulator (and real hosts) on this machine."""


@lab.command("simulator")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=int, help="Port (0 picks a free one).")
@click.option("--backend", type=click.Choice(["memory"]), default="memory", show_default=True)
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
def lab_simulator(**kwargs: object) -> None:
    """Serve a CloudStack API simulator until interrupted."""
    from .lab.simulator.server import SimulatorConfig, serve_forever
    from .lab.simulator.faults import FaultSpecError

    try:
        config = SimulatorConfig.from_cli(**kwargs)
    except (FaultSpecError, ValueError) as exc:
        raise click.BadParameter(str(exc)) from exc
    try:
        serve_forever(config)
    except KeyboardInterrupt:
        sys.exit(130)
    except OSError as exc:
        click.echo(f"csdeploy: cannot start the simulator: {exc}", err=True)
        sys.exit(EXIT_FAILED)


if __name__ == "__main__":  # pragma: no cover
    main()
