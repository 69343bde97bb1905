"""What the figures were measured on, and per-process CPU and memory read from /proc."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import confluent_kafka

REPO = Path(__file__).resolve().parent.parent
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_total_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def load_average() -> list[float]:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return []


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def commit() -> str | None:
    """The commit checked out, read from .git (no git command); None outside a clone."""
    git = REPO / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head
        ref = head[len("ref: ") :]
        loose = git / ref
        if loose.exists():
            return loose.read_text().strip()
        for line in (git / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0]
    except OSError:
        pass
    return None


def nginx_version(binary: str | None) -> str | None:
    if binary is None:
        return None
    out = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False)
    text = (out.stderr or out.stdout).strip()
    return text.split("/", 1)[-1] if "/" in text else text or None


def describe(kafka_version: str, nginx_binary: str | None) -> dict[str, Any]:
    memory = memory_total_bytes()
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(memory / 2**30, 1) if memory else None,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_implementation": sys.implementation.name,
        "kafka": kafka_version,
        "nginx": nginx_version(nginx_binary),
        "confluent_kafka": _version("confluent-kafka"),
        "librdkafka": confluent_kafka.libversion()[0],
        "aiohttp": _version("aiohttp"),
        "fastavro": _version("fastavro"),
        "standardwebhooks": _version("standardwebhooks"),
        "hookstream": _version("hookstream"),
        "commit": commit(),
        "load_average_at_start": load_average(),
    }


@dataclass(frozen=True, slots=True)
class ProcessSample:
    """CPU seconds (user + system, every thread) and peak resident memory of one process."""

    cpu_seconds: float
    peak_rss_bytes: int
    rss_bytes: int


def sample_process(pid: int) -> ProcessSample | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    peak = current = 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1]) * 1024
        elif line.startswith("VmRSS:"):
            current = int(line.split()[1]) * 1024
    return ProcessSample(_cpu_ticks(stat) / _CLOCK_TICKS, peak, current)


def _cpu_ticks(stat: str) -> int:
    """utime + stime of a /proc/.../stat line."""
    # The command name may hold spaces; the fields after it are space-separated.
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


# HotSpot names its JIT compiler threads "C1 CompilerThreadN" / "C2 CompilerThreadN"; Linux
# cuts thread names at 15 characters.
_JIT_THREAD_PREFIXES = ("C1 CompilerThre", "C2 CompilerThre")


def jit_cpu_seconds(pid: int) -> float:
    """CPU seconds a JVM's live JIT compiler threads have spent (0.0 if unreadable).

    A fresh broker spends much of its first minutes compiling its hot paths: a one-time cost
    that a long-running broker does not pay per delivery, so the bench reports it apart.
    """
    total = 0
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return 0.0
    for task in tasks:
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue  # the thread ended between listing and reading
        name = stat[stat.find("(") + 1 : stat.rfind(")")]
        if name.startswith(_JIT_THREAD_PREFIXES):
            total += _cpu_ticks(stat)
    return total / _CLOCK_TICKS
