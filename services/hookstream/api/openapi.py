"""The OpenAPI 3.1 document, built from the app's route table and the pydantic models."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from aiohttp import hdrs, web
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from hookstream import __version__
from hookstream.api.docs import Operation, operation_of
from hookstream.api.idempotency import (
    HEADER,
    KEY_PATTERN,
    MAX_KEY_CHARS,
    REPLAYED_HEADER,
    honours_idempotency,
)
from hookstream.api.models import ErrorOut

_REF = "#/components/schemas/{model}"
_PATH_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")

ERROR_DESCRIPTIONS = {
    400: "The body is not a JSON object",
    401: "Missing or invalid API key",
    404: "No such resource for this tenant, or no such route",
    409: "The resource's state does not allow this, or it kept changing concurrently while this "
    "request tried to change it (read it again and retry)",
    412: "If-Match does not name the current version; `details.etag` (and ETag) is the current one",
    413: "The body or event is too large",
    422: "A field is invalid; `details` names each one",
    503: "Kafka, the store or a view is unavailable; safe to retry",
}
# What the errors mean on a route that honours Idempotency-Key.
IDEMPOTENT_ERROR_DESCRIPTIONS = {
    **ERROR_DESCRIPTIONS,
    400: f"The body is not a JSON object, or the {HEADER} header is invalid",
    409: f"The resource's state does not allow this, or a request with the same {HEADER} is "
    "still in progress (retry shortly)",
    422: f"A field is invalid (`details` names each one), or the {HEADER} was first used for "
    "another request (another API key, route, query or body)",
}
IDEMPOTENT_ERRORS = (400, 409, 422)

IDEMPOTENCY_PARAMETER = {
    "name": HEADER,
    "in": "header",
    "required": False,
    "description": (
        "Any unique value (e.g. a UUID) that makes this POST safe to retry: within the "
        "idempotency window (HOOKSTREAM_IDEMPOTENCY_KEY_WINDOW, 12 h by default) a repeat with "
        "the same key, API key, route, query and body gets the first answer again (status and "
        "body, a created webhook's full secret included) without acting twice. Another "
        "request under the same key answers 422; a repeat while the first is in flight answers "
        "409. Answers 5xx and 409 are not kept, so the same key may be retried after them. "
        "Keys are scoped to the tenant of the API key (admin keys share one scope)."
    ),
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_KEY_CHARS,
        "pattern": KEY_PATTERN,
    },
}
IF_MATCH_PARAMETER = {
    "name": "If-Match",
    "in": "header",
    "required": False,
    "description": (
        "The ETag of the version this change is based on (or `*`): the change is made only "
        "if it is still the current version, else 412. Without it, a change that races "
        "another writer is made again on the fresh state, or answered 409."
    ),
    "schema": {"type": "string"},
}
ETAG_RESPONSE_HEADER = {
    "description": "The webhook's version, for If-Match",
    "schema": {"type": "string"},
}
REPLAYED_RESPONSE_HEADER = {
    "description": f"`true` when this is the kept answer of an earlier request with the same "
    f"{HEADER}",
    "schema": {"type": "string", "enum": ["true"]},
}


def documented_routes(app: web.Application) -> Iterator[tuple[str, str, Operation | None]]:
    """(method, path, operation) for every route of the API; HEAD mirrors GET and is not
    listed. Sub-applications (the console's HTML pages) are not part of the contract."""
    for resource in app.router.resources():
        if isinstance(resource, web.PrefixedSubAppResource):
            continue
        for route in resource:
            if route.method == hdrs.METH_HEAD:
                continue
            yield route.method, resource.canonical, operation_of(route.handler)


def build_document(app: web.Application) -> dict[str, Any]:
    routes = [(m, p, op) for m, p, op in documented_routes(app) if op is not None]
    models = _models(op for _, _, op in routes)
    keyed, defs = models_json_schema(models, ref_template=_REF)
    schemas: dict[str, Any] = dict(defs.get("$defs", {}))
    paths: dict[str, dict[str, Any]] = {}
    for method, path, op in sorted(routes, key=lambda item: (item[1], item[0])):
        paths.setdefault(path, {})[method.lower()] = _operation(method, path, op, keyed)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "hookstream",
            "version": __version__,
            "description": "Manage webhooks, publish events and read the delivery log.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"apiKey": []}],
    }


