"""What `hookstream run all` prints once its children are started: where everything is.

A person who just typed `make run` wants the URLs to open and the key to paste, not a search
through log lines. The banner names no secret: an API key is shown only when it is the
development default that `make run` and the README already print.
"""

from __future__ import annotations

from collections.abc import Mapping

from hookstream.core.settings import Settings

# The admin key `make run` configures unless HOOKSTREAM_API_KEYS is set (see the Makefile).
DEV_API_KEY = "dev-admin-key"
# A listener bound to every address is reached on loopback from this machine.
_ANY_ADDRESS = frozenset({"0.0.0.0", "::", ""})


def _reachable(host: str) -> str:
    if host in _ANY_ADDRESS:
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _api_keys_line(api_keys: Mapping[str, str]) -> str:
    if not api_keys:
        return "none configured: the API refuses every request (set HOOKSTREAM_API_KEYS)"
    if api_keys.get(DEV_API_KEY) == "*":
        others = len(api_keys) - 1
        more = f", and {others} more from HOOKSTREAM_API_KEYS" if others else ""
        return f"{DEV_API_KEY} (admin, the development default: never deploy it){more}"
    return f"{len(api_keys)} from HOOKSTREAM_API_KEYS (not shown)"


def banner(settings: Settings, pids: Mapping[str, int], metrics_ports: Mapping[str, int]) -> str:
    """The lines `run all` prints on stdout once every child is started.

    `pids` maps each service to its process; `metrics_ports` the services with a metrics
    listener of their own to its port (0: a free one, which only its log names).
    """
    api = f"http://{_reachable(settings.api_host)}:{settings.api_port}"
    metrics_host = _reachable(settings.metrics_host)
    metrics = [f"api {api}/metrics"]
    metrics += [
        f"{name} http://{metrics_host}:{port}/metrics" if port else f"{name} (a free port)"
        for name, port in metrics_ports.items()
    ]
    rows = [
        ("api", f"{api}/v1 (OpenAPI document: {api}/openapi.json)"),
        ("console", f"{api}/console"),
        ("metrics", ", ".join(metrics)),
        ("API keys", _api_keys_line(settings.api_keys)),
        ("pids", ", ".join(f"{name} {pid}" for name, pid in pids.items())),
    ]
    width = max(len(label) for label, _ in rows)
    lines = [f"started {', '.join(pids)}; Ctrl-C stops them"]
    lines += [f"  {label:<{width}}  {value}" for label, value in rows]
    return "\n".join(lines)
