"""Another recorded corpus, laid out the same way, needs only env vars and a vault config."""

import json
import shutil
import uuid
from pathlib import Path

import yaml
from dagster import materialize

from midfreq_assets.defs.ingest.defillama import build_defillama_assets
from midfreq_assets.defs.resources import build_resources
from midfreq_assets.partitions import daily_partitions
from midfreq_assets.project import current_project
from midfreq_resources.io.lake import read_daily
from midfreq_resources.replay.server import ReplayServer

REPO = Path(__file__).parents[2]
SOURCE = REPO / "recorded/defillama/yields"


def build_corpus(root: Path) -> list[str]:
    """Five recorded pools re-labelled as Optimism 'spark' USDC pools under fresh uuids."""
    pools = json.loads((SOURCE / "pools.json").read_text())["data"][:5]
    (root / "defillama/yields/chart").mkdir(parents=True)
    ids = []
    for i, pool in enumerate(pools):
        new_id = str(uuid.UUID(int=1000 + i, version=4))
        shutil.copyfile(
            SOURCE / "chart" / f"{pool['pool']}.json", root / f"defillama/yields/chart/{new_id}.json"
        )
        pool.update(pool=new_id, chain="Optimism", project="spark", symbol="USDC", underlyingTokens=None)
        ids.append(new_id)
    (root / "defillama/yields/pools.json").write_text(json.dumps({"status": "success", "data": pools}))
    return ids


def test_other_corpus_and_vault_through_env_only(tmp_path, monkeypatch):
    ids = build_corpus(tmp_path / "corpus")
    configs = tmp_path / "configs"
    (configs / "vaults").mkdir(parents=True)
    shutil.copyfile(REPO / "configs/tokens.yaml", configs / "tokens.yaml")
    vault = {
        "name": "optimism_usd",
        "reference_asset": "usd",
        "start_date": "2024-06-06",
        "chains": ["Optimism"],
        "protocols": {"tier1": ["spark"]},
        "min_pool_tvl_usd": 0,
    }
    (configs / "vaults/optimism_usd.yaml").write_text(yaml.safe_dump(vault))
    with ReplayServer(tmp_path / "corpus") as server:
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("MIDFREQ_CONFIG_DIR", str(configs))
        monkeypatch.setenv("MIDFREQ_DATA_LAKE", str(tmp_path / "lake"))
        project = current_project()  # what the code location loads: the env's config dir
        assert list(project.vaults) == ["optimism_usd"]
        result = materialize(
            build_defillama_assets(project, daily_partitions(project)),
            resources=build_resources(),
            partition_key="2025-06-01",
        )
    assert result.success
    meta = read_daily(tmp_path / "lake", "pool_metadata", days=["2025-06-01"])
    assert set(meta["pool"]) <= set(ids) and len(meta) >= 3
    assert all(v.tolist() == ["optimism_usd"] for v in meta["vaults"])
    assert set(meta["chain"]) == {"Optimism"} and set(meta["underlying_symbols"].map(tuple)) == {("usdc",)}
