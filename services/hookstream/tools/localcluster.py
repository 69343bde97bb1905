"""A local Kafka cluster: several KRaft nodes on loopback, each a broker and a controller.

Production runs three brokers or more, topics with replication factor 3 and
`min.insync.replicas` 2. This runs that shape on one machine (small heaps, so three fit the
2-core box beside the services) for the chaos suite: kill -9 the node that leads the most
partitions of a topic, or the one that leads the controller quorum, and start it again.

Every node keeps its ports for the life of its data: the voters' controller ports are part of
every node's configuration, and a restarted node must be found where the others expect it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from confluent_kafka.admin import AdminClient

from hookstream.tools import localkafka
from hookstream.tools.localkafka import LocalKafkaError, Quorum

# Seconds the last node of a clean stop gets before SIGKILL (see `stop`).
LAST_NODE_GRACE = 5.0


@dataclass(frozen=True)
class Node:
    node_id: int
    port: int
    controller_port: int
    pid: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass(frozen=True)
class ClusterState:
    run_dir: str
    nodes: tuple[Node, ...]
    started_at: float
    startup_seconds: float

    @property
    def bootstrap(self) -> str:
        """Every node: a client that knows them all gets in while any one is down."""
        return ",".join(node.address for node in self.nodes)

    def node(self, node_id: int) -> Node:
        return next(node for node in self.nodes if node.node_id == node_id)


def _state_file(run_dir: Path) -> Path:
    return run_dir / "cluster.json"


def read_cluster(run_dir: Path) -> ClusterState | None:
    """The cluster last started in `run_dir` (some nodes may be down), or None."""
    path = _state_file(run_dir)
    if not path.exists():
        return None
    raw = json.loads(path.read_text())
    nodes = tuple(Node(**node) for node in raw.pop("nodes"))
    return ClusterState(nodes=nodes, **raw)


def _write(state: ClusterState) -> None:
    _state_file(Path(state.run_dir)).write_text(json.dumps(asdict(state)))


def running(run_dir: Path) -> ClusterState | None:
    """The cluster if at least one of its nodes runs."""
    state = read_cluster(run_dir)
    if state is None or not any(localkafka.pid_alive(n.pid) for n in state.nodes):
        return None
    return state


def _node_dir(run_dir: Path, node_id: int) -> Path:
    return run_dir / f"node-{node_id}"


def _ports(run_dir: Path, brokers: int, port: int | None) -> list[tuple[int, int]]:
    """(broker port, controller port) per node: the ones its data was made with, if any."""
    previous = read_cluster(run_dir)
    if previous is not None and len(previous.nodes) == brokers:
        return [(n.port, n.controller_port) for n in previous.nodes]
    first = port if port is not None else localkafka.free_port()
    brokers_ports = [first, *(localkafka.free_port() for _ in range(brokers - 1))]
    return [(p, localkafka.free_port()) for p in brokers_ports]


def start(
    run_dir: Path,
    brokers: int = 3,
    port: int | None = None,
    heap: str = "512m",
    cache_dir: Path | None = None,
    ready_timeout: float = 180.0,
) -> ClusterState:
    """Start every node of the cluster (or return it if it runs); blocks until all of them
    are brokers of one cluster."""
    if brokers < 2:
        raise ValueError("a cluster has two nodes or more; one node is localkafka.start")
    already = running(run_dir)
    if already is not None:
        for node in already.nodes:
            if not localkafka.pid_alive(node.pid):
                already = restart_node(run_dir, node.node_id, ready_timeout=ready_timeout)
        return already
    localkafka.check_java()
    classpath = f"{localkafka.resolve(cache_dir)}/*"
    started = time.monotonic()
    ports = _ports(run_dir, brokers, port)
    for broker_port, _ in ports:
        if not localkafka.port_is_free(broker_port):
            raise LocalKafkaError(f"port {broker_port} on 127.0.0.1 is in use")
    voters = {i + 1: cport for i, (_, cport) in enumerate(ports)}
    cluster_id = localkafka.new_cluster_id()
    nodes: list[Node] = []
    for node_id, (broker_port, cport) in enumerate(ports, start=1):
        props = _configure(run_dir, Quorum(node_id, voters), broker_port, cport)
        if not (_node_dir(run_dir, node_id) / "data" / "meta.properties").exists():
            localkafka.format_storage(classpath, props, cluster_id, standalone=False)
        nodes.append(Node(node_id, broker_port, cport, 0))
    # All at once: a node waits for a quorum, which needs the others.
    nodes = [
        Node(n.node_id, n.port, n.controller_port, _launch(run_dir, n.node_id, heap, classpath))
        for n in nodes
    ]
    state = ClusterState(str(run_dir), tuple(nodes), time.time(), 0.0)
    _write(state)
    try:
        wait_for_brokers(state, len(nodes), ready_timeout)
    except LocalKafkaError:
        stop(run_dir)
        raise
    state = ClusterState(
        str(run_dir), tuple(nodes), state.started_at, round(time.monotonic() - started, 2)
    )
    _write(state)
    return state


def _configure(run_dir: Path, quorum: Quorum, port: int, controller_port: int) -> Path:
    node_dir = _node_dir(run_dir, quorum.node_id)
    for sub in ("data", "logs"):
        (node_dir / sub).mkdir(parents=True, exist_ok=True)
    props = node_dir / "server.properties"
    props.write_text(localkafka.server_properties(node_dir / "data", port, controller_port, quorum))
    localkafka.write_log_config(node_dir / "log4j2.properties")
    return props


def _launch(run_dir: Path, node_id: int, heap: str, classpath: str) -> int:
    node_dir = _node_dir(run_dir, node_id)
    return localkafka.launch(
        classpath,
        node_dir / "server.properties",
        node_dir / "log4j2.properties",
        node_dir / "logs",
        heap,
    )


def _admin(bootstrap: str) -> AdminClient:
    # log_level 0: the refused connections to a node that is down are expected here.
    return AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})


def wait_for_brokers(state: ClusterState, count: int, timeout: float) -> None:
    """Until the cluster's metadata lists `count` brokers (a node restarted has registered)."""
    admin = _admin(state.bootstrap)
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            if len(admin.list_topics(timeout=2).brokers) >= count:
                return
        if not any(localkafka.pid_alive(n.pid) for n in state.nodes):
            raise LocalKafkaError("every node of the cluster exited during start-up")
        if time.monotonic() > deadline:
            logs = "\n".join(
                localkafka.tail(_node_dir(Path(state.run_dir), n.node_id) / "logs" / "server.log")
                for n in state.nodes
            )
            raise LocalKafkaError(
                f"the cluster did not list {count} brokers within {timeout:.0f} s; logs:\n{logs}"
            )
        time.sleep(0.2)


