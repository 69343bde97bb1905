"""`hookstream run all`: every service as a child process, none of whose deaths goes unseen.

For development (`make run`, the image's default command). Each child's stderr passes through
whole lines at a time, rendered as text when this process's stderr is a terminal; the first
exit nobody asked for is reported with the child's name and reason and stops the others.
"""

from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import sys
import threading
import time

# Seconds a child of `run all` gets beyond shutdown_grace to stop before SIGKILL: the sender
# and the api spend up to shutdown_grace on in-flight work, then still close their clients.
STOP_MARGIN = 5.0
# How long a child's exit waits for the rest of its stderr to be read (the pipe reaches its
# end as the child exits, unless something the child started still holds it).
STDERR_DRAIN_SECONDS = 2.0
# Levels of a service's JSON log line that `run all` quotes when it reports the service's death.
ERROR_LEVELS = frozenset({"ERROR", "CRITICAL"})
# librdkafka writes its own lines to stderr, `%<syslog level>|<time>|<facility>|…`; levels up
# to 3 are errors, the rest notices.
RDKAFKA_LINE = re.compile(r"^%(\d)\|")
ERROR_QUOTE_LIMIT = 500


def _one_line(text: str) -> str:
    """`text` on one line, shortened: error messages span lines (psycopg's, SQLAlchemy's)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= ERROR_QUOTE_LIMIT else flat[: ERROR_QUOTE_LIMIT - 1] + "…"


def _json_record(line: str) -> dict[str, object] | None:
    if not line.startswith("{"):
        return None
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _as_text(record: dict[str, object], service: str = "") -> str:
    """`time level [service] logger message key=value …`, as `runtime.logging.TextFormatter`
    writes it, with the service that logged it when several share one terminal."""
    core = ("ts", "level", "logger", "message", "exc_info", "stack_info")
    extra = " ".join(f"{k}={v}" for k, v in record.items() if k not in core)
    who = f"{service:<8} " if service else ""
    text = f"{record.get('ts', '')} {record.get('level', '')!s:<7} {who}{record.get('logger', '')} "
    text += f"{record.get('message', '')}{' ' + extra if extra else ''}\n"
    for name in ("exc_info", "stack_info"):
        if record.get(name):
            text += f"{record[name]}\n"
    return text


class ErrorTail:
    """The last error a child wrote on stderr, as one line, for the report of its death.

    Its stderr is a pipe, so a service logs JSON lines there. Anything else comes from the
    interpreter or a library: a traceback (the line that names the exception is the one that
    matters, not the frames above it nor the rest of the message below it), librdkafka's own
    lines, or a one-line complaint such as `hookstream: <a bad setting>`.
    """

    def __init__(self) -> None:
        self.last: str | None = None
        self._in_frames = False  # after "Traceback …", before the exception's line
        self._in_message = False  # after the exception's line: the rest of its message

    def feed(self, line: str) -> None:
        text = line.rstrip()
        if not text:
            return
        record = _json_record(text)
        if record is not None:
            self._in_frames = self._in_message = False
            if record.get("level") in ERROR_LEVELS:
                self.last = _one_line(str(record.get("message", "")))
        elif text.startswith("Traceback (most recent call last):"):
            self._in_frames, self._in_message = True, False
        elif self._in_frames:
            if not text[0].isspace():  # frames are indented, the exception's line is not
                self.last = _one_line(text)
                self._in_frames, self._in_message = False, True
        elif not self._in_message and not text[0].isspace():
            rdkafka = RDKAFKA_LINE.match(text)
            if rdkafka is None or int(rdkafka.group(1)) <= 3:
                self.last = _one_line(text)


class SharedStderr:
    """This process's stderr, written whole lines at a time by every child's reader and by
    `run all` itself, so that lines never interleave."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # At a terminal people read the lines: the children's JSON (their stderr is a pipe)
        # is shown the way a service started there would print it.
        self.as_text = sys.stderr.isatty()

    def passthrough(self, line: bytes, service: str = "") -> None:
        """A child's line, unchanged or, at a terminal, a JSON log line rendered as text
        (naming `service`: a librdkafka or view line does not say whose it is)."""
        if self.as_text:
            record = _json_record(line.decode(errors="replace").rstrip())
            if record is not None:
                line = _as_text(record, service).encode()
        self.write(line)

    def write(self, line: bytes) -> None:
        with self._lock:
            try:
                sys.stderr.buffer.write(line)
                sys.stderr.buffer.flush()
            except (OSError, ValueError):
                # A closed or broken stderr must not stop the readers: a child whose pipe is
                # no longer read would block on its next log line.
                pass

    def say(self, message: str) -> None:
        self.write(f"hookstream run all: {message}\n".encode())


