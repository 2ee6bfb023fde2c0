"""Text the CLI prints for results: plans, create-env summaries, environment lists."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the results' types only: rendering `envs` must not load the rollout and SSH
    from .image_build import BuildResult
    from .inventory import Inventory
    from .nightly.report import NightlyResult
    from .provision.envs import EnvSummary
    from .provision.plan import Plan
    from .provision.reap import ReapResult
    from .rollout.deploy import RolloutResult
    from .rollout.history import DeployRecord
    from .rollout.lifecycle import LifecycleResult
    from .rollout.ops import HostStatus

SYMBOL = {"create": "+", "replace": "±", "delete": "-", "adopt": "~", "update": "~", "scale": "~", "start": "~",
          "assign": "+", "remove": "-"}  # assign/remove: a VM joins or leaves a load balancer (a change)
CHANGES = ("adopt", "update", "scale", "start", "assign", "remove")


def plan_text(plan: Plan) -> str:
    if plan.empty:
        return f"environment {plan.env}: up to date, nothing to do"
    lines = [f"environment {plan.env}: {plan.count('create', 'replace')} to create, "
             f"{plan.count(*CHANGES)} to change, {plan.count('delete')} to delete"]
    for a in plan.actions:
        lines.append(f"  {SYMBOL.get(a.op, '?')} {a.op:<7} {a.kind:<12} {a.name}" + (f"  ({a.detail})" if a.detail else ""))
    lines += [f"  ! {w}" for w in plan.warnings]
    return "\n".join(lines)


def create_text(inventory: Inventory, seconds: float, api_calls: int, created: int) -> str:
    ssh = inventory.ssh
    rows = [("HOST", "ROLE", "PUBLIC", "PRIVATE")]
    for h in inventory.hosts:
        rows.append((h.name, h.role, h.ssh_address, h.private_ip))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [f"environment {inventory.env} is ready ({len(inventory.hosts)} VMs, {created} resources "
             f"created, {api_calls} API calls, {seconds:.1f}s)"]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    for lb in inventory.load_balancers:
        ports = "/".join(str(p) for p in lb.ports)
        lines.append(f"load balancer {lb.role}: {lb.public_ip} ({ports}) -> {', '.join(lb.members) or 'no members yet'}")
    if inventory.hosts:
        h = inventory.hosts[0]
        port = "" if h.ssh_port == 22 else f" -p {h.ssh_port}"
        lines.append(f"ssh: ssh -i {ssh.key} -o UserKnownHostsFile={ssh.known_hosts}{port} {ssh.user}@{h.public_ip}")
    if inventory.expires:
        lines.append(f"expires: {inventory.expires}")
    return "\n".join(lines)


def rollout_text(result: RolloutResult, what: str) -> str:
    per_host = ", ".join(f"{h} {n}" for h, n in sorted(result.exec_calls.items()))
    done = {"paused": "paused", "rolled_back": "rolled back"}.get(result.status, "done")
    lines = [f"{what} {result.version}: {done} in {result.seconds:.1f}s (SSH exec calls: {per_host})"]
    if result.switches:
        order = ", ".join(f"{s.host} ({s.status}, batch {s.batch}/{s.batches})" for s in result.switches)
        lines.append(f"  switches, in order: {order}")
    if result.reverted:
        lines.append(f"  switched back: {', '.join(result.reverted)}")
    if result.watch is not None and result.watch.rounds:
        w = result.watch
        lines.append(f"  watch: {w.seconds:.0f}s, {w.probes} probes, {len(w.failed)} failed")
    if result.status == "paused":
        lines.append(f"  {result.canary} is paused: `csdeploy deploy BLUEPRINT --env ENV --promote` takes it to "
                     "every host, `--abort` takes it back")
    return "\n".join(lines)


def rollout_dict(result: RolloutResult) -> dict[str, Any]:
    from .rollout.runs import describe as describe_run

    return {"version": result.version, "seconds": round(result.seconds, 2),
            "ssh_exec_calls": result.exec_calls, "accessories": result.accessories,
            **describe_run(result), "warnings": result.warnings}


def _prepare_items(work: Any) -> list[str]:
    items = ["set up the OS (hosts: section)"] if work.harden else []
    if work.install:
        items.append(f"install docker ({work.install})")
    if work.network:
        items.append("create the network")
    if work.pulls:
        items.append("pull " + ", ".join(work.pulls))
    for image in work.check_images:
        items.append(f"check {image}'s service label")
    items += [f"(re)start accessory {name}" for name in work.accessories]
    if work.proxy:
        items.append("boot kamal-proxy")
    return items


def rollout_plan_text(result: RolloutResult, what: str, scripts: bool = False) -> str:
    """`deploy --dry-run`: the plan per host and stage, then what runs here; ``scripts``: and
    every script (secrets redacted by the caller)."""
    rp = result.plan
    lines = [f"{what} {result.version} --dry-run: nothing was changed; the plan from the hosts' facts"
             + ("" if scripts else " (--scripts, or -v, shows each script)") + ":"]
    if rp is not None:
        apps = rp.apps
        for hp in rp.hosts:
            host = hp.work.host
            lines.append(f"{hp.name} ({', '.join(host.app_roles) or host.role})")
            if hp.work.needed:
                lines.append("  prepare:  " + "; ".join(_prepare_items(hp.work)))
            for step in hp.steps:
                if step.stage == "prepare":  # said above, item by item
                    continue
                before = apps.previous.get((step.role or "", hp.name)) if apps else None
                batch = f", batch {step.batch}/{step.batches}" if step.batch else ""
                if step.stage == "switch":
                    now = f"serves {before} now" if before else "serves nothing yet"
                    lines.append(f"  switch:   {step.role} to {rp.version}{batch} ({now})")
                elif step.stage == "split":
                    percent = apps.split[0] if apps and apps.split else 0
                    lines.append(f"  split:    {percent}% of {step.role}'s requests to {rp.version}{batch}")
                elif step.stage == "start":
                    lines.append(f"  start:    {step.role} {rp.version}{batch} (an old one keeps running until judged)")
                elif step.stage == "stop old":
                    lines.append(f"  stop old: {step.role}, once every role is judged good")
                elif step.on_failure:
                    lines.append(f"  if the rollout fails: {step.what}")
                else:
                    lines.append(f"  {step.what}")
            if not hp.steps:
                lines.append("  nothing to do")
        if apps is not None and apps.watch is not None and rp.kind != "abort":
            w = apps.watch
            probes = ", ".join("GET " + u for u in rp.probes) or "no HTTP probe"
            lines.append(f"watch: {w.duration:g}s every {w.interval:g}s: {probes}"
                         + ("; containers not restarting" if w.containers else ""))
        if apps is not None and apps.split is None and not apps.commit and rp.kind != "abort":
            lines.append("then paused: the old containers keep running until --promote or --abort")
        lines += [f"note: {text}" for text in rp.notes]
    local = [step.what for step in result.planned if step.host == "local"]
    if local:
        lines.append("here: " + "; ".join(local))
    if scripts:
        lines.append("\nthe scripts, in order (each sent on stdin to `sh -s`):")
        for step in result.planned:
            lines.append(f"\n### {step.host}: {step.what}")
            lines.append(step.text.rstrip("\n"))
    return "\n".join(lines)


def rollout_plan_dict(result: RolloutResult, scripts: bool = False) -> dict[str, Any]:
    """`deploy --dry-run --json` (keys in the README)."""
    out: dict[str, Any] = {"dry_run": True, "version": result.version}
    if result.plan is not None:
        out |= result.plan.to_dict()
    out["local"] = [step.what for step in result.planned if step.host == "local"]
    if scripts:
        out["scripts"] = [{"host": p.host, "what": p.what, "script": p.text} for p in result.planned]
    return out


LIFECYCLE_WORDS = {"none": "nothing there", "route removed": "route removed from kamal-proxy",
                   "routed": "routed through kamal-proxy again", "running": "was running already"}


def lifecycle_text(result: LifecycleResult, what: str) -> str:
    """What a life-cycle command did on each host (`details`: each host's containers)."""
    if result.planned:
        lines = [f"{what} --dry-run: nothing was run; these scripts would be sent (each on stdin to `sh -s`)"]
        for step in result.planned:
            lines += [f"\n### {step.host}: {step.what}", step.text.rstrip("\n")]
        return "\n".join(lines)
    lines = []
    for host, text in result.details.items():
        lines.append(f"{host}:")
        lines += [f"  {row}" for row in text.splitlines()] or ["  no container"]
    for host, done in result.hosts.items():
        if not done:
            lines.append(f"{host}: nothing to {result.action}")
        for name, outcome in done.items():
            lines.append(f"{host}: {name} {LIFECYCLE_WORDS.get(outcome, outcome)}")
    return "\n".join(lines)


def status_text(hosts: list[HostStatus]) -> str:
    lines = []
    for h in hosts:
        lines.append(f"{h.name} ({h.role}, {h.address})" + (f"  UNREACHABLE: {h.error}" if h.error else ""))
        for c in h.containers:
            lines.append(f"  {c['name']:<32} {c.get('version') or '-':<12} {c['state']:<10} {c['status']}")
        lines += [f"  proxy: {line}" for line in h.proxy_targets.splitlines()]
        if h.maintenance is not None:
            lines.append("  MAINTENANCE: kamal-proxy answers 503" + (f" ({h.maintenance})" if h.maintenance else "")
                         + "; `csdeploy maintenance off` ends it")
        lines += [f"  warning: {text}" for text in h.warnings]
        lines += [_host_backup_line(b) for b in getattr(h, "backups", []) if b.get("run_by") == "host"]
    return "\n".join(lines)


def _host_backup_line(b: dict[str, Any]) -> str:
    """A schedule run by the host's timer: its last run as the job wrote it."""
    last = b.get("last_run") or {}
    if not last:
        said = "not run yet"
    elif last.get("result") == "ok":
        said = f"ok at {last.get('at', '?')} ({last.get('detail', '')})"
    else:
        said = f"{last.get('result', '?')} at {last.get('at', '?')}: {last.get('detail', '')}"
    return (f"  scheduled backup of {b['accessory']} ({b['schedule']} UTC, by this host's timer, kept in "
            f"{b['to']}" + (f", newest {b['keep']}" if b.get("keep") else "") + f"): last run {said}")


def history_text(env: str, records: list[DeployRecord]) -> str:
    if not records:
        return f"no deploys recorded for environment {env}"
    lines = []
    for rec in records:
        line = f"{rec.at}  {rec.kind:<8} {rec.version:<16} {rec.status:<11} by {rec.by}"
        if rec.error:
            line += f"  ({rec.error})"
        lines.append(line)
        for label, value in (("canary", rec.canary), ("switched", ", ".join(rec.switched or [])),
                             ("switched back", ", ".join(rec.reverted or [])), ("watch", rec.watch)):
            if value:
                lines.append(f"    {label}: {value}")
    return "\n".join(lines)


def envs_text(envs: list[EnvSummary]) -> str:
    if not envs:
        return "no environments"
    rows = [("ENV", "SERVICE", "VMS", "ROLES", "CREATED", "EXPIRES")]
    for e in envs:
        roles = ", ".join(f"{r}×{n}" for r, n in sorted(e.roles.items())) or "-"
        if e.snapshots_only:
            roles = f"snapshots only ({e.snapshots}; `csdeploy recover` remakes it)"
        expires = e.expires or "never"
        if e.expired():
            expires += " EXPIRED (the next `csdeploy reap` deletes it)"
        if e.lock:
            expires += f" [locked by {e.lock}]"
        rows.append((e.env, e.service or "-", str(e.vms), roles, e.created or "-", expires))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86400 * 2:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def reap_text(result: ReapResult) -> str:
    verb = "would remove" if result.dry_run else "removed"
    head = (f"reap: {len(result.items)} expired of {result.environments} environments; "
            f"{verb} {len(result.of('would remove' if result.dry_run else 'removed'))}, "
            f"skipped {len(result.of('skipped'))}, failed {len(result.of('failed'))} ({result.seconds:.1f}s)")
    if not result.items:
        return head
    rows = [("ENV", "AGE", "EXPIRED AT", "RESULT", "REMOVED", "LEFT", "WHY")]
    for i in result.items:
        rows.append((i.env, _age(i.age_seconds), i.expires or "-", i.result, str(i.deleted) if i.deleted else "-",
                     str(len(i.leftovers)) if i.leftovers else "-", i.reason or ""))
    return "\n".join([head, *("  " + line for line in _table(rows))])


def reap_failures(result: ReapResult) -> str:
    lines = []
    for i in result.of("failed"):
        lines.append(f"{i.env}: {i.reason}")
        lines += [f"    {left}" for left in i.leftovers]
    return "reap left resources in the cloud:\n  " + "\n  ".join(lines)


def nightly_text(result: NightlyResult) -> str:
    from .nightly.report import FAILED, SKIPPED

    verdict = "PASSED" if result.passed else ("INTERRUPTED" if result.interrupted else "FAILED")
    lines = [f"nightly {result.env} ({result.version}): {verdict} in {result.seconds:.1f}s"]
    for c in result.cases:
        mark = {FAILED: "x", SKIPPED: "-"}.get(c.status, "+")
        lines.append(f"  {mark} {c.name:<28} {c.status:<8} {c.seconds:6.1f}s" + (f"  {c.message}" if c.message
                                                                                  and c.status != "passed" else ""))
    if result.kept:
        lines.append(f"kept: {result.env} until {result.expires or 'its TTL'} ({result.app_url or 'no URL'}); "
                     f"`csdeploy teardown --env {result.env} --yes` removes it now")
    if result.junit:
        lines.append(f"junit: {result.junit}")
    return "\n".join(lines)


def recorded_text(what: str, found: list[Any]) -> str:
    if not found:
        return f"no {what} recorded"
    if what == "environments":
        rows = [("ENV", "SERVICE", "CREATED", "BY", "EXPIRES", "TORN DOWN", "HOW", "BY")]
        rows += [(e.name, e.service or "-", _t(e.created_at), e.created_by or "-", _t(e.expires_at),
                  _t(e.torn_down_at), e.torn_down_how or "-", e.torn_down_by or "-") for e in found]
    elif what == "runs":
        rows = [("STARTED", "KIND", "PREFIX", "ENV", "STATUS", "BY", "FINISHED")]
        rows += [(_t(r.started_at), r.kind, r.prefix or "-", r.env or "-", r.status, r.started_by, _t(r.finished_at))
                 for r in found]
    else:
        rows = [("STARTED", "ENV", "SERVICE", "KIND", "VERSION", "STATUS", "BY", "TOOK", "ERROR")]
        rows += [(_t(d.started_at), d.env, d.service, d.kind, d.version, d.status, d.deployed_by,
                  f"{d.duration_seconds:.1f}s" if d.duration_seconds is not None else "-",
                  (d.error or "").splitlines()[0][:100] if d.error else "") for d in found]
    return "\n".join(_table(rows))


def _t(text: str | None) -> str:
    """Stored times to the second, for reading."""
    return text[:19].replace("T", " ") if text else "-"
def build_text(result: BuildResult) -> str:
    lines = []
    for one in [result, *result.also]:
        text = f"built {one.image} in {one.build_seconds:.1f}s ({one.client})"
        if one.pushed_to:
            text += f"; pushed as {one.pushed_to} in {one.push_seconds:.1f}s"
        lines.append(text + (" [uncommitted changes]" if one.dirty else ""))
    return "\n".join(lines)


def build_dict(result: BuildResult) -> dict[str, Any]:
    out = {"image": result.image, "version": result.version, "dirty": result.dirty, "client": result.client,
           "build_seconds": round(result.build_seconds, 2), "pushed_to": result.pushed_to,
           "push_seconds": round(result.push_seconds, 2)}
    if result.also:
        out["also"] = [build_dict(one) for one in result.also]
    return out
