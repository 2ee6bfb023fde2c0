"""CSDEPLOY_STATE_URL: which store, and how it is shown (never with its password)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudstack_deploy.errors import InvalidInput
from cloudstack_deploy.log import clear_secrets, redact
from cloudstack_deploy.store import parse_store_url, store_url


def test_the_default_is_sqlite_in_csdeploy_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CSDEPLOY_HOME", str(tmp_path))
    url = store_url({})
    assert url is not None and url.kind == "sqlite" and url.path == tmp_path / "history.db"


def test_postgres_urls_are_masked_and_their_password_redacted() -> None:
    try:
        url = parse_store_url("postgres://ci:p%40ss-w0rd@[::1]:5433/hist?sslmode=disable")
        assert url is not None and url.kind == "postgresql"
        assert url.display == "postgresql://ci:***@[::1]:5433/hist?sslmode=disable"
        assert "p%40ss-w0rd" not in repr(url) and str(url) == url.display
        assert "connect_timeout=5" in url.yoyo_uri and url.yoyo_uri.startswith("postgresql+psycopg://")
        assert redact("error for p@ss-w0rd and p%40ss-w0rd") == "error for [REDACTED] and [REDACTED]"
    finally:
        clear_secrets()


@pytest.mark.parametrize("text", ["none", "off", "NONE"])
def test_none_turns_the_store_off(text: str) -> None:
    assert parse_store_url(text) is None


def test_sqlite_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert parse_store_url("sqlite:////var/lib/h.db").path == Path("/var/lib/h.db")  # type: ignore[union-attr]
    assert parse_store_url("sqlite:///rel.db").path == tmp_path / "rel.db"  # type: ignore[union-attr]


@pytest.mark.parametrize(("text", "says"), [
    ("mysql://u:topsecret9@db/x", "speaks sqlite and postgresql, not mysql"),
    ("postgresql:///nohost", "no server in the URL"),
    ("sqlite://host/x.db", "expected sqlite:////absolute/path.db"),
    ("postgresql://u:pw12345@db:notaport/x", "is not a URL"),
    ("/just/a/path", "not a URL without a scheme"),
])
def test_what_csdeploy_cannot_use_is_invalid_input(text: str, says: str) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_store_url(text)
    assert says in str(err.value) and "topsecret9" not in str(err.value)
    clear_secrets()
