"""``benchmarks/corpus_generator.py``: layout, determinism, dynamics, and the real pipeline on a corpus."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest

from benchmarks import corpus_generator as cg
from midfreq_assets.domain.config.project import load_project
from midfreq_assets.domain.ingest.pool_history import charts_frame
from midfreq_assets.domain.ingest.universe import snapshot_frame, static_screen
from midfreq_resources.clients.defillama import parse_chart, parse_pools
from midfreq_resources.clients.defillama_coins import DefiLlamaCoinsClient, batches
from midfreq_resources.clients.http_retry import MalformedResponseError
from midfreq_resources.replay.server import coins_chart_filename

REPO = Path(__file__).parents[2]
RECORDED = REPO / "recorded" / "defillama"
STAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:01:00\.000Z$")


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _charts(root: Path) -> dict[str, list[dict]]:
    return {
        p.stem: orjson.loads(p.read_bytes())["data"]
        for p in sorted((root / "defillama" / "yields" / "chart").glob("*.json"))
    }


def _pools(root: Path) -> list[dict]:
    return orjson.loads((root / "defillama" / "yields" / "pools.json").read_bytes())["data"]


# --------------------------------------------------------------------------------------------
# Layout and determinism
# --------------------------------------------------------------------------------------------


def test_same_seed_writes_the_same_bytes(tmp_path, corpus_writer):
    a = corpus_writer(tmp_path / "a", pools=8, days=40)
    b = corpus_writer(tmp_path / "b", pools=8, days=40)
    c = corpus_writer(tmp_path / "c", pools=8, days=40, seed=12)
    files_a = _files(a.root)
    assert files_a == _files(b.root)
    assert _files(a.configs) == _files(b.configs)
    files_c = _files(c.root)
    assert set(files_c) != set(files_a) or files_c != files_a  # another seed: other pools and values


def test_json_layout_is_the_recordings(small_corpus):
    recorded_pools = orjson.loads((RECORDED / "yields" / "pools.json").read_bytes())
    recorded_chart = orjson.loads(next((RECORDED / "yields" / "chart").glob("*.json")).read_bytes())
    pools_body = orjson.loads((small_corpus.root / "defillama" / "yields" / "pools.json").read_bytes())
    assert list(pools_body) == list(recorded_pools) == ["status", "data"]
    assert list(recorded_pools["data"][0]) == cg.POOL_KEYS
    for row in pools_body["data"]:
        assert list(row) == cg.POOL_KEYS
        assert list(row["predictions"]) == list(recorded_pools["data"][0]["predictions"])
        assert isinstance(row["tvlUsd"], int) and row["stablecoin"] is True and row["exposure"] == "single"
    assert [r["tvlUsd"] for r in pools_body["data"]] == sorted(
        (r["tvlUsd"] for r in pools_body["data"]), reverse=True
    )

    assert list(recorded_chart["data"][0]) == cg.CHART_KEYS
    for path in (small_corpus.root / "defillama" / "yields" / "chart").glob("*.json"):
        body = orjson.loads(path.read_bytes())
        assert list(body) == ["status", "data"] and body["status"] == "success"
        for row in body["data"]:
            assert list(row) == cg.CHART_KEYS
            assert STAMP.match(row["timestamp"]), row["timestamp"]
            assert isinstance(row["tvlUsd"], int)
            assert all(isinstance(row[k], float) for k in ("apy", "apyBase", "apyReward"))
            assert row["il7d"] is None and row["apyBase7d"] is None
            assert row["apy"] == pytest.approx(row["apyBase"] + row["apyReward"], abs=2e-5)
    apy = np.array([r["apy"] for rows in _charts(small_corpus.root).values() for r in rows])
    assert 2.0 < np.median(apy) < 15.0  # percent per year, as the API quotes it

    recorded_coin = orjson.loads((RECORDED / "coins" / "chart" / coins_chart_filename(cg.USDC)).read_bytes())
    coin = orjson.loads(
        (small_corpus.root / "defillama" / "coins" / "chart" / coins_chart_filename(cg.USDC)).read_bytes()
    )
    assert list(coin["coins"][cg.USDC]) == list(recorded_coin["coins"][cg.USDC])
    assert list(coin["coins"][cg.USDC]["prices"][0]) == ["timestamp", "price"]
    first = coin["coins"][cg.USDC]["prices"][0]["timestamp"]
    noon = dt.datetime.combine(small_corpus.corpus.dates[0], dt.time(12), tzinfo=dt.UTC).timestamp()
    assert abs(first - noon) <= 420


def test_every_chart_passes_the_ingestion_and_anomalies_land_as_designed(small_corpus):
    corpus, root = small_corpus.corpus, small_corpus.root
    parse_pools(orjson.loads((root / "defillama" / "yields" / "pools.json").read_bytes()), "pools")
    charts = _charts(root)
    for uuid, rows in charts.items():
        parse_chart({"status": "success", "data": rows}, uuid, f"chart/{uuid}")  # nothing refused
    frame = charts_frame(charts)
    assert not frame.duplicated(["pool", "date"]).any()
    assert len(frame) == small_corpus.stats.rows - small_corpus.stats.duplicate_rows
    flagged = frame[frame["flag"].notna()]
    assert len(flagged) == int(corpus.flagged.sum()) > 0
    assert flagged["flag"].str.contains(r"\|apy\| above|tvl_usd above").all()
    # a duplicated day keeps its latest snapshot (T23:01), whatever came before it
    checked = 0
    for i, dups in corpus.duplicates.items():
        pool = corpus.pools[i].uuid
        for t, _kind in dups:
            day = pd.Timestamp(corpus.dates[t])
            late = next(r for r in charts[pool] if r["timestamp"] == f"{corpus.dates[t]}{cg.TIME_OF_DAY}")
            row = frame[(frame["pool"] == pool) & (frame["date"] == day)]
            assert row["apy"].iloc[0] == pytest.approx(late["apy"] / 100.0)
            checked += 1
    assert checked == small_corpus.stats.duplicate_rows > 0


def test_a_refused_record_fails_only_its_pool(tmp_path, corpus_writer):
    written = corpus_writer(tmp_path, pools=6, days=40, refused_pools=1)
    (bad,) = written.corpus.refused
    bad_uuid = written.corpus.pools[bad].uuid
    failed = []
    for uuid, rows in _charts(written.root).items():
        try:
            parse_chart({"status": "success", "data": rows}, uuid, f"chart/{uuid}")
        except MalformedResponseError as exc:
            assert "negative tvlUsd" in str(exc)
            failed.append(uuid)
    assert failed == [bad_uuid]


def test_pools_start_late_die_and_have_gaps(small_corpus):
    corpus, root = small_corpus.corpus, small_corpus.root
    first, last = corpus.dates[0], corpus.dates[-1]
    listed = {r["pool"] for r in _pools(root)}
    runs = []
    late = dead = 0
    for uuid, rows in _charts(root).items():
        days = sorted({dt.date.fromisoformat(r["timestamp"][:10]) for r in rows})
        late += days[0] > first
        if days[-1] < last:
            dead += 1
            assert uuid not in listed  # a dead pool vanishes from /pools, as on DefiLlama
        else:
            assert uuid in listed
        runs += [(b - a).days - 1 for a, b in zip(days, days[1:], strict=False) if (b - a).days > 1]
    assert late == small_corpus.stats.late_starts > 0
    assert dead == small_corpus.stats.dead > 0
    assert runs and min(runs) >= 1 and max(runs) <= 20  # 1-10 missing days (two gaps may touch)
    assert sum(1 <= r <= 10 for r in runs) >= 0.8 * len(runs)


def test_pool_mix_follows_the_recording():
    recorded = cg.recorded_templates()
    pools = cg.draw_pools(np.random.default_rng(0), 5000)
    for key in ("chain", "project"):
        want = Counter(r[key] for r in recorded)
        got = Counter(getattr(p, key) for p in pools)
        assert set(got) == set(want)
        for name, k in want.items():
            assert abs(got[name] / len(pools) - k / len(recorded)) < 0.03, (key, name)
    combos = {(r["chain"], r["project"], tuple(r["underlyingTokens"])) for r in recorded}
    assert {(p.chain, p.project, tuple(p.underlying)) for p in pools} <= combos
    assert len({p.uuid for p in pools}) == len(pools)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # idle pools: all-NaN log APY columns
def test_dynamics_mean_reversion_dilution_flows_and_rewards():
    c = cg.generate(
        cg.CorpusSpec(pools=200, days=730, start=dt.date(2022, 1, 3), seed=3, death_rate_per_year=1e-6)
    )
    clean = c.observed & ~c.flagged & ~c.spikes
    apy = c.apy_base + c.apy_reward
    assert (c.tvl[c.observed & ~c.flagged] > 0).all() and (apy[clean] >= 0).all()
    assert 0.03 < np.median(apy[clean]) < 0.10
    ok = clean & (c.apy_base > 0)
    x = np.where(ok, np.log(np.where(ok, c.apy_base, 1.0)), np.nan)
    dev = x - np.nanmean(x, axis=0)

    def slope(a: np.ndarray, b: np.ndarray) -> float:
        m = np.isfinite(a) & np.isfinite(b)
        return float(np.polyfit(a[m], b[m], 1)[0])

    # mean reversion: the 30-day change leans against the deviation from the pool's mean (a random
    # walk's slope is near 0: about -0.13 on paths this long)
    assert slope(dev[:-30], x[30:] - x[:-30]) < -0.3
    # dilution: a day's TVL jump lowers that day's APY
    log_v = np.where(c.observed & ~c.flagged, np.log(c.tvl), np.nan)
    dv, dx = np.diff(log_v, axis=0), np.diff(x, axis=0)
    m = np.isfinite(dv) & np.isfinite(dx)
    assert np.corrcoef(dv[m], dx[m])[0, 1] < -0.05
    # inflows follow APY: a pool above its usual APY gains TVL over the next month
    a, b = dev[:-30], log_v[30:] - log_v[:-30]
    m = np.isfinite(a) & np.isfinite(b)
    assert np.corrcoef(a[m], b[m])[0, 1] > 0.1
    # rewards: paid on part of the days; a spike decays (20 days later it is mostly gone)
    rewarded = (c.apy_reward > 0)[clean].mean()
    assert 0.2 < rewarded < 0.8
    r = c.apy_reward
    jumps = np.argwhere((r[1:-20] > 2 * r[:-21] + 0.01) & clean[1:-20])
    assert len(jumps) > 20
    after = np.array([r[t + 21, i] / r[t + 1, i] for t, i in jumps])
    assert np.median(after) < 0.8
    # regime shifts: some pools' 60-day mean APY moves by more than half in log terms
    means = pd.DataFrame(x).rolling(60, min_periods=30).mean().to_numpy()
    assert (np.nanmax(means, axis=0) - np.nanmin(means, axis=0) > 0.5).mean() > 0.2


def test_vault_config_admits_most_pools(small_corpus):
    corpus = small_corpus.corpus
    project = load_project(small_corpus.configs)
    assert list(project.vaults) == ["synthetic_usd"]
    vault = project.vault("synthetic_usd")
    assert vault.start_date == corpus.dates[0] and vault.positions is None
    assert (small_corpus.configs / "grids" / "single.yaml").is_file()
    records = [
        r.model_dump()
        for r in parse_pools(
            orjson.loads((small_corpus.root / "defillama" / "yields" / "pools.json").read_bytes()), "pools"
        )
    ]
    snapshot = snapshot_frame(records)
    snapshot = snapshot[snapshot["pool"] != cg.SKY_SUSDS_POOL]
    shipped = load_project(REPO / "configs")
    for cfg, tokens in ((vault, project.tokens), (shipped.vault("usd_lending"), shipped.tokens)):
        passing = static_screen(snapshot, cfg, tokens)["reason"].isna().mean()
        assert passing >= 0.9, (cfg.name, passing)
    client = DefiLlamaCoinsClient()
    chart_dir = small_corpus.root / "defillama" / "coins" / "chart"
    for batch in batches(project.price_coins(), client.max_coins_per_request, client.max_coins_chars):
        body = orjson.loads((chart_dir / coins_chart_filename(",".join(batch))).read_bytes())
        assert set(body["coins"]) == set(batch)  # every coin the vault prices is in the corpus


def test_cli_prints_what_it_wrote_and_never_replaces_foreign_dirs(tmp_path, capsys):
    out, cfg = tmp_path / "corpus", tmp_path / "configs"
    args = [
        "--pools",
        "5",
        "--days",
        "30",
        "--start",
        "2022-03-01",
        "--seed",
        "7",
        "--out",
        str(out),
        "--config-out",
        str(cfg),
    ]
    assert cg.main(args) == 0
    text = capsys.readouterr().out
    assert re.search(r"pools=6 listed=\d+ .*days=30 rows=\d+ .*bytes=\d+", text), text
    assert cg.main(args) == 0  # a generated corpus is replaced
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    assert cg.main([*args[:-4], "--out", str(foreign)]) == 2
    assert cg.main([*args[:-2], "--config-out", str(foreign)]) == 2  # refused before the corpus is touched
    assert (foreign / "keep.txt").read_text() == "mine"
    assert (out / "defillama" / "yields" / "pools.json").is_file()


def test_generation_is_fast(tmp_path):
    started = time.perf_counter()
    corpus = cg.generate(cg.CorpusSpec(pools=400, days=365, start=dt.date(2023, 1, 1)))
    stats = cg.write_corpus(corpus, tmp_path / "corpus")
    assert stats.rows > 100_000
    assert time.perf_counter() - started < 30  # ~2 s on a free core; 2,000 x 1,095 takes ~7 s


# --------------------------------------------------------------------------------------------
# The real pipeline on a generated corpus
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_generated_corpus_runs_through_midfreq_pipeline(tmp_path, corpus_writer):
    """``midfreq pipeline --corpus`` (the console script, a fresh process) on 12 pools x 120 days with
    late starts, deaths, gaps, duplicated days and flagged values, one vault, the one-point grid:
    every stage succeeds (no binance/: reported, not run) and the lake holds the listed pools."""
    written = corpus_writer(tmp_path, pools=12, days=120, start=dt.date(2024, 1, 1), seed=7)  # every anomaly
    corpus, lake = written.corpus, tmp_path / "lake"
    listed = [p.uuid for p, keep in zip(corpus.pools, corpus.listed, strict=True) if keep]
    dead = [p.uuid for p, keep in zip(corpus.pools, corpus.listed, strict=True) if not keep]
    assert dead and corpus.duplicates and corpus.gaps and corpus.flagged[:, corpus.listed].any()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIDFREQ_", "DAGSTER_HOME"))}
    script = Path(sys.executable).parent / "midfreq"
    proc = subprocess.run(
        [
            str(script),
            "pipeline",
            "--corpus",
            str(written.root),
            "--config-dir",
            str(written.configs),
            "--lake",
            str(lake),
            "--grid",
            "single",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=840,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert re.search(r"Stages: \d+ succeeded, 0 failed, 0 skipped", out), out[-2000:]
    assert "no Binance klines" in out
    for stage in (
        "nightly_refresh",
        "synthetic_usd_features",
        "synthetic_usd_fitted_models",
        "synthetic_usd_predictions",
        "synthetic_usd_decisions",
        "synthetic_usd_backtest_report",
    ):
        assert f"== {stage}:" in out

    history = pd.concat([pd.read_parquet(p) for p in (lake / "pool_history").glob("*.parquet")])
    assert set(history["pool"]) == {*listed, cg.SKY_SUSDS_POOL}  # dead pools left /pools: never fetched
    assert not history.duplicated(["pool", "date"]).any()
    fetched = np.array([p.uuid in set(listed) for p in corpus.pools])
    assert history["flag"].notna().sum() == int(corpus.flagged[:, fetched].sum())
    features = pd.concat(
        [pd.read_parquet(p) for p in (lake / "synthetic_usd" / "features").glob("*.parquet")]
    )
    assert features["instrument"].nunique() >= 0.75 * len(listed)
    assert (lake / "synthetic_usd" / "backtest_report" / "single.html").is_file()
