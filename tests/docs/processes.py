"""Runs a documentation example as a child process and watches what it prints."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest


class ExampleProcess:
    """A long-running example (a receiver) whose stdout lines are collected by a thread."""

    def __init__(self, command: Sequence[str], cwd: Path, env: dict[str, str]) -> None:
        self.command = list(command)
        self.lines: list[str] = []
        self._new: queue.Queue[str] = queue.Queue()
        self.process = subprocess.Popen(
            self.command,
            cwd=cwd,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            # As from a terminal: a test run started in the background by a shell without job
            # control inherits an ignored SIGINT, which would make Ctrl-C tests meaningless.
            preexec_fn=_default_sigint,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._new.put(line.rstrip("\n"))

    def wait_line(self, wanted: Callable[[str], bool], timeout: float, what: str) -> str:
        """The first line (already printed or still to come) for which `wanted` is true."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines:
                if wanted(line):
                    return line
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}: {self.output()}")
            try:
                self.lines.append(self._new.get(timeout=min(remaining, 0.2)))
            except queue.Empty:
                if self.process.poll() is not None and self._new.empty():
                    self._reader.join(1)
                    while not self._new.empty():
                        self.lines.append(self._new.get())
                    if not any(wanted(line) for line in self.lines):
                        pytest.fail(
                            f"{self.command[0]} exited with {self.process.returncode} before "
                            f"{what}: {self.output()}"
                        )

    def matching(self, wanted: Callable[[str], bool]) -> list[str]:
        """The lines printed so far for which `wanted` is true."""
        self._drain()
        return [line for line in self.lines if wanted(line)]

    def output(self) -> str:
        """The last lines, for a failure message."""
        self._drain()
        return "\n".join(self.lines[-40:])

    def text(self) -> str:
        """Everything printed so far."""
        self._drain()
        return "\n".join(self.lines)

    def _drain(self) -> None:
        while not self._new.empty():
            self.lines.append(self._new.get())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._reader.join(5)


def run_setup(command: Sequence[str], cwd: Path, what: str, timeout: float = 600) -> None:
    """A one-off preparation step (npm ci, go build); its output is shown when it fails."""
    done = subprocess.run(
        list(command), cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        pytest.fail(f"{what} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
