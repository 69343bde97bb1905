"""A throwaway PostgreSQL cluster for one test session, from the installed server binaries.

What pytest-postgresql does (initdb into a temporary directory, a free port, stopped at the
end), with one difference that keeps us from using it: PostgreSQL refuses to run as root,
and the library has no way to run the server as another user (its issues #341 and #455), while
CI and fresh machines here run as root. As root the cluster runs as the `postgres` system
user that Debian's server package creates.

Started on first use, so a session that never touches PostgreSQL (`make unit`) pays nothing.
`HOOKSTREAM_TEST_POSTGRES_URL` names an existing server instead.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

# Durability is not under test: without fsync the cluster starts and creates databases in a
# fraction of the time, and every test makes a database of its own.
SERVER_OPTIONS = "-c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off"


class PostgresUnavailableError(RuntimeError):
    """No server binaries, or the cluster did not start; the message says which and why."""


def server_bindir() -> Path:
    """The newest installed PostgreSQL server's binaries (Debian's layout, or PATH)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: int(Path(path).parts[4]) if Path(path).parts[4].isdigit() else 0,
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(os.path.realpath(initdb)).parent
    raise PostgresUnavailableError(
        "no PostgreSQL server binaries (initdb): run `bash deploy/dev/provision.sh` "
        "(it installs Debian's postgresql package) or set HOOKSTREAM_TEST_POSTGRES_URL"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ThrowawayPostgres:
    def __init__(self) -> None:
        self.bindir = server_bindir()
        self.port = _free_port()
        self.root = Path(tempfile.mkdtemp(prefix="hookstream-test-pg-"))
        self.data = self.root / "data"
        self._user: str | None = None
        if os.geteuid() == 0:
            self._user = "postgres"
            try:
                owner = pwd.getpwnam(self._user)
            except KeyError:
                raise PostgresUnavailableError(
                    "running as root, and there is no `postgres` user to run the server as"
                ) from None
            os.chown(self.root, owner.pw_uid, owner.pw_gid)

    @property
    def admin_url(self) -> str:
        """A superuser URL (trust authentication, loopback only)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> ThrowawayPostgres:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8")
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.root / "server.log"),
            "-o",
            f"-p {self.port} -k {self.root} {SERVER_OPTIONS}",
            "-w",
            "-t",
            "60",
            "start",
        )
        return self

    def describe(self) -> str:
        return f"a throwaway PostgreSQL {self.bindir.parent.name} on 127.0.0.1:{self.port}"

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bindir / tool), *args]
        if self._user is not None:
            command = ["runuser", "-u", self._user, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, cwd=self.root)
        if result.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise PostgresUnavailableError(
                f"{tool} failed ({result.returncode}): {result.stderr.strip()}\n{tail}"
            )


_cluster: ThrowawayPostgres | None = None


def admin_url() -> str:
    """The PostgreSQL server the tests create their databases on, started on first use."""
    global _cluster
    configured = os.environ.get("HOOKSTREAM_TEST_POSTGRES_URL")
    if configured:
        return configured
    if _cluster is None:
        _cluster = ThrowawayPostgres().start()
        # pytest_terminal_summary stops it; this covers runs without a terminal summary.
        atexit.register(stop)
    return _cluster.admin_url


def stop() -> str | None:
    """Stop the session's cluster, if one was started; say what it was (for the summary)."""
    global _cluster
    if _cluster is None:
        return None
    described = _cluster.describe()
    _cluster.stop()
    _cluster = None
    return described
