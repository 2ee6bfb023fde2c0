"""Fault injection: make the simulated cloud fail the way real clouds do, on purpose.

A spec is ``COMMAND:KIND:CODE:TIMES``: KIND ``http`` answers the request with CloudStack's
error envelope and that code; ``job`` lets the async job fail with that code; ``drop`` closes
the connection without an answer; ``slow`` delays the answer by CODE seconds. TIMES is a
count or ``always``; COMMAND is case-insensitive, ``*`` matches every command.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

KINDS = ("http", "job", "drop", "slow")


class FaultSpecError(ValueError):
    """A fault spec that cannot be understood; the message says which part and why."""


@dataclass
class Fault:
    command: str  # lower-cased, or "*"
    kind: str
    code: float
    times: int | None  # None = always

    @property
    def spec(self) -> str:
        code = int(self.code) if float(self.code).is_integer() else self.code
        return f"{self.command}:{self.kind}:{code}:{'always' if self.times is None else self.times}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"spec": self.spec}


def parse_fault(spec: str) -> Fault:
    parts = spec.strip().split(":")
    if len(parts) != 4:
        raise FaultSpecError(f"fault {spec!r}: expected COMMAND:KIND:CODE:TIMES (4 parts), got {len(parts)}")
    command, kind, code, times = (p.strip() for p in parts)
    if not command:
        raise FaultSpecError(f"fault {spec!r}: COMMAND is empty")
    kind = kind.lower()
    if kind not in KINDS:
        raise FaultSpecError(f"fault {spec!r}: KIND must be one of {', '.join(KINDS)}, got {kind!r}")
    try:
        code_value = float(code) if kind == "slow" else float(int(code or "0"))
    except ValueError:
        raise FaultSpecError(f"fault {spec!r}: CODE must be a number, got {code!r}") from None
    if kind in ("http", "job") and not 400 <= code_value <= 599:
        raise FaultSpecError(f"fault {spec!r}: CODE for {kind} must be an HTTP/CloudStack error code (400-599)")
    if kind == "slow" and code_value < 0:
        raise FaultSpecError(f"fault {spec!r}: CODE for slow is seconds and must be >= 0")
    if times.lower() == "always":
        count: int | None = None
    else:
        try:
            count = int(times)
        except ValueError:
            raise FaultSpecError(f"fault {spec!r}: TIMES must be a count or 'always', got {times!r}") from None
        if count < 1:
            raise FaultSpecError(f"fault {spec!r}: TIMES must be at least 1")
    return Fault(command.lower(), kind, code_value, count)


class FaultSet:
    """The active faults; each trigger uses up one of its TIMES."""

    def __init__(self, faults: list[Fault] | None = None) -> None:
        self.faults: list[Fault] = list(faults or [])

    def add(self, fault: Fault) -> None:
        self.faults.append(fault)

    def clear(self) -> None:
        self.faults.clear()

    def take(self, command: str, kinds: tuple[str, ...]) -> Fault | None:
        """The first active fault for ``command`` of one of ``kinds``, consuming one use."""
        name = command.lower()
        for fault in self.faults:
            if fault.kind in kinds and fault.command in (name, "*"):
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                return fault
        return None

    def to_list(self) -> list[dict[str, Any]]:
        return [f.to_dict() for f in self.faults]


#: Realistic texts for injected errors, so a client's message is what a real cloud would give.
FAULT_TEXTS: dict[int, str] = {
    429: "You have reached the API rate limit, please retry after a while",
    530: "Internal error executing command, please contact your system administrator",
    531: "Account 'admin' does not have permission to perform this operation",
    532: "The account has reached its resource limit",
    533: "Unable to create a deployment for the VM: insufficient capacity in zone lab-zone-1",
    534: "Resource is unavailable, please retry later",
    535: "Maximum number of resources has been exceeded",
    536: "The resource is in use",
    537: "The network rule conflicts with an existing rule",
}


def fault_text(command: str, code: int) -> str:
    return FAULT_TEXTS.get(code, f"Injected fault: {command} failed with error {code}")
