"""`csdeploy deploy | rollback | status | logs | exec | proxy reboot | accessory reboot`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import click

from .cli import ENV_OPTION, JSON_OPTION, SET_OPTION, _env, _run, main
from .errors import CsdeployError

BLUEPRINT_OPTION = click.option("--blueprint", "blueprint", default=None, type=click.Path(dir_okay=False),
                                help="Blueprint file (default: the one the environment was deployed from).")
PROGRESS_OPTION = click.option("--progress", "progress_mode", type=click.Choice(["auto", "tty", "plain", "json"]),
                               default="auto", show_default=True, help="How to show progress on stderr.")


def default_version() -> str | None:
    """The current git commit (short), like Kamal's default version; None outside a repository."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def load_secrets_for(bp: Any) -> dict[str, str]:
    from .log import register_secrets
    from .secrets import load_secrets

    environ: dict[str, str] = dict(os.environ)
    try:
        from .cloud import read_cloud_config

        if read_cloud_config().is_lab:  # the lab provides its own registry password etc.
            from .lab.manage import lab_secrets

            environ = {**lab_secrets(), **environ}
    except CsdeployError:
        pass
    secrets = load_secrets(bp, environ=environ)
    register_secrets(secrets.values_for_redaction())
    return dict(secrets)


def make_rollout(ctx: Any, secrets: dict[str, str], progress: Any) -> Any:
    from .rollout.deploy import Rollout

    return Rollout(ctx.bp, ctx.inventory, secrets, progress, client_key=ctx.client_key,
                   known_hosts=ctx.state.known_hosts_path)


def report(result: Any, as_json: bool, what: str) -> None:
    calls = result.exec_calls
    if as_json:
        click.echo(json.dumps({"version": result.version, "seconds": round(result.seconds, 2),
                               "ssh_exec_calls": calls, "accessories": result.accessories}))
        return
    per_host = ", ".join(f"{h} {n}" for h, n in sorted(calls.items()))
    click.echo(f"{what} {result.version}: done in {result.seconds:.1f}s (SSH exec calls: {per_host})")


@main.command()
@click.argument("blueprint", type=click.Path(dir_okay=False))
@ENV_OPTION
@click.option("--version", "version", default=None, help="Image tag to deploy (default: git HEAD, short).")
@SET_OPTION
@click.option("--break-lock", is_flag=True, help="Take the deploy lock from a deploy that died.")
@JSON_OPTION
@PROGRESS_OPTION
def deploy(blueprint: str, env: str, version: str | None, overrides: tuple[str, ...], break_lock: bool,
           as_json: bool, progress_mode: str) -> None:
    """Deploy VERSION of the app to environment NAME (rollout only; provision with create-env)."""
    from .envctx import load_context, remember_blueprint
    from .progress import make_progress
    from .rollout.deploy import RolloutOptions

    env = _env(env)
    version = version or default_version()
    if not version:
        raise click.UsageError("no --version given and not in a git repository")
    progress = make_progress("json" if as_json else progress_mode)

    async def go() -> Any:
        ctx = await load_context(env, blueprint, overrides)
        secrets = load_secrets_for(ctx.bp)
        result = await make_rollout(ctx, secrets, progress).run(RolloutOptions(version=version, break_lock=break_lock))
        remember_blueprint(ctx.state, blueprint, overrides)
        return result

    try:
        result = _run(go)
    finally:
        progress.close()
    report(result, as_json, "deploy")


@main.command()
@ENV_OPTION
@click.option("--to", "to", default=None, help="Version to go back to (default: the previous successful one).")
@BLUEPRINT_OPTION
@click.option("--break-lock", is_flag=True, help="Take the deploy lock from a deploy that died.")
@JSON_OPTION
@PROGRESS_OPTION
def rollback(env: str, to: str | None, blueprint: str | None, break_lock: bool, as_json: bool,
             progress_mode: str) -> None:
    """Go back to the previous successful version (or --to VERSION), with the same zero-downtime switch."""
    from .envctx import load_context
    from .progress import make_progress
    from .rollout.ops import rollback as do_rollback

    env = _env(env)
    progress = make_progress("json" if as_json else progress_mode)

    async def go() -> Any:
        ctx = await load_context(env, blueprint)
        secrets = load_secrets_for(ctx.bp)
        return await do_rollback(make_rollout(ctx, secrets, progress), to, break_lock=break_lock)

    try:
        result = _run(go)
    finally:
        progress.close()
    report(result, as_json, "rollback to")


