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

import asyncio
import collections
import contextlib
import os
import subprocess
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cloud.config import DEFAULT_IN_FLIGHT, CloudConfig, read_cloud_config, registry_push_map
from .errors import CsdeployError, InvalidInput, OperationFailed
from .log import register_secrets
from .state import EnvState
from .store import records

# Each function imports what it uses (issue 22, start-up): `envs` or `plan` never load SSH, the
# rollout or the history store, and the first API call goes out sooner.
if TYPE_CHECKING:  # imported by the commands that use them: a deploy never loads these
    from .backup import SnapshotResult
    from .blueprint import Blueprint
    from .cloud.client import Cloud
    from .dns import DnsRecord, DnsResult
    from .envctx import EnvContext
    from .formats import InitResult
    from .formats.kamal_out import ExportResult
    from .image_build import BuildResult
    from .inventory import Inventory
    from .nightly.report import NightlyResult
    from .nightly.run import NightlyPlan, Steps
    from .preview import PreviewDown, PreviewResult
    from .progress import Progress
    from .provision.envs import EnvSummary
    from .provision.plan import Plan
    from .provision.reap import ReapResult
    from .provision.run import CreateOptions, CreateResult
    from .provision.snapshots import Restore, SnapshotInfo
    from .provision.teardown import TeardownResult
    from .rollout import lifecycle, ops, upkeep
    from .rollout.deploy import Rollout, RolloutResult
    from .rollout.history import DeployRecord
    from .rollout.hosts import PlannedScript
    from .secrets import Secrets
    from .store import Journal


