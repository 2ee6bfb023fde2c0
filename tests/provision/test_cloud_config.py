"""Where csdeploy finds its cloud: environment > cloudstack.ini > the lab's profile."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from cloudstack_deploy.cloud import read_cloud_config
from cloudstack_deploy.cloud.config import write_lab_profile
from cloudstack_deploy.errors import InvalidInput


def ini(path: Path, **sections: dict[str, str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = ""
    for name, values in sections.items():
        text += f"[{name}]\n" + "".join(f"{k} = {v}\n" for k, v in values.items()) + "\n"
    path.write_text(text)
    return path


def section(endpoint: str, **extra: str) -> dict[str, str]:
    return {"endpoint": endpoint, "key": f"key-of-{endpoint}", "secret": f"secret-of-{endpoint}", **extra}


@pytest.fixture
def lab_profile(clean_env: Path) -> Path:
    return write_lab_profile("http://lab/client/api", "lab-key", "lab-secret", poll_interval=0.07)


def test_nothing_configured_says_where_it_looked(clean_env: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as err:
        read_cloud_config()
    msg = str(err.value)
    assert "CLOUDSTACK_ENDPOINT" in msg
    assert str(tmp_path / "user" / ".cloudstack.ini") in msg
    assert str(clean_env / "lab" / "cloudstack.ini") in msg
    assert "lab simulator --write-profile" in (err.value.hint or "")


def test_the_lab_profile_is_the_fallback(lab_profile: Path) -> None:
    assert stat.S_IMODE(lab_profile.stat().st_mode) == 0o600  # it holds a secret
    cfg = read_cloud_config()
    assert (cfg.endpoint, cfg.key, cfg.secret) == ("http://lab/client/api", "lab-key", "lab-secret")
    assert cfg.is_lab and cfg.poll_interval == 0.07
    assert str(lab_profile) in cfg.source


def test_an_ini_file_wins_over_the_lab(lab_profile: Path, tmp_path: Path) -> None:
    ini(tmp_path / "user" / ".cloudstack.ini", cloudstack=section("http://home/api"))
    cfg = read_cloud_config()
    assert cfg.endpoint == "http://home/api" and not cfg.is_lab
    assert cfg.poll_interval == 2.0  # a real cloud is polled gently


def test_cloudstack_config_and_region_pick_the_file_and_section(
        lab_profile: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ini(tmp_path / "user" / ".cloudstack.ini", cloudstack=section("http://home/api"))
    ini(Path("cloudstack.ini"), cloudstack=section("http://cwd/api"))
    assert read_cloud_config().endpoint == "http://cwd/api"  # ./cloudstack.ini over ~/.cloudstack.ini
    extra = ini(tmp_path / "elsewhere.ini", cloudstack=section("http://explicit/api"),
                eu=section("http://eu/api", verify="false", timeout="7"))
    monkeypatch.setenv("CLOUDSTACK_CONFIG", str(extra))
    assert read_cloud_config().endpoint == "http://explicit/api"
    monkeypatch.setenv("CLOUDSTACK_REGION", "eu")
    cfg = read_cloud_config()
    assert (cfg.endpoint, cfg.key, cfg.verify, cfg.timeout) == ("http://eu/api", "key-of-http://eu/api", False, 7.0)
    assert "[eu]" in cfg.source
    assert read_cloud_config(region="cloudstack").endpoint == "http://explicit/api"  # the argument wins


def test_an_unknown_region_names_the_sections_there_are(clean_env: Path, monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    path = ini(tmp_path / "c.ini", cloudstack=section("http://a/api"), eu=section("http://eu/api"))
    monkeypatch.setenv("CLOUDSTACK_CONFIG", str(path))
    monkeypatch.setenv("CLOUDSTACK_REGION", "us")
    with pytest.raises(InvalidInput) as err:
        read_cloud_config()
    assert "[us]" in str(err.value) and str(path) in str(err.value)
    assert "cloudstack" in (err.value.hint or "") and "eu" in (err.value.hint or "")


def test_an_incomplete_ini_section_names_the_missing_keys(clean_env: Path, tmp_path: Path) -> None:
    ini(tmp_path / "user" / ".cloudstack.ini", cloudstack={"endpoint": "http://a/api"})
    with pytest.raises(InvalidInput) as err:
        read_cloud_config()
    assert "key" in str(err.value) and "secret" in str(err.value)


def test_environment_variables_win_over_everything(lab_profile: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    ini(tmp_path / "user" / ".cloudstack.ini", cloudstack=section("http://home/api"))
    monkeypatch.setenv("CLOUDSTACK_ENDPOINT", "http://env/api")
    monkeypatch.setenv("CLOUDSTACK_KEY", "env-key")
    monkeypatch.setenv("CLOUDSTACK_SECRET", "env-secret")
    monkeypatch.setenv("CLOUDSTACK_POLL_INTERVAL", "0.05")
    cfg = read_cloud_config()
    assert (cfg.endpoint, cfg.key, cfg.secret, cfg.poll_interval) == ("http://env/api", "env-key", "env-secret", 0.05)
    assert "environment" in cfg.source


def test_an_endpoint_without_credentials_says_which_are_missing(clean_env: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDSTACK_ENDPOINT", "http://env/api")
    monkeypatch.setenv("CLOUDSTACK_KEY", "env-key")
    with pytest.raises(InvalidInput) as err:
        read_cloud_config()
    assert "CLOUDSTACK_SECRET" in str(err.value) and "CLOUDSTACK_KEY" not in str(err.value)


def test_the_secret_never_shows(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDSTACK_ENDPOINT", "http://env/api")
    monkeypatch.setenv("CLOUDSTACK_KEY", "AKEYVALUE123")
    monkeypatch.setenv("CLOUDSTACK_SECRET", "s3cr3t-never-shown")
    cfg = read_cloud_config()
    for text in (repr(cfg), str(cfg), f"{cfg!r}", repr([cfg])):
        assert "s3cr3t-never-shown" not in text
        assert "AKEYVALUE123" not in text  # only a prefix of the key, to tell accounts apart
        assert "http://env/api" in text


def test_cloudstack_overrides_takes_listed_keys_from_the_environment(tmp_path, monkeypatch) -> None:
    from cloudstack_deploy.cloud.config import read_cloud_config

    ini = tmp_path / "cs.ini"
    ini.write_text("[cloudstack]\nendpoint = http://ini.example/client/api\nkey = ini-key\nsecret = ini-secret\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CLOUDSTACK_CONFIG", str(ini))
    monkeypatch.setenv("CLOUDSTACK_ENDPOINT", "http://127.0.0.1:9/client/api")
    monkeypatch.setenv("CLOUDSTACK_KEY", "env-key")
    monkeypatch.setenv("CLOUDSTACK_OVERRIDES", "endpoint")
    config = read_cloud_config()
    assert config.endpoint == "http://127.0.0.1:9/client/api"  # listed: from the environment
    assert config.key == "ini-key"  # not listed: from the ini file


@pytest.mark.parametrize("value", ["abc", "nan", "inf", "-1", "0", "1e9", ""])
def test_a_bad_timing_variable_is_an_error_naming_it(clean_env: Path, monkeypatch: pytest.MonkeyPatch,
                                                     value: str) -> None:
    monkeypatch.setenv("CLOUDSTACK_ENDPOINT", "http://env/api")
    monkeypatch.setenv("CLOUDSTACK_KEY", "k")
    monkeypatch.setenv("CLOUDSTACK_SECRET", "s")
    monkeypatch.setenv("CLOUDSTACK_POLL_INTERVAL", value)
    with pytest.raises(InvalidInput) as err:
        read_cloud_config()
    assert str(err.value) == ("CLOUDSTACK_POLL_INTERVAL: expected a number of seconds, more than 0 and at "
                              f"most 600, got {value!r}")


def test_a_bad_timing_in_an_ini_file_names_file_section_and_key(clean_env: Path, tmp_path: Path) -> None:
    path = ini(tmp_path / "user" / ".cloudstack.ini", cloudstack=section("http://ini/api", job_timeout="soon"))
    with pytest.raises(InvalidInput) as err:
        read_cloud_config()
    assert str(err.value).startswith(f"{path} [cloudstack]: job_timeout: expected a number of seconds")


def test_a_password_in_the_endpoint_never_shows(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cloudstack_deploy.log import redact

    monkeypatch.setenv("CLOUDSTACK_ENDPOINT", "https://proxy-user:pa%40ss-canary-77@cloud.example/client/api")
    monkeypatch.setenv("CLOUDSTACK_KEY", "k")
    monkeypatch.setenv("CLOUDSTACK_SECRET", "api-secret-canary-88")
    cfg = read_cloud_config()
    assert cfg.shown_endpoint == "https://proxy-user:***@cloud.example/client/api"
    assert "canary" not in repr(cfg)
    leak = f"GET {cfg.endpoint} failed; decoded pa@ss-canary-77; signed with api-secret-canary-88"
    assert "canary" not in redact(leak)


def test_verify_reads_as_cs_reads_it(clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`verify` is a word (true/false) or a CA bundle's path, in the file and in CLOUDSTACK_VERIFY
    alike (and through CLOUDSTACK_OVERRIDES); dangerous_no_tls_verify turns checking off."""
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    path = ini(tmp_path / "c.ini", cloudstack=section("https://a/api", verify="true"),
               bundle=section("https://b/api", verify=str(bundle)),
               off=section("https://c/api", dangerous_no_tls_verify="true"))
    monkeypatch.setenv("CLOUDSTACK_CONFIG", str(path))
    assert read_cloud_config().verify is True
    assert read_cloud_config(region="bundle").verify == str(bundle)
    assert read_cloud_config(region="off").verify is False
    monkeypatch.setenv("CLOUDSTACK_OVERRIDES", "verify")
    monkeypatch.setenv("CLOUDSTACK_VERIFY", "false")
    assert read_cloud_config(region="bundle").verify is False
    monkeypatch.delenv("CLOUDSTACK_OVERRIDES")
    monkeypatch.setenv("CLOUDSTACK_ENDPOINT", "https://env/api")
    monkeypatch.setenv("CLOUDSTACK_KEY", "k")
    monkeypatch.setenv("CLOUDSTACK_SECRET", "s")
    assert read_cloud_config().verify is False
    monkeypatch.setenv("CLOUDSTACK_VERIFY", str(bundle))   # cs passes a path on to requests as its CA bundle
    assert read_cloud_config().verify == str(bundle)
    monkeypatch.setenv("CLOUDSTACK_DANGEROUS_NO_TLS_VERIFY", "true")
    assert read_cloud_config().verify is False
