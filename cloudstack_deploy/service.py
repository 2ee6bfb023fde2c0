"""What each csdeploy command does, as async functions a Python caller can use without click.

    import asyncio
    from cloudstack_deploy import load_blueprint, service

    bp = load_blueprint("blueprints/demo.yml")
    outcome = asyncio.run(service.create_env(bp, "demo", version="v1"))
    print(outcome.inventory.app_url)

The CLI (`cli/`) only parses options, calls one of these and renders the result. Errors
are `cloudstack_deploy.errors` classes; progress goes to an optional `Progress` (silent by
default); nothing here prints.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from . import formats
from .blueprint import Blueprint
from .cloud import Cloud, CloudConfig, read_cloud_config
from .cloud.config import registry_push_map
from .envctx import EnvContext, load_context, remember_blueprint
from .errors import CsdeployError, InvalidInput
from .formats import InitResult
from .formats.kamal_out import ExportResult, export_kamal
from .image_build import BuildResult, build_image, needed_secrets, only_secrets
from .inventory import Inventory
from .log import register_secrets
from .progress import Progress, Recorder
from .provision.envs import EnvSummary, list_envs
from .provision.plan import Plan
from .provision.run import CreateOptions, CreateResult, plan_env
from .provision.run import create_env as provision_env
from .provision.teardown import TeardownResult, teardown_env
from .rollout import ops
from .rollout.deploy import Rollout, RolloutOptions, RolloutResult
from .rollout.history import DeployRecord
from .secrets import load_secrets, read_dotenv
from .state import EnvState


def default_version() -> str | None:
    """The current git commit (short), like Kamal's default version; None outside a repository."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _config() -> CloudConfig:
    return read_cloud_config()


def load_secrets_for(bp: Blueprint, config: CloudConfig | None = None) -> dict[str, str]:
    """The blueprint's secret values: the environment, then the cloud profile's secrets file (the
    lab's), then the blueprint's ``secrets_file``. Every value is registered for redaction."""
    environ: dict[str, str] = dict(os.environ)
    try:
        config = config or _config()
    except CsdeployError:
        config = None
    if config is not None and config.secrets_file is not None and config.secrets_file.is_file():
        environ = {**read_dotenv(config.secrets_file), **environ}
    secrets = load_secrets(bp, environ=environ)
    register_secrets(secrets.values_for_redaction())
    return dict(secrets)


def _silent(progress: Progress | None) -> Progress:
    return progress if progress is not None else Recorder()


# ---- provisioning ---------------------------------------------------------------------------------

async def plan(bp: Blueprint, env: str, *, ttl: timedelta | None = None, max_api: int = 10) -> Plan:
    """What create-env would create, change and delete. Changes nothing."""
    async with Cloud(_config(), max_in_flight=max_api) as cloud:
        return await plan_env(cloud, bp, env, ttl=ttl, state=EnvState(env))


@dataclass
class CreateEnvOutcome:
    provision: CreateResult
    rollout: RolloutResult | None = None

    @property
    def inventory(self) -> Inventory:
        return self.provision.inventory


async def create_env(bp: Blueprint, env: str, *, version: str | None = None, ttl: timedelta | None = None,
                     skip_rollout: bool = False, progress: Progress | None = None,
                     options: CreateOptions | None = None, blueprint_path: str | None = None,
                     overrides: tuple[str, ...] = ()) -> CreateEnvOutcome:
    """Create (or converge) ``env`` from ``bp``, wait for SSH, then roll out ``version``.

    Secrets are checked before anything is created. ``blueprint_path``/``overrides`` are
    remembered so that day-2 commands need only the environment's name.
    """
    progress = _silent(progress)
    opts = options or CreateOptions()
    if ttl is not None:
        opts.ttl = ttl
    if not skip_rollout and not version:
        raise InvalidInput("no version to roll out", hint="pass a version (an image tag), or skip the rollout")
    config = _config()
    secrets = {} if skip_rollout else load_secrets_for(bp, config)
    state = EnvState(env)
    async with Cloud(config, max_in_flight=opts.max_api) as cloud:
        result = await provision_env(cloud, bp, env, state, progress, opts)
    if blueprint_path is not None:
        remember_blueprint(state, blueprint_path, overrides)
    outcome = CreateEnvOutcome(provision=result)
    if not skip_rollout:
        rollout = Rollout(bp, result.inventory, secrets, progress)
        outcome.rollout = await rollout.run(RolloutOptions(version=version or ""))
    return outcome


async def teardown(env: str, *, progress: Progress | None = None, max_api: int = 10) -> TeardownResult:
    """Delete everything ``env`` owns, prove it is gone, forget its local state."""
    async with Cloud(_config(), max_in_flight=max_api) as cloud:
        result = await teardown_env(cloud, env, _silent(progress))
    EnvState(env).remove()
    return result


async def environments() -> list[EnvSummary]:
    """Environments found in the cloud by their tags."""
    async with Cloud(_config()) as cloud:
        return await list_envs(cloud)


# ---- rollout and day 2 ------------------------------------------------------------------------------

async def context(env: str, blueprint: str | None = None, overrides: tuple[str, ...] = ()) -> EnvContext:
    """The environment's blueprint (the remembered one unless given), inventory and keys."""
    return await load_context(env, blueprint, overrides)


def _rollout(ctx: EnvContext, secrets: dict[str, str], progress: Progress | None, dry_run: bool = False) -> Rollout:
    return Rollout(ctx.bp, ctx.inventory, secrets, _silent(progress), dry_run=dry_run)


