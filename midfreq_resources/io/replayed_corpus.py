"""``<lake>/replayed_corpus.json``: the lake was filled by replaying a recorded corpus, and through which day.

``midfreq pipeline --corpus ROOT`` writes it (and a live run removes it), so that a code location
loaded later on the same lake (``make dev`` after ``make demo``) ends its partition calendars at the
corpus's last complete day instead of yesterday: a partition the UI calls missing is then one the
data holds and the lake does not.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass

import orjson

from midfreq_resources.io.lake import lake_root, write_bytes_atomic

MARKER = "replayed_corpus.json"


class MarkerError(ValueError):
    """The marker exists but does not say a corpus and its last days."""


@dataclass(frozen=True)
class DataEnd:
    """The last complete day of a replayed corpus: DefiLlama (the yield calendar) and Binance klines
    (the klines calendar; None: the corpus has none)."""

    yields: dt.date | None
    klines: dt.date | None = None
    corpus: str = ""


def marker_path(lake: str | os.PathLike[str]):
    return lake_root(lake) / MARKER


def read_data_end(lake: str | os.PathLike[str]) -> DataEnd | None:
    """The lake's marker (None: no marker, the calendars run to yesterday)."""
    path = marker_path(lake)
    if not path.exists():
        return None
    try:
        body = orjson.loads(path.read_bytes())
        days = {
            k: dt.date.fromisoformat(body[k]) if body.get(k) else None
            for k in ("yields_last_day", "klines_last_day")
        }
        return DataEnd(days["yields_last_day"], days["klines_last_day"], str(body.get("corpus", "")))
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError) as exc:
        raise MarkerError(
            f"{path}: not a replayed-corpus marker ({exc}); delete it to use the live calendar "
            "(partitions to yesterday)"
        ) from None


def write_data_end(lake: str | os.PathLike[str], end: DataEnd | None) -> None:
    """Record ``end`` in the lake (None: remove the marker, the lake is live)."""
    path = marker_path(lake)
    if end is None:
        if path.exists():
            path.unlink()
        return
    body = {
        "corpus": end.corpus,
        "yields_last_day": end.yields.isoformat() if end.yields else None,
        "klines_last_day": end.klines.isoformat() if end.klines else None,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, orjson.dumps(body, option=orjson.OPT_INDENT_2))
