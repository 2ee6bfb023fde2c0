"""`csdeploy lab up` without a Docker engine says what is missing and how to get one."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cloudstack_deploy.lab.manage import LabError, lab_up
from cloudstack_deploy.progress import Recorder


def test_lab_up_without_a_docker_engine_says_how_to_get_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CSDEPLOY_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such-docker.sock")
    with pytest.raises(LabError) as err:
        asyncio.run(lab_up(progress=Recorder()))
    assert "needs a Docker engine" in str(err.value)
    assert err.value.hint and "apt-get install -y docker.io" in err.value.hint
    assert not (tmp_path / "home" / "lab" / "lab.json").exists()  # nothing set up, no slot taken
