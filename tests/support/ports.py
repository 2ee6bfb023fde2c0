"""Ports for the servers a test starts on 127.0.0.1 (csdeploy serve, PostgreSQL, PowerDNS, a
registry, an app in a thread).

A port the kernel picks (bind to port 0, close, hand the number over) lies in its ephemeral range
(32768-60999 on Linux), where every outgoing connection on the machine takes a port too: between
the pick and the server's own bind, another worker's connection could take it ("address already
in use" failed a `csdeploy serve` start in a fast run slowed down by a profiler). These ports
come from below that range, from a block only this process draws from: PORTS_PER_OCTET ports
for each second octet of its loopback share (tests/support/sim.py gives every tier, lab shard
and xdist worker octets of its own), handed out in turn, each one checked free first.
"""

from __future__ import annotations

import itertools
import socket

from tests.support.sim import FIRST_OCTET, LAST_OCTET

BASE = 16000
PORTS_PER_OCTET = 64  # octet 255's block ends at 32383, below the ephemeral range

_BLOCK = range(BASE + FIRST_OCTET * PORTS_PER_OCTET, BASE + (LAST_OCTET + 1) * PORTS_PER_OCTET)
_turn = itertools.cycle(_BLOCK)


def _free(port: int, kind: socket.SocketKind) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:  # no SO_REUSEADDR: a port in TIME_WAIT is skipped
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(udp: bool = False) -> int:
    """A TCP port on 127.0.0.1 that nothing holds (``udp``: free for UDP as well), never one this
    process handed out recently."""
    for _ in range(len(_BLOCK)):
        port = next(_turn)
        if _free(port, socket.SOCK_STREAM) and (not udp or _free(port, socket.SOCK_DGRAM)):
            return port
    raise AssertionError(f"no free port on 127.0.0.1 in {_BLOCK.start}-{_BLOCK.stop - 1}")
