"""Request bodies and query strings into pydantic models, and models into JSON responses."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, TypeAdapter, ValidationError

from hookstream.api.errors import ApiError, body_in_time, invalid
from hookstream.api.models import Ident

M = TypeVar("M", bound=BaseModel)

_IDENT: TypeAdapter[str] = TypeAdapter(Ident)


async def read_body(request: web.Request, model: type[M]) -> M:
    """The body as `model`: 400 if it is not a JSON object, 422 naming each bad field."""
    raw = await body_in_time(request.read())
    if not raw.strip():
        # Bodies whose fields are all optional may be left out entirely.
        data: Any = {}
    else:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, "invalid_json", f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_body", "request body must be a JSON object")
    return validated(model, data)


def read_query(request: web.Request, model: type[M]) -> M:
    # A repeated parameter keeps its first value; none of ours is a list.
    params = {key: request.query.getone(key) for key in request.query}
    return validated(model, params)


def path_ident(request: web.Request, name: str = "id") -> str:
    """The `{name}` of the path, held to the rule for ids in bodies: 422 naming it if not."""
    value = request.match_info[name]
    try:
        return _IDENT.validate_python(value)
    except ValidationError as exc:
        raise invalid(name, exc.errors(include_url=False)[0]["msg"]) from None


def is_ident(value: str) -> bool:
    """Whether `value` could be the id of anything the API stores."""
    try:
        _IDENT.validate_python(value)
    except ValidationError:
        return False
    return True


def validated(model: type[M], data: dict[str, Any]) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [
            {
                "field": ".".join(str(part) for part in error["loc"]) or "body",
                "message": error["msg"],
            }
            for error in exc.errors(include_url=False, include_input=False)
        ]
        fields = ", ".join(dict.fromkeys(problem["field"] for problem in problems))
        raise ApiError(422, "validation_error", f"invalid field(s): {fields}", problems) from None


def respond(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=model.model_dump_json().encode(), content_type="application/json"
    )
