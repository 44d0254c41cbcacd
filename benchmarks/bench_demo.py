"""The whole chain's speed: ``make demo`` and a 4-year, 46-pool corpus through ``midfreq pipeline``.

Runs the real console script (a fresh process each, the local instance's ``dagster.yaml`` in a fresh
``DAGSTER_HOME``, a fresh lake) and prints, per stage, its wall and CPU time, then the totals, the
peak memory and the per-partition cost of a vault whose universe is empty (its stage time over
its partitions: what the chain costs when there is no data). Targets (issue 22): the demo <= 90 s,
an empty vault <= 2 s per stage for a year of days, the 4-year chain <= 120 s with a peak <= 1.5 GB.

    .venv/bin/python benchmarks/bench_demo.py            # both
    .venv/bin/python benchmarks/bench_demo.py --demo     # the bundled recording only
    .venv/bin/python benchmarks/bench_demo.py --corpus4y # the generated corpus only
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
STAGE = re.compile(r"^== (\S+): (.*)$")
TIMING = re.compile(
    r"^\s+(succeeded|FAILED) in ([\d.]+)s wall, ([\d.]+)s CPU \((\d+) run\S*\)(?:, peak RSS (\d+) MB)?"
)
TARGETS = {
    "demo_wall_s": 90.0,
    "empty_vault_stage_s": 2.0,
    "corpus4y_wall_s": 120.0,
    "corpus4y_peak_mb": 1536.0,
}
EMPTY_VAULTS = ("eth_staking", "btc_lending")  # the bundled recording holds no pool of theirs


@dataclass
class StageTime:
    name: str
    span: str
    status: str
    wall_s: float
    cpu_s: float
    runs: int
    peak_mb: float | None = None  # the peak RSS of the process that ran the stage, during the stage


@dataclass
class PipelineRun:
    label: str
    wall_s: float
    cpu_s: float
    peak_mb: float  # the largest single process (the command or one of its workers)
    returncode: int
    stages: list[StageTime]
    tree_peak_mb: float = 0.0  # the command and its workers together, sampled every 0.2 s


def tree_rss_mb(root: int) -> float:
    """Resident memory of process ``root`` and all its descendants (from /proc), in MB."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields_ = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        pid = int(entry.name)
        children.setdefault(int(fields_.get("PPid", "0").strip() or 0), []).append(pid)
        rss[pid] = int(fields_.get("VmRSS", "0 kB").split()[0])
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo += children.get(pid, [])
    return total / 1024


