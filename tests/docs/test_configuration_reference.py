"""docs/configuration.md is exactly what the settings class generates."""

from __future__ import annotations

from pathlib import Path

import pytest

from hookstream.cli import main
from hookstream.tools.settings_reference import REGENERATE, missing_descriptions, render

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_every_setting_has_a_description() -> None:
    assert missing_descriptions() == [], (
        f"give these fields a Field(description=...) in core/settings.py, then run `{REGENERATE}`"
    )


def test_committed_reference_matches_the_settings_class() -> None:
    committed = REFERENCE.read_text() if REFERENCE.exists() else ""
    assert committed == render(), (
        f"{REFERENCE.name} is out of date with services/hookstream/core/settings.py; "
        f"regenerate it from the repository root with `.venv/bin/{REGENERATE}`"
    )


def test_cli_prints_the_reference(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "--reference"]) == 0
    printed = capsys.readouterr().out
    assert printed == render()
    assert "| `HOOKSTREAM_RETRY_SCHEDULE` |" in printed
