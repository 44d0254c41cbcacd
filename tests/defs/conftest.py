"""Fixtures of the Dagster-layer tests: the project, the ingestion assets and a research pipeline on a tmp lake."""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
from dagster import AssetsDefinition, DagsterInstance, materialize

from midfreq_assets.defs.ingest.defillama import build_defillama_assets
from midfreq_assets.defs.ingest.lend_borrow import build_lend_borrow_asset
from midfreq_assets.defs.ingest.prices import build_token_prices
from midfreq_assets.defs.resources import build_resources
from midfreq_assets.defs.vault.research import build_research_assets
from midfreq_assets.defs.vault.yields import build_adjusted_yield_assets
from midfreq_assets.domain.config.project import Project, load_project
from midfreq_assets.domain.config.vault import VaultConfig
from midfreq_assets.domain.research.features import FeatureMapConfig
from midfreq_assets.domain.research.labels import LabelMapConfig
from midfreq_assets.domain.yields.adjusted import reference_pricing
from midfreq_assets.partitions import daily_partitions, research_months
from midfreq_resources.clients.defillama import DefiLlamaClient
from midfreq_resources.io.lake import read_daily, read_parquet
from midfreq_resources.replay.server import ReplayServer

FIRST, LAST = "2024-06-06", "2024-07-31"
FIRST_MONTH, LAST_MONTH = "2024-06", "2024-07"


def range_tags(start: str, end: str) -> dict[str, str]:
    return {"dagster/asset_partition_range_start": start, "dagster/asset_partition_range_end": end}


@pytest.fixture(scope="session")
def project() -> Project:
    """The repository's ``configs/``."""
    return load_project()


@pytest.fixture
def lake(tmp_path, replay_env, monkeypatch) -> Path:
    """A fresh lake (``MIDFREQ_DATA_LAKE``) with the sources pointed at the replay server."""
    monkeypatch.setenv("MIDFREQ_DATA_LAKE", str(tmp_path))
    return tmp_path


@pytest.fixture
def ingest_resources(replay_env) -> Callable[..., dict]:
    """``ingest_resources(**client)``: the local resources with a fast-retrying DefiLlama client on the
    replay server (``max_attempts=2``; keyword arguments override its settings)."""

    def make(**client) -> dict:
        settings = {"max_attempts": 2, "backoff_base_s": 0.01, "backoff_max_s": 0.02, **client}
        res = build_resources()
        res["defillama"] = DefiLlamaClient(base_url=f"{replay_env.base_url}/defillama/yields", **settings)
        return res

    return make


@pytest.fixture(scope="session")
def defillama_assets(project: Project) -> list[AssetsDefinition]:
    """The ingestion multi-asset (pool_history, pool_metadata, universe_exclusions) of ``configs/``."""
    return build_defillama_assets(project, daily_partitions(project))


def _small_vault(project: Project) -> VaultConfig:
    """usd_lending with short windows and horizons, so models train within two months of data."""
    v = project.vault("usd_lending")
    fmap = FeatureMapConfig.model_validate(
        {
            "apy": {
                "transform": "as_is",
                "expansions": {"level": True, "ewma": {"windows": [3, 7], "norm_mult": 2}, "min": [7]},
            },
            "tvl_usd": {"transform": "log", "expansions": {"ewma": {"windows": [3], "norm_mult": 2}}},
        }
    )
    labels = LabelMapConfig.model_validate({"apy": {"kind": "forward_mean", "horizons": [3, 7]}})
    models = v.models.model_copy(
        update={"cv": v.models.cv.model_copy(update={"min_train": 7, "n_splits": 2})}
    )
    return v.model_copy(update={"feature_map": fmap, "label_map": labels, "models": models})


@pytest.fixture(scope="session")
def small_vault(project: Project) -> VaultConfig:
    """usd_lending with short windows and horizons, so models train within two months of data."""
    return _small_vault(project)


class Pipeline:
    """A tmp lake with pool_history/pool_metadata/token_prices and the vault's adjusted_yields
    ``first..last``, and the vault's research assets."""

    first, last = FIRST, LAST
    first_month, last_month = FIRST_MONTH, LAST_MONTH

    def __init__(
        self,
        lake: Path,
        resources: dict,
        vault: VaultConfig,
        ingest: list[AssetsDefinition],
        project: Project,
    ) -> None:
        self.lake, self.resources, self.vault, self.ingest = lake, resources, vault, ingest
        self.instance = DagsterInstance.ephemeral()
        self.adjusted = build_adjusted_yield_assets(
            vault, reference_pricing(vault, project.tokens), research_months(project.earliest_start)
        )
        self.research = build_research_assets(vault)
        self.all = [*ingest, *self.adjusted, *self.research]

    def run(self, assets, selection, start: str, end: str | None = None, extra=()):
        tags = range_tags(start, end) if end else {}
        kw = {} if end else {"partition_key": start}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = materialize(
                [*self.all, *extra],
                selection=selection,
                resources=self.resources,
                instance=self.instance,
                tags=tags,
                **kw,
            )
        assert result.success
        return result

    def month_rows(self, *key: str, day: str) -> pd.DataFrame:
        """A day's rows of a monthly asset (its month's file)."""
        frame = read_parquet(self.lake.joinpath(*key, f"{day[:7]}.parquet"))
        return frame[frame["date"] == pd.Timestamp(day)].reset_index(drop=True)

    def frame(self, *key: str, partition: str) -> pd.DataFrame:
        """A partition's rows: a day (``YYYY-MM-DD``, from its month's file), else the partition's own file
        (a month ``YYYY-MM``, an hour, a week of models...)."""
        if len(partition) == 10:
            return read_daily(self.lake, *key, days=[partition])
        return read_parquet(self.lake.joinpath(*key, f"{partition}.parquet"))


@contextlib.contextmanager
def _pipeline(tmp_path_factory, replay_server: ReplayServer, project: Project) -> Iterator[Pipeline]:
    lake = tmp_path_factory.mktemp("lake")
    days = daily_partitions(project)
    ingest = [
        *build_defillama_assets(project, days),
        build_lend_borrow_asset(project, days),
        build_token_prices(project, days),
    ]
    with pytest.MonkeyPatch.context() as mp:
        for name, value in replay_server.env().items():
            mp.setenv(name, value)
        mp.setenv("MIDFREQ_DATA_LAKE", str(lake))
        replay_server.reset()
        p = Pipeline(lake, build_resources(), _small_vault(project), ingest, project)
        p.run(ingest, ingest, FIRST, LAST)
        p.run(p.all, p.adjusted, FIRST_MONTH, LAST_MONTH)
        yield p
        replay_server.reset()


@pytest.fixture(scope="session")
def pipeline_env(
    tmp_path_factory, replay_server, project
) -> Callable[[], contextlib.AbstractContextManager[Pipeline]]:
    """``with pipeline_env() as p``: a fresh lake holding the ingestion (pool_history, pool_metadata,
    token_prices) and the small vault's adjusted_yields of ``FIRST..LAST``, the ``MIDFREQ_*``
    variables pointing at the replay server, and the small vault's research assets."""
    return functools.partial(_pipeline, tmp_path_factory, replay_server, project)
