"""Logging: secrets never reach a log line, whoever logs them; levels follow -v."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator

import pytest
import structlog

from cloudstack_deploy.log import (
    RedactingFilter,
    clear_secrets,
    configure_logging,
    get_logger,
    redact,
    register_secret,
    register_secrets,
)

DB_PASSWORD = "db-pw-27q-Xy"
TOKEN = "tok-55z-abcdef"


@pytest.fixture(autouse=True)
def _clean_logging() -> Iterator[None]:
    """Each test configures logging afresh; put the process back as it was afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    clear_secrets()
    yield
    clear_secrets()
    root.handlers[:] = handlers
    root.setLevel(level)
    for name in ("cloudstack_deploy", "asyncssh", "aiohttp", "urllib3", "libcloud"):
        logging.getLogger(name).setLevel(logging.NOTSET)
    structlog.reset_defaults()


def json_lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]


def test_structlog_json_output_is_redacted_everywhere() -> None:
    out = io.StringIO()
    configure_logging(json=True, verbose=1, stream=out)
    register_secrets([DB_PASSWORD, TOKEN])
    log = get_logger("provision")
    log.info(
        f"connecting with {TOKEN}",
        password=DB_PASSWORD,
        env={"DATABASE_URL": f"postgres://app:{DB_PASSWORD}@db/app"},
        argv=["docker", "login", "-p", TOKEN],
    )
    try:
        raise RuntimeError(f"login failed for token {TOKEN}")
    except RuntimeError:
        log.exception("registry login failed")

    text = out.getvalue()
    assert DB_PASSWORD not in text and TOKEN not in text
    info, error = json_lines(out)
    assert info["event"] == "connecting with [REDACTED]"
    assert info["password"] == "[REDACTED]"
    assert info["env"] == {"DATABASE_URL": "postgres://app:[REDACTED]@db/app"}
    assert info["argv"] == ["docker", "login", "-p", "[REDACTED]"]
    assert info["logger"] == "cloudstack_deploy.provision" and info["level"] == "info"
    assert "RuntimeError: login failed for token [REDACTED]" in str(error["exception"])


def test_stdlib_records_from_libraries_are_redacted() -> None:
    out = io.StringIO()
    configure_logging(json=True, verbose=3, stream=out)
    register_secret(DB_PASSWORD)
    lib = logging.getLogger("asyncssh.connection")
    lib.info("auth with password %s for %s", DB_PASSWORD, "deploy")
    try:
        raise ValueError(f"bad password {DB_PASSWORD}")
    except ValueError:
        lib.exception("handshake failed")

    assert DB_PASSWORD not in out.getvalue()
    info, error = json_lines(out)
    assert info["event"] == "auth with password [REDACTED] for deploy"
    assert info["logger"] == "asyncssh.connection"
    assert "ValueError: bad password [REDACTED]" in str(error["exception"])


def test_human_output_is_redacted_and_uncoloured_off_a_terminal() -> None:
    out = io.StringIO()
    configure_logging(json=False, verbose=1, stream=out)
    register_secret(TOKEN)
    get_logger().warning("token rejected", token=TOKEN)
    logging.getLogger("aiohttp.client").warning("GET https://api/?apikey=%s -> 401", TOKEN)
    text = out.getvalue()
    assert TOKEN not in text
    assert "token=[REDACTED]" in text
    assert "apikey=[REDACTED] -> 401" in text
    assert "\x1b[" not in text


def test_redacting_filter_protects_other_handlers_too() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("test_log.other")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        register_secret(DB_PASSWORD)
        logger.info("dsn=%r", {"password": DB_PASSWORD})
        try:
            raise KeyError(DB_PASSWORD)
        except KeyError:
            logger.exception("lookup failed")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    assert DB_PASSWORD not in out.getvalue()
    assert "dsn={'password': '[REDACTED]'}" in out.getvalue()
    assert "KeyError: '[REDACTED]'" in out.getvalue()


def test_values_shorter_than_four_characters_are_not_registered() -> None:
    register_secrets(["abc", "", "no", "true-secret"])
    register_secret(None)
    assert redact("abc no true-secret") == "abc no [REDACTED]"


def test_longest_secret_wins_when_one_contains_another() -> None:
    register_secrets(["hunter2", "hunter2-extended"])
    assert redact("pw=hunter2-extended, old=hunter2") == "pw=[REDACTED], old=[REDACTED]"
    # and the order of registration does not matter
    clear_secrets()
    register_secrets(["hunter2-extended"])
    register_secret("hunter2")
    assert redact("hunter2-extended") == "[REDACTED]"


def test_verbose_levels_decide_what_is_shown() -> None:
    out = io.StringIO()
    configure_logging(json=True, verbose=0, stream=out)
    get_logger("x").info("quiet info")
    get_logger("x").warning("loud warning")
    configure_logging(json=True, verbose=1, stream=out)
    get_logger("x").info("our info")
    get_logger("x").debug("our debug")
    logging.getLogger("asyncssh").info("library chatter")
    configure_logging(json=True, verbose=3, stream=out)
    get_logger("x").debug("deep debug")
    logging.getLogger("asyncssh").debug("library debug")
    events = [line["event"] for line in json_lines(out)]
    assert events == ["loud warning", "our info", "deep debug", "library debug"]


def test_reconfiguring_does_not_duplicate_lines() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging(json=True, stream=first)
    configure_logging(json=True, stream=second)
    get_logger().warning("once")
    assert first.getvalue() == ""
    assert [line["event"] for line in json_lines(second)] == ["once"]


def test_logging_to_a_broken_pipe_does_not_raise_or_spew(capsys: pytest.CaptureFixture[str]) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    stream = os.fdopen(write_end, "w", buffering=1)
    configure_logging(json=True, stream=stream)
    get_logger().warning("nobody is listening")
    logging.getLogger("asyncssh").error("nor here")
    assert "Traceback" not in capsys.readouterr().err
    try:
        stream.close()
    except OSError:
        pass
