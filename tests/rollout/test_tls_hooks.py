"""Before any host changes: certificates are checked against their keys, and the pre-deploy
hook runs (a real `sh`), with the deploy's facts and without a secret."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cloudstack_deploy.blueprint import BlueprintError, loads_blueprint
from cloudstack_deploy.errors import InvalidInput, OperationFailed
from cloudstack_deploy.progress import Recorder
from cloudstack_deploy.rollout import hooks, tls
from cloudstack_deploy.rollout.commands import hook as hook_cmds

from .test_commands import BLUEPRINT

TLS_SETS = ["roles.web.proxy.host=demo.lab", "roles.web.proxy.ssl.certificate_pem=TLS_CERT",
            "roles.web.proxy.ssl.private_key_pem=TLS_KEY",
            "secrets=[API_TOKEN, POSTGRES_PASSWORD, REGISTRY_PASSWORD, TLS_CERT, TLS_KEY]"]


def pem_pair(name: str, days: int = 30) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode())


def test_the_blueprint_takes_kamals_certificate_secret_names() -> None:
    proxy = loads_blueprint(BLUEPRINT, overrides=TLS_SETS).roles["web"].proxy
    assert proxy is not None and proxy.ssl and proxy.hosts == ("demo.lab",)
    assert proxy.certificate is not None and proxy.certificate.private_key_pem == "TLS_KEY"


def test_certificate_names_must_be_declared_secret_names() -> None:
    with pytest.raises(BlueprintError) as err:
        loads_blueprint(BLUEPRINT, filename="bp.yml", overrides=TLS_SETS[:3])
    assert "secret 'TLS_CERT' is not declared" in str(err.value)
    with pytest.raises(BlueprintError) as err:
        loads_blueprint(BLUEPRINT, filename="bp.yml",
                        overrides=["roles.web.proxy.ssl.certificate_pem=-----BEGIN CERT"])
    text = str(err.value)
    assert "looks like a literal value" in text and "private_key_pem: missing required field" in text
    assert "ssl needs a host" in text


def test_a_matching_certificate_passes_and_a_wrong_host_is_a_warning() -> None:
    bp = loads_blueprint(BLUEPRINT, overrides=TLS_SETS)
    cert, key = pem_pair("demo.lab")
    (checked,) = tls.check(bp, {"TLS_CERT": cert, "TLS_KEY": key})
    assert checked.role == "web" and checked.warnings == ()
    cert, key = pem_pair("other.lab")
    (checked,) = tls.check(bp, {"TLS_CERT": cert, "TLS_KEY": key})
    assert "names other.lab, not demo.lab" in checked.warnings[0]


def test_a_certificate_that_does_not_match_its_key_is_invalid_input_naming_the_secrets() -> None:
    bp = loads_blueprint(BLUEPRINT, overrides=TLS_SETS)
    cert, _ = pem_pair("demo.lab")
    _, other_key = pem_pair("demo.lab")
    with pytest.raises(InvalidInput) as err:
        tls.check(bp, {"TLS_CERT": cert, "TLS_KEY": other_key})
    text = str(err.value)
    assert err.value.exit_code == 2 and "does not match the private key in TLS_KEY" in text
    assert "nothing was changed on the hosts" in text
    assert "PRIVATE KEY" not in text and "BEGIN" not in text, "never the values"


@pytest.mark.parametrize("cert, key, says", [("not a pem", None, "TLS_CERT is not a PEM certificate"),
                                             (None, "not a key", "TLS_KEY is not an unencrypted PEM private key")])
def test_pems_that_do_not_parse_are_invalid_input(cert: str | None, key: str | None, says: str) -> None:
    bp = loads_blueprint(BLUEPRINT, overrides=TLS_SETS)
    good_cert, good_key = pem_pair("demo.lab")
    with pytest.raises(InvalidInput) as err:
        tls.check(bp, {"TLS_CERT": cert or good_cert, "TLS_KEY": key or good_key})
    assert says in str(err.value)


# ---- hooks ---------------------------------------------------------------------------------
def test_a_hook_sees_the_deploy_facts_and_no_secret() -> None:
    base = {"PATH": "/bin", "REGISTRY_PASSWORD": "x", "CLOUDSTACK_SECRET": "y", "CSDEPLOY_STATE_URL": "pg://u:p@h",
            "CSDEPLOY_HOME": "/h"}
    env = hook_cmds.environment(base, {"version": "v2", "hosts": "a,b"}, ["REGISTRY_PASSWORD"])
    assert env == {"PATH": "/bin", "CSDEPLOY_HOME": "/h", "CSDEPLOY_VERSION": "v2", "CSDEPLOY_HOSTS": "a,b"}


def _bp(tmp_path: Path, **hooks_: str):  # noqa: ANN202
    path = tmp_path / "bp.yml"
    path.write_text(BLUEPRINT)
    sets = [f"hooks.{k}={json.dumps(v)}" for k, v in hooks_.items()]
    from cloudstack_deploy.blueprint import load_blueprint

    return load_blueprint(path, overrides=sets)


async def test_the_pre_hook_runs_in_the_blueprints_directory_and_its_output_is_shown(tmp_path: Path,
                                                                                     monkeypatch) -> None:
    monkeypatch.setenv("API_TOKEN", "tok-s3cr3t-value")
    bp = _bp(tmp_path, pre_deploy='echo "v=$CSDEPLOY_VERSION hosts=$CSDEPLOY_HOSTS token=${API_TOKEN:-none}"; '
                                  'pwd > where.txt')
    progress = Recorder()
    await hooks.run(bp, hooks.PRE, {"version": "v2", "hosts": "demo-web-1"}, progress)
    shown = [text for _, text in progress.notes]
    assert "hook pre_deploy | v=v2 hosts=demo-web-1 token=none" in shown
    assert (tmp_path / "where.txt").read_text().strip() == str(tmp_path)


async def test_a_failing_pre_hook_stops_the_run_with_its_exit_code(tmp_path: Path) -> None:
    bp = _bp(tmp_path, pre_deploy="echo checking; exit 3")
    with pytest.raises(OperationFailed) as err:
        await hooks.run(bp, hooks.PRE, {"version": "v2"}, Recorder())
    assert "hook pre_deploy failed (exit 3)" in str(err.value) and "nothing was changed on the hosts" in str(err.value)


async def test_a_hook_that_hangs_is_stopped_at_its_timeout(tmp_path: Path) -> None:
    bp = _bp(tmp_path, pre_deploy="sleep 30")
    bp = bp.__class__(**{**bp.__dict__, "hooks": bp.hooks.__class__(pre_deploy="sleep 30", timeout=0.5)})
    with pytest.raises(OperationFailed) as err:
        await hooks.run(bp, hooks.PRE, {}, Recorder())
    assert "did not finish within 0.5s" in str(err.value)


async def test_a_dry_run_shows_the_hook_instead_of_running_it(tmp_path: Path) -> None:
    bp = _bp(tmp_path, post_deploy="touch ran")
    planned: list = []
    await hooks.run(bp, hooks.POST, {"version": "v2"}, Recorder(), planned=planned)
    assert not (tmp_path / "ran").exists()
    assert planned[0].host == "local" and "touch ran" in planned[0].text and "CSDEPLOY_VERSION='v2'" in planned[0].text


def test_no_hook_no_process() -> None:
    assert hooks.command(loads_blueprint(BLUEPRINT), hooks.PRE) is None
    assert os.environ.get("CSDEPLOY_VERSION") is None
