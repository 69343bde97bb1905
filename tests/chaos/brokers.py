"""The Kafka a chaos run started, and the faults it can do to it.

A single broker can only be killed and started again (everything waits for it). A cluster
can lose one node at a time and keep going: the run kills the node that leads the most
`deliveries` partitions (their leaders move while records flow) or the one that leads the
controller quorum (a new one is elected), and later starts it again.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from hookstream.tools import localcluster, localkafka
from tests.pipeline import kill_and_restart_broker


@dataclass
class Brokers:
    run_dir: Path
    bootstrap: str
    nodes: int
    down: list[int] = field(default_factory=list)

    def restart_all(self) -> str:
        """kill -9 the one broker and start it again; what happened, for the timeline."""
        if self.nodes != 1:
            raise ValueError("a cluster loses one node at a time: kill_node, restart_down")
        port = int(self.bootstrap.rsplit(":", 1)[1])
        kill_and_restart_broker(self.run_dir, port)
        return "broker kill -9 + restart"

    def kill_node(self, which: str, topic: str) -> str:
        """kill -9 the node that leads the most partitions of `topic` ("leader") or the
        controller quorum ("controller")."""
        state = self._state()
        if which == "leader":
            node = localcluster.leader_of_most(state, topic)
        elif which == "controller":
            node = localcluster.active_controller(state)
        else:
            raise ValueError(f"unknown node to kill: {which!r}")
        localcluster.kill_node(self.run_dir, node)
        self.down.append(node)
        return f"node {node} ({which}) kill -9"

    def restart_down(self) -> str:
        """Start the nodes that are down; returns once they are in sync again."""
        restarted = list(self.down)
        for node in restarted:
            localcluster.restart_node(self.run_dir, node)
        self.down.clear()
        return f"node {', '.join(map(str, restarted))} restarted and in sync"

    def _state(self) -> localcluster.ClusterState:
        state = localcluster.read_cluster(self.run_dir)
        if state is None:
            raise RuntimeError(f"no cluster in {self.run_dir}")
        return state


@contextmanager
def local_kafka(run_dir: Path, nodes: int) -> Iterator[Brokers]:
    """A broker (or a cluster of `nodes`) of the run's own, wiped at the end."""
    if nodes == 1:
        single = localkafka.start(run_dir=run_dir, port=localkafka.free_port())
        try:
            yield Brokers(run_dir, single.bootstrap, 1)
        finally:
            localkafka.stop(run_dir, wipe=True)
        return
    cluster = localcluster.start(run_dir, brokers=nodes)
    try:
        yield Brokers(run_dir, cluster.bootstrap, nodes)
    finally:
        localcluster.stop(run_dir, wipe=True)


def server_logs(run_dir: Path) -> list[Path]:
    """Every node's server log, to keep when a run failed."""
    return sorted(run_dir.glob("**/logs/server.log"))
