"""Deploy records: every read and write of the deploy history goes through this module.

The primary host of an environment keeps one JSON line per deploy, rollback and failed
attempt (``~/.csdeploy/<service>/history.jsonl``, appended when the deploy lock is
released). It is the truth for what runs there: `rollback` reads it to find the previous
good version, and `csdeploy history --source host` shows it.

`Tracker` mirrors the same record into the shared history store (`store.Journal`: pending
when the rollout starts, deploying once it holds the lock, then deployed or failed), best
effort: a store that cannot be reached is a warning and the host's record is written anyway.
"""

from __future__ import annotations

import getpass
import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from ..inventory import Inventory
from ..log import redact
from ..store import Journal
from .commands import host as h
from .commands.script import Script

OK = "ok"
FAILED = "failed"
ROLLED_BACK = "rolled_back"     # the deploy undid itself: a failed watch, an aborted canary
PAUSED = "paused"               # a canary waits for --promote or --abort
ERROR_MAX = 4000


def _names(value: Any) -> list[str] | None:
    return [str(h) for h in value] if isinstance(value, list) else None


@dataclass
class DeployRecord:
    version: str
    kind: str = "deploy"          # deploy | rollback | promote | abort
    by: str = ""
    at: str = ""                  # UTC, ISO 8601 (seconds)
    status: str = "running"       # running | ok | failed | rolled_back | paused
    error: str | None = None      # why it failed or rolled back
    seconds: float | None = None
    hosts: list[str] | None = None      # a deploy limited to some hosts (--roles/--hosts); None = all
    switched: list[str] | None = None   # proxy hosts in the order they switched to `version`
    reverted: list[str] | None = None   # hosts switched back to what they served before
    canary: str | None = None           # "1 host: demo-web-1", "10%"
    watch: str | None = None            # "watched 30s: 45 probes, 0 failed"
    images: dict[str, str] | None = None  # role -> the image it ran (a rollback runs these again)

    def to_json(self) -> str:
        data = {k: v for k, v in asdict(self).items() if v is not None}
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeployRecord:
        seconds = data.get("seconds")
        text = {k: str(data[k]) if data.get(k) is not None else None for k in ("canary", "watch")}
        raw_images = data.get("images")
        images = {str(k): str(v) for k, v in raw_images.items()} if isinstance(raw_images, dict) else None
        return cls(version=str(data.get("version", "?")), kind=str(data.get("kind", "deploy")),
                   by=str(data.get("by", "?")), at=str(data.get("at", "?")), status=str(data.get("status", "?")),
                   error=data.get("error"), seconds=float(seconds) if isinstance(seconds, int | float) else None,
                   hosts=_names(data.get("hosts")), switched=_names(data.get("switched")),
                   reverted=_names(data.get("reverted")), images=images, **text)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "?"


def start(version: str, kind: str) -> DeployRecord:
    return DeployRecord(version=version, kind=kind, by=_user(),
                        at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))


def finish(record: DeployRecord, seconds: float, error: BaseException | None = None, *,
           status: str | None = None, reason: str | None = None) -> DeployRecord:
    """The outcome: ``status`` (rolled_back, paused) wins over ok/failed; ``reason`` over the
    error's first line."""
    record.seconds = round(seconds, 1)
    record.status = status or (OK if error is None else FAILED)
    if reason is not None:
        record.error = reason[:300]
    elif error is not None:
        record.error = (str(error).splitlines() or [type(error).__name__])[0][:200]
    return record


def read_script(service: str) -> Script:
    return h.read_history(service)


def parse(stdout: str) -> list[DeployRecord]:
    """Records from the history file's lines, oldest first; damaged lines are skipped."""
    out = []
    for line in stdout.splitlines():
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict):
            out.append(DeployRecord.from_dict(data))
    return out


def images_at(records: list[DeployRecord], version: str) -> dict[str, str]:
    """What each role ran the last time ``version`` was deployed successfully (records written
    before csdeploy kept images have none: each role then runs the blueprint's image)."""
    for rec in reversed(records):
        if rec.version == version and rec.status == OK and rec.images:
            return dict(rec.images)
    return {}


def previous_version(records: list[DeployRecord]) -> str | None:
    """The last successful version before the current one (the newest successful record);
    deploys limited to some hosts do not count: they did not set the whole environment's version."""
    ok = [r for r in records if r.status == OK and not r.hosts]
    if len(ok) < 2:
        return None
    current = ok[-1].version
    return next((r.version for r in reversed(ok[:-1]) if r.version != current), None)


class Tracker:
    """One rollout's record in the shared history store (a no-op without a journal)."""

    def __init__(self, journal: Journal | None, inventory: Inventory, service: str, record: DeployRecord) -> None:
        self.journal = journal
        self.inv = inventory
        self.service = service
        self.record = record
        self.id: str | None = None

    def _meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"kind": self.record.kind, "hosts": len(self.inv.hosts),
                                "primary": self.inv.primary.name if self.inv.hosts else None}
        for key in ("switched", "reverted", "canary", "watch"):
            if getattr(self.record, key) is not None:
                meta[key] = getattr(self.record, key)
        return meta

    async def pending(self) -> None:
        if self.journal is not None:
            self.id = await self.journal.deployment_pending(env=self.inv.env, cloud=self.inv.endpoint,
                                                            service=self.service, version=self.record.version,
                                                            kind=store_kind(self.record.kind))

    async def adopt(self, dep_id: str | None) -> None:
        """Finish the store's row of a paused canary (``dep_id``, from the primary host), or,
        when this store does not have it (another machine paused it), a row of its own."""
        if self.journal is None:
            return
        if dep_id and await self.journal.deployment_exists(dep_id):
            self.id = dep_id
        else:
            await self.pending()
            await self.deploying()

    async def deploying(self) -> None:
        if self.journal is not None:
            await self.journal.deployment_started(self.id, self._meta())

    async def finished(self, error: BaseException | None = None) -> None:
        """The outcome; the store keeps the whole error text (the host record its first line).
        A paused canary stays ``deploying`` in the store until it is promoted or aborted."""
        if self.journal is None or self.record.status == PAUSED:
            return
        rec = self.record
        text = redact(str(error)).strip()[:ERROR_MAX] or rec.error if error is not None else rec.error
        await self.journal.deployment_finished(self.id, ok=rec.status == OK, seconds=rec.seconds,
                                               error=text, metadata=self._meta(),
                                               rolled_back=rec.status == ROLLED_BACK)


def store_kind(kind: str) -> str:
    """The store knows deploys and rollbacks: a promotion finishes a deploy, an abort undoes one."""
    return "rollback" if kind == "rollback" else "deploy"
