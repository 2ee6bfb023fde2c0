"""Environments found by tags: what `csdeploy envs` shows and what `csdeploy reap` reads."""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..cloud import Cloud
from .desired import TAG_CREATED, TAG_ENV, TAG_EXPIRES, TAG_LOCK, TAG_ROLE, TAG_SERVICE, parse_time


@dataclass
class EnvSummary:
    env: str
    service: str | None = None
    network_id: str | None = None
    created: str | None = None
    expires: str | None = None
    roles: dict[str, int] = field(default_factory=dict)
    vms: int = 0
    lock: str | None = None          # the csdeploy:lock tag: who is changing it right now
    snapshots: int = 0               # disk snapshots tagged for it (kept after a teardown)

    @property
    def snapshots_only(self) -> bool:
        """Torn down with its snapshots kept: `csdeploy recover` can make it again."""
        return self.network_id is None and self.vms == 0 and self.snapshots > 0

    def expired(self, now: datetime | None = None) -> bool:
        """Past its `csdeploy:expires`: the next `csdeploy reap` deletes it."""
        when = parse_time(self.expires or "")
        return when is not None and when <= (now or datetime.now(UTC))

    def to_dict(self, now: datetime | None = None) -> dict[str, Any]:
        return {**asdict(self), "expired": self.expired(now), "snapshots_only": self.snapshots_only}


async def list_envs(cloud: Cloud) -> list[EnvSummary]:
    """Three API calls whatever the number of environments: all tags of networks, VMs and
    snapshots (an environment torn down with its snapshots kept is listed by them)."""
    net_tags, vm_tags, snap_tags = await asyncio.gather(
        cloud.list("listTags", resourcetype="Network"),
        cloud.list("listTags", resourcetype="UserVm"),
        cloud.list("listTags", resourcetype="Snapshot"),
    )
    by_net: dict[str, dict[str, str]] = {}
    for t in net_tags:
        by_net.setdefault(t["resourceid"], {})[t["key"]] = t.get("value", "")
    envs: dict[str, EnvSummary] = {}
    for nid, tags in by_net.items():
        if TAG_ENV in tags:
            envs[tags[TAG_ENV]] = EnvSummary(env=tags[TAG_ENV], service=tags.get(TAG_SERVICE), network_id=nid,
                                             created=tags.get(TAG_CREATED), expires=tags.get(TAG_EXPIRES),
                                             lock=tags.get(TAG_LOCK))
    by_vm: dict[str, dict[str, str]] = {}
    for t in vm_tags:
        by_vm.setdefault(t["resourceid"], {})[t["key"]] = t.get("value", "")
    for tags in by_vm.values():
        env = tags.get(TAG_ENV)
        if env is None:
            continue
        summary = envs.setdefault(env, EnvSummary(env=env, service=tags.get(TAG_SERVICE)))
        role = tags.get(TAG_ROLE, "?")
        summary.roles[role] = summary.roles.get(role, 0) + 1
        summary.vms += 1
    by_snap: dict[str, dict[str, str]] = {}
    for t in snap_tags:
        by_snap.setdefault(t["resourceid"], {})[t["key"]] = t.get("value", "")
    for tags in by_snap.values():
        env = tags.get(TAG_ENV)
        if env is None:
            continue
        summary = envs.setdefault(env, EnvSummary(env=env, service=tags.get(TAG_SERVICE)))
        summary.snapshots += 1
        if summary.network_id is None and summary.vms == 0 and tags.get(TAG_EXPIRES):
            # snapshots only: the latest expiry of its snapshots is the environment's
            summary.expires = max(summary.expires or "", tags[TAG_EXPIRES])
    return sorted(envs.values(), key=lambda e: e.env)
