"""`hookstream topics create` against the real broker."""

from __future__ import annotations

import subprocess
import sys

import pytest
from confluent_kafka.admin import ConfigResource, NewTopic, ResourceType

from hookstream.core.kafka import admin_client
from hookstream.core.settings import Settings
from hookstream.core.topics import topic_specs
from tests.helpers import settings_env

pytestmark = pytest.mark.integration


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hookstream", *args],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_topics_create_is_idempotent_and_sets_policies(settings: Settings) -> None:
    first = _cli(settings, "topics", "create")
    assert first.returncode == 0, first.stderr
    specs = topic_specs(settings)
    assert first.stdout.count("created") == len(specs)

    second = _cli(settings, "topics", "create")
    assert second.returncode == 0, second.stderr
    assert "created" not in second.stdout
    assert second.stdout.count("exists") == len(specs)

    admin = admin_client(settings)
    metadata = admin.list_topics(timeout=10).topics
    for spec in specs:
        assert len(metadata[spec.name].partitions) == spec.partitions
    resources = [ConfigResource(ResourceType.TOPIC, spec.name) for spec in specs]
    policies = {
        res.name: fut.result(10)["cleanup.policy"].value
        for res, fut in admin.describe_configs(resources).items()
    }
    for spec in specs:
        assert policies[spec.name] == ("compact" if spec.compacted else "delete"), spec.name


def test_conflicting_cleanup_policy_is_an_error(settings: Settings) -> None:
    admin = admin_client(settings)
    webhooks = f"{settings.topic_prefix}webhooks"
    futures = admin.create_topics([NewTopic(webhooks, 1, 1, config={"cleanup.policy": "delete"})])
    futures[webhooks].result(30)
    result = _cli(settings, "topics", "create")
    assert result.returncode == 1
    assert f"CONFLICT {webhooks}: cleanup.policy is 'delete'" in result.stderr
