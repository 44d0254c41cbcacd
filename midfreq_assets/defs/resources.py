"""Resources per deployment, chosen by ``MIDFREQ_DEPLOYMENT`` (the code never changes between them).

- ``local`` (default): the lake is ``$MIDFREQ_DATA_LAKE`` or ``data_lake/``; each source is its
  ``MIDFREQ_*_URL`` when set, else the live public service.
- ``replay``: every source **must** come from its ``MIDFREQ_*_URL`` (``midfreq replay`` prints
  them): a run that forgot one fails at launch instead of reaching the internet.
- ``production``: the lake **must** be ``$MIDFREQ_DATA_LAKE`` (e.g. ``s3://bucket/midfreq``); sources
  default to the live services. Storage, run coordinator and daemon come from the instance's
  ``dagster.yaml`` (``deploy/production/``); the executor from ``MIDFREQ_EXECUTOR``.
"""

import os

from dagster import Definitions, EnvVar, definitions

from midfreq_assets.executors import select_executor
from midfreq_resources.clients.binance_archive import BinanceArchiveClient
from midfreq_resources.clients.defillama import DefiLlamaClient
from midfreq_resources.clients.defillama_coins import DefiLlamaCoinsClient
from midfreq_resources.clients.defillama_pro import DefiLlamaProClient
from midfreq_resources.clients.execution import ExecutionClient
from midfreq_resources.clients.positions import PositionsClient
from midfreq_resources.io.model_io_manager import ModelIOManager
from midfreq_resources.io.parquet_io_manager import ParquetIOManager
from midfreq_resources.settings import (
    BINANCE_ARCHIVE_URL_ENV,
    DATA_LAKE_ENV,
    DEFILLAMA_COINS_URL_ENV,
    DEFILLAMA_PRO_API_KEY_ENV,
    DEFILLAMA_PRO_URL_ENV,
    DEFILLAMA_YIELDS_URL_ENV,
)

DEPLOYMENT_ENV = "MIDFREQ_DEPLOYMENT"
DEPLOYMENTS = ("local", "replay", "production")


class DeploymentError(ValueError):
    """``MIDFREQ_DEPLOYMENT`` names no known deployment."""


def deployment_name(name: str | None = None) -> str:
    chosen = (name if name is not None else os.environ.get(DEPLOYMENT_ENV, "")).strip().lower() or "local"
    if chosen not in DEPLOYMENTS:
        raise DeploymentError(
            f"{DEPLOYMENT_ENV}={chosen!r} is not a deployment; choose one of {', '.join(DEPLOYMENTS)}"
        )
    return chosen


def defillama_pro(base_url: str | EnvVar = "") -> DefiLlamaProClient:
    """The paid API's client: its key is the ``EnvVar`` ``MIDFREQ_DEFILLAMA_PRO_API_KEY`` when set (never
    a literal in code or run config); unset, the client has no key and the lending assets say so."""
    key = EnvVar(DEFILLAMA_PRO_API_KEY_ENV) if os.environ.get(DEFILLAMA_PRO_API_KEY_ENV, "").strip() else ""
    return DefiLlamaProClient(base_url=base_url, api_key=key)


def build_resources(deployment: str | None = None) -> dict[str, object]:
    """The resource set of ``deployment`` (default: ``$MIDFREQ_DEPLOYMENT``, else ``local``)."""
    name = deployment_name(deployment)
    if name == "replay":
        sources = {
            "defillama": DefiLlamaClient(base_url=EnvVar(DEFILLAMA_YIELDS_URL_ENV)),
            "defillama_coins": DefiLlamaCoinsClient(base_url=EnvVar(DEFILLAMA_COINS_URL_ENV)),
            "binance_archive": BinanceArchiveClient(base_url=EnvVar(BINANCE_ARCHIVE_URL_ENV)),
            "defillama_pro": defillama_pro(EnvVar(DEFILLAMA_PRO_URL_ENV)),
        }
    else:
        sources = {
            "defillama": DefiLlamaClient(),
            "defillama_coins": DefiLlamaCoinsClient(),
            "binance_archive": BinanceArchiveClient(),
            "defillama_pro": defillama_pro(),
        }
    if name == "production":
        lake = {
            "parquet_io_manager": ParquetIOManager(root=EnvVar(DATA_LAKE_ENV)),
            "model_io_manager": ModelIOManager(root=EnvVar(DATA_LAKE_ENV)),
        }
    else:
        lake = {"parquet_io_manager": ParquetIOManager(), "model_io_manager": ModelIOManager()}
    live = {"positions_client": PositionsClient(), "execution_client": ExecutionClient()}
    return {**lake, **sources, **live}


def pipeline_resources(
    lake: str, sources: dict[str, str] | None = None, execution_url: str | None = None
) -> dict[str, object]:
    """The resources ``midfreq pipeline`` hands to each run, explicitly: the lake, the sources (the replay
    server's URLs, keyed by their ``MIDFREQ_*_URL`` names; None: the configured or live services) and the
    execution endpoint (None: the vault's ``execution.url`` / ``$MIDFREQ_EXECUTION_URL``, else a dry run)."""
    sources = sources or {}
    return {
        "parquet_io_manager": ParquetIOManager(root=lake),
        "model_io_manager": ModelIOManager(root=lake),
        "defillama": DefiLlamaClient(base_url=sources.get(DEFILLAMA_YIELDS_URL_ENV, "")),
        "defillama_coins": DefiLlamaCoinsClient(base_url=sources.get(DEFILLAMA_COINS_URL_ENV, "")),
        "binance_archive": BinanceArchiveClient(base_url=sources.get(BINANCE_ARCHIVE_URL_ENV, "")),
        # the key: the replay server's placeholder where it serves the paid endpoints, else the EnvVar
        "defillama_pro": (
            DefiLlamaProClient(
                base_url=sources[DEFILLAMA_PRO_URL_ENV],
                api_key=sources.get(DEFILLAMA_PRO_API_KEY_ENV, ""),
                key_from_env=False,
            )
            if DEFILLAMA_PRO_URL_ENV in sources
            else defillama_pro()
        ),
        "positions_client": PositionsClient(),
        "execution_client": ExecutionClient(base_url=execution_url or ""),
    }


@definitions
def defs() -> Definitions:
    return Definitions(resources=build_resources(), executor=select_executor())
