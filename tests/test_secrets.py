"""Secrets: found where the user put them, every missing one named, no value ever shown."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cloudstack_deploy.blueprint import Blueprint, load_blueprint
from cloudstack_deploy.errors import CsdeployError
from cloudstack_deploy.secrets import Secrets, SecretsError, load_secrets, read_dotenv

BLUEPRINT = """\
service: demo
image: registry.lab:5000/demo-app
cloud:
  zone: lab-zone-1
  template: "Debian 12 bookworm*"
  service_offering: small
  ssh: {allow_from: [127.0.0.0/8]}
roles:
  web:
    env: {secret: [DB_PASSWORD, API_TOKEN]}
registry: {server: registry.lab:5000, username: csdeploy, password: REGISTRY_PASSWORD}
secrets: [REGISTRY_PASSWORD, DB_PASSWORD, API_TOKEN]
"""

VALUES = {"REGISTRY_PASSWORD": "reg-pw-91x", "DB_PASSWORD": "db-pw-27q", "API_TOKEN": "tok-55z"}


def make_blueprint(tmp_path: Path, secrets_file: str | None = None) -> Blueprint:
    text = BLUEPRINT + (f"secrets_file: {secrets_file}\n" if secrets_file else "")
    path = tmp_path / "bp.yml"
    path.write_text(text)
    return load_blueprint(path)


def test_values_come_from_the_environment(tmp_path: Path) -> None:
    secrets = load_secrets(make_blueprint(tmp_path), environ=dict(VALUES, UNRELATED="x"))
    assert dict(secrets) == VALUES
    assert secrets.source_of("API_TOKEN") == "environment"


def test_values_come_from_the_dotenv_file_next_to_the_blueprint(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "# lab secrets\n"
        "export REGISTRY_PASSWORD=reg-pw-91x\n"
        "DB_PASSWORD='db-pw-27q'   # single quotes are literal\n"
        'API_TOKEN="tok-55z"\n'
    )
    secrets = load_secrets(make_blueprint(tmp_path, secrets_file=".env"), environ={})
    assert dict(secrets) == VALUES
    assert secrets.source_of("DB_PASSWORD") == str(tmp_path / ".env")


def test_the_environment_wins_over_the_file(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("REGISTRY_PASSWORD=from-file\nDB_PASSWORD=db\nAPI_TOKEN=tok\n")
    secrets = load_secrets(make_blueprint(tmp_path, ".env"), environ={"REGISTRY_PASSWORD": "from-env"})
    assert secrets["REGISTRY_PASSWORD"] == "from-env"
    assert secrets["DB_PASSWORD"] == "db"


def test_an_explicit_dotenv_path_replaces_the_blueprints(tmp_path: Path) -> None:
    other = tmp_path / "ci.env"
    other.write_text("REGISTRY_PASSWORD=a\nDB_PASSWORD=b\nAPI_TOKEN=c\n")
    (tmp_path / ".env").write_text("REGISTRY_PASSWORD=wrong\n")
    secrets = load_secrets(make_blueprint(tmp_path, ".env"), environ={}, dotenv_path=other)
    assert dict(secrets) == {"REGISTRY_PASSWORD": "a", "DB_PASSWORD": "b", "API_TOKEN": "c"}


def test_every_missing_secret_is_named_with_where_we_looked(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("DB_PASSWORD=db-pw-27q\n")
    with pytest.raises(SecretsError) as info:
        load_secrets(make_blueprint(tmp_path, ".env"), environ={"API_TOKEN": "tok-55z"})
    message = str(info.value)
    assert message == (f"missing secret: REGISTRY_PASSWORD (looked in the environment and "
                       f"{tmp_path / '.env'})")
    assert info.value.missing == ("REGISTRY_PASSWORD",)
    assert isinstance(info.value, CsdeployError) and "REGISTRY_PASSWORD" in (info.value.hint or "")
    assert "db-pw-27q" not in message and "tok-55z" not in message


def test_missing_secrets_without_a_file(tmp_path: Path) -> None:
    with pytest.raises(SecretsError) as info:
        load_secrets(make_blueprint(tmp_path), environ={"DB_PASSWORD": "db-pw-27q"})
    assert str(info.value) == ("missing secrets: REGISTRY_PASSWORD, API_TOKEN "
                               "(looked in the environment)")


def test_a_named_file_that_does_not_exist_is_mentioned(tmp_path: Path) -> None:
    with pytest.raises(SecretsError, match=r"\.env \(not found\)"):
        load_secrets(make_blueprint(tmp_path, ".env"), environ={})


def test_an_empty_value_counts_as_missing(tmp_path: Path) -> None:
    with pytest.raises(SecretsError) as info:
        load_secrets(make_blueprint(tmp_path), environ=dict(VALUES, DB_PASSWORD=""))
    assert info.value.missing == ("DB_PASSWORD",)


def test_secrets_never_show_values_when_printed(tmp_path: Path) -> None:
    secrets = load_secrets(make_blueprint(tmp_path), environ=VALUES)
    for text in (repr(secrets), str(secrets), f"{secrets}", repr([secrets])):
        assert not any(value in text for value in VALUES.values())
    assert repr(secrets) == "Secrets(names=['API_TOKEN', 'DB_PASSWORD', 'REGISTRY_PASSWORD'])"


def test_values_for_redaction_lists_every_value_and_its_derived_forms() -> None:
    secrets = Secrets({"A": "one", "B": "two", "C": ""})
    forms = secrets.values_for_redaction()
    assert {"one", "two", "b25l", "dHdv"} <= forms  # the values, and their base64
    assert "" not in forms


def test_dotenv_parsing_rules(tmp_path: Path) -> None:
    path = tmp_path / "x.env"
    path.write_text(
        "\n"
        "  # indented comment\n"
        "PLAIN=hello world  # trailing comment\n"
        "HASH=abc#def\n"
        "DOLLAR=$HOME/x\n"
        "SINGLE='no $expansion \\n here'\n"
        'DOUBLE="line1\\nline2 \\"quoted\\""\n'
        "export  EXPORTED=yes\n"
        "EMPTY=\n"
        "EQUALS=a=b=c\n"
    )
    assert read_dotenv(path) == {
        "PLAIN": "hello world",
        "HASH": "abc#def",
        "DOLLAR": "$HOME/x",
        "SINGLE": "no $expansion \\n here",
        "DOUBLE": 'line1\nline2 "quoted"',
        "EXPORTED": "yes",
        "EMPTY": "",
        "EQUALS": "a=b=c",
    }


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("this is not an assignment s3cr3t", ":2: expected KEY=VALUE"),
        ("1BAD=s3cr3t", ":2: expected KEY=VALUE"),
        ("OPEN='s3cr3t", ":2: OPEN: unterminated single quote"),
        ('OPEN="s3cr3t', ":2: OPEN: unterminated double quote"),
    ],
)
def test_malformed_dotenv_lines_name_the_line_but_not_the_value(
    tmp_path: Path, line: str, expected: str
) -> None:
    path = tmp_path / "x.env"
    path.write_text(f"GOOD=1\n{line}\n")
    with pytest.raises(SecretsError) as info:
        read_dotenv(path)
    assert str(info.value) == f"{path}{expected}"
    assert "s3cr3t" not in str(info.value)


# ---- what a secrets file may be ----------------------------------------------------------------------
def _load(tmp_path: Path, secrets_file: str) -> Secrets:
    return load_secrets(make_blueprint(tmp_path, secrets_file), environ={})


def test_a_symlink_beside_or_below_the_blueprint_is_followed(tmp_path: Path) -> None:
    (tmp_path / "envs").mkdir()
    (tmp_path / "envs" / "prod.env").write_text("".join(f"{k}={v}\n" for k, v in VALUES.items()))
    (tmp_path / ".env").symlink_to("envs/prod.env")
    assert dict(_load(tmp_path, ".env")) == VALUES


@pytest.mark.parametrize("target", ["/etc/passwd", "/etc/shadow", "../outside.env"])
def test_a_symlink_to_elsewhere_is_refused(tmp_path: Path, target: str) -> None:
    (tmp_path / "outside.env").write_text("DB_PASSWORD=x\n")
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / ".env").symlink_to(target)
    with pytest.raises(SecretsError) as err:
        load_secrets(make_blueprint(tmp_path / "app", ".env"), environ={})
    assert f"{tmp_path / 'app' / '.env'} is a symlink to " in str(err.value)
    assert f"outside {tmp_path / 'app'}: refusing to read it" in str(err.value)


@pytest.mark.parametrize("link", ["/etc", "../outside"])
def test_a_symlinked_directory_on_the_way_to_elsewhere_is_refused(tmp_path: Path, link: str) -> None:
    """`secrets_file: etclink/shadow` with `etclink -> /etc`: the file itself is no symlink,
    its directory is; csdeploy must not read the file there (as root it could)."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "shadow").write_text("DB_PASSWORD=taken-from-outside\n")
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "etclink").symlink_to(link)
    with pytest.raises(SecretsError) as err:
        load_secrets(make_blueprint(tmp_path / "app", "etclink/shadow"), environ={})
    target = os.path.realpath(tmp_path / "app" / "etclink")
    assert str(err.value) == (f"secrets file {tmp_path / 'app' / 'etclink' / 'shadow'} goes through "
                              f"{tmp_path / 'app' / 'etclink'}, a symlink to {target}, outside "
                              f"{os.path.realpath(tmp_path / 'app')}: refusing to read it")
    assert "taken-from-outside" not in str(err.value) + str(err.value.hint)


