"""The short chaos run in `make test`: one kill -9 of each service while events flow."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.chaos.plan import short_plan
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
