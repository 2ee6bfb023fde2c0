"""Secrets from vaults (`secrets_source`): each adapter runs its vault's CLI, here a fake one on
PATH that logs its argv, its /proc/self/cmdline and its environment, and prints canned output.

The values must reach what the rollout writes (the role's env file), and never any argv, log
line or error message."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cloudstack_deploy import vaults
from cloudstack_deploy.blueprint import Blueprint, load_blueprint
from cloudstack_deploy.errors import InvalidInput, OperationFailed
from cloudstack_deploy.log import clear_secrets, configure_logging, get_logger
from cloudstack_deploy.rollout.contract import role_env
from cloudstack_deploy.secrets import SecretsError, load_secrets
from tests.support.cli import cli_here

from .rollout.test_commands import INVENTORY
from .test_secrets import BLUEPRINT

DB, TOKEN = "db-vault-Pw-7731", "tok-vault-Zq-9902"

FAKE = """\
#!{python}
import json, os, sys
here = os.path.dirname(os.path.abspath(__file__))
prog = os.path.basename(sys.argv[0])
with open(os.path.join(here, "calls.log"), "a") as log:
    cmdline = open("/proc/self/cmdline", "rb").read().decode(errors="replace").split("\\0")
    log.write(json.dumps({{"prog": prog, "argv": sys.argv[1:], "cmdline": cmdline,
                          "env": dict(os.environ)}}) + "\\n")
joined = " ".join(sys.argv[1:])
for needle, out, code in json.load(open(os.path.join(here, prog + ".json"))):
    if needle in joined:
        sys.stdout.write(out)
        sys.stderr.write("fake " + prog + " says no\\n" if code else "")
        sys.exit(code)
sys.stderr.write("fake " + prog + ": nothing canned for " + joined + "\\n")
sys.exit(3)
"""


@pytest.fixture(autouse=True)
def _fresh() -> None:
    vaults.forget()
    clear_secrets()


def fake_cli(tmp_path: Path, prog: str, canned: list[tuple[str, object, int]]) -> dict[str, str]:
    """A PATH with a fake ``prog``; each (needle, stdout, exit code) answers argv holding needle."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    script = bindir / prog
    script.write_text(FAKE.format(python=sys.executable))
    script.chmod(0o755)
    rows = [(n, out if isinstance(out, str) else json.dumps(out), code) for n, out, code in canned]
    (bindir / f"{prog}.json").write_text(json.dumps(rows))
    return {"PATH": f"{bindir}:/usr/bin:/bin", "REGISTRY_PASSWORD": "reg-env-pw-55"}


def logged(tmp_path: Path) -> list[dict]:
    path = tmp_path / "bin" / "calls.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def make_bp(tmp_path: Path, source: str) -> Blueprint:
    path = tmp_path / "bp.yml"
    path.write_text(BLUEPRINT + source)
    return load_blueprint(path)


def check_delivered(tmp_path: Path, bp: Blueprint, environ: dict[str, str]) -> None:
    """The vault's values reach the role's env file, and no argv or cmdline of the CLI."""
    stream = io.StringIO()
    configure_logging(stream=stream, verbose=3)
    secrets = load_secrets(bp, environ=environ)
    assert secrets["DB_PASSWORD"] == DB and secrets["API_TOKEN"] == TOKEN
    assert secrets.source_of("REGISTRY_PASSWORD") == "environment"
    assert secrets.source_of("DB_PASSWORD").startswith(bp.secrets_source.adapter + " (")
    env_file = role_env(bp, "web", INVENTORY, dict(secrets), "v1").env_file()
    assert f"DB_PASSWORD={DB}\n" in env_file and f"API_TOKEN={TOKEN}\n" in env_file
    calls = logged(tmp_path)
    assert calls, "the vault's CLI was not run"
    for call in calls:
        text = json.dumps([call["argv"], call["cmdline"]])
        assert DB not in text and TOKEN not in text
        assert "REGISTRY_PASSWORD" not in call["env"]  # the other secrets stay out of its environment
    get_logger("test").warning("leak?", value=DB, other=f"x{TOKEN}x")
    assert DB not in stream.getvalue() and TOKEN not in stream.getvalue()
    assert "[REDACTED]" in stream.getvalue()


def test_1password_reads_fields_of_one_item_in_one_call(tmp_path: Path) -> None:
    fields = [{"id": "a", "label": "DB_PASSWORD", "value": DB, "reference": "op://Prod/App/DB_PASSWORD"},
              {"id": "b", "label": "API_TOKEN", "value": TOKEN, "reference": "op://Prod/App/API_TOKEN"}]
    environ = fake_cli(tmp_path, "op", [("item get App", fields, 0)])
    bp = make_bp(tmp_path, "secrets_source: {adapter: 1password, account: team, from: Prod/App}\n")
    check_delivered(tmp_path, bp, environ)
    (call,) = logged(tmp_path)
    assert call["argv"] == ["item", "get", "App", "--vault", "Prod", "--format", "json",
                            "--fields", "label=DB_PASSWORD,label=API_TOKEN", "--account", "team"]


