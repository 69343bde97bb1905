"""The local broker's failure paths: missing or old Java, missing Maven."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from hookstream.tools import localkafka


def _fake_tool(folder: Path, name: str, script: str) -> None:
    path = folder / name
    path.write_text("#!/bin/sh\n" + script + "\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_old_java_names_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_tool(tmp_path, "java", "echo 'openjdk version \"11.0.2\" 2019-01-15' >&2")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(localkafka.LocalKafkaError) as caught:
        localkafka.check_java()
    message = str(caught.value)
    assert "Java 17 or newer; found Java 11" in message
    assert "docker compose up" in message
    assert "HOOKSTREAM_KAFKA_BOOTSTRAP_SERVERS" in message


def test_java_8_version_string_is_understood(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_tool(tmp_path, "java", "echo 'java version \"1.8.0_392\"' >&2")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert localkafka.java_major_version() == 8


def test_missing_java(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(localkafka.LocalKafkaError, match="Java was not found"):
        localkafka.check_java()


def test_missing_maven_with_empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(localkafka.LocalKafkaError) as caught:
        localkafka.resolve(tmp_path / "cache")
    assert "Maven (`mvn`) was not found" in str(caught.value)
    assert "docker compose up" in str(caught.value)


def test_resolved_cache_needs_no_maven(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    libs = cache / "libs"
    libs.mkdir(parents=True)
    (libs / f"kafka_2.13-{localkafka.KAFKA_VERSION}.jar").write_bytes(b"")
    (libs / f"kafka-tools-{localkafka.KAFKA_VERSION}.jar").write_bytes(b"")
    (cache / "resolved").write_text(localkafka.KAFKA_VERSION)
    monkeypatch.setenv("PATH", os.devnull)
    assert localkafka.resolve(cache) == libs


def test_a_cache_from_before_the_tools_jar_is_resolved_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The cluster asks kafka-tools which node leads the quorum; an older cache lacks it.
    cache = tmp_path / "cache"
    libs = cache / "libs"
    libs.mkdir(parents=True)
    (libs / f"kafka_2.13-{localkafka.KAFKA_VERSION}.jar").write_bytes(b"")
    (cache / "resolved").write_text(localkafka.KAFKA_VERSION)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(localkafka.LocalKafkaError, match="Maven"):
        localkafka.resolve(cache)


def test_a_cluster_node_is_configured_for_production_replication(tmp_path: Path) -> None:
    quorum = localkafka.Quorum(node_id=2, voters={1: 9101, 2: 9102, 3: 9103})
    text = localkafka.server_properties(tmp_path, 9092, 9102, quorum)
    props = dict(line.split("=", 1) for line in text.splitlines())
    assert props["node.id"] == "2"
    assert props["controller.quorum.voters"] == (
        "1@127.0.0.1:9101,2@127.0.0.1:9102,3@127.0.0.1:9103"
    )
    assert "controller.quorum.bootstrap.servers" not in props
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "default.replication.factor",
    ):
        assert props[key] == "3", key
    assert props["min.insync.replicas"] == props["transaction.state.log.min.isr"] == "2"


def test_a_single_node_keeps_one_copy_of_everything(tmp_path: Path) -> None:
    text = localkafka.server_properties(tmp_path, 9092, 9093)
    props = dict(line.split("=", 1) for line in text.splitlines())
    assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:9093"
    assert props["offsets.topic.replication.factor"] == props["min.insync.replicas"] == "1"
