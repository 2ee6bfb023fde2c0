"""The state shared by one run's actions, and the errors they raise."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from ..cloud import Cloud
from ..errors import OperationFailed
from ..progress import Event, Progress
from .catalog import Catalog
from .desired import Desired
from .hostkeys import HostKey
from .plan import Action


class ProvisionError(OperationFailed):
    """Some actions failed; the rest completed and a re-run continues from there."""

    def __init__(self, failures: list[tuple[Action, BaseException]]) -> None:
        lines = [f"{a.kind} {a.name} ({a.op}): {exc}" for a, exc in failures]
        hints = {getattr(e, "hint", None) for _, e in failures} - {None}
        super().__init__(f"{len(failures)} action(s) failed:\n  " + "\n  ".join(lines),
                         hint="; ".join(sorted(h for h in hints if h)) or
                         "fix the cause and re-run: completed resources are kept and re-used")
        self.failures = failures



@dataclass
class RunContext:
    cloud: Cloud
    desired: Desired
    catalog: Catalog
    progress: Progress
    public_key: str
    network_id: str | None = None
    source_nat: dict[str, Any] | None = None
    vm_ids: dict[str, str] = field(default_factory=dict)
    ips: dict[str, dict[str, Any]] = field(default_factory=dict)       # vm name -> ip record
    host_keys: dict[str, HostKey] = field(default_factory=dict)        # created this run
    lock_value: str | None = None
    #: VMs found busy (e.g. still Starting after a killed run): waited for before stage B.
    settling: dict[str, str] = field(default_factory=dict)             # vm name -> id
    _snat_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def tags(self, **extra: str) -> list[dict[str, str]]:
        base = self.desired.base_tags()
        base.update(extra)
        return [{"key": k, "value": v} for k, v in base.items()]

    def emit(self, action: Action, status: str, detail: str = "") -> None:
        self.progress.emit(Event(resource=f"{action.kind} {action.name}", action=action.op, status=status,
                                 detail=detail, env=self.desired.env))


async def tag(ctx: RunContext, rtype: str, ids: list[str], tags: list[dict[str, str]]) -> None:
    if ids:
        await ctx.cloud.job("createTags", resourceids=ids, resourcetype=rtype, tags=tags)
