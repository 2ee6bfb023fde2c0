"""Text the CLI prints for results: plans, create-env summaries, environment lists."""

from __future__ import annotations

from typing import Any

from .provision.envs import EnvSummary
from .provision.plan import Plan

SYMBOL = {"create": "+", "replace": "±", "delete": "-", "adopt": "~", "update": "~", "scale": "~", "start": "~"}


def plan_text(plan: Plan) -> str:
    if plan.empty:
        return f"environment {plan.env}: up to date, nothing to do"
    lines = [f"environment {plan.env}: {plan.count('create', 'replace')} to create, "
             f"{plan.count('adopt', 'update', 'scale', 'start')} to change, {plan.count('delete')} to delete"]
    for a in plan.actions:
        lines.append(f"  {SYMBOL.get(a.op, '?')} {a.op:<7} {a.kind:<12} {a.name}" + (f"  ({a.detail})" if a.detail else ""))
    lines += [f"  ! {w}" for w in plan.warnings]
    return "\n".join(lines)


def create_text(inventory: dict[str, Any], seconds: float, api_calls: int, created: int) -> str:
    ssh = inventory["ssh"]
    rows = [("HOST", "ROLE", "PUBLIC", "PRIVATE")]
    for h in inventory["hosts"]:
        rows.append((h["name"], h["role"], f"{h['public_ip']}:{h['ssh_port']}", h["private_ip"]))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [f"environment {inventory['env']} is ready ({len(inventory['hosts'])} VMs, {created} resources "
             f"created, {api_calls} API calls, {seconds:.1f}s)"]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    if inventory["hosts"]:
        h = inventory["hosts"][0]
        port = "" if h["ssh_port"] == 22 else f" -p {h['ssh_port']}"
        lines.append(f"ssh: ssh -i {ssh['key']} -o UserKnownHostsFile={ssh['known_hosts']}{port} "
                     f"{ssh['user']}@{h['public_ip']}")
    if inventory.get("expires"):
        lines.append(f"expires: {inventory['expires']}")
    return "\n".join(lines)


def envs_text(envs: list[EnvSummary]) -> str:
    if not envs:
        return "no environments"
    rows = [("ENV", "SERVICE", "VMS", "ROLES", "CREATED", "EXPIRES")]
    for e in envs:
        roles = ", ".join(f"{r}×{n}" for r, n in sorted(e.roles.items())) or "-"
        rows.append((e.env, e.service or "-", str(e.vms), roles, e.created or "-", e.expires or "never"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)
