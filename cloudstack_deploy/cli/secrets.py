"""`csdeploy secrets print`: which secrets a blueprint declares and where each value comes from."""

from __future__ import annotations

import sys

import click

from .common import BLUEPRINT_OPTION, JSON_OPTION, Lazy, echo_json, env_name

service = Lazy("cloudstack_deploy.service")   # the cloud client and SSH: not for `--help`


@click.group()
def secrets() -> None:
    """The blueprint's secrets: names and sources (environment, secrets file, vault)."""


@secrets.command("print")
@click.option("--env", "env", default=None, metavar="NAME", callback=env_name,
              help="Environment whose blueprint to read (or give --blueprint).")
@BLUEPRINT_OPTION
@click.option("--reveal", is_flag=True, help="Show the values too (only when stdout is a terminal).")
@JSON_OPTION
def print_(env: str | None, blueprint: str | None, reveal: bool, as_json: bool) -> None:
    """Each secret's name and where its value came from; values only with --reveal on a terminal.

    The values are fetched as a deploy fetches them (a vault's CLI included), so this also
    checks that every secret can be found."""
    found = service.secret_sources(env, blueprint)
    show = reveal and sys.stdout.isatty()
    if reveal and not show:
        click.echo("--reveal shows values on a terminal only; stdout is not one, so names and sources only",
                   err=True)
    if as_json:
        echo_json([{"name": s.name, "source": s.source, **({"value": s.value} if show else {})} for s in found])
        return
    width = max((len(s.name) for s in found), default=0)
    for s in found:
        click.echo(f"{s.name:<{width}}  {s.source}" + (f"  {s.value}" if show else ""))
    if not found:
        click.echo("the blueprint declares no secrets")


COMMANDS = [secrets]
