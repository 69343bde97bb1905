"""The configuration reference (docs/configuration.md), generated from the `Settings` class.

`hookstream config --reference > docs/configuration.md` regenerates it; a test fails when the
committed file and the class disagree, so the reference never drifts from the code.
"""

from __future__ import annotations

from typing import Any, Literal, get_args, get_origin

import annotated_types
from pydantic import SecretStr
from pydantic.fields import FieldInfo

from hookstream.core.settings import Settings, default_instance_id

ENV_PREFIX = "HOOKSTREAM_"
REGENERATE = "hookstream config --reference > docs/configuration.md"

_HEADER = f"""# Configuration reference

<!-- Generated from services/hookstream/core/settings.py by `{REGENERATE}`.
     Do not edit by hand: change the field's description and regenerate. -->

Every setting of the services (router, sender, log-sink, api) and of the commands that talk to
Kafka is an environment variable with the `{ENV_PREFIX}` prefix. An invalid value stops start-up
with the variable's name and the reason. `hookstream config` prints the effective values
(secrets masked). Durations are in seconds and may have a fraction.

| variable | type | default | description |
|---|---|---|---|
"""

_FOOTER = """
The CLI's API commands (`webhooks`, `events`, `deliveries`, `event-types`) also read
`HOOKSTREAM_API_URL` (default `http://127.0.0.1:8080`), `HOOKSTREAM_API_KEY` and
`HOOKSTREAM_TENANT_ID`, each overridden by its `--api-url`, `--api-key`, `--tenant-id`
option; the services ignore those three.
"""

_SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean"}
# Bounds as pydantic keeps them in a field's metadata, with the symbol each reads as.
_BOUNDS = (
    (annotated_types.Ge, "ge", "≥"),
    (annotated_types.Gt, "gt", ">"),
    (annotated_types.Le, "le", "≤"),
    (annotated_types.Lt, "lt", "<"),
)


def type_text(field: FieldInfo) -> str:
    """How a value is written: its kind, the accepted forms and any bounds."""
    annotation = field.annotation
    origin = get_origin(annotation)
    if origin is Literal:
        return "one of " + ", ".join(f"`{choice}`" for choice in get_args(annotation))
    if annotation is SecretStr:
        return "string (secret)"
    if origin is dict:
        return "`key:value` pairs, comma-separated, or a JSON object"
    if origin is tuple:
        item = _SCALARS.get(get_args(annotation)[0], "value")
        return f"list of {item}s, comma-separated or a JSON list"
    text = _SCALARS.get(annotation, str(annotation)) if isinstance(annotation, type) else "value"
    bounds = [
        f"{symbol} {_number(getattr(rule, attribute))}"
        for rule in field.metadata
        for kind, attribute, symbol in _BOUNDS
        if isinstance(rule, kind)
    ]
    return f"{text} {', '.join(bounds)}" if bounds else text


def default_text(field: FieldInfo) -> str:
    if field.default_factory is default_instance_id:
        return "`<host name>-<pid>-<random>`"
    value: Any = field.get_default(call_default_factory=True)
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, tuple | list):
        value = ",".join(_number(item) for item in value)
    elif isinstance(value, dict):
        value = ",".join(f"{key}:{item}" for key, item in value.items())
    elif isinstance(value, int | float) and not isinstance(value, bool):
        value = _number(value)
    return f"`{value}`" if value != "" else "none"


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _cell(text: str) -> str:
    """Table-safe: one line, and a literal `|` does not end the cell."""
    return " ".join(text.split()).replace("|", "\\|")


def render(settings: type[Settings] = Settings) -> str:
    rows = []
    for name, field in settings.model_fields.items():
        description = field.description or ""
        rows.append(
            f"| `{ENV_PREFIX}{name.upper()}` | {_cell(type_text(field))} "
            f"| {_cell(default_text(field))} | {_cell(description)} |\n"
        )
    return _HEADER + "".join(rows) + _FOOTER


def missing_descriptions(settings: type[Settings] = Settings) -> list[str]:
    return [name for name, field in settings.model_fields.items() if not field.description]
