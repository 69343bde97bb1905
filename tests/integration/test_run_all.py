"""`hookstream run all` as `make run` starts it: a child's death stops the group, loudly.

Real processes on the real broker: `python -m hookstream run all` with this test's topics, a
free api port and free metrics ports. Its stderr carries the children's own JSON log lines
(passed through) and its reports, which start with `hookstream run all:`.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from hookstream.core.settings import Settings
from hookstream.runtime.runner import FAILED_EXIT
from hookstream.tools import localkafka
from hookstream.tools.topics import create_topics
from tests.conftest import SettingsFactory
from tests.helpers import api_ready, process_exists, settings_env, wait_for

pytestmark = pytest.mark.integration

SERVICE_NAMES = ("router", "sender", "log-sink", "api")
# A PostgreSQL store on a port where nothing listens: refused at once, on every connection.
UNREACHABLE_STORE = "postgresql+psycopg://u:p@127.0.0.1:1/x"
# `run all` stops within shutdown_grace plus a few seconds; this leaves room for a slow machine.
EXIT_DEADLINE = 60.0
REPORT = "hookstream run all: "


class RunAll:
    """One `python -m hookstream run all` process; its stdout and stderr lines are collected."""

    def __init__(self, settings: Settings) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "hookstream", "run", "all"],
            env=settings_env(settings),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._stdout: list[str] = []
        self._stderr: list[str] = []
        self._lock = threading.Lock()
        self._pids: dict[str, int] = {}
        assert self.process.stdout is not None and self.process.stderr is not None
        self._readers = [
            threading.Thread(target=self._collect, args=(self.process.stdout, self._stdout)),
            threading.Thread(target=self._collect, args=(self.process.stderr, self._stderr)),
        ]
        for reader in self._readers:
            reader.daemon = True
            reader.start()

    def _collect(self, stream: IO[str], lines: list[str]) -> None:
        for line in stream:
            with self._lock:
                lines.append(line.rstrip("\n"))

    def stdout(self) -> list[str]:
        with self._lock:
            return list(self._stdout)

    def stderr(self) -> list[str]:
        with self._lock:
            return list(self._stderr)

    def reports(self) -> list[str]:
        """`run all`'s own lines on stderr, without the prefix."""
        return [line.removeprefix(REPORT) for line in self.stderr() if line.startswith(REPORT)]

    def output(self) -> str:
        """For failure messages: the last lines of both streams."""
        return "\n".join([*self.stdout(), *self.stderr()[-40:]])

    def pids(self) -> dict[str, int]:
        """The children's pids, from the start line."""

        def started() -> str | None:
            return next((line for line in self.stdout() if line.startswith("  pids ")), None)

        line = self._until(started, "the banner's pids")
        found = re.search(r"pids +(.+)", line)
        assert found, line
        pids = {name: int(pid) for name, pid in re.findall(r"([\w-]+) (\d+)", found.group(1))}
        assert list(pids) == list(SERVICE_NAMES), line
        self._pids = pids
        return pids

    def wait_all_ready(self, settings: Settings) -> None:
        """Until the api and the three other services all answer /readyz."""
        base_url = f"http://127.0.0.1:{settings.api_port}"
        self._until(lambda: api_ready(base_url), "the api's /readyz")
        self._until(
            lambda: (
                len(self._ops_ports()) == 3
                and all(api_ready(f"http://127.0.0.1:{port}") for port in self._ops_ports())
            ),
            "/readyz of router, sender and log-sink",
        )

    def _until(self, condition: Callable[[], Any], what: str) -> Any:
        """wait_for, failing with what `run all` has printed by then."""
        try:
            return wait_for(condition, timeout=60, what=what)
        except pytest.fail.Exception as failed:
            pytest.fail(f"{failed}\n{self.output()}")

    def _ops_ports(self) -> list[int]:
        # Metrics port 0: each service logs the port it was given.
        ports = []
        for line in self.stderr():
            message = _message(line)
            if message.startswith("metrics and probes on port "):
                ports.append(int(message.rsplit(" ", 1)[1]))
        return ports

    def wait(self, timeout: float = EXIT_DEADLINE) -> int:
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"run all still running {timeout:.0f} s later:\n{self.output()}")
        for reader in self._readers:
            reader.join(10)
        return code

    def close(self) -> None:
        """Leave nothing running, whatever the test did."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        for pid in self._pids.values():
            if process_exists(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def run_settings(settings_factory: SettingsFactory) -> Settings:
    # A free api port; metrics port 0 (settings_for_test) gives every other service a free one.
    settings = settings_factory(api_port=localkafka.free_port())
    create_topics(settings)
    return settings


RunAllStarter = Callable[[Settings], RunAll]


@pytest.fixture
def start_run_all() -> Iterator[RunAllStarter]:
    started: list[RunAll] = []

    def start(settings: Settings) -> RunAll:
        run = RunAll(settings)
        started.append(run)
        return run

    yield start
    for run in started:
        run.close()


def test_a_killed_child_stops_the_group(
    run_settings: Settings, start_run_all: RunAllStarter
) -> None:
    run = start_run_all(run_settings)
    pids = run.pids()
    run.wait_all_ready(run_settings)
    os.kill(pids["router"], signal.SIGKILL)
    assert run.wait() == 1, run.output()
    # The others stopped on the SIGTERM, in time and cleanly: nothing more to report.
    assert run.reports() == [
        f"router (pid {pids['router']}) stopped unasked: killed by SIGKILL",
        "stopping sender, log-sink, api",
    ], run.output()
    _assert_gone(pids)


def test_a_child_that_fails_is_named_with_its_status_and_error(
    run_settings: Settings, start_run_all: RunAllStarter
) -> None:
    # The api alone cannot start: its port is taken. Everything else starts as usual.
    with socket.socket() as taken:
        taken.bind((run_settings.api_host, run_settings.api_port))
        taken.listen()
        run = start_run_all(run_settings)
        pids = run.pids()
        assert run.wait() == 1, run.output()
    reports = run.reports()
    assert len(reports) == 2, run.output()
    api = f"api (pid {pids['api']}) stopped unasked: exited with status 1: OSError: "
    assert reports[0].startswith(api), run.output()
    # The exception's line of the api's traceback, not the frames or the traceback's header.
    assert reports[0].endswith("address already in use"), run.output()
    assert reports[1] == "stopping router, sender, log-sink", run.output()
    _assert_gone(pids)


def test_a_service_stopped_by_its_own_error_is_reported(
    settings_factory: SettingsFactory, start_run_all: RunAllStarter
) -> None:
    # An unreachable store stops the log-sink (status 70, its CRITICAL line) and the api (an
    # uncaught error at start, status 1): whichever fails first is the one `run all` reports.
    settings = settings_factory(api_port=localkafka.free_port(), store_url=UNREACHABLE_STORE)
    create_topics(settings)
    run = start_run_all(settings)
    pids = run.pids()
    assert run.wait() == 1, run.output()
    reports = run.reports()
    first = (
        re.match(r"([\w-]+) \(pid (\d+)\) stopped unasked: (.*)$", reports[0]) if reports else None
    )
    assert first, run.output()
    name, pid, reason = first.groups()
    assert pids[name] == int(pid)
    refused = 'connection to server at "127.0.0.1", port 1 failed: Connection refused'
    if name == "log-sink":
        assert reason.startswith(
            f"exited with status {FAILED_EXIT}: log-sink: stopping: OperationalError: "
        ), run.output()
    else:
        assert name == "api", run.output()
        assert reason.startswith("exited with status 1: sqlalchemy.exc.OperationalError: "), (
            run.output()
        )
    assert refused in reason, run.output()
    _assert_gone(pids)


def _free_run_of_ports(count: int) -> int:
    """The first of `count` consecutive ports free now, below the kernel's ephemeral range:
    ports counted up from one the kernel handed out (free_port) are its next ephemeral ones,
    which another test worker's connections or brokers may take in the meantime."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20_000, 30_000 - count)
        with contextlib.ExitStack() as held:
            try:
                for port in range(base, base + count):
                    sock = held.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return base
    raise RuntimeError(f"no {count} consecutive free ports in 20000-30000")


