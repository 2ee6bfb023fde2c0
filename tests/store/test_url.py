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


def test_a_password_in_the_query_is_masked_and_redacted_too() -> None:
    try:
        url = parse_store_url("postgresql://ci@db:5432/hist?sslmode=require&password=q-s3cret-77&sslpassword=k-s3cret-88")
        assert url is not None
        assert url.display == "postgresql://ci@db:5432/hist?sslmode=require&password=***&sslpassword=***"
        assert "q-s3cret-77" in url.url and "q-s3cret-77" not in repr(url) + str(url)
        assert redact("FATAL for q-s3cret-77 / k-s3cret-88") == "FATAL for [REDACTED] / [REDACTED]"
    finally:
        clear_secrets()


PASSWORD_WITH_DELIMITERS = "Zq9/Xv8#Kw7?Jy6"


@pytest.mark.parametrize(("text", "password"), [
    (f"postgresql://u:{PASSWORD_WITH_DELIMITERS}@db.example/hist", PASSWORD_WITH_DELIMITERS),
    (f"postgresql://u:{PASSWORD_WITH_DELIMITERS}@db.example:5432/hist?sslmode=require", PASSWORD_WITH_DELIMITERS),
    ("postgresql://u@db.example/hist?password=Zq9Xv8@Kw7Jy6", "Zq9Xv8@Kw7Jy6"),
])
def test_a_password_with_an_unencoded_delimiter_is_refused_without_showing_any_of_it(text: str, password: str) -> None:
    """`u:pa/ss#w?rd@host`: everything after the first '/' looks like the path, so the old
    reading took `pa` for a port and showed it; no reading of such a URL is safe."""
    try:
        with pytest.raises(InvalidInput) as err:
            parse_store_url(text)
        shown = f"{err.value} {err.value.hint}"
        assert "percent-encode" in shown and "%2F" in shown and "%23" in shown and "%3F" in shown
        for piece in ("Zq9", "Xv8", "Kw7", "Jy6"):
            assert piece not in shown, shown
        assert redact(f"echo {password}") == "echo [REDACTED]"
    finally:
        clear_secrets()


def test_percent_encoded_delimiters_and_an_at_sign_reach_the_driver_encoded() -> None:
    try:
        url = parse_store_url("postgresql://u:Zq9%2FXv8%23Kw7%3FJy6@db/hist")
        assert url is not None and url.display == "postgresql://u:***@db/hist"
        assert url.url == "postgresql://u:Zq9%2FXv8%23Kw7%3FJy6@db/hist"
        at = parse_store_url("postgresql://u:p@ss-w0rd@db/hist")  # the last '@' ends the userinfo
        assert at is not None and at.url == "postgresql://u:p%40ss-w0rd@db/hist" and at.display == "postgresql://u:***@db/hist"
    finally:
        clear_secrets()


@pytest.mark.parametrize("text", ["postgresql:///hist?host=/var/run/postgresql",
                                  "postgresql://ci@/hist?host=/var/run/postgresql",
                                  "postgresql://ci:pw-abc-123@:5433/hist?host=/run/pg"])
def test_a_unix_socket_url_is_kept_as_written(text: str) -> None:
    try:
        url = parse_store_url(text)
        assert url is not None and url.url == text and "pw-abc-123" not in url.display
        assert url.yoyo_uri.startswith("postgresql+psycopg://" + text.split("://", 1)[1].split("?")[0] + "?")
    finally:
        clear_secrets()


def test_a_sqlite_path_may_hold_an_at_sign(tmp_path: Path) -> None:
    assert parse_store_url(f"sqlite:///{tmp_path}/a@b/h.db").path == tmp_path / "a@b" / "h.db"  # type: ignore[union-attr]
