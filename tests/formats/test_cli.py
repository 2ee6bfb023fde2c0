"""The init / export / build commands as a user runs them: exit codes, messages, nothing written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.cli import cli_here

REPO = Path(__file__).resolve().parents[2]


def csdeploy(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`csdeploy ARGS` run from ``cwd``, in this process (what it prints and exits with)."""
    return cli_here(*args, cwd=cwd)


def csdeploy_process(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`csdeploy ARGS` as a process of its own, for what only a process shows (that it ends)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "cloudstack_deploy", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_bad_compose_exits_2_naming_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "docker-compose.yml").write_text("version: '7'\nservices:\n  web:\n    restart: always\n")
    proc = csdeploy("init", "--from-compose", "docker-compose.yml", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "docker-compose.yml:1: version: unknown Compose file version '7'" in proc.stderr
    assert "docker-compose.yml:3: services.web: has neither image nor build" in proc.stderr
    assert not (tmp_path / "csdeploy.yml").exists()


def test_kamal_erb_exits_2(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "deploy.yml").write_text("service: a\nimage: b\nservers: [<%= 1 %>]\n")
    proc = csdeploy("init", "--from-kamal", "config/deploy.yml", "--out", "bp.yml", cwd=tmp_path)
    assert proc.returncode == 2 and "config/deploy.yml:3: ERB" in proc.stderr, proc.stderr
    assert not (tmp_path / "bp.yml").exists()


def test_init_prints_what_was_not_carried_over_and_validates(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text("services:\n  web:\n    image: acme/app:1.2\n    ports: ['80:8080']\n"
                                           "    restart: always\n")
    proc = csdeploy("init", "--from-compose", "compose.yaml", "--set", "cloud.zone=zone-a", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "compose.yaml:5: services.web.restart" in proc.stderr and "tag '1.2' dropped" in proc.stderr
    assert "wrote csdeploy.yml" in proc.stdout
    check = csdeploy("validate", "csdeploy.yml", cwd=tmp_path)
    assert check.returncode == 0 and "zone: zone-a" in (tmp_path / "csdeploy.yml").read_text()
    again = csdeploy("init", "--from-compose", "compose.yaml", cwd=tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr


def test_build_without_a_build_section_exits_2(tmp_path: Path) -> None:
    proc = csdeploy("build", str(REPO / "blueprints" / "minimal.yml"), "--no-push", cwd=tmp_path)
    assert proc.returncode == 2 and "has no `build` section" in proc.stderr, proc.stderr
