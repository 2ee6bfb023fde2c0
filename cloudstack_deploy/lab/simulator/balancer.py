"""How the public network spreads connections over a load-balancer rule's members.

The isolated network's virtual router balances with HAProxy in TCP mode; CloudStack's
HAProxyConfigurator writes ``balance <algorithm>`` per rule, ``check`` on every server and,
in its defaults, ``retries 3`` and ``option redispatch``. So here: the rule's algorithm picks
the member (``roundrobin`` in turn, ``leastconn`` the one with the fewest open connections,
``source`` by a hash of the client's address), and a member that refuses the connection is
marked down for a while (the failed check) while the connection is tried on the next one
(the redispatch), so a member that is not serving yet costs nobody a failed request.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .engine import Simulator

#: Connection attempts for one client connection: the first plus HAProxy's ``retries 3``.
MAX_ATTEMPTS = 4
#: How long a member that refused a connection is tried last (HAProxy: fall 3 x inter 2s).
DOWN_SECONDS = 6.0


class Balancer:
    """Per-rule member order; state lives as long as the public network runs."""

    def __init__(self) -> None:
        self._turn: Counter[str] = Counter()            # rule id -> connections so far
        self.open: Counter[tuple[str, str]] = Counter()  # (rule id, vm id) -> open connections
        self._down: dict[str, float] = {}               # vm id -> tried last until then

    def order(self, rule: dict[str, Any], members: list[str], source: str) -> list[str]:
        """``members`` (in assignment order) in the order to try them for one connection."""
        if not members:
            return []
        algorithm = str(rule.get("algorithm") or "roundrobin").lower()
        n = len(members)
        turn = self._turn[rule["id"]]
        self._turn[rule["id"]] += 1
        if algorithm == "source":
            start = int.from_bytes(hashlib.sha256(source.encode()).digest()[:4], "big") % n
            ordered = members[start:] + members[:start]
        elif algorithm == "leastconn":
            rotated = members[turn % n:] + members[:turn % n]  # ties go round robin
            ordered = sorted(rotated, key=lambda vm: self.open[(rule["id"], vm)])
        else:
            ordered = members[turn % n:] + members[:turn % n]
        now = time.monotonic()
        return sorted(ordered, key=lambda vm: self._down.get(vm, 0.0) > now)  # stable: down ones last

    def failed(self, vm_id: str) -> None:
        self._down[vm_id] = time.monotonic() + DOWN_SECONDS

    def served(self, vm_id: str) -> None:
        self._down.pop(vm_id, None)


def applied_rules(sim: Simulator) -> dict[str, list[dict[str, Any]]]:
    """Applied load-balancer rules (state Active: they have members) by public IP id."""
    out: dict[str, list[dict[str, Any]]] = {}
    for rule in sim.col("lb_rules").values():
        if rule.get("_removed") or rule.get("state") != "Active":
            continue
        if str(rule.get("publicport", "")).isdigit() and str(rule.get("privateport", "")).isdigit():
            out.setdefault(rule.get("publicipid") or "", []).append(rule)
    return out


def live_members(sim: Simulator, rule: dict[str, Any]) -> list[dict[str, Any]]:
    """The member VMs of a rule that still exist, in assignment order."""
    vms = sim.col("vms")
    found = (vms.get(vm_id) for vm_id in rule.get("_vms") or [])
    return [vm for vm in found if vm is not None and not vm.get("_removed")]


def rule_at(sim: Simulator, address: str, port: int) -> str:
    """The id of the load-balancer rule on address:port, or "" (leastconn counts by it)."""
    for rule in sim.col("lb_rules").values():
        if rule.get("publicip") == address and str(rule.get("publicport")) == str(port):
            return str(rule["id"])
    return ""