def default_version() -> str | None:
    """The current git commit (short), like Kamal's default version; None outside a repository."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _config() -> CloudConfig:
    return read_cloud_config()


def _cloud(config: CloudConfig, **options: Any) -> Cloud:
    """An API session (its client, and aiohttp, loaded here: `history` never needs them)."""
    from .cloud.client import Cloud

    return Cloud(config, **options)


def load_secrets_for(bp: Blueprint, config: CloudConfig | None = None) -> dict[str, str]:
    """The blueprint's secret values: the environment, then the cloud profile's secrets file (the
    lab's), then the blueprint's ``secrets_file``, then its ``secrets_source`` (a vault's CLI).
    Every value is registered for redaction."""
    return dict(_load_secrets(bp, config)[0])


def _load_secrets(bp: Blueprint, config: CloudConfig | None = None) -> tuple[Secrets, Path | None]:
    from .secrets import load_secrets, read_dotenv

    environ: dict[str, str] = dict(os.environ)
    try:
        config = config or _config()
    except CsdeployError:
        config = None
    profile = None
    if config is not None and config.secrets_file is not None and config.secrets_file.is_file():
        profile = config.secrets_file
        environ = {**read_dotenv(config.secrets_file), **environ}
    secrets = load_secrets(bp, environ=environ)
    register_secrets(secrets.values_for_redaction())
    return secrets, profile


@dataclass(frozen=True)
class SecretSource:
    """One secret for `csdeploy secrets print`: its name, where its value came from, the value."""

    name: str
    source: str
    value: str = field(repr=False)


def secret_sources(env: str | None, blueprint: str | None = None) -> list[SecretSource]:
    """Every secret the blueprint (``blueprint``, else the one ``env`` was deployed from)
    declares, with where its value came from; fetched as a deploy would (the vault included)."""
    from .blueprint import load_blueprint
    from .envctx import recall_blueprint

    if blueprint is None and env is None:
        raise InvalidInput("name the blueprint: --env NAME or --blueprint FILE")
    bp = load_blueprint(blueprint) if blueprint is not None else recall_blueprint(EnvState(str(env)), None, ())
    secrets, profile = _load_secrets(bp)
    out = []
    for name in bp.secrets:
        source = secrets.source_of(name)
        if source == "environment" and not os.environ.get(name) and profile is not None:
            source = f"{profile} (the cloud profile's secrets file)"
        out.append(SecretSource(name, source, secrets[name]))
    return out


def _silent(progress: Progress | None) -> Progress:
    from .progress import Recorder

    return progress if progress is not None else Recorder()


def _journal(progress: Progress | None) -> Journal:
    """The history store for one command: best effort, a warning when it cannot be used."""
    from .store import Journal

    return Journal.from_environment(warn=(lambda text: progress.note(text, level="warning")) if progress else None)


@contextlib.asynccontextmanager
async def _cloud_lock(env: str, break_lock: bool, progress: Progress | None, *, take_over: bool = True
                      ) -> AsyncIterator[asyncio.Future[None]]:
    """The environment's cloud lock around a rollout: yields the gate to await before any
    change (see `provision.cloudlock.rollout_lock`). ``take_over``: the gate is awaited after
    the deploy lock, so a cloud lock of a run whose deploy lock was taken over goes too."""
    from .provision.cloudlock import rollout_lock
    from .rollout import lease

    try:
        config: CloudConfig | None = _config()
    except InvalidInput:
        config = None
    warn = (lambda text: progress.note(text, level="warning")) if progress else (lambda text: None)
    take_overs = lease.TakeOvers()  # a run whose deploy lock the rollout takes over: its cloud lock too
    reset = lease.TAKE_OVERS.set(take_overs)
    try:
        async with rollout_lock(config, env, break_lock=break_lock, warn=warn,
                                dead=take_overs.dead if take_over else None) as gate:
            try:
                yield gate
            finally:
                take_overs.settle()  # a rollout that never reached its lock: nothing to wait for
    finally:
        lease.TAKE_OVERS.reset(reset)


# ---- provisioning ---------------------------------------------------------------------------------

async def plan(bp: Blueprint, env: str, *, ttl: timedelta | None = None, max_api: int = DEFAULT_IN_FLIGHT) -> Plan:
    """What create-env would create, change and delete. Changes nothing."""
    from .provision.run import plan_env

    async with _cloud(_config(), max_in_flight=max_api) as cloud:
        return await plan_env(cloud, bp, env, ttl=ttl, state=EnvState(env))


@dataclass
class CreateEnvOutcome:
    provision: CreateResult
    rollout: RolloutResult | None = None
    dns: DnsResult | None = None     # the A records of a blueprint with `dns:`

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
    from .envctx import remember_blueprint
    from .provision.desired import parse_time
    from .provision.run import CreateOptions, join_deferred
    from .provision.run import create_env as provision_env

    progress = _silent(progress)
    opts = options or CreateOptions()
    if ttl is not None:
        opts.ttl = ttl
    if not skip_rollout and not version:
        raise InvalidInput("no version to roll out", hint="pass a version (an image tag), or skip the rollout")
    config = _config()
    secrets = {} if skip_rollout else load_secrets_for(bp, config)
    dns_creds = _dns_credentials(bp, env)  # bad DNS input, like a missing secret, before any change
    state = EnvState(env)
    journal = _journal(progress)
    # A VM joining a load balancer that already serves joins once the rollout on it is done.
    opts.defer_joins = not skip_rollout
    try:
        async with _cloud(config, max_in_flight=opts.max_api) as cloud:
            result = await provision_env(cloud, bp, env, state, progress, opts)
            dns_result = await _publish_dns(cloud, bp, env, result.inventory, dns_creds, progress)
        inv = result.inventory
        await journal.env_created(name=env, cloud=config.endpoint, service=bp.service, network_id=inv.network.id,
                                  expires=parse_time(inv.expires or ""))
        if blueprint_path is not None:
            remember_blueprint(state, blueprint_path, overrides)
        outcome = CreateEnvOutcome(provision=result, dns=dns_result)
        if not skip_rollout:
            # The rollout's modules (and SSH's) load once the VMs stand, not before the first
            # API call (a fifth of a second of imports; SSH's are loaded meanwhile, see
            # provision.run.create_env).
            from .rollout import runs
            from .rollout.deploy import Rollout, RolloutOptions

            rollout = Rollout(bp, result.inventory, secrets, progress, journal=journal)
            async with _cloud_lock(env, opts.break_lock, progress) as gate:
                outcome.rollout = await runs.run(rollout, RolloutOptions(version=version or ""), gate=gate)
                if result.deferred:
                    async with _cloud(config, max_in_flight=opts.max_api) as cloud:
                        joined = await join_deferred(cloud, bp, env, state, progress, result.deferred)
                    if joined is not None:
                        result.inventory = joined
        return outcome
    finally:
        journal.close()


async def teardown(env: str, *, progress: Progress | None = None, max_api: int = DEFAULT_IN_FLIGHT,
                   how: str = "teardown", delete_snapshots: bool = False) -> TeardownResult:
    """Delete everything ``env`` owns, prove it is gone, forget its local state. Its snapshots
    are kept (for `recover`) unless ``delete_snapshots``."""
    from .provision.teardown import teardown_env

    config = _config()
    async with _cloud(config, max_in_flight=max_api) as cloud:
        await remove_dns(cloud, env, None, _silent(progress))
        result = await teardown_env(cloud, env, _silent(progress), delete_snapshots=delete_snapshots)
    EnvState(env).remove()
    journal = _journal(progress)
    try:
        await journal.env_torn_down(name=env, cloud=config.endpoint, how=how)
    finally:
        journal.close()
    return result


def _dns_credentials(bp: Blueprint, env: str) -> dict[str, str] | None:
    """The DNS driver's credentials (None without `dns:`), and the records' names checked."""
    if bp.dns is None:
        return None
    from . import dns

    dns.desired_records(bp, env)
    dns.settings_tags(bp.dns, [r.name for r in dns.desired_records(bp, env)])
    return dns.credential_values(bp.dns, bp)


async def _publish_dns(cloud: Cloud, bp: Blueprint, env: str, inventory: Inventory,
                       credentials: dict[str, str] | None, progress: Progress) -> DnsResult | None:
    if bp.dns is None:
        return None
    from . import dns
    from .progress import Event

    progress.emit(Event(resource=f"dns {bp.dns.zone}", action="update", status="running", env=env))
    result = await dns.publish(cloud, bp, env, inventory, credentials)
    assert result is not None
    progress.emit(Event(resource=f"dns {bp.dns.zone}", action="update", status="done", env=env,
                        detail=", ".join(f"{r.name} -> {r.address}" for r in result.records)))
    return result


async def remove_dns(cloud: Cloud, env: str, network_id: str | None, progress: Progress) -> list[str]:
    """Delete the DNS records ``env``'s network tags name, and prove them gone (teardown,
    preview down and reap call this before the network goes, with its tags)."""
    from . import dns

    network_id = network_id or await dns.env_network_id(cloud, env)
    removed = await dns.unpublish(cloud, network_id)
    if removed:
        from .progress import Event

        progress.emit(Event(resource="dns", action="delete", status="done", env=env, detail=", ".join(removed)))
    return removed


async def dns_records(bp: Blueprint, env: str) -> list[DnsRecord]:
    """The A records ``env`` gets from the blueprint's `dns:` (what `plan` shows), with the
    addresses of the local inventory when the environment exists."""
    if bp.dns is None:
        return []
    from . import dns

    return dns.desired_records(bp, env, EnvState(env).read_inventory())


async def environments() -> list[EnvSummary]:
    """Environments found in the cloud by their tags (`expired()` marks those `reap` deletes)."""
    from .provision.envs import list_envs

    async with _cloud(_config()) as cloud:
        return await list_envs(cloud)


async def reap(*, prefix: str | None = None, dry_run: bool = False, max_parallel: int = 4, max_api: int = DEFAULT_IN_FLIGHT,
               progress: Progress | None = None, now: datetime | None = None) -> ReapResult:
    """Tear down every expired environment (of ``prefix``) that nobody is changing right now."""
    from .provision.reap import REMOVED
    from .provision.reap import reap as reap_envs

    config = _config()
    journal = _journal(progress)
    try:
        run_id = None if dry_run else await journal.run_started(kind="reap", cloud=config.endpoint, prefix=prefix)
        async with _cloud(config, max_in_flight=max_api) as cloud:
            result = await reap_envs(cloud, _silent(progress), prefix=prefix, dry_run=dry_run,
                                     max_parallel=max_parallel, now=now, before_teardown=remove_dns)
        for item in result.of(REMOVED):
            await journal.env_torn_down(name=item.env, cloud=config.endpoint, how="reap")
        await journal.run_finished(run_id, passed=result.ok, summary=result.to_dict())
        return result
    finally:
        journal.close()


# ---- preview environments ------------------------------------------------------------------------

async def preview_up(bp: Blueprint, env: str, *, version: str | None = None, ttl: timedelta | None = None,
                     from_env: str | None = None, skip_rollout: bool = False, progress: Progress | None = None,
                     options: CreateOptions | None = None, blueprint_path: str | None = None,
                     overrides: tuple[str, ...] = ()) -> tuple[PreviewResult, CreateEnvOutcome]:
    """Create or update preview ``env``: converge (the same VMs when nothing changed), move its
    expiry to now + ``ttl`` (3 days by default), make its DNS records, roll out ``version``.
    ``from_env``: each data disk the preview does not have yet is made from that environment's
    newest snapshot of the same role and disk (as `recover` does); later pushes keep them."""
    from .preview import DEFAULT_TTL, PreviewResult, preview_url

    if from_env is not None:  # seeded: each new data disk from from_env's newest snapshot (kept ones stay)
        outcome = (await recover(bp, env, from_env, version=version, ttl=ttl or DEFAULT_TTL, skip_rollout=skip_rollout,
                                 progress=progress, options=options, blueprint_path=blueprint_path,
                                 overrides=overrides)).created
    else:
        outcome = await create_env(bp, env, version=version, ttl=ttl or DEFAULT_TTL, skip_rollout=skip_rollout,
                                   progress=progress, options=options, blueprint_path=blueprint_path,
                                   overrides=overrides)
    inv = outcome.inventory
    vms = outcome.provision.plan
    result = PreviewResult(env=env, url=preview_url(bp, inv, outcome.dns), version=None if skip_rollout else version,
                           created=any(a.op == "create" and a.kind == "network" for a in vms.actions),
                           expires=inv.expires,
                           details={"vms_created": sum(1 for a in vms.actions if a.kind == "vm" and a.op == "create"),
                                    "dns": outcome.dns.to_dict() if outcome.dns else None})
    return result, outcome


async def preview_down(env: str, *, progress: Progress | None = None,
                       max_api: int = DEFAULT_IN_FLIGHT) -> PreviewDown:
    """Remove preview ``env``: its DNS records (proven gone), then everything it owns in the
    cloud (proven gone). A preview that is already gone is not an error."""
    from .preview import PreviewDown
    from .provision.teardown import teardown_env

    config = _config()
    prog = _silent(progress)
    async with _cloud(config, max_in_flight=max_api) as cloud:
        removed = await remove_dns(cloud, env, None, prog)
        result = await teardown_env(cloud, env, prog)
    EnvState(env).remove()
    down = PreviewDown(env=env, deleted=result.deleted, dns_removed=removed)
    if down.existed:
        journal = _journal(progress)
        try:
            await journal.env_torn_down(name=env, cloud=config.endpoint, how="preview down")
        finally:
            journal.close()
    return down


# ---- snapshots and recovery ----------------------------------------------------------------------

async def snapshot(env: str, *, role: str | None = None, wait: bool = False, quiesce: bool = True,
                   progress: Progress | None = None, max_api: int = DEFAULT_IN_FLIGHT) -> SnapshotResult:
    """Snapshot every data disk of ``env`` (or of role/accessory ``role``), tagged with the
    environment, role, disk and who. ``quiesce``: checkpoint PostgreSQL and freeze each disk on
    its host around the snapshot (what could not be done is in each item's notes); without it
    no host is touched (crash-consistent). ``wait``: until each is BackedUp, not just captured."""
    from . import backup
    from .rollout.hosts import Hosts
    from .store.records import actor

    prog = _silent(progress)
    async with _cloud(_config(), max_in_flight=max_api) as cloud:
        def take(q: backup.Quiescer) -> Any:
            return backup.take_snapshots(cloud, env, q, prog, by=actor(), role=role, wait=wait)

        if not quiesce:
            return await take(backup.NoQuiesce("--no-quiesce: crash-consistent, no host touched"))
        try:
            ctx = await context(env)
        except CsdeployError as exc:
            return await take(backup.NoQuiesce(f"not quiesced: {str(exc).splitlines()[0]} (crash-consistent)"))
        inv = ctx.inventory
        async with Hosts(inv.hosts, user=inv.ssh.user, client_key=inv.ssh.key, known_hosts=inv.ssh.known_hosts) as pool:
            return await take(backup.HostQuiesce(pool, list(inv.hosts), backup.postgres_settings(ctx.bp)))


async def snapshots(env: str, *, max_api: int = DEFAULT_IN_FLIGHT) -> list[SnapshotInfo]:
    """``env``'s snapshots, newest first: manual ones by their tags (even once the environment
    is gone), a policy's by the environment's volumes."""
    from .provision.snapshots import list_snapshots

    async with _cloud(_config(), max_in_flight=max_api) as cloud:
        return await list_snapshots(cloud, env)


@dataclass
class RecoverOutcome:
    created: CreateEnvOutcome
    source: str
    #: Each data disk and the snapshot it was made from (None: made blank, no snapshot of it).
    restores: list[Restore]
    #: Disks whose volume already existed (kept as they are, not restored), by volume name.
    kept: list[str]


async def recover(bp: Blueprint, env: str, source: str, *, at: datetime | None = None, version: str | None = None,
                  ttl: timedelta | None = None, skip_rollout: bool = False, progress: Progress | None = None,
                  options: CreateOptions | None = None, blueprint_path: str | None = None,
                  overrides: tuple[str, ...] = ()) -> RecoverOutcome:
    """Create ``env`` as `create_env` does, each data disk made from ``source``'s newest snapshot
    of the same role and disk (taken at or before ``at``), found by tags: ``source`` may be
    gone, or be ``env`` itself (rebuilt in place; a volume that still exists is kept).
    InvalidInput, with nothing created, when there is nothing to recover from."""
    from .provision.desired import desired_state
    from .provision.run import CreateOptions
    from .provision.snapshots import choose_snapshots, list_snapshots

    if at is not None and at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    if not skip_rollout and not version:
        raise InvalidInput("no version to roll out", hint="pass a version (an image tag), or skip the rollout")
    opts = options or CreateOptions()
    async with _cloud(_config(), max_in_flight=opts.max_api) as cloud:
        found = await list_snapshots(cloud, source)
    restores = choose_snapshots(desired_state(bp, env), source, found, at)
    opts.restore = {r.disk: r.snapshot.id for r in restores if r.snapshot is not None}
    for r in restores:
        if r.snapshot is None and progress is not None:
            progress.note(f"{source} has no snapshot of {r.role}'s disk {r.label}: {r.disk} is made blank",
                          level="warning")
    outcome = await create_env(bp, env, version=version, ttl=ttl, skip_rollout=skip_rollout, progress=progress,
                               options=opts, blueprint_path=blueprint_path, overrides=overrides)
    made = {a.name for a in outcome.provision.plan.actions if a.kind == "volume" and a.op == "create"}
    return RecoverOutcome(created=outcome, source=source, restores=restores,
                          kept=[r.disk for r in restores if r.disk not in made])


# ---- logical backups (dumps.py: the work; backup_dest.py: where they go) ------------------------------

def _backup_store(to: str | None) -> Any:
    """The destination ``to`` names; its credentials from the environment or the cloud
    profile's secrets file (the lab's), never argv."""
    from .backup_dest import open_store
    from .secrets import read_dotenv

    try:
        config = _config()
    except CsdeployError:
        config = None
    profile = read_dotenv(config.secrets_file) if config is not None and config.secrets_file is not None \
        and config.secrets_file.is_file() else {}
    return open_store(to, lookup=lambda name: os.environ.get(name) or profile.get(name))


async def backup_accessory(env: str, accessory: str, *, to: str | None = None, keep: int | None = None,
                           blueprint: str | None = None) -> Any:
    """Dump ``accessory`` of ``env`` into ``to`` (default: $CSDEPLOY_HOME/backups), then keep the
    newest ``keep``; recorded in the history store. Returns a `dumps.BackupResult`."""
    from . import dumps, hostdumps
    from .store.records import actor

    ctx = await context(env, blueprint)
    acc, method = dumps.method_for(ctx.bp, accessory)  # refused before anything is contacted
    policy = acc.backups
    to = to if to is not None else hostdumps.destination(policy)
    keep = keep if keep is not None else policy.keep if policy is not None else None
    store = _backup_store(to)
    journal = _journal(None)
    try:
        try:
            result = await dumps.take(_rollout(ctx, {}, None), accessory, store, by=actor(), keep=keep)
        except CsdeployError as exc:
            await journal.backup_recorded(action="backup", env=env, accessory=accessory, kind=method.kind, backup="",
                                          location=store.url, size=None, sha256=None, ok=False,
                                          error=str(exc).splitlines()[0])
            raise
        m = result.manifest
        await journal.backup_recorded(action="backup", env=env, accessory=accessory, kind=m.kind, backup=m.id,
                                      location=store.url, size=m.size, sha256=m.sha256, ok=True)
    finally:
        journal.close()
    return result


async def fetch_backups(env: str, accessory: str, *, to: str | None = None, backup: str | None = None,
                        blueprint: str | None = None) -> list[Any]:
    """Copy the dumps the schedule keeps on ``accessory``'s host (``backup``: only that id) to
    ``to`` (default: $CSDEPLOY_HOME/backups, or the blueprint's off-host `to:`), each checked
    against its manifest; those already there are skipped. The copies' manifests."""
    from . import dumps, host_backups, hostdumps

    ctx = await context(env, blueprint)
    acc, _ = dumps.method_for(ctx.bp, accessory)
    store = _backup_store(to if to is not None else hostdumps.destination(acc.backups))
    return await host_backups.fetch(_rollout(ctx, {}, None), accessory, store, only=backup)


@dataclass
class BackupList:
    """What `backups` found (`dumps.Manifest`, newest first) and the destinations it searched."""
    found: list[Any]
    searched: list[str]
    notes: list[str] = field(default_factory=list)   # hosts whose dumps could not be read


def backup_destinations(env: str, *, to: str | None = None, accessory: str | None = None,
                        blueprint: str | None = None) -> list[str | None]:
    """Where `backups` looks: ``to`` alone when given; else the default directory (None) and
    each destination the environment's blueprint (the remembered one, or ``blueprint``) gives
    its accessories (``backups.to``, of ``accessory`` only when given). An environment whose
    blueprint is not remembered (never deployed from here, or torn down) has the default only."""
    from . import hostdumps
    from .envctx import RECORD, recall_blueprint

    if to is not None:
        return [to]
    state = EnvState(env)
    if blueprint is None and not (state.dir / RECORD).is_file():
        return [None]
    bp = recall_blueprint(state, blueprint, ())
    out: list[str | None] = [None]
    for name, acc in bp.accessories.items():
        if accessory is not None and name != accessory:
            continue
        kept = hostdumps.destination(acc.backups)
        if kept is not None and kept not in out:
            out.append(kept)
    return out


async def backups(env: str, *, to: str | None = None, accessory: str | None = None,
                  blueprint: str | None = None) -> BackupList:
    """``env``'s backups, newest first, also once ``env`` is gone: in ``to``, or else in the
    default directory and the destinations the environment's blueprint names."""
    from . import dumps

    stores = []
    for url in backup_destinations(env, to=to, accessory=accessory, blueprint=blueprint):
        store = _backup_store(url)
        if store.url not in (s.url for s in stores):
            stores.append(store)
    found: dict[tuple[str, str], Any] = {}
    for store in stores:
        await asyncio.to_thread(store.check)
        for m in await dumps.listing(store, env, accessory):
            found.setdefault((store.url, m.key), replace(m, destination=store.url))
    searched = [s.url for s in stores]
    notes: list[str] = []
    if to is None:
        on_host, notes, where = await _host_dumps(env, accessory, blueprint)
        searched += where
        for m in on_host:
            found.setdefault((m.destination, m.key), m)
    return BackupList(sorted(found.values(), key=lambda m: m.created_at, reverse=True), searched, notes)


async def _host_dumps(env: str, accessory: str | None, blueprint: str | None) -> tuple[list[Any], list[str],
                                                                                      list[str]]:
    """The dumps schedules keep on ``env``'s accessory hosts (of the accessories scheduled on
    them), the notes of hosts that could not be read, and where it looked (``host:PATH``).
    Nothing for an environment not deployed from here, or whose blueprint schedules none."""
    from . import host_backups, hostdumps
    from .envctx import RECORD, recall_blueprint

    if blueprint is None and not (EnvState(env).dir / RECORD).is_file():
        return [], [], []
    bp = recall_blueprint(EnvState(env), blueprint, ())
    names = [n for n, acc in bp.accessories.items() if accessory in (None, n) and hostdumps.runs_on_host(acc.backups)]
    if not names:
        return [], [], []
    where = [f"{hostdumps.HOST}:{hostdumps.directory(bp, n)}" for n in names]
    try:
        ctx = await context(env, blueprint)
    except CsdeployError as exc:
        return [], [f"the dumps kept on the hosts were not read: {str(exc).splitlines()[0]}"], where
    r = _rollout(ctx, {}, None)
    found, notes = [], []
    for name in names:
        got, problems = await host_backups.listing(r, name)
        found += got
        notes += problems
    return found, notes, where


async def scheduled_backups(env: str, *, blueprint: str | None = None) -> list[Any]:
    """The blueprint's scheduled backups of ``env`` (run by `csdeploy serve`): each one's last
    run and next due minute from the history store (`server.schedule.ScheduleState`); none
    when the blueprint schedules none. OperationFailed when the store cannot be read."""
    from .envctx import recall_blueprint
    from .server import schedule
    from .store import store_url
    from .store.db import Store

    bp = recall_blueprint(EnvState(env), blueprint, ())
    if not schedule.schedules_of(env, bp):
        return []
    url = store_url()
    if url is None:
        raise InvalidInput("the history store is off (CSDEPLOY_STATE_URL=none): scheduled backups are run "
                           "by `csdeploy serve`, which keeps them there")

    def read() -> list[Any]:
        with Store(url) as store:
            return schedule.states(store, env, bp)

    return await asyncio.to_thread(read)


async def restore(env: str, accessory: str, backup: str | None = None, *, to: str | None = None,
                  source_env: str | None = None, maintenance: bool = True, blueprint: str | None = None,
                  break_lock: bool = False, progress: Progress | None = None, dry_run: bool = False) -> Any:
    """Restore ``backup`` (an id from `backups`, a dump file, or the newest of ``source_env``'s
    ``accessory``, default ``env``'s) into ``env``'s ``accessory``: checked first (InvalidInput,
    nothing changed, for what is not a dump of its kind), then restored behind maintenance (or,
    with no proxy host, with the app roles stopped). Recorded in the history store. Returns a
    `dumps.RestoreResult`; with ``dry_run`` the steps it would take (`dumps.restore_plan`), in
    words, nothing contacted but the destination's listing."""
    from . import dumps, hostdumps

    ctx = await context(env, blueprint)
    acc, method = dumps.method_for(ctx.bp, accessory)
    if to is None:
        to = hostdumps.destination(acc.backups)
    store = _backup_store(to)
    if backup is None:
        await asyncio.to_thread(store.check)
    try:
        where, manifest, key = await dumps.choose(store, source_env or env, accessory, backup)
    except InvalidInput:
        on_host = None if source_env not in (None, env) else await _host_dump_for(ctx, accessory, backup,
                                                                                     copy=not dry_run)
        if on_host is None:
            raise
        where, manifest, key = on_host
    else:
        if backup is None and source_env in (None, env) and manifest is not None:
            newer = await _host_dump_for(ctx, accessory, None, newer_than=manifest.created_at, copy=not dry_run)
            if newer is not None:
                where, manifest, key = newer
    label = manifest.id if manifest is not None else str(backup)
    if dry_run:
        return dumps.restore_plan(_rollout(ctx, {}, None, dry_run=True), accessory, label, manifest,
                                  maintenance=maintenance)
    journal = _journal(progress)
    fetched = getattr(where, "root", None) if getattr(where, "url", "").startswith(str(_restore_dir(""))) else None
    try:
        async with _cloud_lock(env, break_lock, progress) as gate:
            await gate
            try:
                result = await dumps.restore(
                    _rollout(ctx, {}, progress), accessory, where, manifest, key, label=label,
                    maintenance=maintenance,
                    on_note=(lambda text: progress.note(text, level="warning")) if progress else None)
            except CsdeployError as exc:
                await journal.backup_recorded(action="restore", env=env, accessory=accessory, kind=method.kind,
                                              backup=label, location=where.url, size=None, sha256=None, ok=False,
                                              error=str(exc).splitlines()[0])
                raise
        await journal.backup_recorded(action="restore", env=env, accessory=accessory, kind=method.kind,
                                      backup=label, location=where.url, size=manifest.size if manifest else None,
                                      sha256=manifest.sha256 if manifest else None, ok=True)
    finally:
        journal.close()
        if fetched is not None:  # the copy of a host's dump made for this restore
            import shutil

            shutil.rmtree(fetched, ignore_errors=True)
    return result


def _restore_dir(name: str) -> Path:
    """Where a dump kept on a host is copied for a restore (under $CSDEPLOY_HOME, 0700)."""
    from .state import state_root

    return state_root() / f"restore-{name}"


async def _host_dump_for(ctx: Any, accessory: str, backup: str | None, *, newer_than: str = "",
                         copy: bool = True) -> tuple[Any, Any, str] | None:
    """A dump the schedule keeps on ``accessory``'s host, for `restore`: ``backup`` (an id), or
    the newest (newer than ``newer_than``), copied to a private directory of this machine and
    checked against its manifest there (then restored as any backup, checked again as it
    streams; without ``copy`` (a dry run), only its manifest). None when the host keeps no such dump."""
    import tempfile

    from . import backup_dest as bd
    from . import host_backups, hostdumps

    if not hostdumps.runs_on_host(ctx.bp.accessories[accessory].backups):
        return None
    r = _rollout(ctx, {}, None)
    found, problems = await host_backups.listing(r, accessory)
    chosen = [m for m in found if (backup in (m.id, m.key) if backup is not None else m.created_at > newer_than)]
    if not chosen:
        if problems and backup is not None:
            raise OperationFailed(problems[0])
        return None
    if not copy:
        return bd.LocalDir(Path("/nonexistent"), chosen[0].destination), chosen[0], chosen[0].key
    top = _restore_dir("").parent
    top.mkdir(parents=True, exist_ok=True)
    folder = tempfile.mkdtemp(prefix=_restore_dir("").name, dir=top)  # 0700; removed after the restore
    store = bd.LocalDir(Path(folder), folder)
    [m] = await host_backups.fetch(r, accessory, store, only=chosen[0].id)
    return store, m, m.key


# ---- rollout and day 2 ------------------------------------------------------------------------------

async def context(env: str, blueprint: str | None = None, overrides: tuple[str, ...] = ()) -> EnvContext:
    """The environment's blueprint (the remembered one unless given), inventory and keys."""
    from .envctx import load_context

    return await load_context(env, blueprint, overrides)


def _rollout(ctx: EnvContext, secrets: dict[str, str], progress: Progress | None, dry_run: bool = False,
             journal: Journal | None = None) -> Rollout:
    from .rollout.deploy import Rollout

    return Rollout(ctx.bp, ctx.inventory, secrets, _silent(progress), dry_run=dry_run, journal=journal)


@contextlib.asynccontextmanager
async def _changing(env: str, break_lock: bool, progress: Progress | None, dry_run: bool) -> AsyncIterator[
        tuple[Journal | None, asyncio.Future[None] | None]]:
    """What a real rollout holds: the cloud lock (seen by `reap`; its gate is awaited before
    the first change) and a history journal."""
    if dry_run:
        yield None, None
        return
    journal = _journal(progress)
    try:
        async with _cloud_lock(env, break_lock, progress) as gate:
            yield journal, gate
    finally:
        journal.close()


async def deploy(env: str, version: str, *, blueprint: str | None = None, overrides: tuple[str, ...] = (),
                 break_lock: bool = False, progress: Progress | None = None, dry_run: bool = False,
                 roles: tuple[str, ...] = (), hosts: tuple[str, ...] = (), canary: str | None = None,
                 continue_on_error: bool = False) -> RolloutResult:
    """Roll out ``version`` to ``env`` (or only ``roles``/``hosts``); ``dry_run`` reads the hosts'
    state and returns the scripts each host would run. ``canary`` ("N" hosts or "P%"): only a
    canary, watched, then paused for `promote` or `abort`."""
    from .envctx import remember_blueprint
    from .rollout import runs
    from .rollout.deploy import RolloutOptions
    from .rollout.strategy import parse_canary

    spec = parse_canary(canary) if canary is not None else None
    ctx = await context(env, blueprint, overrides)
    secrets = load_secrets_for(ctx.bp)
    opts = RolloutOptions(version=version, break_lock=break_lock, roles=roles, hosts=hosts, canary=spec,
                          continue_on_error=continue_on_error)
    async with _changing(env, break_lock, progress, dry_run) as (journal, gate):
        result = await runs.run(_rollout(ctx, secrets, progress, dry_run, journal), opts, gate=gate)
    if blueprint is not None and not dry_run:
        remember_blueprint(ctx.state, blueprint, overrides)
    return result


async def finish_canary(env: str, action: str, *, blueprint: str | None = None, overrides: tuple[str, ...] = (),
                        break_lock: bool = False, progress: Progress | None = None,
                        dry_run: bool = False) -> RolloutResult:
    """``action`` promote (the rest of the hosts take the canary's version) or abort (the canary
    hosts go back) for the canary paused in ``env``; from any machine that reaches its hosts."""
    from .rollout import ops

    ctx = await context(env, blueprint, overrides)
    secrets = load_secrets_for(ctx.bp)
    async with _changing(env, break_lock, progress, dry_run) as (journal, gate):
        return await ops.finish_canary(_rollout(ctx, secrets, progress, dry_run, journal), action,
                                       break_lock=break_lock, gate=gate)


async def build(bp: Blueprint, *, version: str | None = None, push: bool = True,
                progress: Progress | None = None) -> BuildResult:
    """Build the app image from ``bp.build`` (version: the git commit, ``-dirty`` when changed)
    and push it to ``bp.registry`` (to the cloud profile's push address for it, if any)."""
    try:
        config: CloudConfig | None = _config()
    except CsdeployError:
        config = None  # building needs no cloud; the push address then comes from the environment
    from .image_build import build_image, needed_secrets, only_secrets

    names = needed_secrets(bp, push)
    secrets = load_secrets_for(only_secrets(bp, names), config) if names else {}
    return await build_image(bp, version=version, push=push, secrets=secrets,
                             push_map=registry_push_map(config), progress=progress)


async def build_and_deploy(env: str, *, version: str | None = None, blueprint: str | None = None,
                           overrides: tuple[str, ...] = (), break_lock: bool = False,
                           progress: Progress | None = None, roles: tuple[str, ...] = (),
                           hosts: tuple[str, ...] = (), canary: str | None = None,
                           continue_on_error: bool = False) -> tuple[BuildResult, RolloutResult]:
    """`deploy --build`: build and push the image, then roll out the version it was tagged with."""
    from .rollout.strategy import parse_canary

    if canary is not None:
        parse_canary(canary)  # bad input before the build
    ctx = await context(env, blueprint, overrides)
    built = await build(ctx.bp, version=version, push=True, progress=progress)
    rolled = await deploy(env, built.version, blueprint=blueprint, overrides=overrides, break_lock=break_lock,
                          progress=progress, roles=roles, hosts=hosts, canary=canary,
                          continue_on_error=continue_on_error)
    return built, rolled


def init_blueprint(out: str | os.PathLike[str], *, compose: str | os.PathLike[str] | None = None,
                   kamal: str | os.PathLike[str] | None = None, template: str | None = None,
                   sets: tuple[str, ...] | list[str] = (), force: bool = False,
                   env_files: Sequence[str | os.PathLike[str]] = (), profiles: Sequence[str] = ()) -> InitResult:
    """`csdeploy init`: a validated blueprint at ``out`` from a Compose file, a Kamal config or a
    template (``sets``: the template's fields and blueprint overrides). Writes nothing on error,
    and never over an existing file unless ``force``. ``env_files``/``profiles``: Compose's
    `--env-file` and `--profile`."""
    from pathlib import Path

    from . import formats

    return formats.init_blueprint(Path(out), compose=Path(compose) if compose is not None else None,
                                  kamal=Path(kamal) if kamal is not None else None, template=template,
                                  sets=sets, force=force, env_files=[Path(f) for f in env_files],
                                  profiles=list(profiles))


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
        async with _cloud(_config()) as cloud:
            inventory = await refresh_inventory(cloud, bp, env, state)
    from .formats.kamal_out import export_kamal

    return export_kamal(bp, inventory, Path(out), force=force)


async def rollback(env: str, to: str | None = None, *, blueprint: str | None = None, break_lock: bool = False,
                   progress: Progress | None = None, dry_run: bool = False, roles: tuple[str, ...] = (),
                   hosts: tuple[str, ...] = (), continue_on_error: bool = False) -> RolloutResult:
    """Back to the previous successful version (or ``to``)."""
    from .rollout import ops

    ctx = await context(env, blueprint)
    secrets = load_secrets_for(ctx.bp)
    async with _changing(env, break_lock, progress, dry_run) as (journal, gate):
        return await ops.rollback(_rollout(ctx, secrets, progress, dry_run, journal), to, break_lock=break_lock,
                                  roles=roles, hosts=hosts, continue_on_error=continue_on_error, gate=gate)


async def status(env: str, *, blueprint: str | None = None) -> list[ops.HostStatus]:
    ctx = await context(env, blueprint)  # first: a missing inventory is read from the cloud before SSH loads
    from .rollout import ops

    return await ops.status(_rollout(ctx, {}, None))


async def history(env: str, *, blueprint: str | None = None) -> list[DeployRecord]:
    """The deploy records on ``env``'s primary host (the truth for what runs there)."""
    r = _rollout(await context(env, blueprint), {}, None)
    async with r.pool() as pool:
        return await r.history(pool)


HISTORY_KINDS = records.HISTORY_KINDS


async def recorded(what: str = "deployments", *, env: str | None = None, service: str | None = None,
                   status: str | None = None, since: timedelta | None = None, limit: int = 100) -> list[Any]:
    """What the history store holds (deployments with their events, environments, or runs),
    newest first. Unlike the writes, a store that cannot be read is an error here."""
    from .store import store_url
    from .store.db import Store

    url = store_url()
    if url is None:
        raise InvalidInput("the history store is off (CSDEPLOY_STATE_URL=none)",
                           hint="unset CSDEPLOY_STATE_URL, or pass --source host --env NAME")

    def read() -> list[Any]:
        with Store(url) as store:
            if what == "environments":
                return records.environments(store, name=env, since=since, limit=limit)
            if what == "runs":
                return records.runs(store, env=env, status=status, since=since, limit=limit)
            return records.deployments(store, env=env, service=service, status=status, since=since, limit=limit)

    return await asyncio.to_thread(read)


async def logs(env: str, role: str, *, lines: int = 100, follow: bool = False, emit: Callable[[str], None],
               blueprint: str | None = None, since: timedelta | None = None, redacted: bool = False) -> None:
    """The role's (or accessory's, or scheduled job's) container logs, each line as
    ``HOST | LINE``; ``since``: of that last stretch only. ``redacted`` (the server's, whose
    readers do not hold the secrets): the blueprint's secrets are loaded, and so known, and
    every line has them replaced."""
    from .rollout import ops

    ctx = await context(env, blueprint)
    if redacted:
        load_secrets_for(ctx.bp)
        emit = _redacting(emit)
    await ops.logs(_rollout(ctx, {}, None), role, lines=lines, follow=follow, emit=emit,
                   since_seconds=int(since.total_seconds()) if since is not None else None)


def _redacting(emit: Callable[[str], None]) -> Callable[[str], None]:
    from .log import redact

    return lambda line: emit(redact(line))


async def exec_(env: str, role: str, argv: list[str], *, emit: Callable[[str], None],
                blueprint: str | None = None) -> int:
    from .rollout import ops

    return await ops.exec_(_rollout(await context(env, blueprint), {}, None), role, argv, emit=emit)


async def maintenance(env: str, on: bool, *, message: str = "", blueprint: str | None = None
                      ) -> dict[str, dict[str, str]]:
    """Maintenance mode on or off on every proxy host: host -> proxied service -> on/off/none."""
    from .rollout import ops

    ops.check_message(message)  # refused before anything is read
    return await ops.maintenance(_rollout(await context(env, blueprint), {}, None), on, message)


async def maintenance_plan(env: str, on: bool, *, message: str = "", blueprint: str | None = None
                           ) -> list[PlannedScript]:
    """`maintenance on|off --dry-run`: each proxy host's script, nothing run."""
    from .rollout import ops

    ops.check_message(message)
    return ops.maintenance_plan(_rollout(await context(env, blueprint), {}, None, dry_run=True), on, message)


async def app_lifecycle(env: str, action: str, *, roles: tuple[str, ...] = (), hosts: tuple[str, ...] = (),
                        blueprint: str | None = None, dry_run: bool = False, break_lock: bool = False,
                        progress: Progress | None = None) -> lifecycle.LifecycleResult:
    """`app stop|start|remove|details` on the role's current containers of the selected hosts."""
    from .rollout import lifecycle

    ctx = await context(env, blueprint)
    if action == "details":
        return await lifecycle.app(_rollout(ctx, {}, None), action, roles=roles, hosts=hosts)
    async with _changing(env, break_lock, progress, dry_run) as (_, gate):
        if gate is not None:
            await gate
        return await lifecycle.app(_rollout(ctx, {}, progress, dry_run), action, roles=roles, hosts=hosts,
                                   break_lock=break_lock)


async def accessory_lifecycle(env: str, name: str, action: str, *, delete_data: bool = False,
                              blueprint: str | None = None, dry_run: bool = False, break_lock: bool = False,
                              progress: Progress | None = None) -> lifecycle.LifecycleResult:
    """`accessory start|stop|restart|remove|upgrade NAME`."""
    from .rollout import lifecycle

    ctx = await context(env, blueprint)
    secrets = load_secrets_for(ctx.bp) if action == "upgrade" else {}
    async with _changing(env, break_lock, progress, dry_run) as (_, gate):
        if gate is not None:
            await gate
        return await lifecycle.accessory(_rollout(ctx, secrets, progress, dry_run), name, action,
                                         delete_data=delete_data, break_lock=break_lock,
                                         load_secrets=lambda: load_secrets_for(ctx.bp))


async def prune(env: str, *, blueprint: str | None = None, dry_run: bool = False, break_lock: bool = False,
                progress: Progress | None = None) -> lifecycle.LifecycleResult:
    """Old containers and images beyond the blueprint's retain_versions, on every app host."""
    from .rollout import lifecycle

    ctx = await context(env, blueprint)
    async with _changing(env, break_lock, progress, dry_run) as (_, gate):
        if gate is not None:
            await gate
        return await lifecycle.prune(_rollout(ctx, {}, progress, dry_run), break_lock=break_lock)


async def hosts_upgrade(env: str, *, roles: tuple[str, ...] = (), blueprint: str | None = None,
                        overrides: tuple[str, ...] = (), dry_run: bool = False, break_lock: bool = False, progress: Progress | None = None,
                        emit: Callable[[str], None] = lambda line: None,
                        max_api: int = DEFAULT_IN_FLIGHT) -> upkeep.UpgradeResult:
    """`hosts upgrade`: package updates role by role, one host at a time (out of its load
    balancer, upgraded, rebooted by the cloud, waited for, back in)."""
    from .provision.rotation import CloudRotation
    from .rollout import upkeep

    ctx = await context(env, blueprint, overrides)
    r = _rollout(ctx, {}, progress, dry_run)
    upkeep.upgrade_order(r, roles)  # an unknown role is refused before the cloud is asked
    if dry_run:
        return await upkeep.upgrade(r, _NoRotation(), roles=roles, emit=emit)
    async with _changing(env, break_lock, progress, dry_run) as (_, gate):
        if gate is not None:
            await gate
        async with _cloud(_config(), max_in_flight=max_api) as cloud:
            return await upkeep.upgrade(r, CloudRotation(cloud, ctx.inventory), roles=roles, emit=emit)


class _NoRotation:
    """A dry run's cloud: never called (the plan lists the calls instead)."""

    async def leave(self, host: object) -> bool:
        raise AssertionError("a dry run does not call the cloud")

    async def join(self, host: object) -> None:
        raise AssertionError("a dry run does not call the cloud")

    async def reboot(self, host: object) -> None:
        raise AssertionError("a dry run does not call the cloud")


async def exec_session(env: str, role: str, argv: list[str], *, interactive: bool = True, tty: bool = False,
                       new: bool = False, primary: bool = False, hosts: tuple[str, ...] = (),
                       blueprint: str | None = None) -> int:
    """``argv`` on one host of ``role`` with this terminal attached (`exec -i`); its exit code."""
    from .rollout import interactive as sessions

    ctx = await context(env, blueprint)
    # a one-off container's clear env only: its secrets come from the env file on the host
    no_secrets: dict[str, str] = collections.defaultdict(str)
    return await sessions.exec_(_rollout(ctx, no_secrets, None), role, argv, interactive=interactive, tty=tty,
                                   new=new, primary=primary, hosts=hosts)


async def console(env: str, *, role: str | None = None, primary: bool = False, hosts: tuple[str, ...] = (),
                  blueprint: str | None = None) -> int:
    """A shell in the app's running container, with this terminal attached; its exit code."""
    from .rollout import interactive as sessions

    return await sessions.console(_rollout(await context(env, blueprint), {}, None), role, primary=primary,
                                  hosts=hosts)


async def psql(env: str, *, accessory: str | None = None, args: tuple[str, ...] = (), tty: bool = True,
               blueprint: str | None = None) -> int:
    """psql in the PostgreSQL accessory, with this terminal attached; its exit code."""
    from .rollout import interactive as sessions

    return await sessions.psql(_rollout(await context(env, blueprint), {}, None), accessory, args, tty=tty)


async def aliases(env: str, *, blueprint: str | None = None) -> dict[str, str]:
    """The blueprint's aliases: a name -> the csdeploy command line it stands for."""
    return dict((await context(env, blueprint)).bp.aliases)


async def proxy_reboot(env: str, *, blueprint: str | None = None) -> list[str]:
    from .rollout import ops

    return await ops.proxy_reboot(_rollout(await context(env, blueprint), {}, None))


async def accessory_reboot(env: str, name: str, *, blueprint: str | None = None,
                           progress: Progress | None = None) -> RolloutResult:
    from .rollout import ops

    ctx = await context(env, blueprint)
    async with _cloud_lock(env, False, progress, take_over=False) as gate:  # awaited before its lock
        await gate
        return await ops.accessory_reboot(_rollout(ctx, load_secrets_for(ctx.bp), progress), name)


# ---- nightly ------------------------------------------------------------------------------------

async def nightly(blueprint: str, prefix: str, *, version: str, overrides: tuple[str, ...] = (),
                  ttl: timedelta = timedelta(hours=20), checks: Sequence[str] = (), check_cmds: Sequence[str] = (),
                  keep: bool = False, keep_on_failure: bool = False, junit: str | None = None,
                  progress: Progress | None = None, max_api: int = 10, ssh_timeout: float = 300.0,
                  now: datetime | None = None) -> NightlyResult:
    """Reap ``prefix``'s expired environments, create ``<prefix>-MMDD-<id>``, deploy, check,
    report (JUnit, JSON), tear down. Every input is checked first: bad input (exit 2) leaves
    nothing behind. A failed phase or check is in the result, not an exception."""
    from .blueprint import load_blueprint
    from .provision.run import CreateOptions
    from .store import check_reachable, store_url

    plan = _nightly_plan(blueprint, prefix, version, overrides, ttl, checks, check_cmds, keep, keep_on_failure, junit)
    bp = load_blueprint(blueprint, overrides=list(overrides))
    config = _config()
    load_secrets_for(bp, config)
    try:  # the run's record is part of its contract: a store that does not answer is bad input
        await asyncio.to_thread(check_reachable, store_url())
    except OperationFailed as exc:
        raise InvalidInput(str(exc), hint=exc.hint) from None
    prog = _silent(progress)
    from .nightly.run import Nightly, Steps

    steps = Steps(
        reap=lambda: _nightly_reap(prefix, steps, prog, max_api),
        create=lambda env: create_env(bp, env, ttl=ttl, skip_rollout=True, progress=prog, blueprint_path=blueprint,
                                      overrides=overrides, options=CreateOptions(max_api=max_api,
                                                                                 ssh_timeout=ssh_timeout)),
        deploy=lambda env: deploy(env, version, blueprint=blueprint, overrides=overrides, progress=prog),
        teardown=lambda env: teardown(env, progress=prog, max_api=max_api, how="nightly"),
        exec_=lambda env, role, argv, emit: exec_(env, role, argv, emit=emit),
        logs=lambda env, role, lines, emit: logs(env, role, lines=lines, emit=emit),
    )
    journal = _journal(progress)
    run = Nightly(plan, steps, prog, now)
    try:
        run_id = await journal.run_started(kind="nightly", cloud=config.endpoint, prefix=prefix)
        try:
            return await run.run()
        finally:  # an interrupted run is recorded as failed, with what it did
            await journal.run_finished(run_id, passed=run.result.passed, summary=run.result.to_dict(),
                                       env=run.result.env or None)
    finally:
        journal.close()


async def _nightly_reap(prefix: str, steps: Steps, progress: Progress, max_api: int) -> ReapResult:
    result = await reap(prefix=prefix, progress=progress, max_api=max_api)
    steps.taken.update(result.names)
    return result


def _nightly_plan(blueprint: str, prefix: str, version: str, overrides: tuple[str, ...], ttl: timedelta,
                        checks: Sequence[str], check_cmds: Sequence[str], keep: bool, keep_on_failure: bool,
                        junit: str | None) -> NightlyPlan:
    """Every input of a nightly, checked (InvalidInput, nothing created): the prefix, the
    blueprint, the checks and the JUnit path."""
    from .blueprint import load_blueprint
    from .nightly import checks as nightly_checks
    from .nightly.run import NightlyPlan, validate_prefix

    validate_prefix(prefix)
    bp = load_blueprint(blueprint, overrides=list(overrides))
    http = [nightly_checks.parse_check(c) for c in checks]
    cmds = [nightly_checks.parse_check_cmd(c, bp) for c in check_cmds]
    if not http and not cmds:
        http = nightly_checks.default_checks(bp)
    junit_path = Path(junit).absolute() if junit else None
    if junit_path is not None and (junit_path.is_dir() or not os.access(_existing_parent(junit_path), os.W_OK)):
        raise InvalidInput(f"--junit {junit}: cannot write a file there", hint="give a writable file path")
    proxy = next((r.name for r in bp.roles.values() if r.proxy is not None), None)
    return NightlyPlan(blueprint=blueprint, prefix=prefix, version=version, ttl=ttl, checks=http, cmd_checks=cmds,
                       host_header=nightly_checks.host_header(bp), log_role=proxy, keep=keep,
                       keep_on_failure=keep_on_failure, junit=junit_path)


def _existing_parent(path: Path) -> Path:
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return parent


__all__ = [
    "CreateEnvOutcome", "CreateOptions", "accessory_reboot", "build",
    "build_and_deploy", "create_env", "default_version", "deploy", "environments", "exec_", "export_kamal_config",
    "finish_canary",
    "history", "init_blueprint", "load_secrets_for", "logs", "nightly", "plan", "preview_down", "preview_up",
    "proxy_reboot", "reap", "recorded", "recover", "rollback", "secret_sources", "snapshot", "snapshots", "status",
    "teardown", "template_fields",
    "backup_accessory", "backups", "restore", "scheduled_backups",
]
