"""The services of one chaos run, started, killed and restarted as real processes."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from hookstream.core.settings import Settings
from hookstream.core.topics import Topics
from tests.chaos.brokers import Brokers
from tests.chaos.plan import EXTRA_SENDER, SERVICES
from tests.pipeline import Service


@dataclass(frozen=True)
class Happening:
    """One fault as it happened, for the report's timeline."""

    at: float  # seconds after the load started
    action: str
    target: str
    seconds: float  # how long the action itself took (a restart's start-up, say)


class Fleet:
    """Every running service by name; a service killed -9 is started again at once."""

    def __init__(self, settings: Settings, log_dir: Path, brokers: Brokers | None):
        self.settings = settings
        self.log_dir = log_dir
        # None: a cluster the run did not start, and must not harm.
        self._brokers = brokers
        self._services: dict[str, Service] = {}
        self._retired: list[Service] = []
        self._lock = threading.Lock()
        self.timeline: list[Happening] = []
        self.started_at = time.monotonic()

    def start(self, name: str) -> Service:
        role = SERVICES.get(name, "sender" if name == EXTRA_SENDER else name)
        # The instance id names a sender's client in the group and keeps a router's
        # transactional id stable across its restarts (so the new one fences the old).
        service = Service(self.settings, role, self.log_dir, HOOKSTREAM_INSTANCE_ID=f"chaos-{name}")
        with self._lock:
            self._services[name] = service
        return service

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._services)

    def kill_and_restart(self, name: str) -> None:
        began = time.monotonic()
        with self._lock:
            victim = self._services.pop(name)
        victim.kill()
        self._retired.append(victim)
        self.start(name)
        self._record("kill -9 + restart", name, began)

    def add_sender(self) -> None:
        began = time.monotonic()
        self.start(EXTRA_SENDER)
        self._record("member joins", EXTRA_SENDER, began)

    def remove_sender(self) -> None:
        began = time.monotonic()
        with self._lock:
            leaving = self._services.pop(EXTRA_SENDER, None)
        if leaving is None:
            return
        code = leaving.terminate(60)
        self._retired.append(leaving)
        self._record(f"member leaves (exit {code})", EXTRA_SENDER, began)

    def restart_broker(self) -> None:
        if self._brokers is None:
            return
        began = time.monotonic()
        self._record(self._brokers.restart_all(), "kafka", began)

    def kill_node(self, which: str) -> None:
        """kill -9 one node of the cluster: the leader of most `deliveries` partitions or the
        active controller."""
        if self._brokers is None:
            return
        began = time.monotonic()
        topic = Topics.from_settings(self.settings).deliveries
        self._record(self._brokers.kill_node(which, topic), "kafka", began)

    def restart_nodes(self) -> None:
        if self._brokers is None or not self._brokers.down:
            return
        began = time.monotonic()
        self._record(self._brokers.restart_down(), "kafka", began)

    def note(self, action: str, target: str) -> None:
        self._record(action, target, time.monotonic())

    def dead(self) -> list[str]:
        """Services that exited on their own (a crash the run did not cause)."""
        with self._lock:
            return [name for name, service in self._services.items() if not service.alive()]

    def stop(self) -> dict[str, int]:
        """SIGTERM every service; their exit codes by name."""
        with self._lock:
            running = dict(self._services)
            self._services.clear()
        codes = {name: service.terminate(60) for name, service in running.items()}
        self._retired.extend(running.values())
        return codes

    def close(self) -> None:
        for service in [*self._services.values(), *self._retired]:
            service.close()

    def logs(self) -> list[Path]:
        return [s.log_path for s in [*self._retired, *self._services.values()]]

    def _record(self, action: str, target: str, began: float) -> None:
        now = time.monotonic()
        self.timeline.append(
            Happening(round(began - self.started_at, 1), action, target, round(now - began, 1))
        )
