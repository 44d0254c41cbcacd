"""Freeze live service answers into the replay layout, for reproducible research offline.

`record(...)` / `midfreq record ROOT` writes exactly what `ReplayServer(ROOT)` serves back:
`defillama/yields/pools.json`, `defillama/yields/chart/<uuid>.json`,
`defillama/coins/chart/<coins_chart_filename(...)>` and `binance/data/...` zips with their
`.CHECKSUM`. Bodies are stored byte for byte as served (after checking they parse), each write is
atomic (temp file + os.replace), and files already present are skipped unless `force=True`, so an
interrupted recording can simply be rerun.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from midfreq_assets.domain.ingest.pool_ids import is_pool_uuid
from midfreq_resources.io.lake import lake_root, write_bytes_atomic
from midfreq_resources.replay.server import coins_chart_filename
from midfreq_resources.settings import (
    BINANCE_ARCHIVE_URL_ENV,
    DEFILLAMA_COINS_URL_ENV,
    DEFILLAMA_YIELDS_URL_ENV,
    LIVE_BINANCE_ARCHIVE_URL,
    LIVE_DEFILLAMA_COINS_URL,
    LIVE_DEFILLAMA_YIELDS_URL,
    env_or,
)

__all__ = ["RecordError", "RecordReport", "Recorder", "record", "atomic_write_bytes", "binance_key"]

RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER_S = 60.0


class RecordError(RuntimeError):
    """A resource could not be recorded after the bounded retries."""


@dataclass
class RecordReport:
    """What a recording run did; `ok` is False when anything failed or did not verify."""

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # 404 at the source (Binance file not uploaded)
    checksum_mismatches: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return not (self.failed or self.checksum_mismatches or self.missing)

    def summary(self) -> str:
        return (
            f"written {len(self.written)}, skipped {len(self.skipped)} (already present), "
            f"missing {len(self.missing)}, checksum mismatches {len(self.checksum_mismatches)}, "
            f"failed {len(self.failed)}"
        )


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Readers never see half a recorded file (the lake's atomic write)."""
    write_bytes_atomic(lake_root(path), data)


def binance_key(path: str) -> str:
    """Normalise a Binance archive path to `data/...` (accepts `spot/...`, `/data/spot/...`, URLs)."""
    key = path.strip()
    if "://" in key:
        key = urlsplit(key).path
    key = key.lstrip("/")
    if key.startswith("binance/"):
        key = key[len("binance/") :]
    if not key.startswith("data/"):
        key = "data/" + key
    if ".." in key.split("/") or key == "data/":
        raise ValueError(f"not a Binance archive path: {path!r}")
    return key


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def _check_yields_json(body: bytes) -> None:
    doc = json.loads(body)
    if not isinstance(doc, dict) or doc.get("status") != "success" or not isinstance(doc.get("data"), list):
        raise ValueError("not a DefiLlama yields answer ({'status':'success','data':[...]})")


def _check_coins_json(body: bytes) -> None:
    doc = json.loads(body)
    if not isinstance(doc, dict) or not isinstance(doc.get("coins"), dict):
        raise ValueError("not a DefiLlama coins answer ({'coins':{...}})")


def _check_checksum(body: bytes) -> None:
    text = body.decode("ascii")
    digest = text.split()[0] if text.split() else ""
    if len(digest) != 64 or any(c not in "0123456789abcdefABCDEF" for c in digest):
        raise ValueError("not a '<sha256>  <name>' checksum file")


class _NotFoundError(Exception):
    pass