def wait_in_sync(state: ClusterState, timeout: float) -> None:
    """Until every partition of every topic has all its replicas in sync again: a node that
    came back has caught up, and losing another one keeps `min.insync.replicas`."""
    admin = _admin(state.bootstrap)
    deadline = time.monotonic() + timeout
    behind: list[str] = []
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            metadata = admin.list_topics(timeout=5)
            behind = [
                f"{name}[{pid}]"
                for name, topic in metadata.topics.items()
                for pid, partition in topic.partitions.items()
                if set(partition.isrs) != set(partition.replicas)
            ]
            if not behind:
                return
        time.sleep(0.5)
    raise LocalKafkaError(f"replicas still out of sync after {timeout:.0f} s: {behind[:10]}")


def leader_of_most(state: ClusterState, topic: str) -> int:
    """The node that leads the most partitions of `topic`."""
    metadata = _admin(state.bootstrap).list_topics(topic, timeout=10)
    leaders = Counter(p.leader for p in metadata.topics[topic].partitions.values())
    leaders.pop(-1, None)  # a partition without a leader at this moment
    if not leaders:
        raise LocalKafkaError(f"no partition of {topic} has a leader")
    return leaders.most_common(1)[0][0]


def active_controller(state: ClusterState, cache_dir: Path | None = None) -> int:
    """The node leading the KRaft quorum, asked of the controllers themselves (a broker's
    metadata names a random broker as `controller` in KRaft mode)."""
    live = [n for n in state.nodes if localkafka.pid_alive(n.pid)]
    controllers = ",".join(f"127.0.0.1:{n.controller_port}" for n in live)
    command = [
        "java",
        "-cp",
        f"{localkafka.resolve(cache_dir)}/*",
        "org.apache.kafka.tools.MetadataQuorumCommand",
        "--bootstrap-controller",
        controllers,
        "describe",
        "--status",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)
    match = re.search(r"^LeaderId:\s+(\d+)", result.stdout, re.MULTILINE)
    if result.returncode != 0 or match is None:
        raise LocalKafkaError(f"cannot read the quorum's leader: {result.stdout}{result.stderr}")
    return int(match.group(1))


