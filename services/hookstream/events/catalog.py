"""The event-type catalog: what a webhook can subscribe to, and who may see which fields."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from hookstream.core.resources import schemas_dir

CATALOG_FILE = "event-types.json"
ALL_EVENTS = "*"
_CATEGORY_SUFFIX = ".*"


@dataclass(frozen=True, slots=True)
class EventType:
    type: str
    category: str
    description: str
    # None means the event concerns no protected resource, so every owner may receive it.
    permission: str | None
    # Plain dicts rather than read-only proxies, so orjson can serialise them directly.
    field_permissions: Mapping[str, str] = field(hash=False)
    example: Mapping[str, Any] = field(hash=False)

    def visible_to(self, permissions: AbstractSet[str]) -> bool:
        """Whether an owner holding `permissions` may receive events of this type at all."""
        return self.permission is None or self.permission in permissions

    def as_dict(self) -> dict[str, Any]:
        """The catalog entry as it appears in `event-types.json` and the API."""
        return {
            "type": self.type,
            "category": self.category,
            "description": self.description,
            "permission": self.permission,
            "field_permissions": dict(self.field_permissions),
            "example": self.example,
        }


@dataclass(frozen=True, slots=True)
class Catalog:
    # No API version here: it is a deployment setting (`Settings.api_version`), the value every
    # body's envelope carries, so `GET /v1/event-types` reports that one too.
    types: tuple[EventType, ...]
    _index: Mapping[str, EventType] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index: dict[str, EventType] = {}
        for event_type in self.types:
            if event_type.type in index:
                raise ValueError(f"event type {event_type.type!r} is listed twice")
            index[event_type.type] = event_type
        object.__setattr__(self, "_index", index)

    def get(self, type_name: str) -> EventType | None:
        return self._index.get(type_name)

    @property
    def categories(self) -> frozenset[str]:
        return frozenset(event_type.category for event_type in self.types)

    def by_category(self) -> dict[str, list[EventType]]:
        """Event types grouped by category, both in catalog order."""
        groups: dict[str, list[EventType]] = {}
        for event_type in self.types:
            groups.setdefault(event_type.category, []).append(event_type)
        return groups

    def unknown(self, patterns: Iterable[str]) -> list[str]:
        """The subscription patterns that name no known type or category, each once, in order."""
        categories = self.categories
        invalid: list[str] = []
        for pattern in patterns:
            if not self._valid_pattern(pattern, categories) and pattern not in invalid:
                invalid.append(pattern)
        return invalid

    def _valid_pattern(self, pattern: str, categories: frozenset[str]) -> bool:
        if pattern == ALL_EVENTS or pattern in self._index:
            return True
        category = pattern.removesuffix(_CATEGORY_SUFFIX)
        return category != pattern and category in categories


def matches(patterns: Iterable[str], event_type: str) -> bool:
    """Whether a subscription (`*`, `<category>.*` or exact types) covers `event_type`."""
    for pattern in patterns:
        if pattern in (ALL_EVENTS, event_type):
            return True
        if pattern.endswith(_CATEGORY_SUFFIX) and event_type.startswith(pattern[:-1]):
            return True
    return False


def redact(
    data: dict[str, Any], event_type: EventType, permissions: AbstractSet[str]
) -> dict[str, Any]:
    """`data` without the top-level fields whose permission the owner lacks.

    Returns `data` itself when nothing is hidden, so the common case allocates nothing.
    """
    hidden = {
        name
        for name, needed in event_type.field_permissions.items()
        if name in data and needed not in permissions
    }
    if not hidden:
        return data
    return {name: value for name, value in data.items() if name not in hidden}


def load_catalog(path: Path | None = None) -> Catalog:
    """Load the catalog from a file, a schema folder holding it, or the installed schemas."""
    if path is None or path.is_dir():
        path = schemas_dir(path) / CATALOG_FILE
    try:
        document = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from exc
    return _parse_catalog(document, str(path))


@functools.cache
def default_catalog() -> Catalog:
    """The process-wide catalog from the installed schema folder."""
    return load_catalog()


def _parse_catalog(document: Any, where: str) -> Catalog:
    if not isinstance(document, dict):
        raise ValueError(f"{where}: the catalog must be a JSON object")
    entries = document.get("event_types")
    if not isinstance(entries, list):
        raise ValueError(f"{where}: 'event_types' must be a list")
    return Catalog(
        types=tuple(
            _parse_event_type(entry, f"{where}: event_types[{i}]")
            for i, entry in enumerate(entries)
        ),
    )


def _parse_event_type(entry: Any, where: str) -> EventType:
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: must be an object")
    type_name = _text(entry, "type", where)
    category = _text(entry, "category", where)
    # Category subscriptions (`invoice.*`) match by prefix, so the type must carry its category.
    if not type_name.startswith(category + "."):
        raise ValueError(f"{where}: type {type_name!r} does not start with {category!r}.")
    permission = entry.get("permission")
    if permission is not None and not isinstance(permission, str):
        raise ValueError(f"{where}: 'permission' must be a string or null")
    return EventType(
        type=type_name,
        category=category,
        description=_text(entry, "description", where),
        permission=permission,
        field_permissions=_field_permissions(entry.get("field_permissions", {}), where),
        example=_object(entry.get("example"), "example", where),
    )


def _field_permissions(value: Any, where: str) -> dict[str, str]:
    mapping = _object(value, "field_permissions", where)
    if not all(isinstance(needed, str) for needed in mapping.values()):
        raise ValueError(f"{where}: 'field_permissions' values must be permission strings")
    return mapping


def _object(value: Any, key: str, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: {key!r} must be an object")
    return value


def _text(entry: Mapping[str, Any], key: str, where: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where}: {key!r} must be a non-empty string")
    return value
