"""`csdeploy lab up` is idempotent: the second run builds, pushes and restarts nothing.

Uses the machine's lab (the default CSDEPLOY_HOME), like the end-to-end tests: the
registry's name and port are global, so a second lab beside it would fight over them.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from cloudstack_deploy.lab.docker import engine_available
from cloudstack_deploy.lab.manage import lab_status, lab_up, running_pid
from cloudstack_deploy.progress import Recorder

needs_engine = pytest.mark.skipif(asyncio.run(engine_available()) is not None, reason="no Docker engine answers")


@needs_engine
def test_second_lab_up_rebuilds_and_restarts_nothing() -> None:
    first = Recorder()
    asyncio.run(lab_up(progress=first))
    pid = running_pid()
    assert pid is not None, "lab up must leave the simulator running"

    second = Recorder()
    status = asyncio.run(lab_up(progress=second))
    builds = [e for e in second.events if e.action == "build"]
    pushes = [e for e in second.events if e.action == "push"]
    assert builds and all(e.status == "skipped" for e in builds), [(e.resource, e.status) for e in builds]
    assert all(e.status == "skipped" for e in pushes), [(e.resource, e.status) for e in pushes]
    assert not any("building" in text for _, text in second.notes), second.notes
    assert any("already running" in text for _, text in second.notes), second.notes
    assert running_pid() == pid, "the simulator must not be restarted"
    assert status.simulator == "running" and all(status.images.values()), status


@needs_engine
def test_lab_status_reports_the_running_lab() -> None:
    asyncio.run(lab_up(progress=Recorder()))
    status = asyncio.run(lab_status())
    assert status.simulator == "running"
    assert status.endpoint and status.endpoint.endswith("/client/api")
    assert "running" in status.registry
    assert os.path.exists(os.path.expanduser(os.environ.get("CSDEPLOY_HOME", "~/.csdeploy")) + "/lab/cloudstack.ini")


def test_lab_up_without_a_docker_engine_says_how_to_get_one(tmp_path, monkeypatch) -> None:
    from cloudstack_deploy.lab.manage import LabError

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such-docker.sock")
    with pytest.raises(LabError) as err:
        asyncio.run(lab_up(progress=Recorder()))
    assert "needs a Docker engine" in str(err.value)
    assert err.value.hint and "apt-get install -y docker.io" in err.value.hint
