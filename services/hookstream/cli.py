"""The `hookstream` command: local broker, topics, settings, and running services."""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from hookstream import __version__
from hookstream.client.commands import register as register_api_commands
from hookstream.core.settings import Settings, SettingsError, load_settings
from hookstream.tools import localcluster, localkafka
from hookstream.tools.banner import banner
from hookstream.tools.supervisor import STOP_MARGIN, Child, SharedStderr, supervise


def _settings() -> Settings:
    """Settings from the environment; without a configured cluster, the local broker if running."""
    if "HOOKSTREAM_KAFKA_BOOTSTRAP_SERVERS" not in os.environ:
        local = _local_bootstrap(localkafka.default_run_dir())
        if local is not None:
            return load_settings(kafka_bootstrap_servers=local)
    return load_settings()


def _local_bootstrap(run_dir: Path) -> str | None:
    broker = localkafka.read_state(run_dir)
    if broker is not None:
        return broker.bootstrap
    cluster = localcluster.running(run_dir)
    return cluster.bootstrap if cluster is not None else None


def _cmd_kafka(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir) if args.run_dir else localkafka.default_run_dir()
    cache_dir = Path(args.cache_dir) if args.cache_dir else None
    if args.action == "start":
        already = _local_bootstrap(run_dir)
        if already is not None:
            print(f"kafka already running at {already} (run dir {run_dir})")
            return 0
        if args.brokers > 1:
            return _start_cluster(args, run_dir, cache_dir)
        print(f"starting Kafka {localkafka.KAFKA_VERSION} (KRaft, single node) ...", flush=True)
        heap = args.heap or "1g"
        state = localkafka.start(run_dir, port=args.port, heap=heap, cache_dir=cache_dir)
        print(
            f"kafka ready at {state.bootstrap} in {state.startup_seconds:.1f} s (pid {state.pid})"
        )
        print(f"logs: {state.run_dir}/logs/server.log")
        if state.bootstrap != "127.0.0.1:9092":
            print(f"export HOOKSTREAM_KAFKA_BOOTSTRAP_SERVERS={state.bootstrap}")
        return 0
    if args.action == "stop":
        stopped = localkafka.stop(run_dir, wipe=args.wipe)
        if stopped is not None:
            print(f"kafka stopped (pid {stopped.pid})")
            return 0
        cluster = localcluster.stop(run_dir, wipe=args.wipe)
        print(
            f"kafka cluster of {len(cluster.nodes)} nodes stopped"
            if cluster is not None
            else "kafka was not running"
        )
        return 0
    running = localkafka.read_state(run_dir)
    if running is not None:
        print(f"kafka: running at {running.bootstrap} (pid {running.pid}, run dir {run_dir})")
        return 0
    cluster = localcluster.read_cluster(run_dir)
    if cluster is None or localcluster.running(run_dir) is None:
        print("kafka: not running")
        return 3
    for node in cluster.nodes:
        up = "up" if localkafka.pid_alive(node.pid) else "DOWN"
        print(f"kafka node {node.node_id}: {up} at {node.address} (pid {node.pid})")
    print(f"kafka: cluster at {cluster.bootstrap} (run dir {run_dir})")
    return 0


def _start_cluster(args: argparse.Namespace, run_dir: Path, cache_dir: Path | None) -> int:
    print(
        f"starting Kafka {localkafka.KAFKA_VERSION} (KRaft, {args.brokers} nodes, each broker "
        "and controller) ...",
        flush=True,
    )
    heap = args.heap or "512m"
    state = localcluster.start(
        run_dir, brokers=args.brokers, port=args.port, heap=heap, cache_dir=cache_dir
    )
    print(f"kafka cluster ready in {state.startup_seconds:.1f} s; logs: {run_dir}/node-*/logs/")
    print(f"export HOOKSTREAM_KAFKA_BOOTSTRAP_SERVERS={state.bootstrap}")
    print(f"export HOOKSTREAM_REPLICATION_FACTOR={min(3, args.brokers)}")
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    if args.reference:
        from hookstream.tools.settings_reference import render

        # The class's defaults and descriptions, not this environment's values.
        sys.stdout.write(render())
        return 0
    settings = _settings()
    if args.json:
        print(json.dumps(settings.masked(), indent=2))
    else:
        for name, value in settings.masked().items():
            shown = value if isinstance(value, str) else json.dumps(value)
            print(f"HOOKSTREAM_{name.upper()}={shown}")
    return 0


