"""docker-compose.yml and the Dockerfile, kept correct by reading them (no Docker engine here)."""

from __future__ import annotations

from pathlib import Path

import yaml

from hookstream.cli import build_parser
from hookstream.tools import localkafka

ROOT = Path(__file__).resolve().parents[2]


def test_compose_runs_kafka_postgres_and_every_service() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert services["kafka"]["image"] == f"apache/kafka:{localkafka.KAFKA_VERSION}"
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert services["postgres"]["image"].startswith("postgres:")
    for name in ("router", "sender", "log-sink", "api"):
        service = services[name]
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        assert service["command"] == ["run", name]
        env = service["environment"]
        assert env["HOOKSTREAM_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
        assert env["HOOKSTREAM_STORE_URL"].startswith("postgresql://")
    parser = build_parser()
    for service in services.values():
        if "command" in service:
            parser.parse_args(service["command"])  # exits on a command the CLI does not know


def test_dockerfile_is_slim_and_non_root() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in dockerfile
    user_lines = [line for line in dockerfile.splitlines() if line.startswith("USER ")]
    assert user_lines and user_lines[-1] != "USER root"
    assert 'ENTRYPOINT ["hookstream"]' in dockerfile