class Child:
    """One service of `run all`: its process, a thread that passes its stderr through (and
    keeps its last error), and one that reports its exit on `exits`."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        out: SharedStderr,
        exits: queue.SimpleQueue[str | int],
    ) -> None:
        self.name = name
        self.errors = ErrorTail()
        self.sent: set[int] = set()
        # Own process groups: a terminal's Ctrl-C reaches `run all` only, which forwards it
        # once (a second SIGINT would cut a child's graceful shutdown short).
        self.process = subprocess.Popen(
            argv,
            env=env,
            stderr=subprocess.PIPE,
            process_group=0,
        )
        self._reader = threading.Thread(
            target=self._pass_through, args=(out,), name=f"{name}-stderr", daemon=True
        )
        self._reader.start()
        threading.Thread(
            target=self._watch, args=(exits,), name=f"{name}-exit", daemon=True
        ).start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _pass_through(self, out: SharedStderr) -> None:
        assert self.process.stderr is not None
        with self.process.stderr as pipe:
            for line in pipe:
                out.passthrough(line, self.name)  # the user sees what the service logged
                self.errors.feed(line.decode(errors="replace"))

    def _watch(self, exits: queue.SimpleQueue[str | int]) -> None:
        self.process.wait()
        # Its last lines first: the report quotes the error they hold.
        self._reader.join(STDERR_DRAIN_SECONDS)
        exits.put(self.name)

    def exit_reason(self) -> str:
        """How it ended, e.g. `killed by SIGKILL`, `exited with status 70: <its last error>`."""
        code = self.process.returncode
        if code is not None and code < 0:
            try:
                how = f"killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"killed by signal {-code}"
        else:
            how = f"exited with status {code}"
        return f"{how}: {self.errors.last}" if self.errors.last else how

    def send(self, signum: int) -> None:
        """Ask it to stop (SIGKILL: make it): a death by a signal it was sent is no failure."""
        self.sent.add(signum)
        self.process.send_signal(signum)

    def stopped_as_asked(self) -> bool:
        code = self.process.returncode
        return code == 0 or (code is not None and -code in self.sent)


def supervise(
    children: dict[str, Child],
    events: queue.SimpleQueue[str | int],
    out: SharedStderr,
    grace: float,
) -> int:
    """Wait until every child has exited; 0 if each stopped cleanly when it was asked to.

    `events` brings the name of a child that exited, or the number of a signal `run all`
    received. The first exit nobody asked for stops the others; a signal is passed on to
    every child. Either way a child still running `grace` seconds later gets SIGKILL.
    """
    running = dict(children)
    stopping = False
    deadline: float | None = None  # while stopping: when the ones left get SIGKILL
    failed = False

    def stop_all(signum: int) -> None:
        nonlocal stopping, deadline
        for child in running.values():
            child.send(signum)
        if not stopping:
            stopping, deadline = True, time.monotonic() + grace

    while running:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            event = events.get(timeout=timeout)
        except queue.Empty:
            for child in running.values():
                out.say(f"{child.name} (pid {child.pid}) did not stop within {grace:g} s: SIGKILL")
            stop_all(signal.SIGKILL)
            deadline, failed = None, True  # SIGKILL cannot be refused: wait for them
            continue
        if isinstance(event, int):
            stop_all(event)
            continue
        child = running.pop(event)
        if not stopping:
            # Nobody asked it to stop: even a clean exit leaves the group incomplete.
            out.say(f"{child.name} (pid {child.pid}) stopped unasked: {child.exit_reason()}")
            if running:
                out.say(f"stopping {', '.join(running)}")
            stop_all(signal.SIGTERM)
            failed = True
        elif not child.stopped_as_asked():
            out.say(f"{child.name} (pid {child.pid}) {child.exit_reason()}")
            failed = True
    return 1 if failed else 0
