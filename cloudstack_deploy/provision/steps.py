"""One step of a plan (an `Action`) and the groups `apply` runs them in."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

GLOBAL = ""               # actions run first, in order (network, keypair)
REMOVE = "~remove"        # removals, run concurrently with the per-VM pipelines
LB_DETACH = "~lb-detach"  # before anything else: members leave, rules in the way go
LB = "~lb"                # load-balancer addresses, rules, firewall, beside the pipelines
LB_ATTACH = "~lb-attach"  # after the pipelines: VMs join their role's load balancer


@dataclass(frozen=True)
class Action:
    op: str        # create | adopt | update | start | scale | replace | delete | assign | remove
    kind: str      # network | keypair | vm | ip | static-nat | firewall | port-forward | volume
    #              # | load-balancer | lb-member | affinity-group
    name: str      # what a user reads: the resource's name or address
    detail: str = ""
    group: str = GLOBAL
    data: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "kind": self.kind, "name": self.name, "detail": self.detail}