def test_bitwarden_reads_the_login_password_and_custom_fields(tmp_path: Path) -> None:
    item = {"login": {"password": DB}, "fields": [{"name": "API_TOKEN", "value": TOKEN}]}
    environ = fake_cli(tmp_path, "bw", [("get item app", item, 0)])
    environ["BW_SESSION"] = "session-from-bw-unlock"
    bp = make_bp(tmp_path, "secrets_source:\n  adapter: bitwarden\n"
                           "  paths: {DB_PASSWORD: app, API_TOKEN: app/API_TOKEN}\n")
    check_delivered(tmp_path, bp, environ)
    (call,) = logged(tmp_path)  # one item, one call; the session travels in the environment
    assert call["argv"] == ["get", "item", "app", "--nointeraction"]
    assert call["env"]["BW_SESSION"] == "session-from-bw-unlock"


def test_bitwarden_secrets_manager_lists_a_project(tmp_path: Path) -> None:
    listing = [{"key": "DB_PASSWORD", "value": DB}, {"key": "API_TOKEN", "value": TOKEN},
               {"key": "OTHER", "value": "unused-value"}]
    environ = fake_cli(tmp_path, "bws", [("secret list", listing, 0)])
    bp = make_bp(tmp_path, "secrets_source: {adapter: bitwarden-sm, from: 5f1c-project}\n")
    check_delivered(tmp_path, bp, environ)
    assert logged(tmp_path)[0]["argv"] == ["secret", "list", "5f1c-project", "--output", "json"]


def test_lastpass_shows_every_entry_in_one_call(tmp_path: Path) -> None:
    entries = [{"name": "DB_PASSWORD", "fullname": "Prod/DB_PASSWORD", "password": DB},
               {"name": "API_TOKEN", "fullname": "Prod/API_TOKEN", "password": TOKEN}]
    environ = fake_cli(tmp_path, "lpass", [("show", entries, 0)])
    bp = make_bp(tmp_path, "secrets_source: {adapter: lastpass, from: Prod}\n")
    check_delivered(tmp_path, bp, environ)
    assert logged(tmp_path)[0]["argv"] == ["show", "--json", "Prod/DB_PASSWORD", "Prod/API_TOKEN"]


def test_aws_secrets_manager_batch_gets_and_reads_json_keys(tmp_path: Path) -> None:
    answer = {"SecretValues": [{"Name": "prod/DB_PASSWORD", "SecretString": DB},
                               {"Name": "prod/app", "SecretString": json.dumps({"token": TOKEN})}]}
    environ = fake_cli(tmp_path, "aws", [("batch-get-secret-value", answer, 0)])
    bp = make_bp(tmp_path, "secrets_source:\n  adapter: aws_secrets_manager\n  account: prod-profile\n"
                           "  from: prod\n  paths: {API_TOKEN: prod/app/token}\n")
    check_delivered(tmp_path, bp, environ)
    assert logged(tmp_path)[0]["argv"] == [
        "secretsmanager", "batch-get-secret-value", "--secret-id-list", "prod/DB_PASSWORD", "prod/app/token",
        "--output", "json", "--profile", "prod-profile"]


def test_gcp_secret_manager_decodes_the_payload(tmp_path: Path) -> None:
    def payload(value: str) -> dict:
        return {"name": "x", "payload": {"data": base64.b64encode(value.encode()).decode()}}

    environ = fake_cli(tmp_path, "gcloud", [("--secret=db-password", payload(DB), 0),
                                            ("--secret=api-token", payload(TOKEN), 0)])
    bp = make_bp(tmp_path, "secrets_source:\n  adapter: gcp_secret_manager\n  account: me@example.com\n"
                           "  paths: {DB_PASSWORD: my-proj/db-password, API_TOKEN: my-proj/api-token/3}\n")
    check_delivered(tmp_path, bp, environ)
    assert [c["argv"] for c in logged(tmp_path)] == [
        ["secrets", "versions", "access", "latest", "--secret=db-password", "--format=json",
         "--project=my-proj", "--account=me@example.com"],
        ["secrets", "versions", "access", "3", "--secret=api-token", "--format=json",
         "--project=my-proj", "--account=me@example.com"]]


