"""Generated requests against /openapi.json find no server error and match the document."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from hookstream.api.app import create_app
from hookstream.api.openapi import build_document
from hookstream.core.settings import load_settings
from tests.helpers import sqlite_url
from tests.pipeline import lone_api_settings, running_api

pytestmark = pytest.mark.integration

KEY = "key-fuzz-tenant-0123456789"


@pytest.fixture(scope="module")
def api_url(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One API process (no pipeline behind it: only its answers are under test)."""
    directory: Path = tmp_path_factory.mktemp("api-fuzz")
    store_url = sqlite_url(directory)
    configured = lone_api_settings(
        kafka_bootstrap, store_url, {KEY: "tenant_fuzz"}, retry_schedule=(0.2,)
    )
    with running_api(configured, directory):
        yield f"http://127.0.0.1:{configured.api_port}"


# The document the server serves, built the same way; a test elsewhere checks they match.
schema = schemathesis.openapi.from_dict(build_document(create_app(load_settings())))


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    # The same requests on every run, so CI cannot turn red by chance; nothing to remember.
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_generated_requests(case: Any, api_url: str) -> None:
    case.call_and_validate(
        base_url=api_url,
        headers={"Authorization": f"Bearer {KEY}"},
        # A schema cannot say which URLs resolve to public addresses or which tenant a key
        # may name, so schema-valid requests may fairly get 422.
        excluded_checks=[schemathesis.checks.positive_data_acceptance],
    )