class Recorder:
    """Fetches with bounded retries (429/5xx/timeouts/invalid bodies) and writes the layout."""

    def __init__(
        self,
        root: str | Path,
        yields_url: str | None = None,
        coins_url: str | None = None,
        binance_url: str | None = None,
        force: bool = False,
        retries: int = 3,
        backoff_s: float = 0.5,
        timeout_s: float = 60.0,
        concurrency: int = 4,
        client: httpx.Client | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.root = Path(root)
        self.yields_url = (yields_url or env_or(DEFILLAMA_YIELDS_URL_ENV, LIVE_DEFILLAMA_YIELDS_URL)).rstrip(
            "/"
        )
        self.coins_url = (coins_url or env_or(DEFILLAMA_COINS_URL_ENV, LIVE_DEFILLAMA_COINS_URL)).rstrip("/")
        self.binance_url = (binance_url or env_or(BINANCE_ARCHIVE_URL_ENV, LIVE_BINANCE_ARCHIVE_URL)).rstrip(
            "/"
        )
        self.force = force
        self.retries = retries
        self.backoff_s = backoff_s
        self.concurrency = max(1, concurrency)
        self._owns_client = client is None
        self.client = client or httpx.Client(
            timeout=httpx.Timeout(timeout_s, connect=10.0),
            limits=httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency),
            headers={"User-Agent": "midfreq-recorder/0.1"},
            follow_redirects=True,
        )
        self._log = log or (lambda msg: None)
        self.report = RecordReport()

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ fetching
    def fetch(self, url: str, validate: Callable[[bytes], None] | None = None) -> bytes:
        """GET with up to `retries` retries; raises _NotFoundError on 404, RecordError otherwise."""
        last = "no attempt"
        for attempt in range(self.retries + 1):
            wait = self.backoff_s * (2**attempt)
            try:
                resp = self.client.get(url)
                if resp.status_code == 404:
                    raise _NotFoundError(url)
                if resp.status_code in RETRY_STATUSES:
                    last = f"HTTP {resp.status_code}"
                    hinted = _retry_after(resp)
                    if hinted is not None:
                        wait = min(hinted, MAX_RETRY_AFTER_S)
                elif resp.status_code != 200:
                    raise RecordError(f"{url}: HTTP {resp.status_code}: {resp.text[:200]!r}")
                else:
                    body = resp.content
                    ctype = resp.headers.get("content-type", "")
                    if ctype.startswith("text/html"):
                        raise ValueError("HTML page instead of data")
                    if validate is not None:
                        validate(body)
                    return body
            except (httpx.TransportError, ValueError, UnicodeDecodeError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            if attempt < self.retries:
                self._log(f"retry {attempt + 1}/{self.retries} {url} ({last})")
                time.sleep(wait)
        raise RecordError(f"{url}: gave up after {self.retries + 1} attempts ({last})")

    def _save(self, rel: str, url: str, validate: Callable[[bytes], None] | None) -> bytes | None:
        """Fetch url into ROOT/rel unless present; returns the body (None when skipped)."""
        path = self.root / rel
        if path.exists() and not self.force:
            with self.report._lock:
                self.report.skipped.append(path)
            return None
        try:
            body = self.fetch(url, validate)
        except _NotFoundError:
            with self.report._lock:
                self.report.missing.append(url)
            self._log(f"missing (404) {url}")
            return None
        except RecordError as exc:
            with self.report._lock:
                self.report.failed[url] = str(exc)
            self._log(f"FAILED {exc}")
            return None
        atomic_write_bytes(path, body)
        with self.report._lock:
            self.report.written.append(path)
        self._log(f"wrote {path}")
        return body

    # ------------------------------------------------------------------ resources
    def pools_snapshot(self) -> Path:
        """`/pools` -> defillama/yields/pools.json."""
        self._save("defillama/yields/pools.json", f"{self.yields_url}/pools", _check_yields_json)
        return self.root / "defillama/yields/pools.json"

    def snapshot_pool_ids(self) -> list[str]:
        """Pool uuids of the recorded snapshot (recording it first if absent)."""
        path = self.root / "defillama/yields/pools.json"
        if not path.exists():
            self.pools_snapshot()
        if not path.exists():
            raise RecordError(f"no pools snapshot at {path}")
        doc = json.loads(path.read_bytes())
        return [str(p["pool"]) for p in doc.get("data", []) if isinstance(p, dict) and p.get("pool")]

    def pool_chart(self, pool_id: str) -> None:
        if not is_pool_uuid(pool_id):
            raise ValueError(f"not a DefiLlama pool uuid: {pool_id!r}")
        self._save(
            f"defillama/yields/chart/{pool_id}.json", f"{self.yields_url}/chart/{pool_id}", _check_yields_json
        )

    def coins_chart(self, coins: str, query: str = "") -> None:
        url = f"{self.coins_url}/chart/{coins}" + (f"?{query}" if query else "")
        self._save(f"defillama/coins/chart/{coins_chart_filename(coins, query)}", url, _check_coins_json)

    def binance_file(self, path: str, with_checksum: bool = True) -> None:
        """A Binance archive file plus its `.CHECKSUM`, verified; mismatches are reported, kept."""
        key = binance_key(path)
        if key.endswith(".CHECKSUM"):
            key, with_checksum = key[: -len(".CHECKSUM")], True
        zip_path = self.root / "binance" / key
        sum_path = self.root / "binance" / (key + ".CHECKSUM")
        body = self._save(f"binance/{key}", f"{self.binance_url}/{key}", None)
        if not with_checksum or not zip_path.exists():
            return
        checksum = self._save(
            f"binance/{key}.CHECKSUM", f"{self.binance_url}/{key}.CHECKSUM", _check_checksum
        )
        if body is None and checksum is None:
            return
        if not (zip_path.exists() and sum_path.exists()):
            return
        expected = sum_path.read_text(encoding="ascii").split()[0].lower()
        data = zip_path.read_bytes()
        if hashlib.sha256(data).hexdigest() != expected and body is not None:
            # A truncated/corrupted transfer looks like this too: refetch the zip once more.
            self._log(f"checksum mismatch for {key}, refetching")
            try:
                data = self.fetch(f"{self.binance_url}/{key}")
                atomic_write_bytes(zip_path, data)
            except (RecordError, _NotFoundError) as exc:
                self._log(f"refetch failed: {exc}")
        if hashlib.sha256(data).hexdigest() != expected:
            with self.report._lock:
                self.report.checksum_mismatches.append(key)
            self._log(f"CHECKSUM MISMATCH {key} (kept as served)")

    def run_many(self, tasks: Iterable[Callable[[], None]]) -> None:
        """Run independent fetches on a small thread pool (httpx.Client is thread-safe)."""
        with cf.ThreadPoolExecutor(self.concurrency) as pool:
            for fut in [pool.submit(t) for t in tasks]:
                fut.result()


def record(
    root: str | Path,
    *,
    yields_url: str | None = None,
    coins_url: str | None = None,
    binance_url: str | None = None,
    pools: Sequence[str] = (),
    all_pools_from_snapshot: bool = False,
    snapshot: bool = True,
    coins: Sequence[str] = (),
    coins_query: str = "",
    binance: Sequence[str] = (),
    force: bool = False,
    retries: int = 3,
    backoff_s: float = 0.5,
    timeout_s: float = 60.0,
    concurrency: int = 4,
    log: Callable[[str], None] | None = None,
) -> RecordReport:
    """Record a dataset into ROOT; the pools snapshot is included unless `snapshot=False`."""
    for pool_id in pools:
        if not is_pool_uuid(pool_id):
            raise ValueError(f"not a DefiLlama pool uuid: {pool_id!r}")
    keys = [binance_key(p) for p in binance]
    with Recorder(
        root,
        yields_url=yields_url,
        coins_url=coins_url,
        binance_url=binance_url,
        force=force,
        retries=retries,
        backoff_s=backoff_s,
        timeout_s=timeout_s,
        concurrency=concurrency,
        log=log,
    ) as rec:
        if snapshot or all_pools_from_snapshot:
            rec.pools_snapshot()
        pool_ids = list(dict.fromkeys(pools))
        if all_pools_from_snapshot:
            pool_ids = list(dict.fromkeys([*pool_ids, *rec.snapshot_pool_ids()]))
        tasks: list[Callable[[], None]] = [lambda p=p: rec.pool_chart(p) for p in pool_ids]
        tasks += [lambda c=c: rec.coins_chart(c, coins_query) for c in dict.fromkeys(coins)]
        tasks += [lambda k=k: rec.binance_file(k) for k in dict.fromkeys(keys)]
        rec.run_many(tasks)
        return rec.report