class TreePeak(threading.Thread):
    """Samples :func:`tree_rss_mb` of a process until it exits; ``peak_mb`` the largest sample."""

    def __init__(self, proc: subprocess.Popen, every_s: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.proc, self.every_s, self.peak_mb = proc, every_s, 0.0

    def run(self) -> None:
        while self.proc.poll() is None:
            self.peak_mb = max(self.peak_mb, tree_rss_mb(self.proc.pid))
            time.sleep(self.every_s)


def run_pipeline(label: str, *args: str) -> PipelineRun:
    """``midfreq pipeline <args>`` in a fresh process on a fresh instance and lake; its stages' times
    and memory (per stage, of the largest process, and of the process tree)."""
    with tempfile.TemporaryDirectory(prefix="midfreq-bench-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        shutil.copy(REPO / "deploy" / "local" / "dagster.yaml", home / "dagster.yaml")
        env = {k: v for k, v in os.environ.items() if not k.startswith("MIDFREQ_")}
        env["DAGSTER_HOME"] = str(home)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        proc = subprocess.Popen(
            [str(VENV_BIN / "midfreq"), "pipeline", "--lake", str(Path(tmp) / "lake"), *args],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        sampler = TreePeak(proc)
        sampler.start()
        stdout, stderr = proc.communicate()
        wall = time.perf_counter() - started
        sampler.join()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    stages, current = [], None
    for line in stdout.splitlines():
        if m := STAGE.match(line):
            current = m.groups()
        elif (m := TIMING.match(line)) and current:
            stages.append(
                StageTime(
                    current[0],
                    current[1],
                    m.group(1),
                    float(m.group(2)),
                    float(m.group(3)),
                    int(m.group(4)),
                    float(m.group(5)) if m.group(5) else None,
                )
            )
            current = None
    if proc.returncode:
        print(stdout[-3000:], stderr[-3000:], sep="\n")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return PipelineRun(label, wall, cpu, after.ru_maxrss / 1024, proc.returncode, stages, sampler.peak_mb)


def report(run: PipelineRun) -> None:
    print(
        f"\n== {run.label}: exit {run.returncode}, wall {run.wall_s:.1f} s, CPU {run.cpu_s:.1f} s, "
        f"peak RSS {run.peak_mb:.0f} MB (largest process; all processes together {run.tree_peak_mb:.0f} MB), "
        f"{len(run.stages)} stages"
    )
    print(f"  {'stage':<42} {'wall_s':>7} {'cpu_s':>7} {'runs':>5} {'rss_mb':>7}  span")
    for s in sorted(run.stages, key=lambda s: -s.wall_s):
        rss = f"{s.peak_mb:7.0f}" if s.peak_mb is not None else f"{'-':>7}"
        print(
            f"  {s.name:<42} {s.wall_s:7.2f} {s.cpu_s:7.2f} {s.runs:5d} {rss}  {s.span}"
            f"{'' if s.status == 'succeeded' else '  FAILED'}"
        )
    staged = sum(s.wall_s for s in run.stages)
    print(
        f"  stages total {staged:.1f} s wall; outside the stages (start, imports, code location, planning, "
        f"printing) {run.wall_s - staged:.1f} s"
    )


def met(name: str, value: float, target: float) -> str:
    return f"{name}={value:.2f} target<={target:g} {'MET' if value <= target else 'NOT MET'}"


def empty_vault_lines(run: PipelineRun, days: int) -> list[str]:
    """Per stage of the empty vaults: the time, and per partition (days or months of the stage)."""
    lines = []
    for vault in EMPTY_VAULTS:
        for s in (s for s in run.stages if s.name.startswith(f"{vault}_")):
            months = (days + 29) // 30
            parts = (
                days
                if s.name.endswith(("_decisions",))
                else months
                if s.name.endswith(("_features", "_predictions"))
                else max(1, days // 7)
                if s.name.endswith("_fitted_models")
                else 1
            )
            lines.append(
                f"  {s.name:<36} {s.wall_s:6.2f} s for {parts} partition(s): "
                f"{1000 * s.wall_s / parts:7.2f} ms/partition  {met('stage_s', s.wall_s, TARGETS['empty_vault_stage_s'])}"
            )
    return lines


def bench_demo() -> PipelineRun:
    run = run_pipeline(
        "make demo (midfreq pipeline --corpus recorded --execution-server)",
        "--corpus",
        "recorded",
        "--execution-server",
    )
    report(run)
    print("\n  empty-universe vaults (a year of daily partitions):")
    print("\n".join(empty_vault_lines(run, 365)))
    print(f"\n  {met('demo_wall_s', run.wall_s, TARGETS['demo_wall_s'])}")
    return run


def bench_corpus4y() -> PipelineRun:
    with tempfile.TemporaryDirectory(prefix="midfreq-corpus4y-") as tmp:
        corpus, configs = Path(tmp) / "corpus", Path(tmp) / "configs"
        started = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                str(REPO / "benchmarks" / "corpus_generator.py"),
                "--pools",
                "46",
                "--days",
                "1461",
                "--start",
                "2021-06-06",
                "--seed",
                "7",
                "--death-rate",
                "0",
                "--late-start-share",
                "0",
                "--out",
                str(corpus),
                "--config-out",
                str(configs),
            ],
            check=True,
            capture_output=True,
        )
        print(f"\n(generated 46 pools x 1,461 days in {time.perf_counter() - started:.1f} s)")
        run = run_pipeline(
            "4-year corpus: 46 pools x 1,461 days, one vault",
            "--corpus",
            str(corpus),
            "--config-dir",
            str(configs),
            "--grid",
            "single",
        )
    report(run)
    print(f"\n  {met('corpus4y_wall_s', run.wall_s, TARGETS['corpus4y_wall_s'])}")
    print(f"  {met('corpus4y_peak_mb', run.peak_mb, TARGETS['corpus4y_peak_mb'])}")
    return run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--demo", action="store_true", help="only the bundled recording")
    p.add_argument("--corpus4y", action="store_true", help="only the generated 4-year corpus")
    args = p.parse_args(argv)
    both = not (args.demo or args.corpus4y)
    runs = []
    if both or args.demo:
        runs.append(bench_demo())
    if both or args.corpus4y:
        runs.append(bench_corpus4y())
    return max(r.returncode for r in runs)


if __name__ == "__main__":
    sys.exit(main())
