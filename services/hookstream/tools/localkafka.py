"""A real single-node Kafka (KRaft, broker+controller) run from the Maven Central jars.

For development and CI on machines without Docker: Maven resolves the runtime classpath of
`kafka_2.13` once into a cache folder; every later start is offline.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

KAFKA_VERSION = "4.1.1"
# kafka_2.13 ships with slf4j-api only; this binding routes the broker's logs into log4j2.
LOG4J_VERSION = "2.24.3"

ALTERNATIVES = (
    "Alternatives: run `docker compose up kafka` (the official apache/kafka image), or point "
    "HOOKSTREAM_KAFKA_BOOTSTRAP_SERVERS at an existing Kafka cluster."
)


class LocalKafkaError(Exception):
    """The local broker cannot be provided; the message says what to install or do instead."""


def default_cache_dir() -> Path:
    configured = os.environ.get("HOOKSTREAM_KAFKA_CACHE_DIR")
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "hookstream" / f"kafka-{KAFKA_VERSION}"


def default_run_dir() -> Path:
    configured = os.environ.get("HOOKSTREAM_KAFKA_RUN_DIR")
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "hookstream" / "broker"


_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.hookstream</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version>
    </dependency>
    <dependency>
      <!-- MetadataQuorumCommand: which node of a local cluster is the active controller -->
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka-tools</artifactId>
      <version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""

_LOG4J2 = """status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.apache.name = org.apache
logger.apache.level = WARN
"""


def java_major_version(java: str = "java") -> int:
    if shutil.which(java) is None:
        raise LocalKafkaError(
            "Java was not found. Install Java 17 or newer (e.g. `apt-get install openjdk-17-jdk`). "
            + ALTERNATIVES
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        raise LocalKafkaError(f"cannot read the Java version from: {out.stderr.strip()!r}")
    major = int(match.group(1))
    # Java 8 and older report themselves as 1.x.
    return int(match.group(2) or 0) if major == 1 else major


def check_java() -> None:
    major = java_major_version()
    if major < 17:
        raise LocalKafkaError(
            f"Kafka {KAFKA_VERSION} needs Java 17 or newer; found Java {major}. "
            "Install Java 17+ (e.g. `apt-get install openjdk-17-jdk`). " + ALTERNATIVES
        )


def libs_dir(cache_dir: Path) -> Path:
    return cache_dir / "libs"


def resolve(cache_dir: Path | None = None) -> Path:
    """Return the folder of broker jars, downloading them with Maven the first time only."""
    cache_dir = cache_dir or default_cache_dir()
    libs = libs_dir(cache_dir)
    marker = cache_dir / "resolved"
    needed = (f"kafka_2.13-{KAFKA_VERSION}.jar", f"kafka-tools-{KAFKA_VERSION}.jar")
    if marker.exists() and all((libs / jar).exists() for jar in needed):
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise LocalKafkaError(
            "Maven (`mvn`) was not found; it is needed once to download the Kafka jars. "
            "Install it (e.g. `apt-get install maven`). " + ALTERNATIVES
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    (cache_dir / "pom.xml").write_text(_POM.format(kafka=KAFKA_VERSION, log4j=LOG4J_VERSION))
    result = subprocess.run(
        [
            mvn,
            "-q",
            "-B",
            "-f",
            str(cache_dir / "pom.xml"),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={libs}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).strip()[-2000:]
        raise LocalKafkaError(f"Maven could not resolve kafka_2.13 {KAFKA_VERSION}:\n{tail}")
    marker.write_text(KAFKA_VERSION + "\n")
    return libs


# The JVM options Kafka's own start scripts give a broker (kafka-run-class.sh): G1 with short
# pauses, and deeper inlining for the request path.
_JVM_PERFORMANCE_OPTIONS = (
    "-server",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:MaxInlineLevel=15",
    "-Djava.awt.headless=true",
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the broker binds: connections of a broker that just died linger in TIME_WAIT
        # for a minute, and must not stop a restart on the same port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@dataclass(frozen=True)
class BrokerState:
    pid: int
    bootstrap: str
    run_dir: str
    started_at: float
    startup_seconds: float


def _state_file(run_dir: Path) -> Path:
    return run_dir / "broker.json"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); treat it as gone.
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        return stat.read_text().split(") ", 1)[-1].startswith("Z") is False
    return True


def read_state(run_dir: Path | None = None) -> BrokerState | None:
    """The running local broker, or None (a stale state file is ignored)."""
    path = _state_file(run_dir or default_run_dir())
    if not path.exists():
        return None
    state = BrokerState(**json.loads(path.read_text()))
    return state if pid_alive(state.pid) else None


@dataclass(frozen=True)
class Quorum:
    """Where a node stands in its cluster: one node alone (its own quorum, dynamic, as
    `--standalone` formats it), or one of several voters with replicated internal topics."""

    node_id: int = 1
    # node id -> controller port of every voter; empty: a single node.
    voters: dict[int, int] = field(default_factory=dict)

    @property
    def replicas(self) -> int:
        return max(1, len(self.voters))


def server_properties(
    data_dir: Path, port: int, controller_port: int, quorum: Quorum | None = None
) -> str:
    quorum = quorum or Quorum()
    replicas = quorum.replicas
    # Production's shape on a cluster: three copies, and a write acknowledged by two.
    min_isr = str(min(2, replicas))
    props = {
        "process.roles": "broker,controller",
        "node.id": str(quorum.node_id),
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": (
            f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}"
        ),
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(data_dir),
        "offsets.topic.replication.factor": str(replicas),
        "offsets.topic.num.partitions": str(replicas),
        "transaction.state.log.replication.factor": str(replicas),
        "transaction.state.log.min.isr": min_isr,
        "transaction.state.log.num.partitions": str(replicas),
        "share.coordinator.state.topic.replication.factor": str(replicas),
        "share.coordinator.state.topic.min.isr": min_isr,
        "default.replication.factor": str(replicas),
        "min.insync.replicas": min_isr,
        # A replica that stopped fetching leaves the ISR after 10 s rather than 30: the
        # in-sync state a local cluster reports after a kill is current sooner.
        "replica.lag.time.max.ms": "10000",
        "group.initial.rebalance.delay.ms": "0",
        # The sender's group uses the broker-side protocol (KIP-848), whose 45 s default
        # session would keep a killed member's partitions idle that long: 10 s, as for the
        # classic groups.
        "group.consumer.min.session.timeout.ms": "6000",
        "group.consumer.session.timeout.ms": "10000",
        "group.consumer.min.heartbeat.interval.ms": "1000",
        "group.consumer.heartbeat.interval.ms": "1000",
        "auto.create.topics.enable": "false",
        # Tests delete many short-lived topics; let the cleaner keep up without a big heap.
        "log.cleaner.dedupe.buffer.size": "33554432",
    }
    if quorum.voters:
        # A static quorum: every node knows the voters, so all format alike and any two of
        # three elect a leader.
        props["controller.quorum.voters"] = ",".join(
            f"{node}@127.0.0.1:{cport}" for node, cport in sorted(quorum.voters.items())
        )
    else:
        props["controller.quorum.bootstrap.servers"] = f"127.0.0.1:{controller_port}"
    return "".join(f"{key}={value}\n" for key, value in props.items())


def format_storage(classpath: str, props: Path, cluster_id: str, standalone: bool) -> None:
    """Format a node's log dir once (KRaft); a node of a static quorum formats without
    `--standalone`."""
    command = [
        "java",
        "-cp",
        classpath,
        "kafka.tools.StorageTool",
        "format",
        *(["--standalone"] if standalone else []),
        # `=` form: a random id may start with "-", which argparse would read as a flag.
        f"--cluster-id={cluster_id}",
        "-c",
        str(props),
    ]
    fmt = subprocess.run(command, capture_output=True, text=True, check=False)
    if fmt.returncode != 0:
        raise LocalKafkaError(f"formatting KRaft storage failed:\n{fmt.stdout}{fmt.stderr}")


def new_cluster_id() -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def launch(classpath: str, props: Path, log4j: Path, log_dir: Path, heap: str) -> int:
    """Start one node's JVM in a session of its own (so a kill reaches all of it); its pid."""
    stdout = (log_dir / "stdout.log").open("ab")
    proc = subprocess.Popen(
        [
            "java",
            f"-Xms{heap}",
            f"-Xmx{heap}",
            *_JVM_PERFORMANCE_OPTIONS,
            f"-Dlog4j2.configurationFile={log4j}",
            f"-Dkafka.logs.dir={log_dir}",
            "-cp",
            classpath,
            "kafka.Kafka",
            str(props),
        ],
        stdout=stdout,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    stdout.close()
    return proc.pid


def write_log_config(path: Path) -> None:
    path.write_text(_LOG4J2)


def wait_until_ready(bootstrap: str, deadline_seconds: float, pid: int | None = None) -> None:
    from confluent_kafka.admin import AdminClient

    # log_level 0 keeps librdkafka quiet about the refused connections we expect while waiting.
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    deadline = time.monotonic() + deadline_seconds
    while True:
        try:
            admin.list_topics(timeout=1)
            return
        except Exception as exc:
            if pid is not None and not pid_alive(pid):
                raise LocalKafkaError("the broker process exited during start-up") from exc
            if time.monotonic() > deadline:
                raise LocalKafkaError(
                    f"the broker at {bootstrap} did not answer within {deadline_seconds:.0f} s"
                ) from exc
            time.sleep(0.1)


def start(
    run_dir: Path | None = None,
    port: int | None = None,
    heap: str = "1g",
    cache_dir: Path | None = None,
    ready_timeout: float = 60.0,
) -> BrokerState:
    """Start the broker (or return the running one); blocks until the admin client answers."""
    run_dir = run_dir or default_run_dir()
    running = read_state(run_dir)
    if running is not None:
        return running
    check_java()
    libs = resolve(cache_dir)
    started = time.monotonic()
    data_dir = run_dir / "data"
    log_dir = run_dir / "logs"
    data_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    if port is None:
        port = 9092 if port_is_free(9092) else free_port()
    elif not port_is_free(port):
        raise LocalKafkaError(f"port {port} on 127.0.0.1 is in use; choose another with --port")
    controller_port = free_port()
    props = run_dir / "server.properties"
    props.write_text(server_properties(data_dir, port, controller_port))
    log4j = run_dir / "log4j2.properties"
    write_log_config(log4j)
    classpath = f"{libs}/*"
    if not (data_dir / "meta.properties").exists():
        format_storage(classpath, props, new_cluster_id(), standalone=True)
    pid = launch(classpath, props, log4j, log_dir, heap)
    bootstrap = f"127.0.0.1:{port}"
    try:
        wait_until_ready(bootstrap, ready_timeout, pid=pid)
    except LocalKafkaError as exc:
        terminate(pid)
        last = tail(log_dir / "server.log") or tail(log_dir / "stdout.log")
        raise LocalKafkaError(f"{exc}; last log lines:\n{last}") from None
    state = BrokerState(
        pid=pid,
        bootstrap=bootstrap,
        run_dir=str(run_dir),
        started_at=time.time(),
        startup_seconds=round(time.monotonic() - started, 2),
    )
    _state_file(run_dir).write_text(json.dumps(asdict(state)))
    return state


def tail(path: Path, lines: int = 20) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def terminate(pid: int, timeout: float = 30.0) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            finished, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            finished = pid if not pid_alive(pid) else 0
        if finished == pid:
            return
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def stop(run_dir: Path | None = None, wipe: bool = False) -> BrokerState | None:
    """Stop the local broker; returns what was stopped. `wipe` also deletes its data."""
    run_dir = run_dir or default_run_dir()
    state = read_state(run_dir)
    if state is not None:
        terminate(state.pid)
    _state_file(run_dir).unlink(missing_ok=True)
    if wipe:
        shutil.rmtree(run_dir / "data", ignore_errors=True)
    return state
