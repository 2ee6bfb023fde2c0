"""Blueprints written to hurt: bombs, overflows, odd bytes and escape sequences.

Each one must end as `BlueprintError` lines that name the file (and the line where there
is one), quickly and in bounded memory, never as a traceback or a terminal takeover.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from cloudstack_deploy.blueprint import MAX_VALUES, BlueprintError, load_blueprint
from cloudstack_deploy.blueprint_schema import parse_duration
from cloudstack_deploy.cli import main

DEMO = Path(__file__).resolve().parents[1] / "blueprints" / "demo.yml"
MINIMAL = Path(__file__).resolve().parents[1] / "blueprints" / "minimal.yml"


def lines_of(path: str | Path, overrides: tuple[str, ...] = ()) -> list[str]:
    with pytest.raises(BlueprintError) as err:
        load_blueprint(path, list(overrides))
    return str(err.value).splitlines()


@pytest.fixture
def bounded() -> Iterator[Callable[[], None]]:
    """Fails the test if it allocated more than 20 MB or used more than 5 s of CPU (CPU, not
    wall time: a loaded machine stretched the wall time of a refusal that took 0.3 s of CPU to
    7.5 s; an expansion that is not bounded takes minutes of CPU)."""
    tracemalloc.start()
    started = time.process_time()

    def check() -> None:
        peak = tracemalloc.get_traced_memory()[1]
        assert peak < 20 * 2**20, f"peak memory {peak / 2**20:.0f} MB"
        assert time.process_time() - started < 5, f"{time.process_time() - started:.1f} s of CPU"

    yield check
    tracemalloc.stop()


def alias_bomb(levels: int = 9) -> str:
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


# ---- memory bombs -------------------------------------------------------------------------------
def test_an_alias_bomb_is_refused_in_bounded_memory(tmp_path: Path, bounded: Callable[[], None]) -> None:
    path = tmp_path / "bomb.yml"
    path.write_text(alias_bomb())  # 9**9 strings once expanded; about 400 bytes of YAML
    [line] = lines_of(path)
    bounded()
    assert line == (f"{path}:5: a4: the blueprint expands to more than {MAX_VALUES} values through "
                    "its YAML aliases; write the values out instead")


def test_a_merge_key_bomb_is_refused_in_bounded_memory(tmp_path: Path, bounded: Callable[[], None]) -> None:
    text = "m0: &m0 {k: 1}\n" + "".join(f"m{i}: &m{i} {{<<: [*m{i - 1}, *m{i - 1}]}}\n" for i in range(1, 40))
    path = tmp_path / "merge.yml"
    path.write_text(text)  # each level doubles the merged list: 2**39 entries at the end
    [line] = lines_of(path)
    bounded()
    assert line.startswith(f"{path}:") and f"more than {MAX_VALUES} values" in line


def test_an_alias_bomb_in_an_override_is_refused(bounded: Callable[[], None]) -> None:
    value = "{" + alias_bomb().strip().replace("\n", ", ") + "}"
    [line] = lines_of(MINIMAL, (f"env.clear.X={value}",))
    bounded()
    assert line.startswith(f"{MINIMAL} (--set env.clear.X): ") and f"more than {MAX_VALUES} values" in line


@pytest.mark.parametrize("where", ["file", "override"])
def test_20000_levels_of_nesting_is_one_line_naming_the_place(tmp_path: Path, where: str) -> None:
    deep = "[" * 20000 + "]" * 20000
    if where == "file":
        path = tmp_path / "deep.yml"
        path.write_text(f"service: {deep}\n")
        assert lines_of(path) == [f"{path}:1: the blueprint is nested more than 50 levels deep"]
    else:
        assert lines_of(MINIMAL, (f"service={deep}",)) == [
            f"{MINIMAL} (--set service): service: the value is nested more than 50 levels deep"]


@pytest.mark.parametrize("path", [".".join(["env"] * 60000), "roles." + "x" * 100_000 + ".count"])
def test_a_huge_override_path_is_refused_at_once(path: str, bounded: Callable[[], None]) -> None:
    """Each part of a --set path used to cost a copy of the path: 60,000 parts took minutes."""
    [line] = lines_of(MINIMAL, (f"{path}=1",))
    bounded()
    assert line.startswith(f"{MINIMAL} (--set {path[:57]}...): the path before '=' is ")
    assert line.endswith("; at most 200 characters and 50 parts")


def test_a_50_mb_blueprint_is_not_read_whole(tmp_path: Path, bounded: Callable[[], None]) -> None:
    path = tmp_path / "huge.yml"
    with path.open("w") as f:
        f.write("# " + "x" * 70 + "\n")
        f.truncate(50 * 2**20)
    assert lines_of(path) == [f"{path}: the file is larger than 256 KiB, the most a blueprint may be"]
    bounded()


def test_an_endless_file_is_not_read_forever(bounded: Callable[[], None]) -> None:
    assert lines_of("/dev/zero") == ["/dev/zero: is a device, not a blueprint file; csdeploy reads regular "
                                     "files only"]
    bounded()


def test_a_fifo_with_no_writer_is_refused_without_hanging(tmp_path: Path) -> None:
    """Opening a FIFO for reading blocks until a writer comes: the blueprint reader opens it
    without blocking and refuses it (a subprocess with a timeout, so a regression fails
    instead of hanging the suite)."""
    fifo = tmp_path / "app.yml"
    os.mkfifo(fifo)
    proc = subprocess.run([sys.executable, "-m", "cloudstack_deploy", "validate", str(fifo)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr == f"{fifo}: is a FIFO (named pipe), not a blueprint file; csdeploy reads regular files only\n"


def test_a_directory_says_so(tmp_path: Path) -> None:
    assert lines_of(tmp_path) == [f"{tmp_path}: is a directory, not a blueprint file"]


@pytest.mark.parametrize("override, expected", [
    ("roles.web.count=100000000000", "roles.web.count: must be 0-1000 (csdeploy runs at most 1000 VMs per "
                                     "role), got 100000000000"),
    ("roles.web.count=1001", "roles.web.count: must be 0-1000"),
    ("accessories.db.disk.size=10000000000", "accessories.db.disk.size: must be 1-65536 GB, got 10000000000"),
    ("retain_versions=99999999999999999999", "retain_versions: must be 1-1000"),
    ("rollout.batch=100000", "rollout.batch: must be 1-1000"),
])
def test_counts_and_sizes_have_an_upper_bound_that_the_message_states(override: str, expected: str) -> None:
    [line] = lines_of(DEMO, (override,))
    assert line.startswith(f"{DEMO} (--set {override.split('=')[0]}): {expected}")


# ---- values that used to be tracebacks ----------------------------------------------------------
@pytest.mark.parametrize("override, expected", [
    ("ttl=99999999999999w", "ttl: a duration may be at most 3650d (10 years), got '99999999999999w'"),
    ("ttl=5000000d", "ttl: a duration may be at most 3650d (10 years), got '5000000d'"),
    ("rollout.lock_ttl=99999999999999999999m", "rollout.lock_ttl: a duration may be at most 3650d"),
    ("roles.web.count=!!int abc", "roles.web.count: cannot read 'abc' as !!int"),
    ("roles.web.count=!!float abc", "roles.web.count: cannot read 'abc' as !!float"),
    ("roles.web.proxy.ssl=!!bool maybe", "roles.web.proxy.ssl: cannot read 'maybe' as !!bool"),
    ("service=!!timestamp yesterday", "service: cannot read 'yesterday' as !!timestamp"),
    ("service=!!str [a]", "service: the tag !!str does not fit a list"),
    ("roles.worker.healthcheck.readiness_delay=.inf", "roles.worker.healthcheck.readiness_delay: must be a "
                                                      "finite number of seconds, got inf"),
    ("roles.worker.healthcheck.readiness_delay=.nan", "roles.worker.healthcheck.readiness_delay: must be a "
                                                      "finite number of seconds, got nan"),
    ("roles.worker.healthcheck.interval=1.0e+300", "roles.worker.healthcheck.interval: must be more than 0 and "
                                                "at most 86400 seconds (a day), got 1e+300"),
    ("roles.web.proxy.deploy_timeout=-.inf", "roles.web.proxy.deploy_timeout: must be a finite number"),
])
def test_overflowing_or_unreadable_values_are_one_line_naming_the_override(override: str, expected: str) -> None:
    [line] = lines_of(DEMO, (override,))
    assert line.startswith(f"{DEMO} (--set {override.split('=')[0]}): {expected}")


def test_an_overflowing_ttl_in_the_file_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bp.yml"
    path.write_text(MINIMAL.read_text() + "ttl: 5000000d\n")
    line_no = len(path.read_text().splitlines())
    assert lines_of(path) == [f"{path}:{line_no}: ttl: a duration may be at most 3650d (10 years), got '5000000d'"]


def test_the_ttl_flag_refuses_an_overflow_with_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="at most 3650d"):
        parse_duration("99999999999999w")
    monkeypatch.setenv("CSDEPLOY_HOME", str(tmp_path))
    res = CliRunner().invoke(main, ["create-env", str(MINIMAL), "--env", "x", "--skip-rollout",
                                    "--ttl", "99999999999999w"])
    assert res.exit_code == 2
    assert "--ttl: a duration may be at most 3650d (10 years)" in res.stderr
    assert "Traceback" not in res.output + res.stderr


@pytest.mark.parametrize("content, expected", [
    (b"service: demo\x00\n", ":1: character '\\x00' is not allowed in YAML"),
    (b"service: demo\nimage: a\x07b\n", ":2: character '\\x07' is not allowed in YAML"),
    (b"service: d\xe9mo\n", ":1: not a UTF-8 text file"),
])
def test_bytes_yaml_cannot_hold_name_file_and_line(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "bp.yml"
    path.write_bytes(content)
    assert lines_of(path) == [f"{path}{expected}"]


# ---- what is echoed back -------------------------------------------------------------------------
def test_escape_sequences_and_newlines_in_keys_are_escaped(tmp_path: Path) -> None:
    path = tmp_path / "bp.yml"
    path.write_text(MINIMAL.read_text() + '"\\e[2J\\e[31mred": 1\n"x\\nother.yml:1: fake": 2\n')
    lines = lines_of(path)
    assert len(lines) == 2, lines
    assert all(line.startswith(f"{path}:") for line in lines)
    assert "\x1b" not in "".join(lines)
    assert lines[0].endswith(": \\x1b[2J\\x1b[31mred: unknown key '\\x1b[2J\\x1b[31mred'")
    assert lines[1].endswith(": x\\nother.yml:1: fake: unknown key 'x\\nother.yml:1: fake'")


def test_a_huge_key_is_cut_in_messages(tmp_path: Path) -> None:
    path = tmp_path / "bp.yml"
    path.write_text(MINIMAL.read_text() + "k" * 500_000 + ": 1\n")
    [line] = lines_of(path)
    assert len(line) < 300 and line.startswith(f"{path}:")


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n", "service: x\n", "[1, 2]\n", "just text\n",
                                  "roles: {}\n"])
def test_every_problem_names_the_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bp.yml"
    path.write_text(text)
    assert all(line.startswith(f"{path}:") for line in lines_of(path))


def test_the_cli_prints_one_escaped_line_per_problem(tmp_path: Path) -> None:
    path = tmp_path / "bp.yml"
    path.write_bytes(MINIMAL.read_bytes() + b'"\\e]0;owned\\a\\u202e": 1\n')
    res = CliRunner().invoke(main, ["validate", str(path)])
    assert res.exit_code == 2
    assert res.stderr.count("\n") == 1
    assert "\x1b" not in res.stderr and "\x07" not in res.stderr and "\u202e" not in res.stderr


# ---- disk mounts: the blueprint accepts exactly what the provisioner accepts ----------------------
MOUNTS = ["/data", "/data/db", "/srv/app-data", "/mnt/x_y.z", "/etc", "/var/lib/docker", "/data/../etc",
          "/data/./x", "/data//x", "/data/.hidden", "/", "data", "/data/a b", "/data/a:b", "/data/$x",
          "/data/x';touch${IFS}PWNED;'", "/data/`id`", "/data/x\ny", "/proc/x", "/run/data", "/dev/sdb",
          "/" + "d" * 250, "/données"]


@pytest.mark.parametrize("mount", MOUNTS)
def test_validation_accepts_a_mount_exactly_when_the_provisioner_does(mount: str) -> None:
    from cloudstack_deploy.errors import InvalidInput
    from cloudstack_deploy.provision.userdata import DataDisk

    try:
        DataDisk("csd-db", mount)
        provisioner_ok = True
    except InvalidInput:
        provisioner_ok = False
    try:
        load_blueprint(DEMO, [f"accessories.db.disk.mount={_yaml_str(mount)}"])
        blueprint_ok = True
    except BlueprintError as err:
        blueprint_ok = False
        [line] = str(err).splitlines()
        assert line.startswith(f"{DEMO} (--set accessories.db.disk.mount): accessories.db.disk.mount: ")
        assert "cannot be a mount point" in line
    assert blueprint_ok == provisioner_ok
    assert blueprint_ok == (mount in ("/data", "/data/db", "/srv/app-data", "/mnt/x_y.z"))


def _yaml_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def test_a_trailing_slash_is_the_same_mount() -> None:
    bp = load_blueprint(DEMO, ["accessories.db.disk.mount=/data/pg/"])
    assert bp.accessories["db"].disk is not None and bp.accessories["db"].disk.mount == "/data/pg"
