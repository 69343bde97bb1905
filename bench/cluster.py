"""The broker, each stage's topics, reading progress off Kafka, and hookstream processes."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from bench.machine import ProcessSample, sample_process
from hookstream.core.codec import Codec
from hookstream.core.kafka import producer_config
from hookstream.core.records import Webhook
from hookstream.core.settings import Settings, load_settings
from hookstream.core.topics import Topics
from hookstream.tools import localkafka
from hookstream.tools.topics import create_topics

BOOTSTRAP_ENV = "HOOKSTREAM_KAFKA_BOOTSTRAP_SERVERS"


@dataclass
class Broker:
    bootstrap: str
    version: str
    run_dir: Path | None  # set when this bench started the broker (and must stop it)
    pid: int | None = None

    @classmethod
    def provide(cls, workdir: Path) -> Broker:
        """The cluster named in the environment, else a fresh local broker in `workdir`."""
        configured = os.environ.get(BOOTSTRAP_ENV)
        if configured:
            return cls(configured, "external (HOOKSTREAM_KAFKA_BOOTSTRAP_SERVERS)", None)
        run_dir = workdir / "kafka"
        state = localkafka.start(run_dir=run_dir, port=localkafka.free_port())
        return cls(state.bootstrap, localkafka.KAFKA_VERSION, run_dir, state.pid)

    def stop(self) -> None:
        if self.run_dir is not None:
            localkafka.stop(self.run_dir, wipe=True)


@dataclass
class Stage:
    """One stage's isolated corner of the cluster: its own topic and group prefix."""

    name: str
    settings: Settings
    codec: Codec
    workdir: Path
    topics: Topics = field(init=False)
    overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.topics = Topics.from_settings(self.settings)

    @classmethod
    def create(
        cls, name: str, broker: Broker, codec: Codec, workdir: Path, **overrides: Any
    ) -> Stage:
        prefix = f"bench-{name}-{uuid.uuid4().hex[:6]}."
        stage_dir = workdir / name
        stage_dir.mkdir(parents=True, exist_ok=True)
        chosen: dict[str, Any] = {
            "kafka_bootstrap_servers": broker.bootstrap,
            "topic_prefix": prefix,
            "consumer_group_prefix": prefix,
            "allow_private_targets": ("127.0.0.0/8",),
            "store_url": f"sqlite:///{stage_dir / 'store.db'}",
            "instance_id": f"bench-{name}",
        }
        if "metrics_port" in Settings.model_fields:
            # Several services run at once: each takes a free port for its probes.
            chosen.update(metrics_port=0, metrics_host="127.0.0.1")
        chosen.update(overrides)
        settings = load_settings(**chosen)
        report = create_topics(settings)
        if report.conflicts:
            raise RuntimeError(f"topic conflicts: {report.conflicts}")
        _wait_for_leaders(settings)
        stage = cls(name, settings, codec, stage_dir)
        stage.overrides = chosen
        return stage

    def env(self) -> dict[str, str]:
        """The environment that makes `hookstream run ...` see this stage's settings.

        Only the settings the bench chose are set; everything else keeps the default a
        deployment would have. Inherited HOOKSTREAM_* variables are dropped.
        """
        env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKSTREAM_")}
        for name, value in self.overrides.items():
            if isinstance(value, tuple | list):
                text = ",".join(str(item) for item in value)
            else:
                text = str(value)
            env[f"HOOKSTREAM_{name.upper()}"] = text
        return env

    def group(self, name: str) -> str:
        return self.settings.consumer_group_prefix + name


def _wait_for_leaders(settings: Settings, timeout: float = 30.0) -> None:
    """Block until every partition of the stage's topics has a leader."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    prefix = settings.topic_prefix
    deadline = time.monotonic() + timeout
    while True:
        topics = admin.list_topics(timeout=10).topics
        ours = [meta for name, meta in topics.items() if name.startswith(prefix)]
        if ours and all(
            meta.error is None and all(p.leader >= 0 for p in meta.partitions.values())
            for meta in ours
        ):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics {prefix}* have no leaders after {timeout:.0f} s")
        time.sleep(0.1)


class Publisher:
    """Produces to the stage's topics as the platform would, as fast as the client allows."""

    def __init__(self, stage: Stage, linger_ms: int = 20) -> None:
        self.stage = stage
        self.producer = Producer(
            producer_config(stage.settings, extra={"linger.ms": linger_ms, "batch.size": 1_000_000})
        )

    def produce(self, topic: str, value: bytes | None, key: bytes | None = None) -> None:
        while True:
            try:
                self.producer.produce(topic, value=value, key=key)
                return
            except BufferError:
                self.producer.poll(0.01)

    def webhooks(self, webhooks: Iterable[Webhook]) -> None:
        topic = self.stage.topics.webhooks
        for hook in webhooks:
            self.produce(
                topic, self.stage.codec.encode("Webhook", hook.to_record()), hook.id.encode()
            )
        self.flush()

    def poll(self) -> None:
        self.producer.poll(0)

    def flush(self) -> None:
        remaining = self.producer.flush(60)
        if remaining:
            raise RuntimeError(f"{remaining} records were not acknowledged by Kafka")


