"""``midfreq execution-server``: the local execution endpoint (:mod:`.server`) in the foreground."""

from __future__ import annotations

import argparse
import csv
import io
import json
import signal
import threading
from pathlib import Path

from midfreq_resources.execution.server import ExecutionBehaviour, ExecutionServer


def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number within [0, 1] expected, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within [0, 1], got {text}")
    return value


def _partial(text: str) -> tuple[str, float]:
    pool, sep, ratio = text.partition("=")
    if not sep or not pool.strip():
        raise argparse.ArgumentTypeError(f"POOL=RATIO expected, got {text!r}")
    return pool.strip().lower(), _ratio(ratio)


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be within 0..65535, got {text}")
    return value


def add_execution_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "execution-server",
        help="a local execution endpoint that accepts, records, fills, partially fills or rejects orders",
        description="Accept POST /orders (Idempotency-Key header), record them, fill them as told; GET /orders "
        "lists them, GET /positions/<vault>?date=D serves each vault's book. Runs until Ctrl-C / SIGTERM.",
    )
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: 127.0.0.1)")
    p.add_argument("--port", type=_port, default=8777, help="port (default: 8777; 0 picks a free one)")
    p.add_argument("--fill-ratio", type=_ratio, default=1.0, help="share of each order filled (default: 1)")
    p.add_argument(
        "--partial",
        type=_partial,
        action="append",
        default=[],
        metavar="POOL=RATIO",
        help="fill only RATIO of orders in POOL (repeatable)",
    )
    p.add_argument(
        "--reject", action="append", default=[], metavar="POOL", help="reject orders in POOL (repeatable)"
    )
    p.add_argument(
        "--book",
        action="append",
        default=[],
        metavar="VAULT=FILE",
        help="start VAULT's book from a positions file: CSV, or a JSON list of rows (pool, amount_usd)",
    )
    p.add_argument(
        "--record", type=Path, default=None, help="append every executed order to this JSON-lines file"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log every request to stderr")
    p.set_defaults(func=_cmd_execution_server)


def _cmd_execution_server(args: argparse.Namespace) -> int:
    behaviour = ExecutionBehaviour(
        args.fill_ratio, dict(args.partial), {p.strip().lower() for p in args.reject}
    )
    server = ExecutionServer(args.host, args.port, behaviour, args.record, args.verbose)
    for spec in args.book:
        vault, _, path = spec.partition("=")
        try:
            text = Path(path).read_text()
            rows = list(csv.DictReader(io.StringIO(text))) if path.endswith(".csv") else json.loads(text)
            server.seed_book(vault, rows)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"midfreq execution-server: --book {spec}: {exc}")
            return 2
    try:
        server.start()
    except OSError as exc:
        print(f"midfreq execution-server: cannot listen on {args.host}:{args.port}: {exc}")
        return 2
    print(f"midfreq execution-server: listening at {server.base_url}", flush=True)
    print(f"export MIDFREQ_EXECUTION_URL={server.base_url}", flush=True)
    done = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: done.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        done.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.stop()
    print(f"midfreq execution-server: stopped ({len(server.orders)} order(s) recorded)", flush=True)
    return 0