def test_doppler_gets_names_of_a_project_and_config(tmp_path: Path) -> None:
    answer = {"DB_PASSWORD": {"computed": DB, "raw": DB}, "API_TOKEN": {"computed": TOKEN, "raw": TOKEN}}
    environ = fake_cli(tmp_path, "doppler", [("secrets get", answer, 0)])
    bp = make_bp(tmp_path, "secrets_source: {adapter: doppler, from: myapp/prd}\n")
    check_delivered(tmp_path, bp, environ)
    assert logged(tmp_path)[0]["argv"] == ["secrets", "get", "DB_PASSWORD", "API_TOKEN", "--json",
                                           "--project", "myapp", "--config", "prd"]


def test_hashicorp_vault_reads_a_kv_v2_path_once(tmp_path: Path) -> None:
    answer = {"data": {"data": {"DB_PASSWORD": DB, "API_TOKEN": TOKEN}, "metadata": {"version": 3}}}
    environ = fake_cli(tmp_path, "vault", [("kv get", answer, 0)])
    environ["VAULT_TOKEN"] = "hvs.login-token"
    bp = make_bp(tmp_path, "secrets_source: {adapter: vault, from: secret/demo}\n")
    check_delivered(tmp_path, bp, environ)
    (call,) = logged(tmp_path)
    assert call["argv"] == ["kv", "get", "-format=json", "secret/demo"]
    assert call["env"]["VAULT_TOKEN"] == "hvs.login-token"


@pytest.mark.parametrize("output", [f"DB_PASSWORD={DB}\nexport API_TOKEN='{TOKEN}'\n",
                                    json.dumps({"DB_PASSWORD": DB, "API_TOKEN": TOKEN})])
def test_the_command_adapter_reads_dotenv_or_json(tmp_path: Path, output: str) -> None:
    environ = fake_cli(tmp_path, "fetch-secrets", [("", output, 0)])
    bp = make_bp(tmp_path, "secrets_source: {adapter: command, command: [fetch-secrets, --stage, prod]}\n")
    check_delivered(tmp_path, bp, environ)
    (call,) = logged(tmp_path)
    assert call["argv"] == ["--stage", "prod"]
    assert call["env"]["CSDEPLOY_SECRET_NAMES"] == "DB_PASSWORD API_TOKEN"


def test_the_vault_is_asked_only_for_what_is_set_nowhere_else_and_once(tmp_path: Path) -> None:
    environ = fake_cli(tmp_path, "vault", [("kv get", {"data": {"data": {"API_TOKEN": TOKEN}}}, 0)])
    bp = make_bp(tmp_path, "secrets_source: {adapter: vault, from: secret/demo}\n")
    environ["DB_PASSWORD"] = DB
    first = load_secrets(bp, environ=environ)
    again = load_secrets(bp, environ=environ)
    assert first.source_of("DB_PASSWORD") == "environment" and again["API_TOKEN"] == TOKEN
    assert len(logged(tmp_path)) == 1


def test_a_failing_vault_cli_names_the_secret_and_adapter_not_the_output(tmp_path: Path) -> None:
    environ = fake_cli(tmp_path, "op", [("item get", f"partial {DB}", 1)])
    bp = make_bp(tmp_path, "secrets_source: {adapter: 1password, from: Prod/App}\n")
    with pytest.raises(OperationFailed) as err:
        load_secrets(bp, environ=environ)
    text = str(err.value)
    assert err.value.exit_code == 1 and "\n" not in text
    assert "secret DB_PASSWORD" in text and "adapter 1password" in text and "fake op says no" in text
    assert DB not in text


def test_a_missing_cli_is_exit_2_naming_the_secret_and_the_command(tmp_path: Path) -> None:
    bp = make_bp(tmp_path, "secrets_source: {adapter: doppler, from: app/prd}\n")
    with pytest.raises(InvalidInput) as err:
        load_secrets(bp, environ={"PATH": str(tmp_path), "REGISTRY_PASSWORD": "reg-env-pw-55"})
    assert err.value.exit_code == 2
    assert str(err.value) == ("secret DB_PASSWORD: adapter doppler needs the `doppler` command, "
                              "which is not on PATH")


def test_a_name_the_vault_does_not_have_is_exit_2(tmp_path: Path) -> None:
    environ = fake_cli(tmp_path, "vault", [("kv get", {"data": {"data": {"DB_PASSWORD": DB}}}, 0)])
    bp = make_bp(tmp_path, "secrets_source: {adapter: vault, from: secret/demo}\n")
    with pytest.raises(InvalidInput, match=r"^secret API_TOKEN: adapter vault has no value at secret/demo/API_TOKEN$"):
        load_secrets(bp, environ=environ)


def test_a_vault_cli_that_hangs_times_out(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "lpass").write_text("#!/bin/sh\nexec sleep 30\n")
    (bindir / "lpass").chmod(0o755)
    bp = make_bp(tmp_path, "secrets_source: {adapter: lastpass, timeout: 0.5}\n")
    with pytest.raises(OperationFailed, match="secret DB_PASSWORD: adapter lastpass: `lpass` did not answer"):
        load_secrets(bp, environ={"PATH": f"{bindir}:/usr/bin:/bin", "REGISTRY_PASSWORD": "reg-env-pw-55"})


