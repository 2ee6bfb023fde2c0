"""Deploy records: every read and write of the deploy history goes through this module.

The primary host of an environment keeps one JSON line per deploy, rollback and failed
attempt (``~/.csdeploy/<service>/history.jsonl``, appended when the deploy lock is
released). It is the truth for what runs there: `rollback` reads it to find the previous
good version, and `csdeploy history` shows it.
"""

from __future__ import annotations

import getpass
import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from .commands import host as h
from .commands.script import Script

OK = "ok"
FAILED = "failed"


@dataclass
class DeployRecord:
    version: str
    kind: str = "deploy"          # deploy | rollback
    by: str = ""
    at: str = ""                  # UTC, ISO 8601 (seconds)
    status: str = "running"       # running | ok | failed
    error: str | None = None
    seconds: float | None = None
    hosts: list[str] | None = None   # a deploy limited to some hosts (--roles/--hosts); None = all

    def to_json(self) -> str:
        data = {k: v for k, v in asdict(self).items() if v is not None}
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeployRecord:
        seconds = data.get("seconds")
        return cls(version=str(data.get("version", "?")), kind=str(data.get("kind", "deploy")),
                   by=str(data.get("by", "?")), at=str(data.get("at", "?")), status=str(data.get("status", "?")),
                   error=data.get("error"), seconds=float(seconds) if isinstance(seconds, int | float) else None,
                   hosts=[str(h) for h in data["hosts"]] if isinstance(data.get("hosts"), list) else None)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "?"


def start(version: str, kind: str) -> DeployRecord:
    return DeployRecord(version=version, kind=kind, by=_user(),
                        at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))


def finish(record: DeployRecord, seconds: float, error: BaseException | None = None) -> DeployRecord:
    record.seconds = round(seconds, 1)
    if error is None:
        record.status = OK
    else:
        record.status = FAILED
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


def previous_version(records: list[DeployRecord]) -> str | None:
    """The last successful version before the current one (the newest successful record);
    deploys limited to some hosts do not count: they did not set the whole environment's version."""
    ok = [r for r in records if r.status == OK and not r.hosts]
    if len(ok) < 2:
        return None
    current = ok[-1].version
    return next((r.version for r in reversed(ok[:-1]) if r.version != current), None)
