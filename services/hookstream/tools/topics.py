"""Idempotent topic creation: create what is missing, report what exists, refuse conflicts."""

from __future__ import annotations

from dataclasses import dataclass, field

from confluent_kafka import KafkaException
from confluent_kafka.admin import ConfigResource, NewTopic, ResourceType

from hookstream.core.kafka import admin_client
from hookstream.core.settings import Settings
from hookstream.core.topics import TopicSpec, topic_specs


class TopicConflictError(Exception):
    """An existing topic's cleanup policy differs from what hookstream needs."""


@dataclass
class TopicReport:
    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)


def _policy(spec: TopicSpec) -> str:
    return spec.config()["cleanup.policy"]


def create_topics(settings: Settings, timeout: float = 30.0) -> TopicReport:
    """Create every topic of the architecture; check the cleanup policy of those that exist."""
    admin = admin_client(settings)
    specs = topic_specs(settings)
    present = admin.list_topics(timeout=timeout).topics
    report = TopicReport()
    missing = [spec for spec in specs if spec.name not in present]
    if missing:
        new_topics = [
            NewTopic(
                spec.name,
                num_partitions=spec.partitions,
                replication_factor=settings.replication_factor,
                config=spec.config(),
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
            actual = future.result(timeout)["cleanup.policy"].value
            if actual != _policy(spec):
                report.conflicts.append(
                    f"{spec.name}: cleanup.policy is {actual!r}, hookstream needs {_policy(spec)!r}"
                )
            else:
                report.existing.append(spec.name)
    return report