@pytest.mark.parametrize(("source", "message"), [
    ("secrets_source: {adapter: keychain}", "expected one of 1password"),
    ("secrets_source: {adapter: command}", "needs `command:`"),
    ("secrets_source: {adapter: vault, command: [x]}", "`command` is for the command adapter"),
    ("secrets_source: {adapter: vault, paths: {UNDECLARED: secret/x/y}}", "'UNDECLARED' is not declared"),
    ("secrets_source: {from: x}", "adapter: missing required field"),
])
def test_bad_secrets_source_is_refused_with_its_line(tmp_path: Path, source: str, message: str) -> None:
    with pytest.raises(InvalidInput) as err:
        make_bp(tmp_path, source + "\n")
    assert message in str(err.value) and "bp.yml:13" in str(err.value)


def test_secrets_print_shows_names_and_sources_never_values_off_a_terminal(tmp_path: Path) -> None:
    fields = [{"label": "DB_PASSWORD", "value": DB}, {"label": "API_TOKEN", "value": TOKEN}]
    environ = fake_cli(tmp_path, "op", [("item get App", fields, 0)])
    make_bp(tmp_path, "secrets_source: {adapter: 1password, from: Prod/App}\n")
    env = {**os.environ, **environ, "PATH": environ["PATH"] + ":" + os.environ["PATH"],
           "CSDEPLOY_HOME": str(tmp_path / "home"), "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    for extra in ([], ["--reveal"]):
        done = cli_here("secrets", "print", "--blueprint", str(tmp_path / "bp.yml"), *extra, env=env)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert lines == ["REGISTRY_PASSWORD  environment", "DB_PASSWORD        1password (Prod/App/DB_PASSWORD)",
                         "API_TOKEN          1password (Prod/App/API_TOKEN)"]
        assert DB not in done.stdout + done.stderr and "reg-env-pw-55" not in done.stdout
    assert "terminal only" in done.stderr


def test_secrets_print_with_a_failing_vault_exits_1_with_one_line(tmp_path: Path) -> None:
    environ = fake_cli(tmp_path, "bws", [("secret list", "", 1)])
    make_bp(tmp_path, "secrets_source: {adapter: bitwarden-sm}\n")
    env = {**os.environ, **environ, "PATH": environ["PATH"] + ":" + os.environ["PATH"],
           "CSDEPLOY_HOME": str(tmp_path / "home")}
    done = cli_here("secrets", "print", "--blueprint", str(tmp_path / "bp.yml"), env=env)
    assert done.returncode == 1
    assert "secret DB_PASSWORD: adapter bitwarden-sm" in done.stderr


def test_missing_secrets_without_a_source_still_say_where_csdeploy_looked(tmp_path: Path) -> None:
    bp = make_bp(tmp_path, "")
    with pytest.raises(SecretsError, match="missing secrets: DB_PASSWORD, API_TOKEN"):
        load_secrets(bp, environ={"REGISTRY_PASSWORD": "reg-env-pw-55"})


def test_secrets_print_reveals_values_on_a_terminal_only_when_asked(tmp_path: Path) -> None:
    import pty

    fields = [{"label": "DB_PASSWORD", "value": DB}, {"label": "API_TOKEN", "value": TOKEN}]
    environ = fake_cli(tmp_path, "op", [("item get App", fields, 0)])
    make_bp(tmp_path, "secrets_source: {adapter: 1password, from: Prod/App}\n")
    env = {**os.environ, **environ, "PATH": environ["PATH"] + ":" + os.environ["PATH"],
           "CSDEPLOY_HOME": str(tmp_path / "home")}
    shown = {}
    for extra in ((), ("--reveal",)):
        primary, secondary = pty.openpty()
        try:
            done = subprocess.run([sys.executable, "-m", "cloudstack_deploy", "secrets", "print",
                                   "--blueprint", str(tmp_path / "bp.yml"), *extra], env=env, stdout=secondary,
                                  stderr=subprocess.PIPE, text=True, timeout=60)
            os.close(secondary)
            out = b""
            while True:
                try:
                    chunk = os.read(primary, 4096)
                except OSError:  # EIO: the terminal's other end is closed
                    break
                if not chunk:
                    break
                out += chunk
        finally:
            os.close(primary)
        assert done.returncode == 0, done.stderr
        shown[extra] = out.decode()
    assert DB not in shown[()] and TOKEN not in shown[()]
    assert DB in shown[("--reveal",)] and TOKEN in shown[("--reveal",)]
