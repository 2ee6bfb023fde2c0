"""`csdeploy serve | token`: the team server and its API tokens."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import InvalidInput
from .common import JSON_OPTION, echo_json


def _store() -> object:
    from ..store import store_url
    from ..store.db import Store

    url = store_url()
    if url is None:
        raise InvalidInput("the history store is off (CSDEPLOY_STATE_URL=none): the server keeps its tokens, "
                           "jobs and audit log there", hint="unset CSDEPLOY_STATE_URL, or point it at PostgreSQL")
    return Store(url).open()


@click.command()
@click.option("--bind", default="127.0.0.1:8700", show_default=True, metavar="HOST:PORT",
              help="Where to listen. Put a TLS proxy in front of anything but loopback.")
@click.option("--blueprints", default=None, type=click.Path(file_okay=False, exists=True), metavar="DIR",
              help="Blueprints an admin may create environments from (by file name).")
@click.option("--max-jobs", default=2, show_default=True, type=click.IntRange(1, 32),
              help="Jobs this process runs at once (other `serve` processes on the same store take the rest).")
@click.option("--heartbeat", default=2.0, show_default=True, type=click.FloatRange(0.1, 60),
              help="Seconds between the heartbeats of this process's running jobs.")
@click.option("--stale-after", default=30.0, show_default=True, type=click.FloatRange(1, 3600),
              help="A running job whose heartbeat is older than this many seconds is marked interrupted.")
def serve(bind: str, blueprints: str | None, max_jobs: int, heartbeat: float, stale_after: float) -> None:
    """Serve the JSON API (/api/openapi.json) and the dashboard (/), run queued jobs, and queue
    the backups the saved blueprints schedule (accessories.X.backups.schedule, UTC).

    Every request needs a token (`csdeploy token create`). Jobs are queued in the history
    store (CSDEPLOY_STATE_URL): several `serve` processes on one PostgreSQL share the work,
    never running two jobs of one environment at once. The cloud's key, SSH keys and secrets
    stay with this process.
    """
    from ..server.app import parse_bind
    from ..server.app import serve as run_server

    parse_bind(bind)
    store = _store()
    try:
        run_server(store, bind=bind, blueprints=Path(blueprints) if blueprints else None, max_jobs=max_jobs, heartbeat=heartbeat, stale_after=stale_after,
                   print_=click.echo)
    finally:
        store.close()  # type: ignore[attr-defined]


@click.group()
def token() -> None:
    """API tokens of the team server (kept, hashed, in the history store)."""


@token.command("create")
@click.option("--name", required=True, help="Who or what uses it (shown in the audit log and history).")
@click.option("--role", required=True, type=click.Choice(["viewer", "deployer", "admin"]),
              help="viewer reads; deployer also deploys and rolls back; admin also tears down and manages tokens.")
@click.option("--env-prefix", default=None, metavar="P", help="Only environments whose name starts with P.")
@JSON_OPTION
def token_create(name: str, role: str, env_prefix: str | None, as_json: bool) -> None:
    """Create a token and print it once (only its hash is kept)."""
    from ..server import access

    store = _store()
    try:
        row, text = access.create_token(store, name=name, role=role, env_prefix=env_prefix)  # type: ignore[arg-type]
    finally:
        store.close()  # type: ignore[attr-defined]
    if as_json:
        echo_json({**row.to_dict(), "token": text})
        return
    click.echo(text)
    click.echo(f"token {row.name} ({row.role}{', envs ' + row.env_prefix + '*' if row.env_prefix else ''}): "
               "shown only now; send it as 'Authorization: Bearer <token>'", err=True)


@token.command("list")
@JSON_OPTION
def token_list(as_json: bool) -> None:
    """Live tokens: name, role, env prefix, created, last used (never the token)."""
    from ..server import access

    store = _store()
    try:
        rows = access.list_tokens(store)  # type: ignore[arg-type]
    finally:
        store.close()  # type: ignore[attr-defined]
    if as_json:
        echo_json([r.to_dict() for r in rows])
        return
    for r in rows:
        click.echo(f"{r.name:20} {r.role:9} {(r.env_prefix or '*'):12} created {r.created_at[:19]} by {r.created_by}")


@token.command("revoke")
@click.argument("name")
def token_revoke(name: str) -> None:
    """Revoke token NAME now (its browser sessions end too)."""
    from ..server import access

    store = _store()
    try:
        if not access.revoke_token(store, name):  # type: ignore[arg-type]
            raise InvalidInput(f"no live token named {name!r}", hint="csdeploy token list")
    finally:
        store.close()  # type: ignore[attr-defined]
    click.echo(f"revoked {name}")


COMMANDS = [serve, token]
