"""deploy/ kept true to the code: every manifest parses, and its names, commands, ports, probes,
settings, scaling bounds and metric names are the ones the code has."""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase
from pydantic import SecretStr

from hookstream import __version__
from hookstream.api.routes.ops import routes as api_ops_routes
from hookstream.cli import SERVICES, build_parser
from hookstream.core.records import ROUTER_GROUP, SENDER_GROUP
from hookstream.core.settings import Settings, load_settings
from hookstream.core.topics import Topics
from hookstream.runtime.metrics import SERVICE_METRICS
from hookstream.runtime.ops import OpsServer

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BASE = DEPLOY / "k8s" / "base"
DASHBOARD = DEPLOY / "grafana" / "hookstream.json"
# The settings that belong in the Secret: every SecretStr, the API keys and the store URL
# (it carries the database password).
SECRET_SETTINGS = {
    f"HOOKSTREAM_{name.upper()}"
    for name, field in Settings.model_fields.items()
    if field.annotation is SecretStr or name in ("api_keys", "store_url")
}
METRIC_NAME = re.compile(r"\bhookstream_[a-zA-Z0-9_]+")
Doc = dict[str, Any]


# -- loading ----------------------------------------------------------------------------------


def manifest_files() -> list[Path]:
    return sorted(
        path
        for path in DEPLOY.rglob("*")
        if path.is_file() and path.suffix in (".yaml", ".yml", ".json")
    )


def k8s_docs() -> list[Doc]:
    docs: list[Doc] = []
    for path in sorted(BASE.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


DOCS = k8s_docs()


def of_kind(kind: str) -> list[Doc]:
    return [doc for doc in DOCS if doc["kind"] == kind]


def one(kind: str, name: str) -> Doc:
    [doc] = [d for d in of_kind(kind) if d["metadata"]["name"] == name]
    return doc


def config_map() -> dict[str, str]:
    data: dict[str, str] = one("ConfigMap", "hookstream-config")["data"]
    return data


def configured() -> Settings:
    """The settings a pod gets from the ConfigMap (and the defaults for everything else)."""
    values = {key.removeprefix("HOOKSTREAM_").lower(): value for key, value in config_map().items()}
    return load_settings(**values)


def default(field: str) -> Any:
    return Settings.model_fields[field].default


def deployments() -> dict[str, Doc]:
    """Deployment per service name, from the container args `run <service>`."""
    out: dict[str, Doc] = {}
    for doc in of_kind("Deployment"):
        [container] = doc["spec"]["template"]["spec"]["containers"]
        assert container["args"][0] == "run", doc["metadata"]["name"]
        out[container["args"][1]] = doc
    return out


def pod_labels(doc: Doc) -> dict[str, str]:
    labels: dict[str, str] = doc["spec"]["template"]["metadata"]["labels"]
    return labels


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def containers() -> Iterator[tuple[Doc, Doc]]:
    for doc in DOCS:
        if doc["kind"] in ("Deployment", "Job"):
            for container in doc["spec"]["template"]["spec"]["containers"]:
                yield doc, container


def _collectors() -> list[object]:
    """Every series defined by a metrics module of core or a service."""
    return [
        value for name in SERVICE_METRICS for value in vars(importlib.import_module(name)).values()
    ]


def exposed_series() -> set[str]:
    """Every sample name the metrics modules expose: counters as `_total`, histograms as
    `_bucket`, `_sum` and `_count`, gauges as themselves (read from the collectors)."""
    suffixes = {
        "counter": ("_total",),
        "gauge": ("",),
        "histogram": ("_bucket", "_sum", "_count"),
        "summary": ("_sum", "_count", ""),
    }
    names: set[str] = set()
    for collector in _collectors():
        if isinstance(collector, MetricWrapperBase):
            for family in collector.describe():
                names |= {family.name + suffix for suffix in suffixes[family.type]}
    return names


def family_names() -> set[str]:
    return {
        family.name
        for collector in _collectors()
        if isinstance(collector, MetricWrapperBase)
        for family in collector.describe()
    }


def alert_rules() -> list[Doc]:
    rule = one("PrometheusRule", "hookstream")
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs: list[str] = []

    def walk(panels: list[Doc]) -> None:
        for panel in panels:
            exprs.extend(target["expr"] for target in panel.get("targets", []))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    return exprs


# -- every file parses; names -----------------------------------------------------------------


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_manifest_parses(path: Path) -> None:
    text = path.read_text()
    if path.suffix == ".json":
        assert isinstance(json.loads(text), dict)
        return
    docs = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    assert docs, f"{path} is empty"
    for doc in docs:
        assert {"apiVersion", "kind"} <= set(doc), path


def test_the_kustomization_lists_every_manifest_of_the_base_and_the_dockerfile_image() -> None:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed))
    present = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(listed) == present
    [image] = kustomization["images"]
    assert image == {"name": "hookstream", "newTag": __version__}
    for doc, container in containers():
        assert container["image"] == "hookstream", doc["metadata"]["name"]