def _cmd_topics(args: argparse.Namespace) -> int:
    from hookstream.tools.topics import create_topics

    settings = _settings()
    report = create_topics(settings)
    for name in report.created:
        print(f"created  {name}")
    for name in report.existing:
        print(f"exists   {name}")
    for problem in report.conflicts:
        print(f"CONFLICT {problem}", file=sys.stderr)
    return 1 if report.conflicts else 0


def _run_router(settings: Settings) -> int:
    from hookstream.router.service import run_router

    return run_router(settings)


def _run_sender(settings: Settings) -> int:
    from hookstream.sender.service import run_sender

    return run_sender(settings)


def _run_log_sink(settings: Settings) -> int:
    from hookstream.logsink.service import run_log_sink

    return run_log_sink(settings)


def _run_api(settings: Settings) -> int:
    from hookstream.api.service import run_api

    return run_api(settings)


def _cmd_receiver(args: argparse.Namespace) -> int:
    from hookstream.tools import receiver

    state = receiver.ReceiverState(
        secrets=args.secret or [], status=args.status, fail_first=args.fail
    )
    return receiver.run(state, args.host, args.port)


def _cmd_demo(args: argparse.Namespace) -> int:
    from hookstream.tools import demo

    return demo.run(Path(args.log_dir) if args.log_dir else None)


def _cmd_status(args: argparse.Namespace) -> int:
    from hookstream.tools import status

    return status.run(_settings(), as_json=args.json, timeout=args.timeout)


def _cmd_store(args: argparse.Namespace) -> int:
    from hookstream.store import migrate

    settings = _settings()
    migrate(settings.store_url)
    print(f"store migrated: {settings.masked()['store_url']}")
    return 0


def _cmd_secrets(args: argparse.Namespace) -> int:
    from hookstream.tools.reencrypt import secrets_command

    settings = _settings() if args.action == "reencrypt" else None
    return secrets_command(args.action, settings, kid=args.kid, dry_run=args.dry_run)


# Each service is imported only when it runs; `run all` starts every one.
SERVICES: dict[str, Callable[[Settings], int]] = {
    "router": _run_router,
    "sender": _run_sender,
    "log-sink": _run_log_sink,
    "api": _run_api,
}


def _cmd_run(args: argparse.Namespace) -> int:
    settings = _settings()
    if args.service == "all":
        return _run_all(settings)
    runner = SERVICES.get(args.service)
    if runner is None:
        available = ", ".join([*SERVICES, "all"])
        print(f"unknown service {args.service!r}; available: {available}", file=sys.stderr)
        return 2
    return runner(settings)


