"""Idempotent topic creation: create what is missing, report what exists, refuse conflicts."""

from __future__ import annotations

from dataclasses import dataclass, field

from confluent_kafka import KafkaException
from confluent_kafka.admin import ConfigEntry, ConfigResource, NewTopic, ResourceType

from hookstream.core.kafka import admin_client
from hookstream.core.settings import Settings
from hookstream.core.topics import TopicSpec, replication_config, topic_specs


class TopicConflictError(Exception):
    """An existing topic's cleanup policy differs from what hookstream needs."""


@dataclass
class TopicReport:
    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)


def _policy(spec: TopicSpec) -> str:
    return spec.config()["cleanup.policy"]


def _differences(
    spec: TopicSpec, entries: dict[str, ConfigEntry], replication: dict[str, str]
) -> list[str]:
    """What an existing topic has that hookstream cannot work with."""
    problems = []
    actual = entries["cleanup.policy"].value
    if actual != _policy(spec):
        problems.append(f"cleanup.policy is {actual!r}, hookstream needs {_policy(spec)!r}")
    wanted = replication.get("min.insync.replicas")
    held = entries["min.insync.replicas"].value if "min.insync.replicas" in entries else None
    if wanted is not None and held is not None and int(held) < int(wanted):
        # Fewer copies than configured would let an acknowledged record die with one broker.
        problems.append(
            f"min.insync.replicas is {held}, the settings ask for {wanted} "
            "(kafka-configs --alter --add-config min.insync.replicas=...)"
        )
    return problems


def create_topics(settings: Settings, timeout: float = 30.0) -> TopicReport:
    """Create every topic of the architecture; check the cleanup policy (and, replicated,
    `min.insync.replicas`) of those that exist."""
    admin = admin_client(settings)
    specs = topic_specs(settings)
    replication = replication_config(settings)
    present = admin.list_topics(timeout=timeout).topics
    report = TopicReport()
    missing = [spec for spec in specs if spec.name not in present]
    if missing:
        new_topics = [
            NewTopic(
                spec.name,
                num_partitions=spec.partitions,
                replication_factor=settings.replication_factor,
                config=spec.config() | replication,
            )
            for spec in missing
        ]
        for name, future in admin.create_topics(new_topics, operation_timeout=timeout).items():
            try:
                future.result(timeout)
                report.created.append(name)
            except KafkaException as exc:
                # Another process may have created it between our list and create.
                if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                    raise
                report.existing.append(name)
    existing = [spec for spec in specs if spec.name in present]
    if existing:
        resources = [ConfigResource(ResourceType.TOPIC, spec.name) for spec in existing]
        configs = admin.describe_configs(resources, request_timeout=timeout)
        by_name = {spec.name: spec for spec in existing}
        for resource, future in configs.items():
            spec = by_name[resource.name]
            entries = future.result(timeout)
            problems = _differences(spec, entries, replication)
            if problems:
                report.conflicts.extend(f"{spec.name}: {problem}" for problem in problems)
            else:
                report.existing.append(spec.name)
    return report
