"""The state shared by one run's actions, and the errors they raise."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..cloud import Cloud, CloudError
from ..errors import OperationFailed
from ..progress import Event, Progress
from .catalog import Catalog
from .desired import Desired, format_time
from .hostkeys import HostKey
from .steps import Action


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
    #: One `csdeploy:created` value per run, so resources created together share their tags.
    created: str = field(default_factory=lambda: format_time(datetime.now(UTC)))
    #: Load balancers: each balanced role's address (static NAT mode) and rule ids by port.
    lb_ips: dict[str, dict[str, Any]] = field(default_factory=dict)        # role -> IP record
    affinity_groups: dict[str, str] = field(default_factory=dict)          # name -> id
    lb_rules: dict[tuple[str, int], str] = field(default_factory=dict)     # (role, port) -> rule id
    #: Keep VMs out of a load balancer that already serves until the rollout on them is done.
    defer_joins: bool = False
    deferred: list[Action] = field(default_factory=list)                   # assigns left for later
    #: Called with a VM's name once its pipeline is done without a failure (see apply).
    on_vm_done: Callable[[str], None] | None = None
    _snat_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    batcher: TagBatcher = field(init=False)

    def __post_init__(self) -> None:
        self.batcher = TagBatcher(self.cloud)

    def tags(self, **extra: str) -> list[dict[str, str]]:
        base = self.desired.base_tags()
        base.update(extra)
        return [{"key": k, "value": v} for k, v in base.items()]

    def emit(self, action: Action, status: str, detail: str = "") -> None:
        self.progress.emit(Event(resource=f"{action.kind} {action.name}", action=action.op, status=status,
                                 detail=detail, env=self.desired.env))


class TagBatcher:
    """One createTags call for many resources: requests for the same resource type and tags
    that arrive within ``window`` seconds are sent together (VMs, their IPs and their rules are
    created in waves, so 200 VMs of one role need a handful of calls, not 600).

    Tags are the primary index, not the only one: names and the environment's network find
    what a run killed before its tags landed created, so the short wait loses nothing.
    """

    MAX_IDS = 200

    def __init__(self, cloud: Cloud, window: float = 0.25) -> None:
        self.cloud = cloud
        self.window = window
        self._pending: dict[tuple[str, tuple[tuple[str, str], ...]], list[tuple[list[str], asyncio.Future[None]]]] = {}

    async def tag(self, rtype: str, ids: list[str], tags: list[dict[str, str]]) -> None:
        if not ids:
            return
        key = (rtype, tuple((t["key"], t["value"]) for t in tags))
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiting = self._pending.setdefault(key, [])
        waiting.append((list(ids), fut))
        if len(waiting) == 1:
            asyncio.get_running_loop().call_later(self.window, lambda: asyncio.ensure_future(self._flush(key)))
        await fut

    async def _flush(self, key: tuple[str, tuple[tuple[str, str], ...]]) -> None:
        batch = self._pending.pop(key, [])
        rtype, tags = key
        ids = [i for ids, _ in batch for i in ids]
        try:
            for start in range(0, len(ids), self.MAX_IDS):
                await self._create(rtype, ids[start:start + self.MAX_IDS], tags)
        except CloudError as exc:
            if len(batch) == 1:
                batch[0][1].set_exception(exc)
                return
            # one bad id (a resource deleted meanwhile) must not fail the others: one call each
            await asyncio.gather(*(self._single(rtype, ids_, tags, fut) for ids_, fut in batch))
            return
        for _, fut in batch:
            if not fut.done():
                fut.set_result(None)

    async def _single(self, rtype: str, ids: list[str], tags: tuple[tuple[str, str], ...],
                      fut: asyncio.Future[None]) -> None:
        try:
            await self._create(rtype, ids, tags)
        except CloudError as exc:
            fut.set_exception(exc)
        else:
            fut.set_result(None)

    async def _create(self, rtype: str, ids: list[str], tags: tuple[tuple[str, str], ...]) -> None:
        await self.cloud.job("createTags", resourceids=ids, resourcetype=rtype,
                             tags=[{"key": k, "value": v} for k, v in tags])


async def tag(ctx: RunContext, rtype: str, ids: list[str], tags: list[dict[str, str]], *,
              at_once: bool = False) -> None:
    """Tag resources as soon as they exist, batched with their siblings (see TagBatcher);
    ``at_once`` for the network, whose tags (the lock) other runs must see without delay."""
    if not ids:
        return
    if at_once:
        await ctx.cloud.job("createTags", resourceids=ids, resourcetype=rtype, tags=tags)
    else:
        await ctx.batcher.tag(rtype, ids, tags)
