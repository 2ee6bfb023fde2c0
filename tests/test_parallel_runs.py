"""Tests run side by side (pytest-xdist workers, scripts/test's Pythons) never share a loopback
range: each process draws its simulators' /24s from a share of its own."""

from __future__ import annotations

import pytest

from tests.support.sim import worker_octets


def test_without_xdist_a_run_draws_from_the_whole_range() -> None:
    assert worker_octets("40-199", None, None) == (40, 199)
    assert worker_octets("120-199", "", "") == (120, 199)


@pytest.mark.parametrize(("octets", "workers"), [("40-199", 6), ("40-199", 8), ("120-199", 6), ("40-119", 3)])
def test_each_worker_draws_from_its_own_share_inside_the_runs_range(octets: str, workers: int) -> None:
    first, last = (int(x) for x in octets.split("-"))
    shares = [worker_octets(octets, f"gw{i}", str(workers)) for i in range(workers)]
    drawn = [set(range(a, b + 1)) for a, b in shares]
    assert all(drawn), shares
    assert all(first <= a and b <= last for a, b in shares), shares
    for i, mine in enumerate(drawn):
        for theirs in drawn[i + 1:]:
            assert not mine & theirs, shares


def test_more_workers_than_octets_is_refused() -> None:
    with pytest.raises(ValueError, match="fewer octets than the 6 xdist workers"):
        worker_octets("40-44", "gw0", "6")
