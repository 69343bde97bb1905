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
    (cache / "resolved").write_text(localkafka.KAFKA_VERSION)
    monkeypatch.setenv("PATH", os.devnull)
    assert localkafka.resolve(cache) == libs
