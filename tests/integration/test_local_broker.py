"""`hookstream kafka start|status|stop` runs a real broker and leaves no process behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hookstream.tools import localkafka

pytestmark = pytest.mark.integration


def _cli(run_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hookstream", "kafka", *args, "--run-dir", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, "PATH": os.environ["PATH"]},
    )


@pytest.mark.skipif(
    bool(os.environ.get("HOOKSTREAM_KAFKA_BOOTSTRAP_SERVERS")),
    reason="uses the local broker only when no external cluster is configured",
)
def test_start_status_stop(tmp_path: Path) -> None:
    port = localkafka.free_port()
    started = _cli(tmp_path, "start", "--port", str(port))
    assert started.returncode == 0, started.stderr
    assert f"kafka ready at 127.0.0.1:{port} in" in started.stdout
    state = localkafka.read_state(tmp_path)
    assert state is not None
    try:
        status = _cli(tmp_path, "status")
        assert status.returncode == 0 and f"127.0.0.1:{port}" in status.stdout
        again = _cli(tmp_path, "start")
        assert "already running" in again.stdout
    finally:
        stopped = _cli(tmp_path, "stop", "--wipe")
    assert stopped.returncode == 0 and "kafka stopped" in stopped.stdout
    assert not localkafka.pid_alive(state.pid)  # gone, or a zombie awaiting its reaper
    assert _cli(tmp_path, "status").returncode == 3
