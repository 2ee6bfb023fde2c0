"""Derived secrets: a host that echoes its input must not reveal a value in any form.

Only raw values used to be registered, so the URL-encoded password inside DATABASE_URL, a
base64 registry auth or a JSON-escaped value came back verbatim in an error that quoted a
host's output. Here a real `sh` process plays the host: it prints every form the secrets
take on their way there, and the error csdeploy raises from that output is checked.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
import subprocess
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from cloudstack_deploy.blueprint import load_blueprint
from cloudstack_deploy.log import clear_secrets, redact
from cloudstack_deploy.rollout.contract import links
from cloudstack_deploy.rollout.hosts import HostError
from cloudstack_deploy.secrets import load_secrets

DEMO = Path(__file__).resolve().parents[1] / "blueprints" / "demo.yml"
PASSWORD = "p@ss w/rd+:'\"$HOME%2F\\x"   # every character that some encoding changes
REGISTRY = "reg-Pa55:w/rd"
API_URL = "https://bot:t%2Fk%40n-77@api.example/v1"   # a secret that is itself URL-encoded


@pytest.fixture(autouse=True)
def _forget_secrets() -> None:
    clear_secrets()
    yield
    clear_secrets()


def echo_from_a_host(text: str) -> str:
    """What a host prints back when it echoes ``text`` (here: a real shell running `cat`)."""
    return subprocess.run(["sh", "-c", "cat"], input=text, capture_output=True, text=True, check=True).stdout


def test_a_host_echoing_every_derived_form_reveals_nothing(tmp_path: Path) -> None:
    bp = load_blueprint(DEMO, ["secrets=[REGISTRY_PASSWORD, POSTGRES_PASSWORD, API_URL]",
                               "roles.web.env.secret=[POSTGRES_PASSWORD, API_URL]"])
    secrets = dict(load_secrets(bp, environ={"POSTGRES_PASSWORD": PASSWORD, "REGISTRY_PASSWORD": REGISTRY,
                                             "API_URL": API_URL}, dotenv_path=tmp_path / "none"))
    from cloudstack_deploy.inventory import Host, Inventory, Network, SSHAccess

    inventory = Inventory(env="demo", service="demo", network=Network(id="n", name="csdeploy-demo"),
                          ssh=SSHAccess(user="root", key=Path("/k"), known_hosts=Path("/kh")),
                          hosts=(Host(name="demo-db-1", role="db", index=1, vm_id="v", public_ip="127.0.0.9",
                                      ssh_port=22, private_ip="10.1.1.7", host_key="k", accessories=("db",)),))
    env = links(bp, inventory, secrets)
    database_url = env.secret["DATABASE_URL"]
    assert quote(PASSWORD, safe="") in database_url
    forms = {
        "env file": env.env_file(),
        "DATABASE_URL": database_url,
        "url-encoded": quote(PASSWORD, safe=""),
        "url-encoded, lower-case hex": re.sub("%[0-9A-F]{2}", lambda m: m.group(0).lower(), quote(PASSWORD, safe="")),
        "form-encoded": quote_plus(PASSWORD),
        "url-decoded": "t/k@n-77 in https://bot:t/k@n-77@api.example/v1",
        "base64": base64.b64encode(PASSWORD.encode()).decode(),
        "base64, url-safe, unpadded": base64.urlsafe_b64encode(PASSWORD.encode()).decode().rstrip("="),
        "docker auth": base64.b64encode(f"csdeploy:{REGISTRY}".encode()).decode(),
        "json": json.dumps({"password": PASSWORD, "url": database_url}),
        "shell-quoted": shlex.join(["psql", database_url, PASSWORD]),
    }
    output = echo_from_a_host("".join(f"{what}: {text}\n" for what, text in forms.items()))
    err = HostError("demo-web-1", "prepare failed at step env (exit 1)", output)
    shown = str(err)
    for what in forms:
        assert f"{what}: " in shown, what  # the echo is there, the secret in it is not
    revealing = [PASSWORD, REGISTRY, API_URL, "t%2Fk%40n-77", "t/k@n-77", json.dumps(PASSWORD)[1:-1],
                 shlex.quote(PASSWORD), *(forms[k] for k in forms if k not in (
        "env file", "json", "shell-quoted", "url-decoded", "DATABASE_URL"))]
    assert [r for r in revealing if r in shown] == []
    assert "p%40ss" not in shown.lower() and "p@ss" not in shown


def test_loading_secrets_registers_them_without_the_cli(tmp_path: Path) -> None:
    bp = load_blueprint(DEMO)
    load_secrets(bp, environ={"POSTGRES_PASSWORD": PASSWORD, "REGISTRY_PASSWORD": REGISTRY},
                 dotenv_path=tmp_path / "none")
    assert redact(f"auth={quote_plus(PASSWORD)}") == "auth=[REDACTED]"
