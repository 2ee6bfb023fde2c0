"""Logging for the CLI: structlog set-up and secret redaction.

Secrets are loaded once (see `secrets.py`) and handed here with `register_secrets`; from then
on every log line, whether it comes from our structlog loggers or from a library logging
through the stdlib (asyncssh, aiohttp), has those values replaced by `[REDACTED]`. Redaction
is by value, not by key name, because a secret leaks through places nobody labelled: an
error message echoing a command line, a URL with credentials, a traceback's locals.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, TextIO, cast

if TYPE_CHECKING:  # structlog is imported where logging is set up: `csdeploy --help` never needs it
    import structlog
    from structlog.typing import EventDict, Processor

REDACTED = "[REDACTED]"
MIN_SECRET_LENGTH = 4
"""Shorter values are not registered: redacting "1" or "yes" would shred every log line."""

_THIRD_PARTY = ("asyncssh", "aiohttp", "urllib3", "libcloud")

_lock = threading.Lock()
_secrets: set[str] = set()
_ordered: tuple[str, ...] = ()  # longest first, rebuilt on registration, read without the lock


def register_secret(value: str | None) -> None:
    """Redact `value` from all later log output (values under 4 characters are ignored)."""
    register_secrets([value] if value is not None else [])


def register_secrets(values: Iterable[str | None]) -> None:
    """Redact every value in `values` from all later log output."""
    global _ordered
    with _lock:
        added = False
        for value in values:
            if isinstance(value, str) and len(value) >= MIN_SECRET_LENGTH and value not in _secrets:
                _secrets.add(value)
                added = True
        if added:
            # Longest first, so a secret containing another is replaced whole, not half.
            _ordered = tuple(sorted(_secrets, key=lambda s: (-len(s), s)))


def clear_secrets() -> None:
    """Forget every registered value (for tests, and for long-lived library callers)."""
    global _ordered
    with _lock:
        _secrets.clear()
        _ordered = ()


def redact(text: str) -> str:
    """`text` with every registered secret value replaced by `[REDACTED]`."""
    ordered = _ordered
    if not ordered or not text:
        return text
    for secret in ordered:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def terminal_safe(text: str, *, keep_newlines: bool = True) -> str:
    """`text` fit for a terminal: control characters (escape sequences, carriage returns,
    bells, bidi overrides) written as Python escapes such as `\\x1b`, so text from the cloud
    or a host cannot repaint the screen or fake a line; newlines are kept if asked."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or (keep_newlines and c == "\n") else repr(c)[1:-1] for c in text)


def redact_data(value: Any) -> Any:
    """``value`` (JSON-shaped data) with every registered secret value redacted in its strings."""
    return _redact_value(value)


def _redact_value(value: Any) -> Any:
    """Redact strings inside `value`, keeping its shape; other objects are checked by repr."""
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {k: _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_value(v) for v in value]
    if isinstance(value, BaseException):
        return redact(f"{type(value).__name__}: {value}")
    # An arbitrary object would be repr()ed by the renderer; keep it unless its text leaks.
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ must not take logging down with it
        return value
    cleaned = redact(text)
    return value if cleaned == text else cleaned


