"""Upgrading csdeploy never strands an environment: what 0.1.0 wrote (kept as fixtures in
tests/fixtures/upgrade/, from a real run on the lab) is read by today's code, which then
deploys and rolls it back as its own.

Checked by hand on the lab when the fixtures were taken: the environment 0.1.0 created and
deployed v1 then v2 was deployed (v1) and rolled back (to v2) by this code, no re-creation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cloudstack_deploy.progress import Recorder
from cloudstack_deploy.rollout import history
from cloudstack_deploy.rollout.deploy import Rollout
from cloudstack_deploy.state import (
    INVENTORY_FORMAT,
    EnvState,
    inventory_from_dict,
    inventory_to_dict,
)

REPO = Path(__file__).resolve().parents[1]
OLD = REPO / "tests" / "fixtures" / "upgrade" / "0.1.0-2f0f123"


@pytest.fixture
def old_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> EnvState:
    monkeypatch.setenv("CSDEPLOY_HOME", str(tmp_path))
    env_dir = tmp_path / "envs" / "upg"
    env_dir.mkdir(parents=True, mode=0o700)
    shutil.copy(OLD / "inventory.json", env_dir / "inventory.json")
    remembered = json.loads((OLD / "blueprint.json").read_text())
    remembered["path"] = str(REPO / "blueprints" / "demo.yml")  # the machine's path then; this checkout's now
    (env_dir / "blueprint.json").write_text(json.dumps(remembered))
    return EnvState("upg")


def test_the_old_inventory_is_read_as_it_was_written(old_env: EnvState) -> None:
    inv = old_env.read_inventory()
    assert inv is not None, "an unreadable inventory would send the user to re-create the environment"
    assert [h.name for h in inv.hosts] == ["upg-web-1", "upg-worker-1", "upg-db-1"]
    assert inv.primary.name == "upg-web-1" and inv.accessory_host("db").name == "upg-db-1"  # type: ignore[union-attr]
    again = inventory_to_dict(inv)
    assert again["format"] == INVENTORY_FORMAT
    assert inventory_from_dict(again) == inv


def test_a_newer_inventory_format_is_not_misread(old_env: EnvState) -> None:
    data = json.loads((OLD / "inventory.json").read_text())
    data["format"] = INVENTORY_FORMAT + 1
    with pytest.raises(ValueError, match="newer than this csdeploy"):
        inventory_from_dict(data)


def test_the_old_history_gives_rollback_its_version_and_each_role_the_blueprints_image(old_env: EnvState) -> None:
    records = history.parse((OLD / "history.jsonl").read_text())
    assert [(r.version, r.status) for r in records] == [("v1", "ok"), ("v2", "ok")]
    assert history.previous_version(records) == "v1"
    assert history.images_at(records, "v1") == {}, "0.1.0 did not record images"
    from cloudstack_deploy.envctx import recall_blueprint
    bp = recall_blueprint(old_env, None, ())
    r = Rollout(bp, old_env.read_inventory(), {}, Recorder())  # type: ignore[arg-type]
    r.images = history.images_at(records, "v1")
    assert r.role_image("web", "v1") == "registry.lab:5000/demo-app:v1"
    assert r.role_image("worker", "v1") == "registry.lab:5000/demo-app:v1"