def test_symlinks_that_stay_inside_and_explicit_parent_paths_are_followed(tmp_path: Path) -> None:
    (tmp_path / "shared" / "envs").mkdir(parents=True)
    (tmp_path / "shared" / "envs" / "prod.env").write_text("".join(f"{k}={v}\n" for k, v in VALUES.items()))
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "envs").symlink_to("../app/real")
    (tmp_path / "app" / "real").symlink_to("../shared/envs")  # leaves app/: refused below
    with pytest.raises(SecretsError, match="goes through"):
        load_secrets(make_blueprint(tmp_path / "app", "envs/prod.env"), environ={})
    (tmp_path / "app" / "real").unlink()
    (tmp_path / "app" / "real").mkdir()
    (tmp_path / "app" / "real" / "prod.env").symlink_to("../../shared/envs/prod.env")  # leaves real/
    with pytest.raises(SecretsError, match="is a symlink to"):
        load_secrets(make_blueprint(tmp_path / "app", "envs/prod.env"), environ={})
    (tmp_path / "app" / "real" / "prod.env").unlink()
    (tmp_path / "app" / "real" / "prod.env").write_text("".join(f"{k}={v}\n" for k, v in VALUES.items()))
    assert dict(load_secrets(make_blueprint(tmp_path / "app", "envs/prod.env"), environ={})) == VALUES
    # `..` written in the blueprint is where the user said; no symlink took it there
    assert dict(load_secrets(make_blueprint(tmp_path / "app", "../shared/envs/prod.env"), environ={})) == VALUES