def redact_processor(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: redact every string value in the event dict, recursively.

    Placed after `format_exc_info`, so formatted tracebacks are covered as well.
    """
    if not _ordered:
        return event_dict
    return {key: _redact_value(value) for key, value in event_dict.items()}


def _redact_rendered(_logger: Any, _method: str, rendered: Any) -> Any:
    """Last-resort pass over the rendered line (catches what a renderer added itself)."""
    return redact(rendered) if isinstance(rendered, str) else rendered


class RedactingFilter(logging.Filter):
    """stdlib logging filter that redacts a record's message, arguments and traceback.

    Attached to our handler (not a logger) so it also sees records propagated from
    third-party loggers such as asyncssh, which never pass through a parent logger's filters.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not _ordered:
            return True
        if isinstance(record.msg, dict) and hasattr(record, "_logger"):
            # From structlog (wrap_for_formatter): already redacted; the formatter needs the dict.
            return True
        try:
            message = record.getMessage()
        except Exception:  # malformed %-args: let the handler report it as usual
            return True
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            # Formatters use exc_text when set; structlog re-formats exc_info and redacts it.
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class _QuietStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that drops lines it cannot write (closed or broken stderr).

    A provisioning run half way through creating VMs must not die because its log reader
    went away; the default handler prints a traceback per failed line instead.
    """

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (stdlib name)
        pass


_HANDLER_MARK = "_csdeploy_handler"


def _shared_processors() -> list[Processor]:
    """What every log line goes through before rendering: context, level, time, redaction."""
    import structlog

    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        redact_processor,
    ]


def _levels(verbose: int) -> tuple[int, int]:
    """(our level, third-party level): libraries stay one notch quieter than we are."""
    ours = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    theirs = {0: logging.WARNING, 1: logging.WARNING, 2: logging.INFO}.get(verbose, logging.DEBUG)
    return ours, theirs


def configure_logging(*, json: bool = False, verbose: int = 0, stream: TextIO | None = None) -> None:
    """Route structlog and stdlib logging to `stream` (default: the current sys.stderr).

    `json=True` writes one JSON object per line (for CI and log shippers); otherwise lines
    are human-readable, coloured only on a terminal with NO_COLOR unset. `verbose` 0 shows
    warnings, 1 info, 2 debug (libraries at info), 3 debug everywhere. Calling it again
    replaces the previous set-up, so tests and embedding programs can reconfigure.

    structlog itself loads with the first line that is written (or the first use of a
    `get_logger` logger): a command that logs nothing, as most do without ``-v``, never
    spends the tenth of a second its import costs before the command's first API call.
    """
    global _pending
    out = stream if stream is not None else sys.stderr
    ours, theirs = _levels(verbose)
    colors = not json and _isatty(out) and not os.environ.get("NO_COLOR")
    handler = _QuietStreamHandler(out)
    handler.setFormatter(_DeferredFormatter(json=json, colors=colors))
    handler.addFilter(RedactingFilter())
    setattr(handler, _HANDLER_MARK, True)

    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(min(ours, theirs))
    logging.getLogger("cloudstack_deploy").setLevel(ours)
    for name in _THIRD_PARTY:
        logging.getLogger(name).setLevel(theirs)
    with _lock:
        _pending = True
    if "structlog" in sys.modules:  # already paid for: configure it now, as before
        _configure_structlog()


_pending = False  # configure_logging ran and structlog's own configuration is still to be made


def _configure_structlog() -> None:
    """structlog's global configuration (for `structlog.get_logger()` callers), once per
    `configure_logging`."""
    global _pending
    with _lock:
        if not _pending:
            return
        _pending = False
    import structlog

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


class _DeferredFormatter(logging.Formatter):
    """structlog's ProcessorFormatter (JSON or console), made on the first record formatted."""

    def __init__(self, *, json: bool, colors: bool) -> None:
        super().__init__()
        self._json = json
        self._colors = colors
        self._real: logging.Formatter | None = None

    def format(self, record: logging.LogRecord) -> str:
        if self._real is None:
            _configure_structlog()
            self._real = _processor_formatter(json=self._json, colors=self._colors)
        return self._real.format(record)


def _processor_formatter(*, json: bool, colors: bool) -> logging.Formatter:
    import structlog

    renderer: Processor
    if json:
        renderer = structlog.processors.JSONRenderer(default=str)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=colors)
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            renderer,
            _redact_rendered,
        ],
    )


class _DeferredLogger:
    """A `get_logger` logger that imports structlog when it is first used, not when a module
    that logs is imported."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._real: Any = None

    def __getattr__(self, attr: str) -> Any:
        if self._real is None:
            self._real = _wrap(self._name)
        return getattr(self._real, attr)

    def __repr__(self) -> str:
        return f"<logger {self._name} (structlog loads on first use)>"


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    """A structlog logger named under `cloudstack_deploy` (so `verbose` levels apply to it).

    Bound to the stdlib logger of that name with csdeploy's own processors (level filter,
    redaction), whatever structlog's global configuration is: rendering is the handler's job
    (`configure_logging`), and a library caller that never configures logging sees only what
    its own stdlib set-up lets through. structlog is imported on the logger's first use.
    """
    if name is None:
        name = "cloudstack_deploy"
    elif name != "cloudstack_deploy" and not name.startswith("cloudstack_deploy."):
        name = f"cloudstack_deploy.{name}"
    return cast("structlog.stdlib.BoundLogger", _DeferredLogger(name))


def _wrap(name: str) -> Any:
    import structlog

    _configure_structlog()
    return structlog.wrap_logger(
        logging.getLogger(name), wrapper_class=structlog.stdlib.BoundLogger,
        processors=[structlog.stdlib.filter_by_level, *_shared_processors(),
                    structlog.stdlib.ProcessorFormatter.wrap_for_formatter])


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False
