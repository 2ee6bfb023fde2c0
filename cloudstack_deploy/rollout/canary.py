"""A paused canary, as the primary host keeps it (``~/.csdeploy/<service>/canary.json``).

`deploy --canary` writes it when the canary passed its watch and releases the deploy lock, so
`deploy --promote` or `--abort` can finish the canary from any machine that reaches the
hosts: everything they need is here (the version, which hosts or which share, the selection
the canary was made under, and the history store's row to finish). While it exists every
other deploy and rollback is refused (the deploy lock checks it in the same round trip).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import InvalidInput, Locked
from .strategy import CanarySpec


@dataclass
class CanaryState:
    version: str
    mode: str                                   # hosts | percent
    hosts: list[str] = field(default_factory=list)     # the canary hosts (mode hosts)
    percent: int | None = None                  # the share (mode percent)
    roles: list[str] = field(default_factory=list)     # the selection it ran under (--roles)
    only: list[str] = field(default_factory=list)      # ... and --hosts
    cookie: str | None = None                   # the rollout cookie value that always reaches the canary
    by: str = ""
    at: str = ""
    since: int = 0                              # epoch seconds
    deployment: str | None = None               # the history store's row
    watch: str | None = None

    @property
    def spec(self) -> CanarySpec:
        return CanarySpec(percent=self.percent) if self.mode == "percent" else CanarySpec(hosts=len(self.hosts))

    def describe(self) -> str:
        what = f"{self.percent}% of the requests" if self.mode == "percent" else ", ".join(self.hosts)
        return f"canary of {self.version} on {what}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def parse(cls, text: str) -> CanaryState | None:
        """The state from the file's text; None when there is none (or it is unreadable)."""
        try:
            data: Any = json.loads(text.strip() or "null")
        except json.JSONDecodeError:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("version"), str):
            return None
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


def new_state(version: str, spec: CanarySpec, hosts: list[str], roles: tuple[str, ...], only: tuple[str, ...],
              by: str, at: str, cookie: str | None) -> CanaryState:
    return CanaryState(version=version, mode=spec.mode, hosts=hosts, percent=spec.percent, roles=list(roles),
                       only=list(only), cookie=cookie, by=by, at=at, since=int(time.time()))


def refused(env: str, stdout: str) -> Locked:
    """The deploy lock found a paused canary: say which, and the two ways on."""
    state = CanaryState.parse(stdout)
    what = state.describe() if state else "a canary"
    who = f" by {state.by}" if state and state.by else ""
    age = f", {(time.time() - state.since) / 60:.0f} min ago" if state and state.since else ""
    return Locked(f"environment '{env}' has a paused {what}{who}{age}: nothing else deploys until it is "
                  "promoted or aborted",
                  hint=f"csdeploy deploy BLUEPRINT --env {env} --promote (the rest of the hosts), or --abort (back)")


def none_paused(env: str) -> InvalidInput:
    return InvalidInput(f"environment '{env}' has no paused canary to promote or abort",
                        hint=f"`csdeploy history --source host --env {env}` shows what ran last")
