"""Structured logs: one JSON object per line when stderr is not a terminal, readable text on one.

Every line carries `ts` (UTC, ISO 8601 with milliseconds), `level`, `logger` and `message`, plus
each field the caller passed with `extra=` (e.g. `event_id`, `delivery_id`, `webhook_id`), so a
log pipeline can filter on them without parsing the message. A traceback goes into `exc_info`.

Callers decide what goes into a line: never a secret, never a payload.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None)).keys()
) | {"message", "asctime", "taskName"}


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a caller attached to `record` with `extra=`, in the order given."""
    return {
        name: value
        for name, value in vars(record).items()
        if name not in _RECORD_ATTRIBUTES and not name.startswith("_")
    }


def _timestamp(created: float) -> str:
    return datetime.fromtimestamp(created, tz=UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _default(value: object) -> str:
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, message, then the `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in extra_fields(record).items():
            line.setdefault(name, value)  # a field named like a core one never replaces it
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack_info"] = self.formatStack(record.stack_info)
        return orjson.dumps(line, default=_default).decode()


class TextFormatter(logging.Formatter):
    """For people at a terminal: `time level logger message key=value ...`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        fields = extra_fields(record)
        if fields:
            text += " " + " ".join(f"{name}={value}" for name, value in fields.items())
        return text


class _HookstreamHandler(logging.StreamHandler[TextIO]):
    """The handler `configure_logging` installs, told apart from anyone else's."""


def configure_logging(
    level: str | int = "INFO", stream: TextIO | None = None, json_lines: bool | None = None
) -> None:
    """Send every log record to `stream` (stderr), as JSON lines unless it is a terminal.

    Replaces the handler an earlier call installed (calling it twice is harmless) and leaves
    any other handler alone.
    """
    out = stream if stream is not None else sys.stderr
    if json_lines is None:
        isatty = getattr(out, "isatty", None)
        json_lines = not (callable(isatty) and isatty())
    handler = _HookstreamHandler(out)
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old, _HookstreamHandler):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
