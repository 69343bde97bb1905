"""Durability settings every Kafka client and topic gets: producers wait for all in-sync
replicas and never duplicate a retried record; replicated topics refuse writes that would
live on one broker only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import hookstream
from hookstream.core.kafka import producer_config
from hookstream.core.settings import SettingsError, load_settings
from hookstream.core.topics import replication_config

PACKAGE = Path(hookstream.__file__).parent


def _producer_constructions() -> list[tuple[str, ast.Call]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _name(node.func) == "Producer":
                found.append((f"{path.relative_to(PACKAGE)}:{node.lineno}", node))
    return found


def _name(func: ast.expr) -> str:
    if isinstance(func, ast.Name):
        return func.id
    return func.attr if isinstance(func, ast.Attribute) else ""


def test_every_producer_the_project_creates_is_configured_by_producer_config() -> None:
    constructions = _producer_constructions()
    # The router, the writer runtime, the log-sink, the dead-letter sink, reencrypt.
    assert len(constructions) >= 5, constructions
    stray = [
        where
        for where, call in constructions
        if not (
            len(call.args) == 1
            and not call.keywords
            and isinstance(call.args[0], ast.Call)
            and _name(call.args[0].func) == "producer_config"
        )
    ]
    assert not stray, f"Producer built from something else than producer_config: {stray}"


@given(
    extra=st.dictionaries(
        st.sampled_from(["acks", "enable.idempotence", "linger.ms", "retries"]),
        st.one_of(st.integers(-1, 5), st.booleans(), st.sampled_from(["0", "1", "all"])),
    ),
    transactional=st.booleans(),
)
def test_no_caller_can_weaken_acks_or_idempotence(
    extra: dict[str, object], transactional: bool
) -> None:
    settings = load_settings()
    config = producer_config(settings, "tx-1" if transactional else None, extra=dict(extra))
    assert config["acks"] == "all"
    assert config["enable.idempotence"] is True


@pytest.mark.parametrize(
    ("replication", "configured", "expected"),
    [
        (1, None, {}),
        (2, None, {"min.insync.replicas": "1"}),
        (3, None, {"min.insync.replicas": "2"}),
        (5, None, {"min.insync.replicas": "2"}),
        (3, 3, {"min.insync.replicas": "3"}),
        (3, 1, {"min.insync.replicas": "1"}),
    ],
)
def test_replicated_topics_get_min_insync_replicas(
    replication: int, configured: int | None, expected: dict[str, str]
) -> None:
    settings = load_settings(replication_factor=replication, min_insync_replicas=configured)
    assert replication_config(settings) == expected


def test_more_in_sync_replicas_than_copies_is_refused() -> None:
    with pytest.raises(SettingsError, match="cannot exceed replication_factor"):
        load_settings(replication_factor=2, min_insync_replicas=3)