def test_a_dangling_symlink_says_so(tmp_path: Path) -> None:
    (tmp_path / ".env").symlink_to("gone.env")
    with pytest.raises(SecretsError, match=r"is a symlink to .*gone\.env, which does not exist"):
        _load(tmp_path, ".env")


def test_a_directory_is_reported_as_a_directory(tmp_path: Path) -> None:
    (tmp_path / ".env").mkdir()
    with pytest.raises(SecretsError) as err:
        _load(tmp_path, ".env")
    assert str(err.value) == f"secrets file {tmp_path / '.env'} is a directory, not a file of KEY=VALUE lines"


def test_a_fifo_is_reported_as_such_without_hanging(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / ".env")
    with pytest.raises(SecretsError) as err:
        _load(tmp_path, ".env")
    assert "is a FIFO (named pipe), not a file of KEY=VALUE lines" in str(err.value)


def test_a_device_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SecretsError, match="/dev/zero is a character device"):
        _load(tmp_path, "/dev/zero")


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to give a file to another user")
def test_a_file_of_another_user_is_refused(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text("DB_PASSWORD=x\n")
    os.chown(path, 65534, 65534)
    with pytest.raises(SecretsError) as err:
        _load(tmp_path, ".env")
    assert "belongs to another user (uid 65534)" in str(err.value)


def test_a_secrets_file_that_is_not_needed_is_not_touched(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / ".env")
    secrets = load_secrets(make_blueprint(tmp_path, ".env"), environ=VALUES)
    assert dict(secrets) == VALUES
