"""The blueprint's `hosts:` section: how csdeploy looks after its VMs' operating system.

    hosts:
      ssh_hardening: true              # default: key-only sshd, root by key only, MaxAuthTries 3
      fail2ban: false                  # ban addresses that keep failing to log in
      upgrades:                        # unattended security upgrades (off without this section)
        reboot_window: "03:00-05:00"   # automatic reboots happen inside it, one VM of a role per slot
        timezone: UTC                  # the VMs' clock zone (the window is read in it)
      upgrade_command: [sh, -c, "apt-get update && apt-get -y upgrade"]   # what `hosts upgrade` runs

Only the rules live here (file:line problems through `Ctx`); the files and commands they
become are built in `rollout/commands/hardening.py`.
"""

from __future__ import annotations

import re
import zoneinfo
from typing import Any

from .blueprint_rules import (
    BAD,
    Ctx,
    TreePath,
    check_bool,
    check_cmd,
    check_section,
    check_str,
    describe,
)
from .blueprint_schema import HostsSpec, Upgrades

_WINDOW_RE = re.compile(r"(?P<h1>[0-9]{2}):(?P<m1>[0-9]{2})-(?P<h2>[0-9]{2}):(?P<m2>[0-9]{2})")


def parse_window(text: str) -> tuple[int, int] | None:
    """``"03:00-05:00"`` -> (180, 300); None when it is not such a window."""
    m = _WINDOW_RE.fullmatch(text.strip())
    if m is None:
        return None
    h1, m1, h2, m2 = (int(m[k]) for k in ("h1", "m1", "h2", "m2"))
    if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59 or (h1, m1) == (h2, m2):
        return None
    return h1 * 60 + m1, h2 * 60 + m2


def _check_window(ctx: Ctx, path: TreePath, value: Any) -> Any:
    if check_str(ctx, path, value) is BAD:
        return BAD
    window = parse_window(value)
    if window is None:
        ctx.add(path, f"{describe(value)} is not a reboot window: write HH:MM-HH:MM (24 h clock, "
                      "two different times), e.g. \"03:00-05:00\"")
        return BAD
    return window


def _check_timezone(ctx: Ctx, path: TreePath, value: Any) -> Any:
    if check_str(ctx, path, value) is BAD:
        return BAD
    if value not in zoneinfo.available_timezones() and value not in ("UTC", "GMT"):
        ctx.add(path, f"{describe(value)} is not a time zone name (IANA's, e.g. UTC or Europe/Berlin)")
        return BAD
    return value


def _check_upgrades(ctx: Ctx, path: TreePath, value: Any) -> Any:
    out = check_section(ctx, path, value, {"reboot_window": _check_window, "timezone": _check_timezone},
                        required=["reboot_window"])
    if out is None or "reboot_window" not in out:
        return BAD
    return Upgrades(**out)


def check_hosts_section(ctx: Ctx, path: TreePath, value: Any) -> Any:
    """The `hosts:` section as a `HostsSpec` (BAD after reporting its problems)."""
    out = check_section(ctx, path, value, {
        "ssh_hardening": check_bool, "fail2ban": check_bool, "upgrades": _check_upgrades,
        "upgrade_command": check_cmd,
    })
    if out is None:
        return BAD
    if "upgrade_command" in out:
        out["upgrade_command"] = tuple(out["upgrade_command"])
    return HostsSpec(**out)


__all__ = ["HostsSpec", "Upgrades", "check_hosts_section", "parse_window"]
