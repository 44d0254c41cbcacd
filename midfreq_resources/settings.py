"""Environment variables that point midfreq at services and storage (defaults: the live services)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

DEFILLAMA_YIELDS_URL_ENV = "MIDFREQ_DEFILLAMA_YIELDS_URL"
DEFILLAMA_COINS_URL_ENV = "MIDFREQ_DEFILLAMA_COINS_URL"
BINANCE_ARCHIVE_URL_ENV = "MIDFREQ_BINANCE_ARCHIVE_URL"
DEFILLAMA_PRO_URL_ENV = "MIDFREQ_DEFILLAMA_PRO_URL"
#: DefiLlama's paid API key (lending markets' borrow side); a secret: never logged, never in a URL we print
DEFILLAMA_PRO_API_KEY_ENV = "MIDFREQ_DEFILLAMA_PRO_API_KEY"
DATA_LAKE_ENV = "MIDFREQ_DATA_LAKE"
#: Optional: an http(s) URL serving the data lake's folder (e.g. ``python -m http.server -d data_lake``),
#: under which the UI links each backtest's HTML report; unset, the UI shows the report's path
REPORTS_URL_ENV = "MIDFREQ_REPORTS_URL"

LIVE_DEFILLAMA_YIELDS_URL = "https://yields.llama.fi"
LIVE_DEFILLAMA_COINS_URL = "https://coins.llama.fi"
LIVE_BINANCE_ARCHIVE_URL = "https://data.binance.vision"
LIVE_DEFILLAMA_PRO_URL = "https://pro-api.llama.fi"
DEFAULT_DATA_LAKE = str(REPO_ROOT / "data_lake")


def env_or(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default
