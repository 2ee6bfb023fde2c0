"""Text views of `snapshot`, `snapshots` and `recover` (kept apart from render.py's others)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .backup import SnapshotResult
    from .provision.snapshots import SnapshotInfo
    from .service import RecoverOutcome

GB = 1024**3


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def _size(size: int) -> str:
    return f"{size / GB:.0f} GB" if size >= GB else f"{size / 1024**2:.0f} MB"


def snapshot_text(result: SnapshotResult) -> str:
    lines = [f"environment {result.env}: {len(result.items)} snapshot(s)"]
    for item in result.items:
        lines.append(f"  {item.disk.role}/{item.disk.label} ({item.disk.volume}): {item.name} {item.state}, "
                     f"{item.consistency}")
        lines += [f"    note: {n}" for n in item.notes]
    return "\n".join(lines)


def snapshots_text(env: str, found: list[SnapshotInfo]) -> str:
    if not found:
        return f"environment {env}: no snapshots"
    rows = [("CREATED", "ROLE", "DISK", "KIND", "STATE", "SIZE", "NAME", "BY")]
    for s in found:
        rows.append((s.created, s.role, s.disk, "policy " + s.kind if s.kind != "manual" else "manual", s.state,
                     _size(s.size), s.name, s.by or "-"))
    return "\n".join(_table(rows))


def recover_dict(outcome: RecoverOutcome) -> dict[str, Any]:
    from .render import rollout_dict
    from .state import inventory_to_dict

    created = outcome.created
    doc: dict[str, Any] = {"inventory": inventory_to_dict(created.inventory), "plan": created.provision.plan.to_dict(),
                           "from": outcome.source, "restored": [r.to_dict() for r in outcome.restores],
                           "kept": outcome.kept}
    if created.rollout:
        doc["rollout"] = rollout_dict(created.rollout)
    return doc


def recover_text(outcome: RecoverOutcome) -> str:
    from .render import create_text, rollout_text

    created = outcome.created
    result = created.provision
    lines = [create_text(result.inventory, result.seconds, result.api_calls, result.plan.count("create", "replace"))]
    for r in outcome.restores:
        if r.disk in outcome.kept:
            lines.append(f"disk {r.disk}: the volume already existed: kept as it is, not restored")
        elif r.snapshot is None:
            lines.append(f"disk {r.disk}: made blank ({outcome.source} has no snapshot of {r.role}/{r.label})")
        else:
            lines.append(f"disk {r.disk}: from {outcome.source}'s snapshot {r.snapshot.name} ({r.snapshot.created})")
    if created.rollout:
        lines.append(rollout_text(created.rollout, "rollout"))
    return "\n".join(lines)


def _bytes(size: int) -> str:
    for unit, scale in (("GB", 1024**3), ("MB", 1024**2), ("kB", 1024)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def backup_text(result: Any) -> str:
    m = result.manifest
    lines = [f"backup {m.id}: {m.kind}, {_bytes(m.size)}, sha256 {m.sha256[:16]}..., in {m.destination}"]
    lines += [f"  pruned: {p}" for p in result.pruned]
    return "\n".join(lines)


def backups_text(env: str, found: list[Any], searched: list[str]) -> str:
    """The backups as a table; with more than one destination searched, where each one is."""
    if not found:
        return f"environment {env}: no backups in " + ", ".join(searched)
    many = len(searched) > 1
    rows = [("CREATED", "ACCESSORY", "KIND", "SIZE", "ID", "BY", *(["WHERE"] if many else []))]
    rows += [(m.created_at, m.accessory, m.kind, _bytes(m.size), m.id, m.by or "-",
              *([m.destination or "-"] if many else [])) for m in found]
    return "\n".join(_table(rows))


def fetched_text(env: str, accessory: str, copied: list[Any]) -> str:
    if not copied:
        return f"{env}'s {accessory}: nothing to copy (every dump kept on its host is already there)"
    return "\n".join(f"copied {m.id}: {m.kind}, {_bytes(m.size)}, sha256 {m.sha256[:16]}... (as its manifest "
                     f"says), to {m.destination}" for m in copied)


def restore_plan_text(env: str, accessory: str, steps: list[str]) -> str:
    lines = [f"restore into {env}'s {accessory} (dry run: nothing changed) would:"]
    return "\n".join([*lines, *(f"  {i}. {step}" for i, step in enumerate(steps, start=1))])


def restore_text(result: Any) -> str:
    lines = [f"restored {result.backup} into {result.env}'s {result.accessory} ({result.kind}); "
             f"maintenance: {result.maintenance}"]
    lines += [f"  note: {n}" for n in result.notes]
    return "\n".join(lines)


def scheduled_backups_text(states: list[Any]) -> str:
    """`status`'s lines for the blueprint's scheduled backups (run by `csdeploy serve`)."""
    lines = []
    for s in states:
        if s.last_status is None:
            last = "not run yet"
        else:
            last = f"{s.last_status} (due {s.last_due}" + (f", ended {s.last_finished[:19]}Z" if s.last_finished
                                                          else "") + ")"
            if s.last_error:
                last += f": {s.last_error.splitlines()[0]}"
        lines.append(f"scheduled backup of {s.accessory} ({s.schedule} UTC, by csdeploy serve): last run {last}; "
                     f"next due {s.next_due or 'never'}")
    return "\n".join(lines)