def test_names_and_labels() -> None:
    seen: set[tuple[str, str]] = set()
    for doc in DOCS:
        name = doc["metadata"]["name"]
        assert name == "hookstream" or name.startswith("hookstream-"), name
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name), name
        assert (doc["kind"], name) not in seen, f"{doc['kind']} {name} twice"
        seen.add((doc["kind"], name))
        assert doc["metadata"]["labels"]["app.kubernetes.io/name"] == "hookstream", name


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_builds_the_base() -> None:
    built = subprocess.run(
        ["kubectl", "kustomize", str(BASE)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    docs = [doc for doc in yaml.safe_load_all(built) if doc]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in docs) == sorted(
        (d["kind"], d["metadata"]["name"]) for d in DOCS
    )
    for doc in docs:
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "hookstream"
        if doc["kind"] == "Deployment":
            [container] = doc["spec"]["template"]["spec"]["containers"]
            assert container["image"] == f"hookstream:{__version__}"


# -- deployments: commands, ports, probes, resources, config ----------------------------------


def test_one_deployment_per_service_running_it() -> None:
    by_service = deployments()
    assert set(by_service) == set(SERVICES)
    parser = build_parser()
    for service, doc in by_service.items():
        assert doc["metadata"]["name"] == f"hookstream-{service}"
        labels = pod_labels(doc)
        assert labels["app.kubernetes.io/component"] == service
        assert selects(doc["spec"]["selector"]["matchLabels"], labels)
        [container] = doc["spec"]["template"]["spec"]["containers"]
        assert container["args"] == ["run", service]
    for _doc, container in containers():
        parser.parse_args(container["args"])  # exits on a command the CLI does not know


def test_ports_and_probes_match_the_code() -> None:
    metrics_port, api_port = default("metrics_port"), default("api_port")
    assert (metrics_port, api_port) == (9108, 8080)
    settings = configured()
    assert (settings.metrics_port, settings.api_port) == (metrics_port, api_port)
    assert settings.metrics_host == settings.api_host == "0.0.0.0"
    for service, doc in deployments().items():
        [container] = doc["spec"]["template"]["spec"]["containers"]
        [port] = container["ports"]
        expected = ("http", api_port) if service == "api" else ("metrics", metrics_port)
        assert (port["name"], port["containerPort"]) == expected, service
        probes = {
            kind: container[kind]["httpGet"]
            for kind in ("startupProbe", "livenessProbe", "readinessProbe")
        }
        assert probes["livenessProbe"]["path"] == "/healthz", service
        assert probes["startupProbe"]["path"] == "/healthz", service
        assert probes["readinessProbe"]["path"] == "/readyz", service
        for probe in probes.values():
            assert probe["port"] in (port["name"], port["containerPort"]), service


def test_the_probe_paths_are_served_by_the_code() -> None:
    """The workers' ops listener answers them; the API routes them itself."""
    ready = threading.Event()
    ready.set()
    server = OpsServer("127.0.0.1", 0, ready).start()
    try:
        for path in ("/healthz", "/readyz", "/metrics"):
            with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=5) as r:
                assert r.status == 200, path
    finally:
        server.stop()
    api_paths = {route.path for route in api_ops_routes if hasattr(route, "path")}
    assert {"/healthz", "/readyz", "/metrics"} <= api_paths