@main.command()
@ENV_OPTION
@BLUEPRINT_OPTION
@JSON_OPTION
def status(env: str, blueprint: str | None, as_json: bool) -> None:
    """Per host: containers, versions, health, and kamal-proxy's targets."""
    from .envctx import load_context
    from .progress import Recorder
    from .rollout.ops import status as do_status

    env = _env(env)

    async def go() -> Any:
        ctx = await load_context(env, blueprint)
        return await do_status(make_rollout(ctx, {}, Recorder()))

    hosts = _run(go)
    if as_json:
        click.echo(json.dumps([h.__dict__ for h in hosts], indent=2))
        return
    for h in hosts:
        click.echo(f"{h.name} ({h.role}, {h.address})" + (f"  UNREACHABLE: {h.error}" if h.error else ""))
        for c in h.containers:
            click.echo(f"  {c['name']:<32} {c.get('version') or '-':<12} {c['state']:<10} {c['status']}")
        if h.proxy_targets:
            for line in h.proxy_targets.splitlines():
                click.echo(f"  proxy: {line}")


@main.command()
@ENV_OPTION
@click.option("--role", "role", required=True, help="Role or accessory name.")
@click.option("-f", "--follow", is_flag=True, help="Keep streaming new lines.")
@click.option("-n", "--lines", default=100, show_default=True, type=click.IntRange(0, 100000))
@BLUEPRINT_OPTION
def logs(env: str, role: str, follow: bool, lines: int, blueprint: str | None) -> None:
    """Show the logs of a role's current containers (or an accessory's), prefixed by host."""
    from .envctx import load_context
    from .progress import Recorder
    from .rollout.ops import logs as do_logs

    env = _env(env)

    async def go() -> None:
        ctx = await load_context(env, blueprint)
        await do_logs(make_rollout(ctx, {}, Recorder()), role, lines=lines, follow=follow, emit=click.echo)

    _run(go)


@main.command("exec", context_settings={"ignore_unknown_options": True})
@ENV_OPTION
@click.option("--role", "role", required=True, help="Role or accessory name.")
@BLUEPRINT_OPTION
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_cmd(env: str, role: str, blueprint: str | None, command: tuple[str, ...]) -> None:
    """Run COMMAND in the role's current container on each of its hosts: csdeploy exec --env X --role web -- ls."""
    from .envctx import load_context
    from .progress import Recorder
    from .rollout.ops import exec_

    env = _env(env)

    async def go() -> int:
        ctx = await load_context(env, blueprint)
        return await exec_(make_rollout(ctx, {}, Recorder()), role, list(command), emit=click.echo)

    sys.exit(_run(go))


@main.group()
def proxy() -> None:
    """kamal-proxy on the proxy hosts."""


@proxy.command("reboot")
@ENV_OPTION
@BLUEPRINT_OPTION
def proxy_reboot(env: str, blueprint: str | None) -> None:
    """Replace kamal-proxy on every proxy host (its routes come back from its state volume)."""
    from .envctx import load_context
    from .progress import Recorder
    from .rollout.ops import proxy_reboot as do_reboot

    env = _env(env)

    async def go() -> Any:
        ctx = await load_context(env, blueprint)
        return await do_reboot(make_rollout(ctx, {}, Recorder()))

    hosts = _run(go)
    click.echo(f"kamal-proxy rebooted on {', '.join(hosts) or 'no host'}")


@main.group()
def accessory() -> None:
    """Accessories (databases, caches) of an environment."""


@accessory.command("reboot")
@click.argument("name")
@ENV_OPTION
@BLUEPRINT_OPTION
@PROGRESS_OPTION
def accessory_reboot(name: str, env: str, blueprint: str | None, progress_mode: str) -> None:
    """Restart accessory NAME with a fresh container; its data (volumes) stays."""
    from .envctx import load_context
    from .progress import make_progress
    from .rollout.ops import accessory_reboot as do_reboot

    env = _env(env)
    progress = make_progress(progress_mode)

    async def go() -> Any:
        ctx = await load_context(env, blueprint)
        return await do_reboot(make_rollout(ctx, load_secrets_for(ctx.bp), progress), name)

    try:
        result = _run(go)
    finally:
        progress.close()
    click.echo(f"accessory {name}: {result.accessories.get(name, '?')}")


@main.command()
@ENV_OPTION
@BLUEPRINT_OPTION
@JSON_OPTION
def history(env: str, blueprint: str | None, as_json: bool) -> None:
    """Deploys and rollbacks of environment NAME, oldest first (kept on its primary host)."""
    from .envctx import load_context
    from .progress import Recorder

    env = _env(env)

    async def go() -> Any:
        ctx = await load_context(env, blueprint)
        r = make_rollout(ctx, {}, Recorder())
        async with r.pool() as pool:
            return await r.history(pool)

    records = _run(go)
    if as_json:
        click.echo(json.dumps(records, indent=2))
        return
    if not records:
        click.echo(f"no deploys recorded for environment {env}")
    for rec in records:
        line = f"{rec.get('at', '?')}  {rec.get('kind', 'deploy'):<8} {rec.get('version', '?'):<16} " \
               f"{rec.get('status', '?'):<6} by {rec.get('by', '?')}"
        if rec.get("error"):
            line += f"  ({rec['error']})"
        click.echo(line)
