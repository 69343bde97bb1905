"""The short chaos runs in `make test`: one kill -9 of each service while events flow, and
the busiest node and the controller of a three-node cluster killed and restarted."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from hookstream.core.settings import Settings
from hookstream.core.topics import topic_specs
from tests.chaos.brokers import local_kafka
from tests.chaos.plan import short_cluster_plan, short_plan
from tests.chaos.run import chaos_settings, run_chaos
from tests.helpers import fresh_store_url


@pytest.mark.timeout(600)
def test_killing_each_service_once_under_load_loses_nothing(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    plan = short_plan()
    with fresh_store_url(plan.store_backend, tmp_path) as store_url:
        settings = chaos_settings(kafka_bootstrap, store_url)
        outcome = run_chaos(plan, settings, tmp_path, sys.stdout)
    verdict = outcome.verdict
    verdict.write_json(tmp_path / "chaos.json", outcome.report)
    print(verdict.table())
    # Every service really was killed and came back.
    killed = {h["target"] for h in outcome.report["timeline"] if h["action"].startswith("kill")}
    assert killed == {"router", "sender-1", "sender-2", "log-sink", "api"}
    assert verdict.passed, f"{verdict.table()}\nlogs: {outcome.report['logs']}"


@pytest.mark.timeout(900)
def test_killing_the_busiest_node_then_the_controller_of_a_cluster_loses_nothing(
    tmp_path: Path,
) -> None:
    plan = short_cluster_plan()
    with (
        local_kafka(tmp_path / "kafka", plan.brokers) as brokers,
        fresh_store_url(plan.store_backend, tmp_path) as store_url,
    ):
        settings = chaos_settings(brokers.bootstrap, store_url, plan.brokers)
        outcome = run_chaos(plan, settings, tmp_path, sys.stdout, brokers)
        replication = _replication(settings)
    verdict = outcome.verdict
    verdict.write_json(tmp_path / "chaos.json", outcome.report)
    print(verdict.table())
    print(
        "\n".join(
            f"{h['at']} s {h['action']} ({h['seconds']} s)" for h in outcome.report["timeline"]
        )
    )
    # Production's topic settings, as `topics create` made them.
    assert set(replication.values()) == {(3, "2")}, replication
    actions = [h["action"] for h in outcome.report["timeline"] if h["target"] == "kafka"]
    assert [a.split(" (")[-1] for a in actions if "kill" in a] == [
        "leader) kill -9",
        "controller) kill -9",
    ], actions
    assert sum("restarted and in sync" in a for a in actions) == 2, actions
    assert verdict.passed, f"{verdict.table()}\nlogs: {outcome.report['logs']}"


def _replication(settings: Settings) -> dict[str, tuple[int, str]]:
    """Every hookstream topic's replica count and `min.insync.replicas`."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    names = [spec.name for spec in topic_specs(settings)]
    metadata = admin.list_topics(timeout=10)
    resources = [ConfigResource(ResourceType.TOPIC, name) for name in names]
    configs = admin.describe_configs(resources, request_timeout=10)
    result = {}
    for resource, future in configs.items():
        replicas = {len(p.replicas) for p in metadata.topics[resource.name].partitions.values()}
        (count,) = replicas
        result[resource.name] = (count, future.result(10)["min.insync.replicas"].value)
    return result
