"""Concurrency pools: the steps that write one lake asset never run twice at once, across runs.

A pool is Dagster's own cross-run lock: every step of an asset in pool ``P`` must claim one of
``P``'s slots before it executes (the instance's event-log storage counts them, the local SQLite
one included). ``deploy/local/dagster.yaml`` and ``deploy/production/dagster.yaml`` give every
pool one slot (``concurrency.pools.default_limit: 1``), so the nightly run and a backfill touching
the same files queue behind each other instead of interleaving their writes (and their merges of
the previous partitions). The lock is per asset, which is stricter than per partition and costs
nothing here: an ingestion step of any range is one step.
"""

#: pool_history, pool_metadata, universe_exclusions (one multi-asset step)
DEFILLAMA_POOL = "lake_defillama"
#: pool_lend_borrow
LEND_BORROW_POOL = "lake_pool_lend_borrow"
#: token_prices
PRICES_POOL = "lake_token_prices"
#: binance_klines
KLINES_POOL = "lake_binance_klines"


def execution_pool(vault: str) -> str:
    """``<vault>/order_executions``: two runs never send the same vault's orders at once (both would
    read the same ledger and could both send a new revision)."""
    return f"execution_{vault}"
