"""`midfreq` console script: `replay` a recorded directory over HTTP, `record` one from live services.

Packages above this one add their own subcommands (``midfreq pipeline`` lives in ``midfreq_assets``,
which runs Dagster) through ``build_parser(commands=...)``; ``midfreq_assets.cli`` is the entry point.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from midfreq_resources.replay.server import FaultConfig, ReplayServer


def _number(text: str, kind: type, lo: float, hi: float, expected: str, bounds: str) -> float:
    """Parse a flag value of ``kind`` within [lo, hi]; mistakes are one-line argparse errors."""
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{expected} expected, got {text!r}") from None
    if not lo <= value <= hi:
        raise argparse.ArgumentTypeError(f"must be {bounds}, got {text}")
    return value


def _rate(text: str) -> float:
    return _number(text, float, 0.0, 1.0, "a share within [0, 1]", "within [0, 1]")


def _port(text: str) -> int:
    return int(_number(text, int, 0, 65535, "a port number", "within 0..65535 (0 picks a free port)"))


def _non_negative(text: str) -> float:
    return _number(text, float, 0.0, float("inf"), "a number", ">= 0")


def _codes(text: str) -> tuple[int, ...]:
    try:
        codes = tuple(int(c) for c in text.split(",") if c.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"comma-separated HTTP status codes expected, got {text!r}") from exc
    if not codes or any(not 100 <= c <= 599 for c in codes):
        raise argparse.ArgumentTypeError(f"HTTP status codes expected, got {text!r}")
    return codes


class _OneLineErrors(argparse.ArgumentParser):
    """Usage mistakes are one line on stderr (exit 2), not the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


#: Adds one subcommand to the ``midfreq`` parser's subparsers.
Command = Callable[[argparse._SubParsersAction], None]


def build_parser(commands: Sequence[Command] = ()) -> argparse.ArgumentParser:
    parser = _OneLineErrors(
        prog="midfreq",
        description="midfreq tools: serve recorded market data offline, or record it from the live services"
        + (", or run the pipeline on it." if commands else "."),
    )
    sub = parser.add_subparsers(dest="command", required=True)

    rp = sub.add_parser(
        "replay",
        help="serve a recorded directory (e.g. recorded/) over HTTP, optionally with injected faults",
        description="Serve ROOT laid out like the live URL paths; runs until Ctrl-C / SIGTERM.",
    )
    rp.add_argument("root", type=Path, help="directory with defillama/ and binance/ subtrees")
    rp.add_argument("--host", default="127.0.0.1", help="bind address (default: 127.0.0.1)")
    rp.add_argument("--port", type=_port, default=8765, help="port (default: 8765; 0 picks a free one)")
    rp.add_argument("--latency-ms", type=_non_negative, default=0.0, help="added to every request")
    rp.add_argument("--error-rate", type=_rate, default=0.0, help="share answered with an error code")
    rp.add_argument(
        "--error-codes",
        type=_codes,
        default=(429, 500, 502, 503),
        help="codes for --error-rate (default: 429,500,502,503)",
    )
    rp.add_argument(
        "--retry-after", type=int, default=1, help="Retry-After seconds sent with 429 (default: 1)"
    )
    rp.add_argument("--truncate-rate", type=_rate, default=0.0, help="share of 200 bodies cut in half")
    rp.add_argument(
        "--truncate-mode",
        choices=("short", "close"),
        default="short",
        help="short: matching Content-Length; close: drop the connection mid-body",
    )
    rp.add_argument(
        "--html-error-rate", type=_rate, default=0.0, help="share answered with an HTML error page"
    )
    rp.add_argument(
        "--html-error-codes", type=_codes, default=(200, 502), help="status of HTML pages (default: 200,502)"
    )
    rp.add_argument(
        "--drip-rate",
        type=_rate,
        default=0.0,
        help="share of 200 bodies sent slowly, --drip-bytes every --drip-interval-ms",
    )
    rp.add_argument("--drip-interval-ms", type=_non_negative, default=1000.0, help="(default: 1000)")
    rp.add_argument("--drip-bytes", type=int, default=1, help="bytes per dripped chunk (default: 1)")
    rp.add_argument("--seed", type=int, default=None, help="make random faults reproducible")
    rp.add_argument("-v", "--verbose", action="store_true", help="log every request to stderr")
    rp.set_defaults(func=_cmd_replay)

    rc = sub.add_parser(
        "record",
        help="save live answers into the replay layout (freeze a dataset)",
        description=(
            "Record DefiLlama / Binance answers into ROOT, byte for byte, in the layout `midfreq replay` "
            "serves. Existing files are kept unless --force. URLs default to MIDFREQ_* env vars, then "
            "the live services."
        ),
    )
    rc.add_argument("root", type=Path, help="output directory")
    rc.add_argument("--yields-url", help="DefiLlama yields base URL (default: $MIDFREQ_DEFILLAMA_YIELDS_URL)")
    rc.add_argument("--coins-url", help="DefiLlama coins base URL (default: $MIDFREQ_DEFILLAMA_COINS_URL)")
    rc.add_argument("--binance-url", help="Binance archive base URL (default: $MIDFREQ_BINANCE_ARCHIVE_URL)")
    rc.add_argument(
        "--pools", nargs="+", default=[], metavar="UUID", help="record /chart/<uuid> of these pools"
    )
    rc.add_argument(
        "--all-pools-from-snapshot",
        action="store_true",
        help="record the chart of every pool in pools.json (live /pools has ~17k pools: think twice)",
    )
    rc.add_argument("--no-snapshot", action="store_true", help="do not record /pools (pools.json)")
    rc.add_argument(
        "--coins", nargs="+", default=[], metavar="COINS", help="coins chart keys, e.g. coingecko:bitcoin"
    )
    rc.add_argument(
        "--coins-query", default="", help="query for the coins charts, e.g. 'start=1700000000&span=30'"
    )
    rc.add_argument(
        "--binance",
        nargs="+",
        default=[],
        metavar="PATH",
        help="archive paths, e.g. data/spot/daily/klines/BTCUSDT/1h/BTCUSDT-1h-2023-01-01.zip (+ .CHECKSUM)",
    )
    rc.add_argument("--force", action="store_true", help="re-record files that already exist")
    rc.add_argument("--retries", type=int, default=3, help="retries per request (default: 3)")
    rc.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default: 60)")
    rc.add_argument("--concurrency", type=int, default=4, help="parallel requests (default: 4)")
    rc.add_argument("-q", "--quiet", action="store_true", help="only print the summary")
    rc.set_defaults(func=_cmd_record)
    for add in commands:
        add(sub)
    return parser


