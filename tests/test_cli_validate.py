"""`csdeploy validate`: exit codes and what lands on stdout and stderr."""

from __future__ import annotations

from pathlib import Path

from tests.support.cli import cli

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "blueprints" / "demo.yml")
FIXTURES = Path(__file__).parent / "fixtures" / "blueprints"


def test_valid_blueprint_exits_0_with_a_summary() -> None:
    result = cli("validate", DEMO)
    assert result.exit_code == 0, result.output
    assert result.stdout == (f"{DEMO}: valid (service demo: roles web×1, worker×1; "
                             "accessories db, redis)\n")


def test_minimal_blueprint_is_valid() -> None:
    result = cli("validate", str(ROOT / "blueprints" / "minimal.yml"))
    assert result.exit_code == 0, result.output


def test_bad_blueprint_exits_2_and_lists_every_problem_on_stderr() -> None:
    path = str(FIXTURES / "many_problems.yml")
    result = cli("validate", path)
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 10
    assert f"{path}:12: roles.web.count: expected an integer, got 'two'" in lines
    assert f"{path}:7: cloud.public_acess: unknown key 'public_acess' (did you mean 'public_access'?)" in lines
    assert all(line.startswith(f"{path}:") for line in lines)


def test_set_overrides_are_applied() -> None:
    result = cli("validate", DEMO, "--set", "roles.web.count=3",
                                       "--set", "roles.worker.count=0")
    assert result.exit_code == 0, result.output
    assert "roles web×3, worker×0" in result.stdout


def test_a_bad_override_exits_2_naming_the_override() -> None:
    result = cli("validate", DEMO, "--set", "roles.web.count=two")
    assert result.exit_code == 2
    assert result.stderr == f"{DEMO} (--set roles.web.count): roles.web.count: expected an integer, got 'two'\n"


def test_a_missing_file_exits_2_naming_the_path(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.yml")
    result = cli("validate", missing)
    assert result.exit_code == 2
    assert result.stderr == f"{missing}: no such file\n"


def test_a_literal_password_never_reaches_the_terminal() -> None:
    result = cli("validate", str(FIXTURES / "literal_password.yml"))
    assert result.exit_code == 2
    assert "registry.password: this looks like a literal password" in result.stderr
    assert "s3cr3t-Pa55word" not in result.output + result.stderr


def test_a_database_whose_data_no_volume_keeps_is_noted_and_a_kept_one_is_not() -> None:
    """PostgreSQL's data directory on no volume lives in the container's anonymous volume: an
    `accessory upgrade` (or remove + start) would start it empty. validate says so; the demo's
    db (a directory of its disk) and its Redis (a cache nobody backs up) get no such note."""
    result = cli("validate", DEMO, "--set", "accessories.db.volumes=[]")
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stdout.splitlines() if line.startswith("note: ")]
    assert notes == ["note: accessories.db: /var/lib/postgresql/data (where registry.lab:5000/postgres:15 keeps "
                     "its data) is on no volume, so its data is lost whenever the container is created again "
                     "(accessory upgrade, remove then start, a changed setting); keep it on a named volume "
                     '(`volumes: ["db-data:/var/lib/postgresql/data"]`) or a directory of the accessory\'s disk'], \
        result.stdout
    kept = cli("validate", DEMO, "--set", 'accessories.db.volumes=["db-data:/var/lib/postgresql/data/"]')
    assert "note:" not in kept.stdout, kept.stdout
    backed_up = cli("validate", DEMO, "--set", "accessories.redis.backups.keep=3")
    assert backed_up.exit_code == 0, backed_up.output
    assert "note: accessories.redis: /data (where registry.lab:5000/redis:7 keeps its data) is on no volume" \
        in backed_up.stdout, backed_up.stdout
