"""What a rollout run takes and gives, and what its apps step records: the records shared by
`deploy.py` (the hosts' facts and preparation), `apps.py` (switches, watch, workers) and
`runs.py` (a whole run), kept apart so those import each other in one direction only
(runs -> apps -> deploy)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import history
from . import watch as watching
from .hosts import PlannedScript
from .plan import ABORT, DEPLOY, PROMOTE, ROLLBACK, RolloutOptions, RolloutPlan
from .watch import WatchResult


@dataclass
class RolloutResult:
    version: str
    seconds: float
    exec_calls: dict[str, int] = field(default_factory=dict)
    accessories: dict[str, str] = field(default_factory=dict)   # name -> started|unchanged|rebooted
    planned: list[PlannedScript] = field(default_factory=list)  # --dry-run: what each host would run
    switches: list[SwitchRecord] = field(default_factory=list)  # each host's switch, in order
    reverted: list[str] = field(default_factory=list)
    watch: WatchResult | None = None
    status: str = history.OK        # ok | paused (a canary) | rolled_back (an abort)
    canary: str | None = None       # what the canary is, when one was made or finished
    warnings: list[str] = field(default_factory=list)
    plan: RolloutPlan | None = None  # --dry-run: the plan, as built from the hosts' facts


@dataclass
class SwitchRecord:
    host: str
    role: str
    batch: int
    batches: int
    status: str                                   # switched | split | failed | switched back | kept
    seconds: float = 0.0
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "role": self.role, "batch": self.batch, "batches": self.batches,
                "status": self.status, "seconds": round(self.seconds, 2), **({"detail": self.detail}
                                                                            if self.detail else {})}


@dataclass
class AppOutcome:
    switches: list[SwitchRecord] = field(default_factory=list)
    reverted: list[str] = field(default_factory=list)
    watch: watching.WatchResult | None = None
    rolled_back: str | None = None                # why the rollout switched back by itself
    warnings: list[str] = field(default_factory=list)   # what the judged-good rollout could not clean up

    @property
    def switched(self) -> list[str]:
        return [s.host for s in self.switches if s.status in ("switched", "split")]


__all__ = ["ABORT", "DEPLOY", "PROMOTE", "ROLLBACK", "AppOutcome", "RolloutOptions", "RolloutResult", "SwitchRecord"]