async def deploy(env: str, version: str, *, blueprint: str | None = None, overrides: tuple[str, ...] = (),
                 break_lock: bool = False, progress: Progress | None = None, dry_run: bool = False) -> RolloutResult:
    """Roll out ``version`` to ``env``; ``dry_run`` returns the scripts each host would run."""
    ctx = await context(env, blueprint, overrides)
    secrets = load_secrets_for(ctx.bp)
    result = await _rollout(ctx, secrets, progress, dry_run).run(RolloutOptions(version=version, break_lock=break_lock))
    if blueprint is not None and not dry_run:
        remember_blueprint(ctx.state, blueprint, overrides)
    return result


async def build(bp: Blueprint, *, version: str | None = None, push: bool = True,
                progress: Progress | None = None) -> BuildResult:
    """Build the app image from ``bp.build`` (version: the git commit, ``-dirty`` when changed)
    and push it to ``bp.registry`` (to the cloud profile's push address for it, if any)."""
    try:
        config: CloudConfig | None = _config()
    except CsdeployError:
        config = None  # building needs no cloud; the push address then comes from the environment
    names = needed_secrets(bp, push)
    secrets = load_secrets_for(only_secrets(bp, names), config) if names else {}
    return await build_image(bp, version=version, push=push, secrets=secrets,
                             push_map=registry_push_map(config), progress=progress)


async def build_and_deploy(env: str, *, version: str | None = None, blueprint: str | None = None,
                           overrides: tuple[str, ...] = (), break_lock: bool = False,
                           progress: Progress | None = None) -> tuple[BuildResult, RolloutResult]:
    """`deploy --build`: build and push the image, then roll out the version it was tagged with."""
    ctx = await context(env, blueprint, overrides)
    built = await build(ctx.bp, version=version, push=True, progress=progress)
    rolled = await deploy(env, built.version, blueprint=blueprint, overrides=overrides, break_lock=break_lock,
                          progress=progress)
    return built, rolled


def init_blueprint(out: str | os.PathLike[str], *, compose: str | os.PathLike[str] | None = None,
                   kamal: str | os.PathLike[str] | None = None, template: str | None = None,
                   sets: tuple[str, ...] | list[str] = (), force: bool = False) -> InitResult:
    """`csdeploy init`: a validated blueprint at ``out`` from a Compose file, a Kamal config or a
    template (``sets``: the template's fields and blueprint overrides). Writes nothing on error,
    and never over an existing file unless ``force``."""
    from pathlib import Path

    return formats.init_blueprint(Path(out), compose=Path(compose) if compose is not None else None,
                                  kamal=Path(kamal) if kamal is not None else None, template=template,
                                  sets=sets, force=force)


def template_fields(name: str) -> list[str]:
    """The form of template ``name``: one line per field, with its default."""
    from .formats.templates import describe_fields

    return describe_fields(name)


async def export_kamal_config(bp: Blueprint, env: str, out: str | os.PathLike[str], *,
                              force: bool = False) -> ExportResult:
    """`csdeploy export kamal`: config/deploy.yml and .kamal/secrets for ``env``'s hosts (from
    the inventory; rebuilt from the cloud's tags when the local copy is missing)."""
    from pathlib import Path

    from .provision.run import refresh_inventory

    state = EnvState(env)
    inventory = state.read_inventory()
    if inventory is None:
        async with Cloud(_config()) as cloud:
            inventory = await refresh_inventory(cloud, bp, env, state)
    return export_kamal(bp, inventory, Path(out), force=force)


async def rollback(env: str, to: str | None = None, *, blueprint: str | None = None, break_lock: bool = False,
                   progress: Progress | None = None, dry_run: bool = False) -> RolloutResult:
    """Back to the previous successful version (or ``to``)."""
    ctx = await context(env, blueprint)
    secrets = load_secrets_for(ctx.bp)
    return await ops.rollback(_rollout(ctx, secrets, progress, dry_run), to, break_lock=break_lock)


async def status(env: str, *, blueprint: str | None = None) -> list[ops.HostStatus]:
    return await ops.status(_rollout(await context(env, blueprint), {}, None))


async def history(env: str, *, blueprint: str | None = None) -> list[DeployRecord]:
    r = _rollout(await context(env, blueprint), {}, None)
    async with r.pool() as pool:
        return await r.history(pool)


async def logs(env: str, role: str, *, lines: int = 100, follow: bool = False, emit: Callable[[str], None],
               blueprint: str | None = None) -> None:
    await ops.logs(_rollout(await context(env, blueprint), {}, None), role, lines=lines, follow=follow, emit=emit)


async def exec_(env: str, role: str, argv: list[str], *, emit: Callable[[str], None],
                blueprint: str | None = None) -> int:
    return await ops.exec_(_rollout(await context(env, blueprint), {}, None), role, argv, emit=emit)


async def proxy_reboot(env: str, *, blueprint: str | None = None) -> list[str]:
    return await ops.proxy_reboot(_rollout(await context(env, blueprint), {}, None))


async def accessory_reboot(env: str, name: str, *, blueprint: str | None = None,
                           progress: Progress | None = None) -> RolloutResult:
    ctx = await context(env, blueprint)
    return await ops.accessory_reboot(_rollout(ctx, load_secrets_for(ctx.bp), progress), name)


__all__ = [
    "BuildResult", "CreateEnvOutcome", "ExportResult", "InitResult", "init_blueprint", "export_kamal_config",
    "template_fields", "CreateOptions", "accessory_reboot", "build", "build_and_deploy",
    "create_env", "default_version", "deploy",
    "environments", "exec_", "history", "load_secrets_for", "logs", "plan", "proxy_reboot", "rollback", "status",
    "teardown",
]
