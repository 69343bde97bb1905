"""Shared fixtures: one real Kafka broker per test session, a unique topic prefix per test."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from hookstream.core.settings import Settings
from hookstream.tools import localkafka
from hookstream.tools.topics import create_topics
from tests import postgres
from tests.helpers import (
    STORE_BACKENDS,
    fresh_store_url,
    settings_for_test,
    sqlite_url,
    unique_prefix,
)
from tests.pipeline import Platform, Service
from tests.receiver import TestReceiver


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Stop the throwaway PostgreSQL cluster, if a test started it, and say so."""
    stopped = postgres.stop()
    if stopped:
        terminalreporter.write_line(f"tests: {stopped} served the store tests; stopped")


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The broker for the whole session: an existing cluster if configured, else a local one."""
    existing = os.environ.get("HOOKSTREAM_KAFKA_BOOTSTRAP_SERVERS")
    if existing:
        yield existing
        return
    run_dir = tmp_path_factory.mktemp("kafka")
    state = localkafka.start(run_dir=run_dir, port=localkafka.free_port())
    print(f"\nkafka: {state.bootstrap} ready in {state.startup_seconds:.1f} s")
    try:
        yield state.bootstrap
    finally:
        localkafka.stop(run_dir, wipe=True)


SettingsFactory = Callable[..., Settings]
ServiceStarter = Callable[..., Service]


@pytest.fixture
def topic_prefix() -> str:
    return unique_prefix()


@pytest.fixture(params=STORE_BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty store database for this test: once on SQLite, once on PostgreSQL."""
    with fresh_store_url(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def settings_factory(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> SettingsFactory:
    """Settings for this test: own topics and groups, small partitions, fast retries."""

    def make(**overrides: Any) -> Settings:
        defaults = {"store_url": sqlite_url(tmp_path)}
        return settings_for_test(kafka_bootstrap, topic_prefix, **{**defaults, **overrides})

    return make


@pytest.fixture
def settings(settings_factory: SettingsFactory) -> Settings:
    return settings_factory()


@pytest.fixture
def receiver() -> Iterator[TestReceiver]:
    server = TestReceiver().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pipeline_settings(settings_factory: SettingsFactory) -> Settings:
    """Settings for a pipeline test: loopback receivers allowed, topics created."""
    settings = settings_factory(allow_private_targets=("127.0.0.0/8",), request_timeout=2.0)
    create_topics(settings)
    return settings


@pytest.fixture
def platform(pipeline_settings: Settings) -> Platform:
    return Platform(pipeline_settings)


@pytest.fixture
def services(pipeline_settings: Settings, tmp_path: Path) -> Iterator[ServiceStarter]:
    started: list[Service] = []

    def start(
        name: str, settings: Settings | None = None, *, unset: Sequence[str] = (), **env: str
    ) -> Service:
        service = Service(settings or pipeline_settings, name, tmp_path, unset=unset, **env)
        started.append(service)
        return service

    yield start
    for service in started:
        service.close()
