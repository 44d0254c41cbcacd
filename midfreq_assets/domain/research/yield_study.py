"""A yield-model study (``configs/research/yield_models.yaml``): a feature map and models to
measure against a vault's own through the same purged walk-forward CV, or to copy into the vault."""

from __future__ import annotations

from pathlib import Path

from midfreq_assets.domain.config.base import StrictModel, load_model
from midfreq_assets.domain.config.vault import VaultConfig
from midfreq_assets.domain.research.features import FeatureMapConfig
from midfreq_assets.domain.research.models import ModelsConfig


class YieldModelStudy(StrictModel):
    """The sections of a vault file a study replaces (labels stay the vault's: same targets)."""

    feature_map: FeatureMapConfig
    models: ModelsConfig

    def applied_to(self, vault: VaultConfig) -> VaultConfig:
        return vault.model_copy(update={"feature_map": self.feature_map, "models": self.models})


def load_yield_study(path: Path | str) -> YieldModelStudy:
    """Errors name the file and the dotted key."""
    return load_model(YieldModelStudy, path)
