"""Event-type catalog: contents, subscription validation, permission-based redaction."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from hookstream.core.resources import schemas_dir
from hookstream.events.catalog import (
    CATALOG_FILE,
    Catalog,
    EventType,
    default_catalog,
    load_catalog,
    matches,
    redact,
)

REQUIRED_TYPES = {
    "invoice.created": ("invoice", "invoices:read"),
    "invoice.paid": ("invoice", "invoices:read"),
    "invoice.voided": ("invoice", "invoices:read"),
    "offer.created": ("offer", "offers:read"),
    "offer.accepted": ("offer", "offers:read"),
    "offer.declined": ("offer", "offers:read"),
    "milestone.submitted": ("milestone", "milestones:read"),
    "milestone.approved": ("milestone", "milestones:read"),
    "milestone.rejected": ("milestone", "milestones:read"),
    "webhook.test": ("webhook", None),
    "webhook.disabled": ("webhook", None),
}


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


def _get(catalog: Catalog, type_name: str) -> EventType:
    event_type = catalog.get(type_name)
    assert event_type is not None, type_name
    return event_type


@pytest.mark.parametrize("type_name", sorted(REQUIRED_TYPES))
def test_required_types_are_present(catalog: Catalog, type_name: str) -> None:
    category, permission = REQUIRED_TYPES[type_name]
    event_type = _get(catalog, type_name)
    assert event_type.category == category
    assert event_type.permission == permission
    assert event_type.description
    assert event_type.example


def test_catalog_metadata(catalog: Catalog) -> None:
    assert catalog.get("invoice.nope") is None
    assert catalog.categories == {"invoice", "offer", "milestone", "webhook"}


def test_invoices_protect_bank_details(catalog: Catalog) -> None:
    for type_name in ("invoice.created", "invoice.paid", "invoice.voided"):
        event_type = _get(catalog, type_name)
        assert event_type.field_permissions == {"bank_details": "invoices:read_sensitive"}
        assert set(event_type.example["bank_details"]) == {"iban", "bic"}


def test_operational_examples(catalog: Catalog) -> None:
    assert _get(catalog, "webhook.test").example == {"test": True}
    assert set(_get(catalog, "webhook.disabled").example) == {"webhook_id", "reason", "disabled_at"}


def test_by_category_groups_in_order(catalog: Catalog) -> None:
    groups = catalog.by_category()
    assert list(groups) == ["invoice", "offer", "milestone", "webhook"]
    assert [t.type for t in groups["webhook"]] == ["webhook.test", "webhook.disabled"]
    assert sum(len(types) for types in groups.values()) == len(catalog.types)


def test_unknown_accepts_valid_patterns(catalog: Catalog) -> None:
    assert catalog.unknown(["invoice.*", "*", "invoice.paid", "webhook.*"]) == []


def test_unknown_names_invalid_patterns_once_in_order(catalog: Catalog) -> None:
    patterns = ["invoice.nope", "invoice.paid", "nope.*", "invoice", "invoice.nope", "", "*.paid"]
    assert catalog.unknown(patterns) == ["invoice.nope", "nope.*", "invoice", "", "*.paid"]


@pytest.mark.parametrize(
    ("patterns", "event_type", "expected"),
    [
        (["*"], "invoice.paid", True),
        (["invoice.*"], "invoice.paid", True),
        (["invoice.paid"], "invoice.paid", True),
        (["offer.*", "invoice.created"], "invoice.paid", False),
        (["invoice.*"], "invoices.paid", False),
        ([], "invoice.paid", False),
    ],
)
def test_matches(patterns: list[str], event_type: str, expected: bool) -> None:
    assert matches(patterns, event_type) is expected


def test_redact_removes_fields_the_owner_may_not_see(catalog: Catalog) -> None:
    invoice_paid = _get(catalog, "invoice.paid")
    data = dict(invoice_paid.example)

    redacted = redact(data, invoice_paid, frozenset({"invoices:read"}))

    assert "bank_details" not in redacted
    assert redacted == {k: v for k, v in data.items() if k != "bank_details"}
    assert "bank_details" in data


def test_redact_keeps_fields_with_permission(catalog: Catalog) -> None:
    invoice_paid = _get(catalog, "invoice.paid")
    data = dict(invoice_paid.example)
    permissions = frozenset({"invoices:read", "invoices:read_sensitive"})

    assert redact(data, invoice_paid, permissions) is data


def test_redact_without_protected_fields_returns_same_dict(catalog: Catalog) -> None:
    data: dict[str, Any] = {"offer_id": "off_1"}
    assert redact(data, _get(catalog, "offer.accepted"), frozenset()) is data


def test_visible_to(catalog: Catalog) -> None:
    assert _get(catalog, "invoice.paid").visible_to(frozenset({"invoices:read"}))
    assert not _get(catalog, "invoice.paid").visible_to(frozenset({"offers:read"}))
    assert _get(catalog, "webhook.test").visible_to(frozenset())


def test_as_dict_round_trips_the_file(catalog: Catalog) -> None:
    document = orjson.loads((schemas_dir() / CATALOG_FILE).read_bytes())
    assert [t.as_dict() for t in catalog.types] == document["event_types"]


def test_default_catalog_is_shared() -> None:
    assert default_catalog() is default_catalog()


def _write(tmp_path: Path, document: Any) -> Path:
    path = tmp_path / CATALOG_FILE
    path.write_text(json.dumps(document))
    return path


def _entry(**overrides: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "type": "thing.happened",
        "category": "thing",
        "description": "A thing happened.",
        "permission": None,
        "field_permissions": {},
        "example": {"thing_id": "t_1"},
    }
    entry.update(overrides)
    return entry


def test_load_from_folder_or_file(tmp_path: Path) -> None:
    path = _write(tmp_path, {"event_types": [_entry()]})
    assert load_catalog(tmp_path).get("thing.happened") is not None
    assert load_catalog(path).get("thing.happened") is not None


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "must be a JSON object"),
        ({}, "'event_types' must be a list"),
        ({"event_types": [_entry(type="other.happened")]}, "does not start"),
        ({"event_types": [_entry(), _entry()]}, "listed twice"),
        ({"event_types": [_entry(example=None)]}, "'example'"),
        ({"event_types": [_entry(permission=3)]}, "'permission'"),
        (
            {"event_types": [_entry(field_permissions={"a": 1})]},
            "'field_permissions'",
        ),
    ],
)
def test_malformed_catalog_is_rejected(tmp_path: Path, document: Any, message: str) -> None:
    _write(tmp_path, document)
    with pytest.raises(ValueError, match=message):
        load_catalog(tmp_path)
