"""The code location: the defs folder loads every module, a vault YAML adds a vault's definitions,
run-time code computes with the configuration the graph was built from, resources per deployment."""

import shutil
from pathlib import Path

import pytest
import yaml
from dagster import (
    DagsterInstance,
    DagsterInvalidConfigError,
    DefaultScheduleStatus,
    load_from_defs_folder,
    materialize,
)

from midfreq_assets.defs.ingest.defillama import build_defillama_assets
from midfreq_assets.defs.resources import DeploymentError, build_resources, deployment_name
from midfreq_assets.partitions import daily_partitions
from midfreq_assets.project import current_project
from midfreq_resources.io.lake import read_daily

REPO = Path(__file__).parents[2]
PACKAGE = REPO / "midfreq_assets"
VAULTS = ("btc_lending", "eth_staking", "usd_curated", "usd_lending")  # the shipped example vaults
KEYS = {
    "pool_history",
    "pool_metadata",
    "universe_exclusions",
    "pool_rankings",
    "pool_lend_borrow",
    "token_prices",
    "binance_klines",
    "binance_premium_index_klines",
    "binance_funding_rates",
    *(
        f"{v}/{n}"
        for v in VAULTS
        for n in (
            "adjusted_yields",
            "features",
            "fitted_models",
            "predictions",
            "rebalance_weights",
            "backtest_panel",
            "backtest_runs",
            "backtest_report",
            "top_pools",
            "trade_orders",
            "order_executions",
        )
    ),
    "usd_lending/vault_positions",  # the one shipped vault with a positions: section
    # no <vault>/intraday_moves: no shipped vault has intraday.enabled (tests/defs/test_partitions.py)
    *(
        f"price_research/{i}/{n}"
        for i in ("1h", "1d")
        for n in ("features", "fitted_models", "predictions", "signal_report")
    ),
}
JOBS = {
    "nightly_refresh",
    "binance_klines_refresh",
    "binance_funding_refresh",
    "price_research_features",
    "price_research_predictions",
    "price_research_signal_reports",
    "price_research_1h_fitted_models",
    "price_research_1d_fitted_models",
    *(
        f"{v}_{n}"
        for v in VAULTS
        for n in (
            "daily",
            "research",
            "features",
            "fitted_models",
            "predictions",
            "decisions",
            "backtest_inputs",
            "backtest_runs",
            "backtest_report",
            "orders",
        )
    ),
    "usd_lending_positions",
}


def test_defs_folder_builds_the_whole_code_location():
    from midfreq_assets.definitions import defs

    assert {k.to_user_string() for k in defs.resolve_all_asset_keys()} == KEYS
    assert {j.name for j in defs.resolve_all_job_defs()} - {"__ASSET_JOB"} == JOBS
    assert {s.name for s in defs.schedules} == {
        "nightly_refresh_schedule",
        "binance_klines_schedule",
        "binance_funding_schedule",
        *(f"{v}_{n}_schedule" for v in VAULTS for n in ("weekly_refit", "daily")),
    }
    running = {s.name for s in defs.schedules if s.default_status == DefaultScheduleStatus.RUNNING}
    assert running == {"nightly_refresh_schedule"}  # everything else is off until turned on
    assert {s.name for s in defs.sensors} == {
        "grid_points_sensor",
        "ingestion_freshness_sensor",
        *(f"{v}_daily_after_research" for v in VAULTS),
    }
    assert set(defs.resources) >= {
        "parquet_io_manager",
        "model_io_manager",
        "defillama",
        "defillama_coins",
        "binance_archive",
        "defillama_pro",
        "positions_client",
        "execution_client",
    }


