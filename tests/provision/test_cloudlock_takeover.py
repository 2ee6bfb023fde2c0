"""The environment's cloud lock and a dead deploy: when the rollout took over the deploy lock
of a run proven dead (its lease expired), the cloud lock that same run left (user, host and
pid match) is taken over too, from any machine; any other holder still refuses the deploy."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cloudstack_deploy.cloud import read_cloud_config
from cloudstack_deploy.errors import Locked
from cloudstack_deploy.provision.cloudlock import rollout_lock
from cloudstack_deploy.provision.desired import TAG_LOCK, format_time
from cloudstack_deploy.rollout import lease

from .conftest import CloudView
from .test_reap import create_many, lock_network

DEAD = {"user": "ci", "host": "other-runner", "pid": 4242, "version": "v7", "id": "a" * 32}


def run(take_overs: lease.TakeOvers, warnings: list[str]) -> None:
    async def go() -> None:
        async with rollout_lock(read_cloud_config(), "dying", break_lock=False, warn=warnings.append,
                                dead=take_overs.dead) as gate:
            await asyncio.sleep(0.2)       # the deploy lock is decided while the gate waits
            take_overs.settle(lease.Holder(DEAD, 99))
            await gate

    asyncio.run(go())


@pytest.fixture
def dying(home: Path, cloud_view: CloudView) -> CloudView:
    asyncio.run(create_many({"dying": timedelta(days=1)}))
    return cloud_view


def test_the_cloud_lock_of_a_run_whose_deploy_lock_was_taken_over_is_taken_too(dying: CloudView) -> None:
    held = f"ci@other-runner pid 4242 since {format_time(datetime.now(UTC))}"
    lock_network(dying, "dying", held)
    warnings: list[str] = []
    run(lease.TakeOvers(), warnings)
    assert warnings == [f"took over the environment's cloud lock from {held}"]
    assert dying.cs.listTags(key=TAG_LOCK).get("tag", []) == []  # ours, released on the way out


def test_a_cloud_lock_of_another_run_still_refuses(dying: CloudView) -> None:
    lock_network(dying, "dying", f"ci@other-runner pid 4243 since {format_time(datetime.now(UTC))}")
    with pytest.raises(Locked, match="locked in the cloud by ci@other-runner pid 4243"):
        run(lease.TakeOvers(), [])