def test_every_container_has_requests_and_limits_and_runs_locked_down() -> None:
    for doc, container in containers():
        name = doc["metadata"]["name"]
        for bound in ("requests", "limits"):
            assert set(container["resources"][bound]) == {"cpu", "memory"}, name
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, name
        assert context["readOnlyRootFilesystem"] is True, name
        assert context["capabilities"]["drop"] == ["ALL"], name
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
    grace = default("shutdown_grace")
    for doc in of_kind("Deployment"):
        period = doc["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert period >= float(config_map().get("HOOKSTREAM_SHUTDOWN_GRACE", grace)) + 10


def test_config_map_and_secret_hold_real_settings() -> None:
    fields = {f"HOOKSTREAM_{name.upper()}" for name in Settings.model_fields}
    data = config_map()
    assert set(data) <= fields, set(data) - fields
    assert not set(data) & SECRET_SETTINGS, "secrets belong in the Secret"
    assert all(isinstance(value, str) for value in data.values())
    configured()  # every value is valid for its setting

    secret = one("Secret", "hookstream-secrets")
    assert set(secret["stringData"]) == SECRET_SETTINGS
    assert fields >= SECRET_SETTINGS
    load_settings(
        **{key.removeprefix("HOOKSTREAM_").lower(): v for key, v in secret["stringData"].items()}
    )

    for doc, container in containers():
        name = doc["metadata"]["name"]
        assert container["envFrom"] == [{"configMapRef": {"name": "hookstream-config"}}], name
        for env in container.get("env", []):
            assert env["name"] in fields, (name, env["name"])
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref is not None:
                assert ref["name"] == "hookstream-secrets" and ref["key"] == env["name"]
                assert ref["key"] in secret["stringData"]
            else:
                assert env["name"] not in SECRET_SETTINGS, name
    # Only what needs a secret gets it: the store for the log-sink and the API, the API keys for
    # the API, the encryption key for the API and the sender (they decrypt signing secrets).
    secret_users = {
        service: {
            env["name"]
            for env in doc["spec"]["template"]["spec"]["containers"][0].get("env", [])
            if "secretKeyRef" in env.get("valueFrom", {})
        }
        for service, doc in deployments().items()
    }
    assert secret_users == {
        "router": set(),
        "sender": SECRET_SETTINGS - {"HOOKSTREAM_API_KEYS", "HOOKSTREAM_STORE_URL"},
        "log-sink": {"HOOKSTREAM_STORE_URL"},
        "api": SECRET_SETTINGS,
    }


# -- disruption budgets, services, monitors -----------------------------------------------------


def test_a_disruption_budget_per_service() -> None:
    budgets = of_kind("PodDisruptionBudget")
    for service, doc in deployments().items():
        matching = [
            b for b in budgets if selects(b["spec"]["selector"]["matchLabels"], pod_labels(doc))
        ]
        assert len(matching) == 1, service
        spec = matching[0]["spec"]
        assert "maxUnavailable" in spec or "minAvailable" in spec


def test_services_reach_named_ports_of_real_pods() -> None:
    services = {doc["metadata"]["name"]: doc for doc in of_kind("Service")}
    assert {"hookstream-api", "hookstream-metrics"} <= set(services)
    for name, service in services.items():
        pods = [
            d for d in deployments().values() if selects(service["spec"]["selector"], pod_labels(d))
        ]
        assert pods, f"{name} selects no pods"
        for port in service["spec"]["ports"]:
            for pod in pods:
                [container] = pod["spec"]["template"]["spec"]["containers"]
                names = {p["name"] for p in container["ports"]}
                assert port["targetPort"] in names, (name, pod["metadata"]["name"])
    backed = {
        service
        for service, doc in deployments().items()
        if selects(services["hookstream-metrics"]["spec"]["selector"], pod_labels(doc))
    }
    assert backed == set(SERVICES) - {"api"}


def test_the_service_monitor_scrapes_metrics_of_every_service() -> None:
    [monitor] = of_kind("ServiceMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"]
    services = [s for s in of_kind("Service") if selects(selector, s["metadata"]["labels"])]
    ports = {p["name"] for s in services for p in s["spec"]["ports"]}
    endpoints = monitor["spec"]["endpoints"]
    assert {e["port"] for e in endpoints} == ports == {"http", "metrics"}
    assert all(e["path"] == "/metrics" for e in endpoints)
    scraped = {
        service
        for service, doc in deployments().items()
        for s in services
        if selects(s["spec"]["selector"], pod_labels(doc))
    }
    assert scraped == set(SERVICES)


# -- scaling -------------------------------------------------------------------------------------


def test_keda_scales_router_and_sender_on_their_lag_within_their_partitions() -> None:
    settings = configured()
    topics = Topics.from_settings(settings)
    expected = {
        "sender": (SENDER_GROUP, topics.deliveries, settings.deliveries_partitions),
        "router": (ROUTER_GROUP, topics.events, settings.events_partitions),
    }
    scaled = {doc["spec"]["scaleTargetRef"]["name"]: doc for doc in of_kind("ScaledObject")}
    assert set(scaled) == {f"hookstream-{service}" for service in expected}
    for service, (group, topic, partitions) in expected.items():
        spec = scaled[f"hookstream-{service}"]["spec"]
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= partitions, service
        [trigger] = spec["triggers"]
        assert trigger["type"] == "kafka"
        meta = trigger["metadata"]
        assert meta["bootstrapServers"] == settings.kafka_bootstrap_servers
        assert meta["consumerGroup"] == settings.consumer_group_prefix + group
        assert meta["topic"] == topic
        assert meta["offsetResetPolicy"] == "earliest"  # where the services start
        assert all(isinstance(value, str) for value in meta.values())
        # KEDA owns the replica count: a fixed one would fight it on every apply.
        assert "replicas" not in deployments()[service]["spec"], service


# -- alerts and dashboard: metric names -------------------------------------------------------


def test_alerts_use_only_real_series_and_cover_the_issue() -> None:
    exposed = exposed_series()
    rules = alert_rules()
    used: set[str] = set()
    for rule in rules:
        assert rule["alert"].startswith("Hookstream"), rule
        assert rule["labels"]["severity"] in ("critical", "warning", "info")
        assert rule["annotations"]["summary"]
        names = set(METRIC_NAME.findall(rule["expr"]))
        assert names, rule["alert"]
        assert names <= exposed, f"{rule['alert']}: unknown {names - exposed}"
        used |= names
    assert {
        "hookstream_consumer_lag",
        "hookstream_dead_letters_total",
        "hookstream_attempts_total",
        "hookstream_auto_disables_total",
    } <= used
    # The saturation alert assumes the configured request slots per sender.
    [saturated] = [r for r in rules if "hookstream_requests_in_flight" in r["expr"]]
    slots = re.search(r"\*\s*(\d+)\)", saturated["expr"])
    assert slots is not None and int(slots.group(1)) == configured().max_in_flight


def test_the_dashboard_uses_only_real_series_and_shows_every_family() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "hookstream" and dashboard["title"] == "hookstream"
    exprs = dashboard_exprs()
    assert exprs
    exposed = exposed_series()
    used = {name for expr in exprs for name in METRIC_NAME.findall(expr)}
    assert used <= exposed, used - exposed
    shown = {
        family
        for family in family_names()
        if any(name == family or name.startswith(family + "_") for name in used)
    }
    assert shown == family_names(), family_names() - shown
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_exposed_series_follow_prometheus_conventions() -> None:
    for name in family_names():
        assert name.startswith("hookstream_"), name
    exposed = exposed_series()
    assert "hookstream_events_consumed_total" in exposed
    assert "hookstream_request_duration_seconds_bucket" in exposed
    assert "hookstream_request_duration_seconds" not in exposed  # a histogram has no bare series
    assert "hookstream_consumer_lag" in exposed


# -- docker-compose runs the same stack ----------------------------------------------------------


def test_compose_publishes_each_workers_metrics_port() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    published: set[str] = set()
    for service in set(SERVICES) - {"api"}:
        ports = compose["services"][service].get("ports", [])
        targets = {str(port).rsplit(":", 1)[-1] for port in ports}
        assert str(default("metrics_port")) in targets, service
        published |= {str(port).rsplit(":", 1)[0] for port in ports}
    assert len(published) == 3, "each worker on its own host port"


def test_the_image_matches_the_pods_user_and_ports() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    uid = re.search(r"useradd .*--uid (\d+)", dockerfile)
    assert uid is not None
    for doc in DOCS:
        if doc["kind"] in ("Deployment", "Job"):
            user = doc["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
            assert user == int(uid.group(1)), doc["metadata"]["name"]
    [expose] = [line.split()[1:] for line in dockerfile.splitlines() if line.startswith("EXPOSE")]
    assert {int(port) for port in expose} == {default("api_port"), default("metrics_port")}
