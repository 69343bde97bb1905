"""A small synchronous client for the management API (urllib, no extra dependency)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

DEFAULT_API_URL = "http://127.0.0.1:8080"
DEFAULT_TIMEOUT = 30.0
USER_AGENT = "hookstream-cli"


class ApiCallError(Exception):
    """A request that did not succeed: the API's error, or why there was no answer.

    `status` is None when no HTTP response arrived (connection refused, timeout).
    """

    def __init__(
        self, message: str, status: int | None = None, code: str | None = None, details: Any = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.details = details

    def one_line(self) -> str:
        """The API's message, with validation details it does not already spell out."""
        text = self.message
        extra = [
            f"{item['field']}: {item['message']}"
            for item in self.details or []
            if isinstance(item, dict)
            and isinstance(item.get("field"), str)
            and isinstance(item.get("message"), str)
            and item["message"] not in text
        ]
        if extra:
            text = f"{text} ({'; '.join(extra)})"
        if self.status is not None:
            text = f"{text} [HTTP {self.status}{' ' + self.code if self.code else ''}]"
        return " ".join(text.split())


Query = Mapping[str, str | int | None]


class ApiClient:
    def __init__(self, base_url: str, api_key: str | None, timeout: float = DEFAULT_TIMEOUT):
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    def url(self, path: str, query: Query | None = None) -> str:
        present = {key: str(value) for key, value in (query or {}).items() if value is not None}
        suffix = f"?{urllib.parse.urlencode(present)}" if present else ""
        return f"{self.base_url}{path}{suffix}"

    def get(self, path: str, query: Query | None = None) -> Any:
        return self.request("GET", path, query=query)

    def post(self, path: str, body: Any = None, query: Query | None = None) -> Any:
        return self.request("POST", path, body, query)

    def patch(self, path: str, body: Any, query: Query | None = None) -> Any:
        return self.request("PATCH", path, body, query)

    def delete(self, path: str, query: Query | None = None) -> Any:
        return self.request("DELETE", path, query=query)

    def request(self, method: str, path: str, body: Any = None, query: Query | None = None) -> Any:
        """The decoded JSON answer (None for an empty one); ApiCallError on any failure."""
        url = self.url(path, query)
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return _decode(response.read())
        except urllib.error.HTTPError as exc:
            raise _api_error(exc) from None
        except urllib.error.URLError as exc:
            raise ApiCallError(f"cannot reach the API at {self.base_url}: {exc.reason}") from None
        except TimeoutError:
            raise ApiCallError(
                f"no answer from the API at {self.base_url} within {self.timeout:g} s"
            ) from None
        except (ConnectionError, OSError) as exc:
            raise ApiCallError(f"cannot reach the API at {self.base_url}: {exc}") from None

    def pages(self, path: str, query: Query) -> list[Any]:
        """Every item of a cursor-paginated list, following `next_cursor` to the end."""
        items: list[Any] = []
        cursor: str | None = None
        while True:
            page = self.get(path, {**query, "cursor": cursor})
            items.extend(page["data"])
            cursor = page.get("next_cursor")
            if not cursor:
                return items


def _decode(raw: bytes) -> Any:
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise ApiCallError(
            f"the API answered with something that is not JSON: {raw[:80]!r}"
        ) from None


def _api_error(exc: urllib.error.HTTPError) -> ApiCallError:
    raw = exc.read()
    try:
        error = json.loads(raw)["error"]
        return ApiCallError(
            str(error["message"]), exc.code, str(error.get("code") or ""), error.get("details")
        )
    except (ValueError, KeyError, TypeError):
        # Not the API's error shape (a proxy in between, the wrong port): status and reason.
        return ApiCallError(f"HTTP {exc.code} {exc.reason} from {exc.url}")
