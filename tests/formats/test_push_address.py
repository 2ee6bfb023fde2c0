"""Where `csdeploy build` pushes: the cloud profile's registry_push, CSDEPLOY_REGISTRY_PUSH."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudstack_deploy.cloud.config import (
    read_cloud_config,
    record_lab_registry_push,
    registry_push_map,
    write_lab_profile,
)
from cloudstack_deploy.errors import InvalidInput


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CSDEPLOY_HOME", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    for name in ("CLOUDSTACK_ENDPOINT", "CLOUDSTACK_CONFIG", "CSDEPLOY_REGISTRY_PUSH"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_the_lab_records_its_push_address_and_a_rewritten_profile_keeps_it(home: Path) -> None:
    write_lab_profile("http://127.0.0.1:8080/client/api", "k", "s")
    assert registry_push_map(read_cloud_config()) == {}
    record_lab_registry_push("registry.lab:5000", "localhost:5000")
    assert registry_push_map(read_cloud_config()) == {"registry.lab:5000": "localhost:5000"}
    write_lab_profile("http://127.0.0.1:8080/client/api", "k", "s")  # the simulator restarts
    assert registry_push_map(read_cloud_config()) == {"registry.lab:5000": "localhost:5000"}
    assert (home / "lab" / "cloudstack.ini").stat().st_mode & 0o777 == 0o600


def test_the_environment_wins_and_bad_text_is_named(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CSDEPLOY_REGISTRY_PUSH", "registry.lab:5000=127.0.0.1:5001, r.example=push.example")
    assert registry_push_map(None) == {"registry.lab:5000": "127.0.0.1:5001", "r.example": "push.example"}
    monkeypatch.setenv("CSDEPLOY_REGISTRY_PUSH", "registry.lab:5000")
    with pytest.raises(InvalidInput, match="CSDEPLOY_REGISTRY_PUSH: registry_push: expected PULL_REGISTRY=PUSH"):
        registry_push_map(None)
