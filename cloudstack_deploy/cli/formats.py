"""`csdeploy init` (a blueprint from Compose, Kamal or a template) and `csdeploy export kamal`."""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from .common import ENV_OPTION, SET_ONLY_OPTION, SET_OPTION, Lazy, load, run

service = Lazy("cloudstack_deploy.service")


@click.command()
@click.option("--from-compose", "compose", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A docker-compose.yml (compose.yaml) to import.")
@click.option("--from-kamal", "kamal", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A Kamal config/deploy.yml to import (its destinations and .kamal/secrets names too).")
@click.option("--template", "template", default=None, metavar="NAME",
              help="Start from a template: rails, nextjs, django, generic, worker, postgres, redis.")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=Path("csdeploy.yml"),
              show_default=True, help="The blueprint file to write.")
@click.option("--force", is_flag=True, help="Replace --out if it exists.")
@click.option("--fields", "show_fields", is_flag=True, help="With --template: list the form's fields, write nothing.")
@click.option("--env-file", "env_files", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="With --from-compose: interpolate with this file instead of the .env beside it (repeatable).")
@click.option("--profile", "profiles", multiple=True, metavar="NAME",
              help="With --from-compose: also import the services of this Compose profile (repeatable).")
@SET_ONLY_OPTION
def init(compose: Path | None, kamal: Path | None, template: str | None, out: Path, force: bool,
         show_fields: bool, env_files: tuple[Path, ...], profiles: tuple[str, ...], overrides: tuple[str, ...]) -> None:
    """Write a blueprint: from a Compose file, a Kamal config, or a template (--set fills the form)."""
    if show_fields:
        if template is None:
            raise click.UsageError("--fields goes with --template NAME")
        for line in service.template_fields(template):
            click.echo(line)
        return
    result = service.init_blueprint(out, compose=compose, kamal=kamal, template=template, sets=overrides,
                                    force=force, env_files=env_files, profiles=profiles)
    from ..blueprint_rules import printable

    for note in result.notes:
        click.echo(f"not carried over: {note}", err=True)
    for line in result.comments:  # escaped: a file name or value may hold a line break or an escape
        click.echo(printable(line), err=True)
    check = shlex.join(["csdeploy", "validate", str(result.path)])
    click.echo(printable(f"wrote {result.path} ({result.blueprint.summary()}); check it with: {check}"))


@click.group()
def export() -> None:
    """Write another tool's configuration from a blueprint."""


@export.command("kamal")
@click.argument("blueprint", type=click.Path(dir_okay=False))
@ENV_OPTION
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="Directory for config/deploy.yml and .kamal/secrets.")
@click.option("--force", is_flag=True, help="Replace existing files.")
@SET_OPTION
def export_kamal(blueprint: str, env: str, out: Path, force: bool, overrides: tuple[str, ...]) -> None:
    """Kamal's config/deploy.yml and .kamal/secrets (names, no values) for environment NAME's hosts."""
    bp = load(blueprint, overrides)
    result = run(service.export_kamal_config(bp, env, out, force=force))
    for note in result.notes:
        click.echo(f"not carried over: {note}", err=True)
    click.echo(f"wrote {result.deploy_yml} and {result.secrets} for environment {env} "
               f"({result.hosts} hosts); try: kamal config -c {result.deploy_yml}")


COMMANDS = [init, export]