@pytest.fixture
def two_vaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    configs = tmp_path / "configs"
    shutil.copytree(REPO / "configs", configs)
    data = yaml.safe_load((configs / "vaults/usd_lending.yaml").read_text())
    data.update(name="usd_base", chains=["Base"], start_date="2024-09-01")
    (configs / "vaults/usd_base.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.setenv("MIDFREQ_CONFIG_DIR", str(configs))
    return configs


def test_a_vault_yaml_adds_its_assets_jobs_and_schedules(two_vaults: Path):
    defs = load_from_defs_folder(path_within_project=PACKAGE)
    keys = {k.to_user_string() for k in defs.resolve_all_asset_keys()}
    assert {"usd_base/rebalance_weights", "usd_base/backtest_report", "usd_lending/rebalance_weights"} <= keys
    jobs = {j.name for j in defs.resolve_all_job_defs()}
    assert {"usd_base_daily", "usd_base_fitted_models", "usd_base_backtest_runs"} <= jobs
    schedules = {s.name: s for s in defs.schedules}
    assert {"usd_base_daily_schedule", "usd_base_weekly_refit_schedule"} <= set(schedules)
    research = defs.resolve_job_def("usd_base_research")  # the nightly chain: the month so far, then the day
    assert {k.to_user_string() for k in research.asset_layer.executable_asset_keys} == {
        f"usd_base/{n}" for n in ("adjusted_yields", "features", "predictions")
    }
    daily = defs.resolve_job_def("usd_base_daily")
    assert {k.to_user_string() for k in daily.asset_layer.executable_asset_keys} == {
        f"usd_base/{n}" for n in ("vault_positions", "rebalance_weights", "trade_orders", "order_executions")
    }
    assert schedules["usd_base_daily_schedule"].job_name == "usd_base_research"


def test_a_run_computes_with_the_configuration_the_graph_was_built_from(
    two_vaults: Path, tmp_path: Path, replay_env, monkeypatch
):
    project = current_project()
    assert current_project() is project  # loaded once per config dir
    assets = build_defillama_assets(project, daily_partitions(project))
    # a YAML edit after the graph was built is not read behind its back: the next load sees it
    path = two_vaults / "vaults/usd_base.yaml"
    data = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**data, "min_pool_tvl_usd": 1e15}))
    monkeypatch.setenv("MIDFREQ_DATA_LAKE", str(tmp_path / "lake"))
    result = materialize(
        assets, resources=build_resources(), partition_key="2024-09-02", instance=DagsterInstance.ephemeral()
    )
    assert result.success
    meta = read_daily(tmp_path / "lake", "pool_metadata", days=["2024-09-02"])
    base = meta[meta["vaults"].map(lambda v: "usd_base" in list(v))]
    assert len(base) > 0 and set(base["chain"]) == {"Base"}


def test_deployments_choose_their_resources(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("MIDFREQ_DEPLOYMENT", raising=False)
    assert deployment_name() == "local"
    monkeypatch.setenv("MIDFREQ_DEPLOYMENT", "staging")
    with pytest.raises(DeploymentError, match="local, replay, production"):
        deployment_name()
    replay = build_resources("replay")
    assert "MIDFREQ_DEFILLAMA_YIELDS_URL" in repr(replay["defillama"].base_url)
    production = build_resources("production")
    assert "MIDFREQ_DATA_LAKE" in repr(production["parquet_io_manager"].root)


def test_the_paid_api_key_is_an_env_var_never_a_literal(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MIDFREQ_DEFILLAMA_PRO_API_KEY", "secret-123")
    key = build_resources("local")["defillama_pro"].api_key
    assert "MIDFREQ_DEFILLAMA_PRO_API_KEY" in repr(key) and "secret-123" not in repr(key)
    monkeypatch.delenv("MIDFREQ_DEFILLAMA_PRO_API_KEY")
    assert not build_resources("local")["defillama_pro"].has_key  # no key: the lending assets say so


def test_replay_deployment_never_falls_back_to_the_live_services(monkeypatch, tmp_path, replay_env):
    """Without its URL the replay deployment fails at launch naming the variable (it does not reach the internet)."""
    project = current_project()
    monkeypatch.delenv("MIDFREQ_DEFILLAMA_YIELDS_URL")
    monkeypatch.setenv("MIDFREQ_DATA_LAKE", str(tmp_path / "lake"))
    with pytest.raises(DagsterInvalidConfigError, match="MIDFREQ_DEFILLAMA_YIELDS_URL"):
        materialize(
            build_defillama_assets(project, daily_partitions(project)),
            resources=build_resources("replay"),
            partition_key="2024-07-01",
        )
    assert not any("/defillama/yields" in r.path for r in replay_env.requests)
