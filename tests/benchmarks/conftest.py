"""Fixtures of the benchmark tooling's tests: small corpora from ``benchmarks/corpus_generator.py``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from benchmarks.corpus_generator import Corpus, CorpusSpec, WriteStats, generate, write_configs, write_corpus

#: Anomalies at rates high enough that a small corpus holds each kind (deaths, gaps, duplicates,
#: flagged values), so the tests see them all.
ANOMALOUS = {
    "death_rate_per_year": 1.5,
    "gap_pool_share": 0.5,
    "duplicate_pool_share": 0.4,
    "outlier_rate": 2e-3,
    "spike_rate": 5e-3,
}


@dataclass
class Written:
    corpus: Corpus
    stats: WriteStats
    root: Path
    configs: Path


def write_small(tmp: Path, **spec: object) -> Written:
    """Generate and write a corpus and its config dir under ``tmp`` (``spec``: CorpusSpec fields)."""
    fields = {"pools": 30, "days": 150, "start": dt.date(2023, 1, 2), "seed": 11, **ANOMALOUS, **spec}
    corpus = generate(CorpusSpec(**fields))
    root, configs = tmp / "corpus", tmp / "configs"
    write_configs(corpus, configs)
    stats = write_corpus(corpus, root, [configs])
    return Written(corpus, stats, root, configs)


@pytest.fixture
def corpus_writer() -> Callable[..., Written]:
    """``corpus_writer(tmp, **spec)``: generate and write a corpus and its config dir under ``tmp``."""
    return write_small


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory) -> Written:
    """30 pools x 150 days with every anomaly, written once per session."""
    return write_small(tmp_path_factory.mktemp("small_corpus"))
