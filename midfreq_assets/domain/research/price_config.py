"""Price research configuration (``configs/research/*.yaml``): per kline interval, its features,
labels, models and how its predictions are traded as signals (windows in bars)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from midfreq_assets.domain.backtest.signals import SignalConfig
from midfreq_assets.domain.config.base import StrictModel, load_model
from midfreq_assets.domain.research.features import FeatureMapConfig
from midfreq_assets.domain.research.labels import LabelMapConfig
from midfreq_assets.domain.research.models import ModelsConfig


class PriceStudyConfig(StrictModel):
    """One kline interval: its features, labels and models (windows in bars)."""

    feature_map: FeatureMapConfig
    label_map: LabelMapConfig
    models: ModelsConfig
    signal: SignalConfig = Field(default_factory=SignalConfig)

    @model_validator(mode="after")
    def _class_values_cover_the_classes(self) -> PriceStudyConfig:
        values = self.signal.class_values
        if values is None:
            return self
        for info in self.label_map.labels():
            missing = [c for c in info.classes or () if c not in values]
            if missing:
                raise ValueError(
                    f"signal.class_values has no value for class(es) {missing} of label {info.name}"
                )
        return self


class PriceResearchConfig(StrictModel):
    symbols: list[str] = Field(min_length=1)
    market: Literal["spot", "futures/um", "futures/cm"] = "spot"
    intervals: dict[str, PriceStudyConfig] = Field(min_length=1)


def load_price_research_config(path: Path | str) -> PriceResearchConfig:
    """``configs/research/<name>.yaml``; errors name the file and the dotted key."""
    return load_model(PriceResearchConfig, path)
