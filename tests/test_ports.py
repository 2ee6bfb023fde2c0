"""tests/support/ports.py: servers that tests start never race outgoing connections for a port."""

from __future__ import annotations

import itertools
import socket
from pathlib import Path

import pytest

from tests.support import ports


def _ephemeral_range() -> range:
    low, high = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    return range(low, high + 1)


def test_ports_come_from_this_process_s_block_below_the_kernel_s_own() -> None:
    handed = [ports.free_port() for _ in range(5)]
    assert len(set(handed)) == 5
    assert all(port in ports._BLOCK for port in handed)
    assert ports._BLOCK.stop <= _ephemeral_range().start


def test_a_port_something_holds_is_skipped_for_tcp_and_for_udp(monkeypatch: pytest.MonkeyPatch) -> None:
    first = ports.free_port()  # free now; the turn restarts there for each case below
    with socket.socket() as tcp:
        tcp.bind(("127.0.0.1", first))
        tcp.listen()
        monkeypatch.setattr(ports, "_turn", itertools.cycle(ports._BLOCK[ports._BLOCK.index(first):]))
        assert ports.free_port() != first
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", first))
        monkeypatch.setattr(ports, "_turn", itertools.cycle(ports._BLOCK[ports._BLOCK.index(first):]))
        assert ports.free_port() == first  # a UDP holder does not matter to a TCP server
        monkeypatch.setattr(ports, "_turn", itertools.cycle(ports._BLOCK[ports._BLOCK.index(first):]))
        assert ports.free_port(udp=True) != first
