"""Destinations: `-d DEST` merges the overlay BLUEPRINT.DEST.yml onto the blueprint (Kamal's
`config/deploy.DEST.yml` convention), and problems in it are reported at its own lines."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cloudstack_deploy.blueprint import BlueprintError, load_blueprint
from cloudstack_deploy.blueprint_overlay import destination_override, overlay_path
from cloudstack_deploy.envctx import recall_blueprint, remember_blueprint
from cloudstack_deploy.state import EnvState
from tests.support.cli import cli

DEMO = Path(__file__).resolve().parents[1] / "blueprints" / "demo.yml"


@pytest.fixture
def app(tmp_path: Path) -> Path:
    path = tmp_path / "app.yml"
    text = DEMO.read_text().replace("context: ../examples/demo", f"context: {DEMO.parent.parent / 'examples/demo'}")
    path.write_text(text)
    return path


def test_the_overlay_is_deep_merged_and_set_still_wins(app: Path) -> None:
    (app.parent / "app.staging.yml").write_text("roles:\n  web:\n    count: 3\nenv:\n  clear:\n    STAGE: staging\n")
    bp = load_blueprint(app, [destination_override("staging"), "roles.worker.count=0"])
    assert bp.roles["web"].count == 3
    assert bp.roles["worker"].count == 0
    assert bp.env.clear["STAGE"] == "staging"
    assert bp.roles["web"].proxy is not None  # the rest of roles.web is the blueprint's
    assert load_blueprint(app).roles["web"].count == 1
    assert load_blueprint(app, [destination_override("staging"), "roles.web.count=2"]).roles["web"].count == 2


def test_a_problem_in_the_overlay_cites_the_overlay_line(app: Path) -> None:
    overlay = app.parent / "app.bad.yml"
    overlay.write_text("# staging\nroles:\n  web:\n    count: many\n")
    result = cli("validate", str(app), "-d", "bad")
    assert result.exit_code == 2
    assert result.stderr == f"{overlay}:4: roles.web.count: expected an integer, got 'many'\n"


def test_a_missing_overlay_is_one_line_naming_the_file(app: Path) -> None:
    result = cli("validate", str(app), "--destination", "prod")
    assert result.exit_code == 2
    assert result.stderr == (f"{app.parent / 'app.prod.yml'}: no such file: destination 'prod' is read from "
                             f"this overlay beside app.yml\n")


@pytest.mark.parametrize("name", ["../etc", "a.b", ""])
def test_a_destination_name_cannot_leave_the_folder(app: Path, name: str) -> None:
    result = cli("validate", str(app), "-d", name)
    assert result.exit_code == 2
    assert "1-40 letters, digits" in result.stderr
    with pytest.raises(BlueprintError, match="a destination name is 1-40"):
        load_blueprint(app, [destination_override(name)])


def test_an_overlay_that_is_not_a_mapping_is_refused(app: Path) -> None:
    (app.parent / "app.list.yml").write_text("- roles\n")
    with pytest.raises(BlueprintError) as err:
        load_blueprint(app, [destination_override("list")])
    assert str(err.value) == (f"{app.parent / 'app.list.yml'}:1: expected a mapping of blueprint keys to "
                              f"merge onto app.yml, got a list")


def test_overlay_files_sit_beside_the_blueprint() -> None:
    assert overlay_path("config/csdeploy.yml", "staging") == Path("config/csdeploy.staging.yml")
    assert overlay_path("x/app.yaml", "p") == Path("x/app.p.yaml")
    assert overlay_path("app", "p") == Path("app.p")


def test_the_environment_remembers_its_destination(app: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Day-2 commands (`status --env E`) load the blueprint the environment was made from:
    with the destination it was made with."""
    monkeypatch.setenv("CSDEPLOY_HOME", str(tmp_path / "home"))
    (app.parent / "app.staging.yml").write_text("roles:\n  web:\n    count: 4\n")
    state = EnvState("stage")
    remember_blueprint(state, str(app), (destination_override("staging"),))
    assert json.loads((state.dir / "blueprint.json").read_text())["overrides"] == ["--destination=staging"]
    assert recall_blueprint(state, None, ()).roles["web"].count == 4


def test_deploy_dry_run_takes_the_destination_too(app: Path) -> None:
    shutil.copy(app, app.parent / "other.yml")
    (app.parent / "app.bad.yml").write_text("roles:\n  web:\n    count: many\n")
    for command in (["plan", str(app), "--env", "x"], ["create-env", str(app), "--env", "x"],
                    ["build", str(app)]):
        result = cli(*command, "-d", "bad")
        assert result.exit_code == 2, (command, result.output)
        assert f"{app.parent / 'app.bad.yml'}:3: roles.web.count" in result.stderr, command