def _cmd_replay(args: argparse.Namespace) -> int:
    try:
        server = _server(args)
    except (ValueError, OSError, OverflowError) as exc:
        print(f"midfreq replay: error: {exc}", file=sys.stderr)
        return 2
    return _serve(server)


def _server(args: argparse.Namespace) -> ReplayServer:
    """The configured server, bound (so a bad flag, root or port is one line, not a traceback)."""
    if not args.root.is_dir():
        raise ValueError(
            f"replay root {args.root} is not a directory (expected defillama/ and binance/ under it)"
        )
    faults = FaultConfig(
        latency_ms=args.latency_ms,
        error_rate=args.error_rate,
        error_codes=args.error_codes,
        retry_after_s=args.retry_after,
        truncate_rate=args.truncate_rate,
        truncate_mode=args.truncate_mode,
        html_error_rate=args.html_error_rate,
        html_error_codes=args.html_error_codes,
        drip_rate=args.drip_rate,
        drip_interval_ms=args.drip_interval_ms,
        drip_bytes=args.drip_bytes,
        seed=args.seed,
    )
    return ReplayServer(args.root, host=args.host, port=args.port, faults=faults, verbose=args.verbose).bind()


def _serve(server: ReplayServer) -> int:
    print(f"midfreq replay: serving {server.root} at {server.base_url}", flush=True)
    print("export these to point midfreq at it:", flush=True)
    for name, value in server.env().items():
        print(f"export {name}={value}", flush=True)
    print("Ctrl-C to stop.", flush=True)

    def _stop(signum: int, frame: object) -> None:
        # shutdown() blocks until serve_forever returns, so it must not run in the serving thread.
        threading.Thread(target=server.shutdown_from_signal, daemon=True).start()

    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.stop()
    print("midfreq replay: stopped", flush=True)
    return 0


def _cmd_record(args: argparse.Namespace) -> int:
    from midfreq_resources.replay.recorder import record  # httpx import only when recording

    log = None if args.quiet else (lambda msg: print(msg, flush=True))
    try:
        report = record(
            args.root,
            yields_url=args.yields_url,
            coins_url=args.coins_url,
            binance_url=args.binance_url,
            pools=args.pools,
            all_pools_from_snapshot=args.all_pools_from_snapshot,
            snapshot=not args.no_snapshot,
            coins=args.coins,
            coins_query=args.coins_query,
            binance=args.binance,
            force=args.force,
            retries=args.retries,
            timeout_s=args.timeout,
            concurrency=args.concurrency,
            log=log,
        )
    except ValueError as exc:
        print(f"midfreq record: {exc}", file=sys.stderr)
        return 2
    print(f"midfreq record: {report.summary()}", flush=True)
    for url, why in report.failed.items():
        print(f"  failed: {url}: {why}", file=sys.stderr)
    for url in report.missing:
        print(f"  missing at source: {url}", file=sys.stderr)
    for key in report.checksum_mismatches:
        print(f"  checksum mismatch (kept as served): {key}", file=sys.stderr)
    return 0 if report.ok else 1


def main(argv: Sequence[str] | None = None, commands: Sequence[Command] = ()) -> int:
    """Run the `midfreq` tools (``commands``: extra subcommands)."""
    parser = build_parser(commands)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
