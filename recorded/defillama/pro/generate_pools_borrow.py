"""Write ``yields/poolsBorrow.json`` (GENERATED, deterministic) from the recorded files beside it.

No ``/yields/poolsBorrow`` answer was recorded. The replay server needs one (it names the lending
pools), so this builds it as the live endpoint would have answered on the recording's last
``/pools`` day: each pool with a recorded ``chartLendBorrow`` history gets its ``/pools`` row
(``../yields/pools.json``) plus the borrow-side keys of its history row of that day. Run from the
repository root: ``python recorded/defillama/pro/generate_pools_borrow.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).parent
POOLS = HERE.parent / "yields" / "pools.json"
CHARTS = HERE / "yields" / "chartLendBorrow"
OUT = HERE / "yields" / "poolsBorrow.json"
DAY = "2025-06-05"  # the last day of the recorded /pools and /chart answers
BORROW_KEYS = ("totalSupplyUsd", "totalBorrowUsd", "debtCeilingUsd", "apyBaseBorrow", "apyRewardBorrow")


def main() -> None:
    pools = {row["pool"]: row for row in json.loads(POOLS.read_text())["data"]}
    rows = []
    for path in sorted(CHARTS.glob("*.json")):
        pool = path.stem
        history = json.loads(path.read_text())["data"]
        day = next(r for r in history if r["timestamp"].startswith(DAY))
        rows.append({**pools[pool], **{k: day[k] for k in BORROW_KEYS}})
    OUT.write_text(json.dumps({"status": "success", "data": rows}, separators=(",", ":")))


if __name__ == "__main__":
    main()
