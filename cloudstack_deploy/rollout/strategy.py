"""How a version reaches a role's hosts: batches, canaries, what a host switches back to.

Pure decisions, tested without hosts: the rollout (`apps.py`) asks these and does what they say.

- Batches: a proxy role switches `rollout.batch` hosts at a time; unset, one at a time when
  the role is behind a load balancer (the pool never loses more than one member's capacity),
  all at once otherwise (each host has its own address: nothing is shared to protect).
  Non-proxy roles keep their default of one host at a time. Hosts that serve nothing yet (a
  first deploy, a new VM) go first, all at once: there is no capacity of theirs to keep.
- Canary: ``--canary N`` switches the first N hosts of each proxy role (index order, so a
  canary is always the same, predictable hosts); ``--canary P%`` splits every host's traffic
  with kamal-proxy's rollout. Either must leave part of the pool on the current version.
- Switch back: the container a host served before the switch is the newest running
  container of its role other than the new one (the facts list them, newest first).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from ..blueprint_schema import Blueprint
from ..errors import InvalidInput
from ..inventory import Host, Inventory

CANARY_HINT = "write --canary N (hosts of each proxy role, fewer than it has) or --canary P% (1-99)"
_CANARY = re.compile(r"(?P<n>[0-9]{1,4})(?P<pct>%?)")


@dataclass(frozen=True)
class CanarySpec:
    """``--canary``: a number of hosts per proxy role, or a percentage of every host's requests."""

    hosts: int | None = None
    percent: int | None = None

    @property
    def mode(self) -> str:
        return "percent" if self.percent is not None else "hosts"

    def __str__(self) -> str:
        return f"{self.percent}%" if self.percent is not None else f"{self.hosts} host" + ("s" if self.hosts != 1 else "")


def parse_canary(text: str) -> CanarySpec:
    m = _CANARY.fullmatch(text.strip())
    if m is None:
        raise InvalidInput(f"--canary {text!r}: not a number of hosts or a percentage", hint=CANARY_HINT)
    n = int(m["n"])
    if m["pct"]:
        if not 1 <= n <= 99:
            raise InvalidInput(f"--canary {text}: a canary share must be 1-99%", hint=CANARY_HINT)
        return CanarySpec(percent=n)
    if n < 1:
        raise InvalidInput(f"--canary {text}: a canary needs at least one host", hint=CANARY_HINT)
    return CanarySpec(hosts=n)


def batch_size(bp: Blueprint, inventory: Inventory, role: str, hosts: int) -> int:
    """How many of a role's ``hosts`` switch (or are replaced) at once."""
    if bp.rollout.batch is not None:
        return max(1, bp.rollout.batch)
    if bp.roles[role].proxy is None or inventory.load_balancer(role) is not None:
        return 1
    return max(1, hosts)


def batches(hosts: Sequence[Host], size: int) -> list[list[Host]]:
    """``hosts`` in order, cut into groups of ``size`` (the last may be smaller)."""
    size = max(1, size)
    return [list(hosts[i:i + size]) for i in range(0, len(hosts), size)]


def switch_groups(hosts: Sequence[Host], unlike: Collection[str], size: int) -> tuple[list[list[Host]], bool]:
    """A proxy role's switches in order: the hosts in ``unlike`` (serving nothing yet, or not
    the way the new version will: TLS turned on or off) together first, then the others
    ``size`` at a time; and whether the first group is those. Behind one load balancer a
    probe lands on any host: while some serve HTTPS and others do not, half the requests
    fail whatever the batch, so that change is made everywhere at once."""
    first = [h for h in hosts if h.name in unlike]
    rest = [h for h in hosts if h.name not in unlike]
    return ([first] if first else []) + batches(rest, size), bool(first)


def canary_hosts(role: str, hosts: Sequence[Host], spec: CanarySpec) -> list[Host]:
    """The hosts of ``role`` a host canary switches: the first N (index order). Refused when
    N is not smaller than the pool: a canary must leave hosts on the current version."""
    assert spec.hosts is not None
    if spec.hosts >= len(hosts):
        raise InvalidInput(f"--canary {spec.hosts}: role {role} has {len(hosts)} host"
                           + ("s" if len(hosts) != 1 else "") + " here; a canary must leave at least one "
                           "on the current version",
                           hint=f"use --canary 1..{len(hosts) - 1}" if len(hosts) > 1 else
                           "a single host cannot take a host canary: use --canary P% (kamal-proxy's split)")
    return sorted(hosts, key=lambda h: h.index)[:spec.hosts]


def previous_container(running: Sequence[str], new: str) -> str | None:
    """What a host goes back to: the newest running container of the role other than ``new``
    (``running`` newest first); None when there is none (the host served nothing before, or
    already ran ``new``)."""
    return next((name for name in running if name != new), None)


def watch_targets(inventory: Inventory, role: str, switched: Sequence[Host]) -> list[str]:
    """Where the watch probes a role from: its entry point (the load balancer's address),
    and without a load balancer also each switched host's own address (each is an entry
    point then), without repeats."""
    out: list[str] = []
    entry = inventory.entrypoint(role)
    if entry:
        out.append(entry)
    if inventory.load_balancer(role) is None:
        out += [h.public_ip for h in switched]
    return list(dict.fromkeys(out))
