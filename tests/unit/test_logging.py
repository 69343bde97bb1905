"""Structured logs: JSON lines off a terminal, readable text on one, `extra` fields kept."""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterator

import orjson
import pytest

from hookstream.runtime.logging import JsonFormatter, TextFormatter, configure_logging


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord(
        "hookstream.sender.service", logging.INFO, "x.py", 1, message, args, None
    )
    for name, value in extra.items():
        setattr(rec, name, value)
    return rec


def test_a_json_line_has_the_core_fields_then_the_extra_ones() -> None:
    rec = record("attempt %d of %s", 2, "dlv_1", event_id="evt_1", status_code=503, error=None)
    rec.created = 1795748515.482
    line = JsonFormatter().format(rec)
    assert "\n" not in line
    parsed = orjson.loads(line)
    assert list(parsed)[:4] == ["ts", "level", "logger", "message"]
    assert parsed == {
        "ts": "2026-11-27T03:01:55.482Z",
        "level": "INFO",
        "logger": "hookstream.sender.service",
        "message": "attempt 2 of dlv_1",
        "event_id": "evt_1",
        "status_code": 503,
        "error": None,
    }


def test_a_json_line_keeps_odd_values_and_tracebacks_on_one_line() -> None:
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        rec = record("failed: %s", 'quote " and ünïcode', when=object, path=b"bytes")
        rec.exc_info = sys.exc_info()
    parsed = orjson.loads(JsonFormatter().format(rec))
    assert parsed["message"] == 'failed: quote " and ünïcode'
    assert parsed["when"] == str(object) and parsed["path"] == str(b"bytes")
    assert "ValueError: boom" in parsed["exc_info"] and "Traceback" in parsed["exc_info"]


def test_an_extra_field_never_replaces_a_core_one() -> None:
    rec = record("hello")
    rec.__dict__["level"] = "forged"
    parsed = orjson.loads(JsonFormatter().format(rec))
    assert parsed["level"] == "INFO"


def test_the_text_format_appends_the_extra_fields() -> None:
    text = TextFormatter().format(record("attempt failed", webhook_id="wh_1", status_code=500))
    assert text.endswith("hookstream.sender.service attempt failed webhook_id=wh_1 status_code=500")
    assert " INFO " in text


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restore_root")
def test_configure_logging_chooses_json_unless_on_a_terminal() -> None:
    pipe = io.StringIO()
    configure_logging("DEBUG", stream=pipe)
    logging.getLogger("hookstream.test").debug("to a pipe", extra={"delivery_id": "dlv_7"})
    assert orjson.loads(pipe.getvalue())["delivery_id"] == "dlv_7"

    tty = FakeTty()
    configure_logging("INFO", stream=tty)  # replaces the first handler, adds no second one
    logging.getLogger("hookstream.test").debug("hidden")
    logging.getLogger("hookstream.test").info("to a person", extra={"delivery_id": "dlv_8"})
    assert "to a person delivery_id=dlv_8" in tty.getvalue()
    assert "hidden" not in tty.getvalue()
    assert pipe.getvalue().count("\n") == 1
