"""The whole chain at scale: ``midfreq pipeline`` on generated corpora of 500, 1,000 and 2,000 pools x 3 years.

Each size: ``corpus_generator.py`` writes N pools x D days (seed 7) and the one-vault config whose
universe holds most of them (``synthetic_usd``), then the real console script runs the chain on it
(``--grid single``: one grid point, weekly decisions) in a fresh process on a fresh instance and lake
(``bench_demo.run_pipeline``: 2 worker processes by default). Printed per size: every stage's wall,
CPU and peak RSS (of the process that ran it, during the stage), a summary line
``pools=N days=D wall_s=... peak_rss_mb=...`` (peak: the command and its workers together), and
across sizes, per stage, the growth of its wall time per doubling of the pools
(``(t_largest / t_smallest) ** (1 / log2(N_largest / N_smallest))``; per pair of sizes in brackets),
and of its CPU seconds (the worker's: less sensitive to other load on a shared machine).

Targets (issue 25): the largest size (2,000 x 1,095) end to end <= 600 s on 2 cores, peak <= 4 GB,
growth per doubling <= 2.1x for every stage (linear or better). Stages under 2 s at every size are
listed but not judged (their time is start-up, not the data).

    .venv/bin/python benchmarks/bench_pipeline_scale.py                      # 500, 1000, 2000 x 1095
    .venv/bin/python benchmarks/bench_pipeline_scale.py --sizes 50,100 --days 365   # a quick look
    .venv/bin/python benchmarks/bench_pipeline_scale.py --sizes 2000 --keep /tmp/scale  # keep corpora + lake
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_demo import REPO, PipelineRun, report, run_pipeline  # noqa: E402

TARGETS = {"wall_s": 600.0, "peak_rss_mb": 4096.0, "growth_per_doubling": 2.1}
JUDGED_MIN_S = 2.0  # a stage this short at every size is start-up cost, not judged for growth


def generate(pools: int, days: int, root: Path, seed: int) -> tuple[Path, Path, float]:
    """The corpus and its config directory under ``root``; the generation time."""
    corpus, configs = root / f"corpus-{pools}x{days}", root / f"configs-{pools}x{days}"
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "corpus_generator.py"),
            "--pools",
            str(pools),
            "--days",
            str(days),
            "--start",
            "2021-06-01",
            "--seed",
            str(seed),
            "--out",
            str(corpus),
            "--config-out",
            str(configs),
        ],
        check=True,
        capture_output=True,
    )
    return corpus, configs, time.perf_counter() - started


def met(value: float, target: float) -> str:
    return "MET" if value <= target else "NOT MET"


def growth(sizes: list[int], walls: list[float]) -> float:
    """Wall-time factor per doubling of the pools between the smallest and the largest size."""
    if len(sizes) < 2 or walls[0] <= 0:
        return float("nan")
    return (walls[-1] / walls[0]) ** (1 / math.log2(sizes[-1] / sizes[0]))


def stage_growth(runs: dict[int, PipelineRun]) -> list[tuple[str, float, list[float], float, bool]]:
    """Per stage present at every size: (name, wall growth per doubling, per consecutive pair, CPU
    growth per doubling, judged)."""
    sizes = sorted(runs)
    names = [s.name for s in runs[sizes[-1]].stages]
    out = []
    for name in names:
        stages = [next((s for s in runs[n].stages if s.name == name), None) for n in sizes]
        if any(s is None for s in stages):
            continue
        walls, cpus = [s.wall_s for s in stages], [s.cpu_s for s in stages]
        pairs = [
            growth([a, b], [wa, wb]) for a, b, wa, wb in zip(sizes, sizes[1:], walls, walls[1:], strict=False)
        ]
        out.append((name, growth(sizes, walls), pairs, growth(sizes, cpus), max(walls) >= JUDGED_MIN_S))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--sizes", default="500,1000,2000", help="pool counts, comma-separated (default 500,1000,2000)"
    )
    p.add_argument("--days", type=int, default=1095, help="days of each corpus (default 1095: 3 years)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--workers", type=int, default=None, help="midfreq pipeline --workers (default: its own)")
    p.add_argument(
        "--keep", type=Path, default=None, help="write corpora here and keep them (default: a temp dir)"
    )
    args = p.parse_args(argv)
    sizes = sorted(int(x) for x in args.sizes.split(","))
    extra = ["--workers", str(args.workers)] if args.workers else []
    runs: dict[int, PipelineRun] = {}
    with tempfile.TemporaryDirectory(prefix="midfreq-scale-") as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        for n in sizes:
            corpus, configs, gen_s = generate(n, args.days, root, args.seed)
            print(f"\n(generated {n} pools x {args.days} days in {gen_s:.1f} s: {corpus})", flush=True)
            run = run_pipeline(
                f"{n} pools x {args.days} days, one vault",
                "--corpus",
                str(corpus),
                "--config-dir",
                str(configs),
                "--grid",
                "single",
                *extra,
            )
            report(run)
            runs[n] = run
            print(
                f"pools={n} days={args.days} wall_s={run.wall_s:.1f} peak_rss_mb={run.tree_peak_mb:.0f} "
                f"largest_process_mb={run.peak_mb:.0f} cpu_s={run.cpu_s:.1f} exit={run.returncode}",
                flush=True,
            )
    print()
    for n in sizes:
        r = runs[n]
        print(f"pools={n} days={args.days} wall_s={r.wall_s:.1f} peak_rss_mb={r.tree_peak_mb:.0f}")
    largest = runs[sizes[-1]]
    if len(sizes) > 1:
        for name, g, pairs, g_cpu, judged in stage_growth(runs):
            verdict = (
                met(g, TARGETS["growth_per_doubling"]) if judged else f"not judged (< {JUDGED_MIN_S:g} s)"
            )
            print(
                f"stage={name} growth_per_doubling={g:.2f} ({', '.join(f'{x:.2f}' for x in pairs)}) {verdict}; "
                f"cpu_growth_per_doubling={g_cpu:.2f}"
            )
        g_all = growth(sizes, [runs[n].wall_s for n in sizes])
        g_cpu = growth(sizes, [runs[n].cpu_s for n in sizes])
        print(
            f"stage=end_to_end growth_per_doubling={g_all:.2f} {met(g_all, TARGETS['growth_per_doubling'])}; "
            f"cpu_growth_per_doubling={g_cpu:.2f}"
        )
    n = sizes[-1]
    print(
        f"target pools={n} days={args.days} wall_s={largest.wall_s:.1f} <= {TARGETS['wall_s']:g} "
        f"{met(largest.wall_s, TARGETS['wall_s'])}"
    )
    print(
        f"target pools={n} days={args.days} peak_rss_mb={largest.tree_peak_mb:.0f} <= {TARGETS['peak_rss_mb']:g} "
        f"{met(largest.tree_peak_mb, TARGETS['peak_rss_mb'])}"
    )
    return max(r.returncode for r in runs.values())


if __name__ == "__main__":
    sys.exit(main())