def test_the_banner_says_where_everything_is_and_every_address_answers(
    settings_factory: SettingsFactory, start_run_all: RunAllStarter
) -> None:
    # Metrics ports counted up from a fixed one, as `make run` does, so the banner names them.
    settings = settings_factory(
        api_port=localkafka.free_port(),
        metrics_port=_free_run_of_ports(4),
        api_keys={"dev-admin-key": "*", "a-real-secret-key": "acme"},
    )
    create_topics(settings)
    run = start_run_all(settings)
    pids = run.pids()
    banner = dict(
        re.match(r"  ([\w ]+?)  +(.*)$", line).groups()  # type: ignore[union-attr]
        for line in run.stdout()
        if line.startswith("  ")
    )
    assert set(banner) == {"api", "console", "metrics", "API keys", "pids"}, run.stdout()
    assert "a-real-secret-key" not in "\n".join(run.stdout())
    assert banner["API keys"].startswith("dev-admin-key (admin"), banner
    run.wait_all_ready(settings)
    urls = re.findall(r"http://[^ ,)]+", " ".join(banner.values()))
    assert len(urls) == 7, banner  # api, its OpenAPI, console, four metrics listeners
    for url in urls:
        status, text = _get(url)
        if url.endswith("/v1"):
            assert status == 404, (url, text)  # nothing at the prefix itself
        else:
            assert status == 200, (url, text)
        if url.endswith("/metrics"):
            assert "hookstream_" in text, url
    # The key the banner shows is one the api takes.
    status, text = _get(f"{banner['api'].split()[0]}/webhooks")
    assert status == 200, text
    assert set(pids) == set(SERVICE_NAMES)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_every_child_cleanly(
    run_settings: Settings, start_run_all: RunAllStarter, signum: signal.Signals
) -> None:
    run = start_run_all(run_settings)
    pids = run.pids()
    run.wait_all_ready(run_settings)
    run.process.send_signal(signum)
    assert run.wait() == 0, run.output()
    assert run.reports() == [], run.output()
    # Each child was told once, and said so in its own log line (passed through).
    for name in ("router", "sender", "log-sink"):
        told = f"{name}: {signum.name} received, "
        lines = [line for line in run.stderr() if _message(line).startswith(told)]
        assert len(lines) == 1, run.output()
    _assert_gone(pids)