class Offsets:
    """Reads record counts off the broker: end offsets of a topic, committed offsets of a group."""

    def __init__(self, stage: Stage) -> None:
        self._consumer = Consumer(
            {
                "bootstrap.servers": stage.settings.kafka_bootstrap_servers,
                "group.id": f"bench-offsets-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
            }
        )
        self._partitions: dict[str, list[TopicPartition]] = {}
        self._groups: dict[str, Consumer] = {}
        self._bootstrap = stage.settings.kafka_bootstrap_servers

    def _of(self, topic: str) -> list[TopicPartition]:
        parts = self._partitions.get(topic)
        if parts is None:
            meta = self._consumer.list_topics(topic, timeout=10).topics[topic]
            parts = [TopicPartition(topic, p) for p in sorted(meta.partitions)]
            self._partitions[topic] = parts
        return parts

    def end(self, topic: str) -> int:
        """Sum of the high watermarks; for a non-transactional topic, its record count."""
        total = 0
        for tp in self._of(topic):
            _low, high = _retrying(functools.partial(self._watermarks, tp))
            total += max(high, 0)
        return total

    def _watermarks(self, tp: TopicPartition) -> tuple[int, int]:
        low, high = self._consumer.get_watermark_offsets(tp, timeout=10, cached=False)
        return int(low), int(high)

    def committed(self, group: str, topic: str) -> int:
        """Sum of `group`'s committed offsets on `topic` (0 for partitions not committed)."""
        reader = self._groups.get(group)
        if reader is None:
            reader = Consumer(
                {
                    "bootstrap.servers": self._bootstrap,
                    "group.id": group,
                    "enable.auto.commit": False,
                }
            )
            self._groups[group] = reader
        parts = self._of(topic)
        committed = _retrying(lambda: reader.committed(parts, timeout=10))
        return sum(max(tp.offset, 0) for tp in committed)

    def close(self) -> None:
        for reader in self._groups.values():
            reader.close()
        self._groups.clear()
        self._consumer.close()

    def __enter__(self) -> Offsets:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


T = TypeVar("T")


def _retrying(call: Callable[[], T], attempts: int = 20) -> T:
    """`call()`, tried again for a while on broker errors (a leader moving, a slow start)."""
    for attempt in range(attempts):
        try:
            return call()
        except KafkaException:
            if attempt == attempts - 1:
                raise
            time.sleep(0.1)
    raise AssertionError("unreachable")


def group_members(admin: AdminClient, group: str) -> list[int]:
    """How many partitions each member of `group` holds (empty when the group is not stable)."""
    description = admin.describe_consumer_groups([group])[group].result(timeout=10)
    if str(description.state).rsplit(".", 1)[-1] != "STABLE":
        return []
    return [len(member.assignment.topic_partitions) for member in description.members]


def group_assignment(admin: AdminClient, group: str) -> list[dict[str, int]]:
    """Per member of `group`: how many partitions of each topic it holds."""
    description = admin.describe_consumer_groups([group])[group].result(timeout=10)
    members: list[dict[str, int]] = []
    for member in description.members:
        held: dict[str, int] = {}
        for tp in member.assignment.topic_partitions:
            held[tp.topic] = held.get(tp.topic, 0) + 1
        members.append(dict(sorted(held.items())))
    return members


class Service:
    """One `hookstream run <name>` process, started the way an operator starts it."""

    def __init__(self, stage: Stage, name: str, tag: str = "") -> None:
        self.name = name
        self.log_path = stage.workdir / f"{name}{tag}.log"
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "hookstream", "run", name],
            env=stage.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.last: ProcessSample | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def sample(self) -> ProcessSample | None:
        sample = sample_process(self.pid)
        if sample is not None:
            self.last = sample
        return self.last

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(
                f"`hookstream run {self.name}` exited with {self.process.returncode}:\n"
                + self.tail()
            )

    def tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM (a graceful drain), SIGKILL if it does not end in time."""
        self.sample()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def wait_until(condition: Any, timeout: float, what: str, services: Iterable[Service] = ()) -> None:
    """Poll `condition()` every 50 ms; fail with `what` (or a dead service's log) at the end."""
    deadline = time.monotonic() + timeout
    watched = list(services)
    while not condition():
        for service in watched:
            service.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def read_topic(stage: Stage, topic: str, record: str) -> list[dict[str, Any]]:
    """Every record of `topic` now, decoded as `record` (for after-the-fact analysis)."""
    consumer = Consumer(
        {
            "bootstrap.servers": stage.settings.kafka_bootstrap_servers,
            "group.id": f"bench-reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 10,
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        partitions = sorted(meta.partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        finished: set[int] = set()
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + 120
        while len(finished) < len(partitions) and time.monotonic() < deadline:
            for message in consumer.consume(1000, timeout=0.5):
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        finished.add(message.partition() or 0)
                    continue
                value = message.value()
                if value is not None:
                    out.append(stage.codec.decode(record, value))
        return out
    finally:
        consumer.close()
