"""`hookstream demo` (`make demo`) end to end: real broker, real services, real receivers.

The demo runs as a user runs it, a `python -m hookstream demo` process in an empty working
directory, with this test's topics, its own store and a shortened retry schedule.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from pathlib import Path

import pytest

from hookstream.core.settings import Settings
from tests.conftest import SettingsFactory
from tests.docs.processes import ExampleProcess
from tests.helpers import process_exists, settings_env, sqlite_url, wait_for

pytestmark = pytest.mark.integration

# The first retry comes 1 s (±20 %) after a failure: long enough that both failed first
# attempts happen before either retry, short enough for a fast test.
RETRY_SCHEDULE = (1.0, 2.0)
ATTEMPT_ROW = re.compile(
    r"^(dlv_\w+)\s+(shop|accounting)\s+([\w.]+)\s+(\d+)\s+\S+\s+(\w+)\s+(\d+|-)\s+\d+ms$"
)


@pytest.fixture
def demo_settings(settings_factory: SettingsFactory, tmp_path: Path) -> Settings:
    return settings_factory(
        retry_schedule=RETRY_SCHEDULE, store_url=sqlite_url(tmp_path, "demo.db")
    )


def _demo(settings: Settings, directory: Path) -> ExampleProcess:
    env = settings_env(settings)
    # The demo chooses these itself; the environment's must not matter.
    for name in ("HOOKSTREAM_API_KEYS", "HOOKSTREAM_API_PORT", "HOOKSTREAM_METRICS_PORT"):
        env.pop(name, None)
    workdir = directory / "work"
    workdir.mkdir()
    return ExampleProcess(
        [sys.executable, "-m", "hookstream", "demo", "--log-dir", str(directory / "logs")],
        workdir,
        env,
    )


def test_demo_shows_retries_then_success(demo_settings: Settings, tmp_path: Path) -> None:
    demo = _demo(demo_settings, tmp_path)
    try:
        assert demo.process.wait(120) == 0, demo.output()
    finally:
        demo.stop()
    out = demo.text()
    # The receivers' own lines: signatures verified, accounting fails its first two requests.
    assert len(re.findall(r"\[accounting\] .* verified -> 500", out)) == 2, out
    assert "UNVERIFIED" not in out

    attempts: dict[str, list[tuple[str, str, int, str, str]]] = {}
    for line in out.splitlines():
        row = ATTEMPT_ROW.match(line)
        if row:
            delivery, webhook, event_type, number, outcome, code = row.groups()
            attempts.setdefault(delivery, []).append(
                (webhook, event_type, int(number), outcome, code)
            )
    shop = [rows for rows in attempts.values() if rows[0][0] == "shop"]
    accounting = [rows for rows in attempts.values() if rows[0][0] == "accounting"]
    # Every sample reached the shop at the first attempt.
    assert len(shop) == 4, out
    for delivery in shop:
        assert [(n, outcome, code) for _, _, n, outcome, code in delivery] == [
            (1, "success", "204")
        ], out
    # Both invoice.paid deliveries to accounting: a 500, then a retry that succeeded.
    assert len(accounting) == 2, out
    for delivery in accounting:
        assert delivery[0][1] == "invoice.paid"
        assert [(n, outcome, code) for _, _, n, outcome, code in delivery] == [
            (1, "temporary_failure", "500"),
            (2, "success", "204"),
        ], out
    assert "6 deliveries succeeded, 2 of them after a retry" in out
    # The listing table as `hookstream deliveries list` prints it.
    assert len(re.findall(r"^dlv_\w+\s+succeeded\s+2\s+204\s+invoice\.paid", out, re.M)) == 2


def test_ctrl_c_stops_every_child(settings_factory: SettingsFactory, tmp_path: Path) -> None:
    # Retries two minutes away: the demo cannot finish on its own before the Ctrl-C arrives.
    settings = settings_factory(retry_schedule=(120.0,), store_url=sqlite_url(tmp_path, "demo.db"))
    demo = _demo(settings, tmp_path)
    try:
        demo.wait_line(lambda line: line.startswith("published"), 120, "the first event")
        children = _children(demo.process.pid)
        # api, sender, log-sink, two receivers and the router.
        assert len(children) == 6, children
        # A terminal's Ctrl-C reaches the demo alone: its children have process groups of
        # their own, and the demo stops them.
        os.kill(demo.process.pid, signal.SIGINT)
        assert demo.process.wait(60) == 130, demo.output()
    finally:
        demo.stop()
    assert "interrupted" in demo.text()
    assert wait_for(
        lambda: not any(process_exists(pid) for pid in children),
        timeout=10,
        what="the children gone",
    )


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in text.split()]