# Keys are (model, mode); pydantic types the model as a model or a pydantic dataclass.
Keyed = dict[tuple[Any, JsonSchemaMode], dict[str, Any]]


def _models(ops: Iterator[Operation]) -> list[tuple[type[BaseModel], JsonSchemaMode]]:
    seen: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {(ErrorOut, "serialization"): None}
    for op in ops:
        if op.body is not None:
            seen[(op.body, "validation")] = None
        if op.response is not None:
            seen[(op.response, "serialization")] = None
    return list(seen)


def _operation(method: str, path: str, op: Operation, keyed: Keyed) -> dict[str, Any]:
    idempotent = honours_idempotency(method, path)
    doc: dict[str, Any] = {
        "operationId": _operation_id(method, path),
        "summary": op.summary,
        "tags": [op.tag],
        "parameters": [
            *_path_parameters(path),
            *_query_parameters(op),
            *([IDEMPOTENCY_PARAMETER] if idempotent else []),
            *([IF_MATCH_PARAMETER] if 412 in op.errors else []),
        ],
        "responses": _responses(op, keyed, idempotent),
    }
    if op.description:
        doc["description"] = op.description
    if op.public:
        doc["security"] = []
    if op.body is not None:
        schema = op.body.model_json_schema()
        doc["requestBody"] = {
            "required": bool(schema.get("required")),
            "content": {"application/json": {"schema": keyed[(op.body, "validation")]}},
        }
    return doc


def _operation_id(method: str, path: str) -> str:
    words = re.findall(r"[a-z0-9]+", _PATH_PARAM.sub(r"by_\1", path).lower())
    return "_".join([method.lower(), *words])


def _path_parameters(path: str) -> list[dict[str, Any]]:
    return [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PATH_PARAM.findall(path)
    ]


def _query_parameters(op: Operation) -> list[dict[str, Any]]:
    if op.query is None:
        return []
    schema = op.query.model_json_schema()
    if "$defs" in schema:
        raise ValueError(f"{op.query.__name__}: query parameters must be plain values")
    required = set(schema.get("required", ()))
    parameters = []
    for name, prop in schema["properties"].items():
        parameter: dict[str, Any] = {
            "name": name,
            "in": "query",
            "required": name in required,
            "schema": _query_schema(prop),
        }
        if "description" in prop:
            parameter["description"] = prop["description"]
        parameters.append(parameter)
    return parameters


def _query_schema(prop: dict[str, Any]) -> dict[str, Any]:
    # A query string has no null: an optional parameter is simply left out.
    schema = {key: value for key, value in prop.items() if key not in ("title", "description")}
    branches = [branch for branch in schema.pop("anyOf", ()) if branch != {"type": "null"}]
    if len(branches) == 1:
        schema.update(branches[0])
    elif branches:
        schema["anyOf"] = branches
    if schema.get("default", ...) is None:
        del schema["default"]
    return schema


def _responses(op: Operation, keyed: Keyed, idempotent: bool) -> dict[str, Any]:
    success: dict[str, Any] = {"description": op.summary}
    descriptions = ERROR_DESCRIPTIONS
    errors = set(op.errors) if op.public else {401, *op.errors}
    headers: dict[str, Any] = {}
    if op.etag:
        headers["ETag"] = ETAG_RESPONSE_HEADER
    if idempotent:
        headers[REPLAYED_HEADER] = REPLAYED_RESPONSE_HEADER
        descriptions = IDEMPOTENT_ERROR_DESCRIPTIONS
        errors.update(IDEMPOTENT_ERRORS)
    if headers:
        success["headers"] = headers
    if op.response is not None:
        success["content"] = {op.media_type: {"schema": keyed[(op.response, "serialization")]}}
    elif op.status != 204:
        success["content"] = {op.media_type: {"schema": {}}}
    responses: dict[str, Any] = {str(op.status): success}
    error_schema = keyed[(ErrorOut, "serialization")]
    for status in sorted(errors):
        responses[str(status)] = {
            "description": descriptions[status],
            "content": {"application/json": {"schema": error_schema}},
        }
    return responses
