"""One whole run of the rollout, in order: deploy, rollback, canary, promotion, abort.

1. Input, checked before anything (exit 2, nothing changed): the version, the env files, the
   certificates against their keys, the selection, a canary against its pool.
2. The `pre_deploy` hook (a failure stops the run here).
3. The deploy lock and every host's facts at once. The lock refuses while a canary is paused
   (promote and abort require one). The cloud lock, taken meanwhile, is awaited before
   anything changes.
4. The plan (`plan.build`, a `RolloutPlan`) from the facts: what each host's preparation
   takes, who switches in which batches, what each host goes back to, the watch; then prepare
   and apps (`apps.converge`), or, for an abort, every canary host back. A dry run stops
   here: the plan is its result.
5. Unlock with the record (and the paused canary written, or removed), the history store's
   row finished, then the `post_deploy` hook.
"""

from __future__ import annotations

import asyncio
import secrets as _secrets
import time
from collections.abc import Awaitable
from typing import Any

from ..errors import InvalidInput, OperationFailed
from ..inventory import Host
from . import canary, history, hooks, strategy, tls
from . import plan as planning
from .apps import Apps, converge
from .commands import host as host_cmds
from .commands.facts import HostFacts
from .contract import check_version
from .deploy import Rollout
from .hosts import DryRun, Hosts, PlannedScript
from .plan import AppPlan, RolloutPlan
from .records import ABORT, PROMOTE, AppOutcome, RolloutOptions, RolloutResult


