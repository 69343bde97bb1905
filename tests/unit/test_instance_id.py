"""The default instance id is unique per process even where host name and pid are not (two
containers with one host name, each its own pid 1); a configured one is kept as it is."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from hookstream.core.settings import load_settings

PRINT_ID = "from hookstream.core.settings import load_settings; print(load_settings().instance_id)"


def as_pid_1(**env: str) -> str:
    """The instance id a process gets as pid 1 of a pid namespace of its own, as in a container;
    skipped where this machine cannot make one."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("no unshare(1) here")
    environment = {k: v for k, v in os.environ.items() if k != "HOOKSTREAM_INSTANCE_ID"}
    command = [unshare, "--user", "--map-root-user", "--pid", "--fork", sys.executable]
    probe = subprocess.run(
        [*command, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if probe.returncode != 0 or probe.stdout.strip() != "1":
        pytest.skip(f"cannot run a process in a pid namespace of its own: {probe.stderr.strip()}")
    done = subprocess.run(
        [*command, "-c", PRINT_ID],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        env={**environment, **env},
    )
    return done.stdout.strip()


def test_two_pid_1_processes_on_one_host_name_get_different_ids() -> None:
    first, second = as_pid_1(), as_pid_1()
    assert first != second, "two routers in such containers would fence each other"


def test_a_configured_id_is_kept_as_it_is() -> None:
    assert as_pid_1(HOOKSTREAM_INSTANCE_ID="router-0") == "router-0"
    assert as_pid_1(HOOKSTREAM_INSTANCE_ID="router-0") == "router-0"


def test_the_default_is_one_id_per_process() -> None:
    # Every Settings a process loads names it the same: its clients and its router agree.
    assert load_settings().instance_id == load_settings().instance_id
