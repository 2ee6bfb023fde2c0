"""`csdeploy build`: the app image from the blueprint's `build` section, tagged and pushed."""

from __future__ import annotations

import click

from .common import (
    JSON_OPTION,
    PROGRESS_OPTION,
    SET_OPTION,
    Lazy,
    echo_json,
    load,
    progress_for,
    run,
)

render = Lazy("cloudstack_deploy.render")
service = Lazy("cloudstack_deploy.service")


@click.command()
@click.argument("blueprint", type=click.Path(dir_okay=False))
@click.option("--version", "version", default=None,
              help="Image tag (default: the build context's git commit, short; '-dirty' with uncommitted changes).")
@click.option("--push/--no-push", default=True, show_default=True,
              help="Push to the blueprint's registry (login with the password on stdin, in a private config).")
@SET_OPTION
@JSON_OPTION
@PROGRESS_OPTION
def build(blueprint: str, version: str | None, push: bool, overrides: tuple[str, ...], as_json: bool,
          progress_mode: str) -> None:
    """Build the app image with the local Docker engine (BuildKit), label it service=SERVICE, push it."""
    bp = load(blueprint, overrides)
    with progress_for(progress_mode, as_json) as progress:
        result = run(service.build(bp, version=version, push=push, progress=progress))
    if as_json:
        echo_json(render.build_dict(result))
    else:
        click.echo(render.build_text(result))


COMMANDS = [build]
