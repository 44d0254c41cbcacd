"""midfreq's Dagster code location (``defs``) and its pure-Python domain code (``domain``)."""

import warnings

from dagster import BetaWarning, PreviewWarning

# midfreq deliberately uses Dagster's beta partition features (single-run backfill policies,
# allow_nonexistent_upstream_partitions); their warnings would drown every run's log.
warnings.filterwarnings("ignore", category=BetaWarning)
warnings.filterwarnings("ignore", category=PreviewWarning)

from midfreq_assets.definitions import defs  # noqa: E402

__all__ = ["defs"]