def hook_facts(r: Rollout, opts: RolloutOptions, version: str, targets: list[Host]) -> dict[str, str]:
    facts = {"service": r.bp.service, "env": r.env, "version": version, "command": opts.kind,
             "hosts": ",".join(h.name for h in targets),
             "roles": ",".join(dict.fromkeys(role for h in targets for role in r.host_roles(h))),
             "performer": history.start(version, opts.kind).by,
             "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if opts.canary is not None:
        facts["canary"] = str(opts.canary)
    return facts


def _proxy_roles(r: Rollout) -> list[str]:
    return [role.name for role in r.bp.roles.values() if role.proxy is not None and r.role_hosts(role.name)]


def choose_canary(r: Rollout, spec: strategy.CanarySpec) -> list[Host]:
    """The hosts a host canary switches (every proxy role's first N); the run is narrowed to them."""
    roles = _proxy_roles(r)
    if not roles:
        raise InvalidInput("--canary needs a proxy role among the selected hosts",
                           hint="a canary splits web traffic: select a role with a proxy (e.g. --roles web)")
    if spec.hosts is None:
        chosen = [h for name in roles for h in r.role_hosts(name)]
    else:
        chosen = [h for name in roles for h in strategy.canary_hosts(name, r.role_hosts(name), spec)]
    r.narrow(chosen)
    return chosen


def plan(r: Rollout, opts: RolloutOptions, version: str, facts: dict[str, HostFacts],
         cookie: str | None = None) -> AppPlan:
    """What the apps step does, from the facts (`plan.app_plan`); a percentage canary gets a
    fresh cookie unless one is given."""
    return planning.app_plan(r.context(), opts, version, facts, cookie or "csdeploy-" + _secrets.token_hex(6))


def rollout_plan(r: Rollout, opts: RolloutOptions, version: str, facts: dict[str, HostFacts], targets: list[Host],
                 cookie: str | None = None) -> RolloutPlan:
    """The whole run's plan (`plan.build`): a deploy's, rollback's or promotion's, or an abort's."""
    ctx = r.context()
    if opts.kind == ABORT:
        assert opts.paused is not None
        return planning.build(ctx, facts, targets, kind=ABORT, apps=planning.abort_plan(ctx, opts.paused, facts),
                              user=r.inv.ssh.user, prepare=False)
    return planning.build(ctx, facts, targets, kind=opts.kind, apps=plan(r, opts, version, facts, cookie),
                          reboot=opts.reboot_accessories, user=r.inv.ssh.user)


async def _abort(r: Rollout, pool: Hosts, rp: RolloutPlan) -> None:
    """Every canary host back to what it served before (a split: the split ended)."""
    apps = Apps(r, pool, rp, {}, asyncio.get_running_loop().create_future(), r.outcome)
    problems = await apps.switch_back()
    if problems:
        raise OperationFailed("\n".join(map(str, problems)), hint="the canary stays paused; run --abort again")


async def run(r: Rollout, opts: RolloutOptions, *, gate: Awaitable[None] | None = None) -> RolloutResult:
    paused = opts.paused
    version = check_version(paused.version if paused is not None else opts.version)
    r.check_envs(version)
    warnings: list[str] = []
    for cert in tls.check(r.bp, r.secrets):
        r.certificates[cert.role] = (cert.certificate_pem, cert.private_key_pem)
        warnings += cert.warnings
    targets = r.select(tuple(paused.roles) if paused else opts.roles, tuple(paused.only) if paused else opts.hosts)
    chosen = choose_canary(r, opts.canary) if opts.canary is not None else []
    if opts.canary is not None:
        targets = chosen
    for text in warnings:
        r.progress.note(text, level="warning")
    started = time.monotonic()
    planned: list[PlannedScript] | None = [] if r.dry_run else None
    facts_for_hooks = hook_facts(r, opts, version, targets)
    await hooks.run(r.bp, hooks.PRE, facts_for_hooks, r.progress, planned=planned)

    record = history.start(version, opts.kind)
    record.images = {role: r.role_image(role, version)
                     for role in dict.fromkeys(role for h in targets for role in r.host_roles(h))} or None
    if len(targets) < len(r.hosts) and opts.canary is None and paused is None:
        record.hosts = [h.name for h in targets]
    if opts.canary is not None:
        record.canary = str(opts.canary) + (": " + ", ".join(h.name for h in chosen) if opts.canary.hosts else "")
    elif paused is not None:
        record.canary = paused.describe()
    tracker = history.Tracker(r.journal, r.inv, r.bp.service, record)
    if paused is None:
        await tracker.pending()
    r.deployment_id = tracker.id  # in the lock's owner: a run that takes over marks it interrupted
    canary_mode = host_cmds.CANARY_REQUIRE if paused is not None else host_cmds.CANARY_REFUSE
    state: canary.CanaryState | None = None
    async with r.pool(opts.concurrency) as pool:
        try:
            facts = await r.read_facts(pool, targets, version, lock=r.lock_script(version, opts.break_lock,
                                                                                    canary=canary_mode))
        except BaseException as exc:
            history.finish(record, time.monotonic() - started, exc)
            await tracker.finished(exc)
            raise
        try:  # the cloud lock, taken while the hosts were read
            if gate is not None:
                await gate
        except BaseException as exc:
            await r.unlock_quietly(pool, None)
            history.finish(record, time.monotonic() - started, exc)
            await tracker.finished(exc)
            raise
        if paused is not None:
            await tracker.adopt(paused.deployment)
        else:
            await tracker.deploying()
        rp: RolloutPlan | None = None
        try:
            rp = rollout_plan(r, opts, version, facts, targets)
            outcome: dict[str, str] = {}
            if r.dry_run:  # the plan is the result: shown, not carried out
                assert isinstance(pool, DryRun)
                for text in rp.notes:
                    r.note(text)
                pool.planned.extend(PlannedScript(s.host, s.what + (" (if the rollout fails)" if s.on_failure else ""),
                                                  s.script.text()) for s in rp.steps())
            elif opts.kind == ABORT:
                await _abort(r, pool, rp)
            else:
                outcome = await converge(r, pool, rp)
        except BaseException as exc:
            _record_outcome(record, r.outcome)
            rolled = r.outcome.rolled_back
            history.finish(record, time.monotonic() - started, exc,
                           status=history.ROLLED_BACK if rolled else None, reason=rolled)
            # a promotion that changed hosts ends the canary either way (switched back, or kept)
            done = paused is not None and opts.kind == PROMOTE and bool(r.outcome.switches)
            await r.unlock_quietly(pool, record, canary_done=done)
            await tracker.finished(exc)
            raise
        _record_outcome(record, r.outcome)
        status = history.OK
        canary_json = None
        if opts.canary is not None:
            status = history.PAUSED
            state = canary.new_state(version, opts.canary, [h.name for h in chosen if opts.canary.hosts],
                                     opts.roles, opts.hosts, record.by, record.at,
                                     rp.apps.cookie if rp.apps else None)
            state.deployment, state.watch = tracker.id, record.watch
            canary_json = state.to_json()
        elif opts.kind == ABORT:
            status = history.ROLLED_BACK
        history.finish(record, time.monotonic() - started, status=status,
                       reason=f"canary aborted by {record.by}" if opts.kind == ABORT else None)
        await r.unlock(pool, record, canary_json=canary_json, canary_done=paused is not None)
        await tracker.finished()
        calls = dict(pool.exec_calls)
        if isinstance(pool, DryRun):
            planned = [*(planned or []), *pool.planned]
    facts_for_hooks["runtime"] = f"{time.monotonic() - started:.1f}"
    result = RolloutResult(version=version, seconds=time.monotonic() - started, exec_calls=calls,
                           accessories=outcome, planned=planned or [], switches=list(r.outcome.switches),
                           reverted=list(r.outcome.reverted), watch=r.outcome.watch, status=status,
                           canary=state.describe() if state else (paused.describe() if paused else None),
                           warnings=[*warnings, *r.outcome.warnings], plan=rp if r.dry_run else None)
    await hooks.run(r.bp, hooks.POST, facts_for_hooks, r.progress, planned=result.planned if r.dry_run else None)
    return result


def _record_outcome(record: history.DeployRecord, outcome: AppOutcome) -> None:
    record.switched = outcome.switched or None
    record.reverted = outcome.reverted or None
    if outcome.watch is not None:
        w = outcome.watch
        record.watch = f"watched {w.seconds:.0f}s: {w.probes} probes, {len(w.failed)} failed"


def describe(result: RolloutResult) -> dict[str, Any]:
    return {"switches": [s.to_dict() for s in result.switches], "reverted": result.reverted,
            "watch": result.watch.to_dict() if result.watch else None, "status": result.status,
            "canary": result.canary}
