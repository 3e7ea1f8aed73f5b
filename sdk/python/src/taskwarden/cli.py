"""``taskwarden-py worker myapp:app --queues web --concurrency 64``: runs a worker for an app.

SIGTERM or Ctrl-C stops fetching and lets running handlers finish within ``--grace`` seconds
(a second signal cuts it short), then gives the rest back to the server and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import importlib
import json
import logging
import os
import sys
from collections.abc import Sequence

from .app import Taskwarden


def load_app(spec: str) -> Taskwarden:
    """The app named ``module:attribute`` (``attribute`` defaults to ``app``), importable from
    the current directory."""
    module_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module = importlib.import_module(module_name)
    app = getattr(module, attr or "app", None)
    if not isinstance(app, Taskwarden):
        raise SystemExit(f"{spec}: not a Taskwarden app (give module:attribute)")
    return app


def _pairs(text: str | None) -> dict[str, str]:
    if not text:
        return {}
    out = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"expected key=value, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="taskwarden-py", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    w = commands.add_parser("worker", help="run a worker for an app's tasks")
    w.add_argument("app", help="module:attribute of the Taskwarden app, such as myapp:app")
    w.add_argument("--queues", help="comma-separated queues (default: those the tasks name)")
    w.add_argument("--concurrency", type=int, default=16, help="handlers at once (default 16)")
    w.add_argument("--threads", type=int, help="sync handlers' thread pool (default: concurrency)")
    w.add_argument("--prefetch", type=int, help="extra tasks leased while tasks are short")
    w.add_argument("--grace", type=float, default=30.0, help="shutdown grace in seconds")
    w.add_argument("--url", help="server URL(s), comma-separated (default: the app's)")
    w.add_argument("--token", help="API token (default: TASKWARDEN_TOKEN)")
    w.add_argument("--name", help="worker name (default: HOST-PID-py)")
    w.add_argument("--capacity", help="resources it can run at once: cpu=8,gpu=1")
    w.add_argument("--labels", help="its labels: region=eu,zone=a")
    w.add_argument("--log-level", default="info", help="debug, info, warning, error")
    w.add_argument(
        "--log-format",
        default=os.environ.get("TASKWARDEN_LOG_FORMAT", "plain"),
        choices=("plain", "json"),
        help="plain lines, or one JSON object per line (default: plain)",
    )
    args = parser.parse_args(argv)

    handler = logging.StreamHandler()
    if args.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=args.log_level.upper(), handlers=[handler])
    app = load_app(args.app)
    app.configure(url=args.url, token=args.token)
    worker = app.worker(
        queues=args.queues.split(",") if args.queues else None,
        concurrency=args.concurrency,
        threads=args.threads,
        prefetch=args.prefetch,
        shutdown_grace=args.grace,
        name=args.name,
        capacity={k: int(v) for k, v in _pairs(args.capacity).items()},
        labels=_pairs(args.labels),
    )
    summary = asyncio.run(worker.run(handle_signals=True))
    if args.log_format == "plain":  # in JSON, the worker's own "worker stopped" line says it
        print(f"worker stopped: {summary}", file=sys.stderr, flush=True)
    if worker.busy_threads:
        # Sync handlers stuck past the grace period: their tasks were given back, and Python
        # cannot stop their threads, so leave without waiting for them.
        logging.shutdown()
        os._exit(0)
    return 0


# Fields a worker's "task finished" line carries, kept as fields of their own in JSON.
TASK_FIELDS = ("task_id", "kind", "attempt", "outcome", "run_ms")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, a task's fields when the line is
    about one, and the exception if any."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.datetime.fromtimestamp(
                record.created, datetime.timezone.utc
            ).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in TASK_FIELDS:
            if hasattr(record, name):
                line[name] = getattr(record, name)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)