def kill_node(run_dir: Path, node_id: int) -> None:
    """kill -9 one node: no clean shutdown, no leadership handed over."""
    state = read_cluster(run_dir)
    if state is None:
        raise LocalKafkaError(f"no cluster in {run_dir}")
    _kill(state.node(node_id).pid)


def _kill(pid: int, timeout: float = 30.0) -> None:
    """SIGKILL a node's process group and wait until the node is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while localkafka.pid_alive(pid):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # our child, when we started it: reap it
        if time.monotonic() > deadline:
            raise LocalKafkaError(f"process {pid} still alive {timeout:.0f} s after SIGKILL")
        time.sleep(0.05)


def restart_node(
    run_dir: Path,
    node_id: int,
    heap: str = "512m",
    ready_timeout: float = 180.0,
    cache_dir: Path | None = None,
) -> ClusterState:
    """Start a node that is down on its own ports and data; blocks until it is a broker of
    the cluster again and every replica is back in sync."""
    state = read_cluster(run_dir)
    if state is None:
        raise LocalKafkaError(f"no cluster in {run_dir}")
    node = state.node(node_id)
    if localkafka.pid_alive(node.pid):
        return state
    deadline = time.monotonic() + 60
    # The killed node's sockets may linger a moment before its ports are free again.
    while not localkafka.port_is_free(node.port) or not localkafka.port_is_free(
        node.controller_port
    ):
        if time.monotonic() > deadline:
            raise LocalKafkaError(f"node {node_id}'s ports still busy 60 s after it stopped")
        time.sleep(0.2)
    pid = _launch(run_dir, node_id, heap, f"{localkafka.resolve(cache_dir)}/*")
    nodes = tuple(
        Node(n.node_id, n.port, n.controller_port, pid) if n.node_id == node_id else n
        for n in state.nodes
    )
    state = ClusterState(state.run_dir, nodes, state.started_at, state.startup_seconds)
    _write(state)
    _wait_serving(state.node(node_id), ready_timeout)
    wait_in_sync(state, ready_timeout)
    return state


def _wait_serving(node: Node, timeout: float) -> None:
    """Until the node itself answers as a broker of the cluster. (The others' metadata can
    list a killed node for seconds, until its broker session lapses: not proof it is back.)

    A new client each time, bootstrapped on the node alone: its first answer can only come
    from the node (a client that has learnt the others would ask them)."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            metadata = _admin(node.address).list_topics(timeout=2)
            if node.node_id in metadata.brokers:
                return
        if not localkafka.pid_alive(node.pid):
            raise LocalKafkaError(f"node {node.node_id} exited while starting")
        if time.monotonic() > deadline:
            raise LocalKafkaError(f"node {node.node_id} did not answer within {timeout:.0f} s")
        time.sleep(0.2)


def stop(run_dir: Path, wipe: bool = False) -> ClusterState | None:
    """Stop every node; `wipe` deletes their data (and with it the ports they kept).

    One at a time, so that each hands its leaderships to nodes still up; the active
    controller is the last to go. That one has no quorum left to confirm its own controlled
    shutdown and would wait for it forever: it gets a short grace, then SIGKILL (its next
    start recovers its logs, as after any crash). With `wipe` nothing is worth handing
    over: kill -9."""
    state = read_cluster(run_dir)
    if state is None:
        return None
    live = [n for n in state.nodes if localkafka.pid_alive(n.pid)]
    if wipe:
        for node in live:
            _kill(node.pid)
        for node in state.nodes:
            shutil.rmtree(_node_dir(run_dir, node.node_id), ignore_errors=True)
        _state_file(run_dir).unlink(missing_ok=True)
        return state
    try:
        last = active_controller(state) if live else 0
    except LocalKafkaError:
        last = 0
    ordered = sorted(live, key=lambda n: n.node_id == last)
    for node in ordered[:-1]:
        localkafka.terminate(node.pid)
    if ordered:
        localkafka.terminate(ordered[-1].pid, timeout=LAST_NODE_GRACE)
    return state