def _run_all(settings: Settings) -> int:
    """Every service as a child process (development), stopped together on SIGTERM/SIGINT or
    as soon as one of them stops unasked, which is reported with its reason: exit 1 then."""
    env = {**os.environ, "HOOKSTREAM_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers}
    # Each service but the api (which serves /metrics on its own port) binds the metrics
    # port: one port each, counting up from the configured one (0 stays "any free port").
    ports = {
        name: settings.metrics_port + index if settings.metrics_port else 0
        for index, name in enumerate(service for service in SERVICES if service != "api")
    }
    out = SharedStderr()
    # What the main thread waits on: a child's exit or a signal. SimpleQueue.put is reentrant,
    # so the handlers may call it while they interrupt this thread's own get().
    events: queue.SimpleQueue[str | int] = queue.SimpleQueue()
    signal.signal(signal.SIGTERM, lambda signum, _frame: events.put(signum))
    signal.signal(signal.SIGINT, lambda signum, _frame: events.put(signum))
    children: dict[str, Child] = {}
    try:
        for name in SERVICES:
            own = {**env, "HOOKSTREAM_METRICS_PORT": str(ports[name])} if name in ports else env
            argv = [sys.executable, "-m", "hookstream", "run", name]
            children[name] = Child(name, argv, own, out, events)
        pids = {child.name: child.pid for child in children.values()}
        print(banner(settings, pids, ports), flush=True)
        return supervise(children, events, out, settings.shutdown_grace + STOP_MARGIN)
    finally:
        # Whatever went wrong in here, no child outlives `run all`.
        for child in children.values():
            if child.process.poll() is None:
                child.process.kill()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hookstream", description=__doc__)
    parser.add_argument("--version", action="version", version=f"hookstream {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    kafka = sub.add_parser("kafka", help="run a local Kafka broker (or a cluster: --brokers 3)")
    kafka.add_argument("action", choices=["start", "stop", "status"])
    kafka.add_argument(
        "--port", type=int, default=None, help="listener port (default 9092 or free)"
    )
    kafka.add_argument(
        "--brokers",
        type=int,
        default=1,
        choices=range(1, 6),
        metavar="N",
        help="nodes (1-5; default 1): with 3, replicated topics as in production",
    )
    kafka.add_argument(
        "--heap", default=None, help="JVM heap per node (default 1g; 512m in a cluster)"
    )
    kafka.add_argument("--run-dir", default=None, help="data, logs and state of the broker")
    kafka.add_argument("--cache-dir", default=None, help="where the Kafka jars are cached")
    kafka.add_argument("--wipe", action="store_true", help="with stop: delete the broker's data")
    kafka.set_defaults(handler=_cmd_kafka)

    config = sub.add_parser("config", help="print the effective settings, secrets masked")
    config.add_argument("--json", action="store_true")
    config.add_argument(
        "--reference",
        action="store_true",
        help="print the Markdown reference of every setting (docs/configuration.md)",
    )
    config.set_defaults(handler=_cmd_config)

    topics = sub.add_parser("topics", help="manage hookstream's topics")
    topics.add_argument("action", choices=["create"])
    topics.set_defaults(handler=_cmd_topics)

    store = sub.add_parser("store", help="manage the delivery-log store")
    store.add_argument("action", choices=["migrate"])
    store.set_defaults(handler=_cmd_store)

    secrets = sub.add_parser("secrets", help="webhook signing secrets at rest (key rotation)")
    secrets.add_argument("action", choices=["reencrypt", "generate-key"])
    secrets.add_argument("--kid", help="generate-key: the new key's id (default k<YYYYMMDD>)")
    secrets.add_argument("--dry-run", action="store_true", help="reencrypt: only report")
    secrets.set_defaults(handler=_cmd_secrets)

    receiver = sub.add_parser("receiver", help="a development endpoint that verifies webhooks")
    receiver.add_argument("--port", type=int, default=9000)
    receiver.add_argument("--host", default="127.0.0.1")
    receiver.add_argument("--secret", action="append", help="whsec_… (repeatable)")
    receiver.add_argument("--status", type=int, default=204, help="status to answer")
    receiver.add_argument("--fail", type=int, default=0, help="answer 500 to the first N")
    receiver.set_defaults(handler=_cmd_receiver)

    demo = sub.add_parser(
        "demo",
        help="the whole pipeline with two receivers, one failing first: retries, then successes",
    )
    demo.add_argument("--log-dir", help="where the services' logs go (default: a new temp dir)")
    demo.set_defaults(handler=_cmd_demo)

    status = sub.add_parser("status", help="lag, members, retry backlog, DLQ, disabled webhooks")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for Kafka")
    status.set_defaults(handler=_cmd_status)

    run = sub.add_parser("run", help="run a service")
    run.add_argument("service", help="router, sender, log-sink, api or all")
    run.set_defaults(handler=_cmd_run)

    # webhooks, events, deliveries, event-types: clients of the management API.
    register_api_commands(sub, _settings)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except SettingsError as exc:
        print(f"hookstream: {exc}", file=sys.stderr)
        return 2
    except localkafka.LocalKafkaError as exc:
        print(f"hookstream: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader went away (`hookstream config | head`): point stdout at /dev/null so the
        # interpreter's final flush does not fail again, as the Python docs advise.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