def test_log_sink_alone_exits_70_on_an_unreachable_store(
    settings_factory: SettingsFactory, tmp_path: Path
) -> None:
    settings = settings_factory(store_url=UNREACHABLE_STORE)
    done = subprocess.run(
        [sys.executable, "-m", "hookstream", "run", "log-sink"],
        env=settings_env(settings),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=EXIT_DEADLINE,
        check=False,
    )
    assert done.returncode == FAILED_EXIT, done.stderr
    critical = [
        record
        for record in map(_record, done.stderr.splitlines())
        if record and record.get("level") == "CRITICAL"
    ]
    assert len(critical) == 1, done.stderr
    assert str(critical[0]["message"]).startswith("log-sink: stopping: OperationalError: ")
    assert "Traceback" in str(critical[0]["exc_info"])


def _get(url: str) -> tuple[int, str]:
    """GET `url` with the development key, following redirects: status and body."""
    request = urllib.request.Request(url, headers={"Authorization": "Bearer dev-admin-key"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode()


def _record(line: str) -> dict[str, object] | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _message(line: str) -> str:
    record = _record(line)
    return str(record.get("message", "")) if record else ""


def _assert_gone(pids: dict[str, int]) -> None:
    wait_for(
        lambda: not any(process_exists(pid) for pid in pids.values()),
        timeout=10,
        what=f"every child of run all gone: {pids}",
    )
