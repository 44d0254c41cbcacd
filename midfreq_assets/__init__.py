"""midfreq: the Dagster code location (``midfreq_assets.definitions``: ``defs/``) and its pure-Python
domain code (``midfreq_assets.domain``). Importing the package loads neither."""

import warnings

from dagster import BetaWarning, PreviewWarning

# midfreq deliberately uses Dagster's beta partition features (single-run backfill policies,
# allow_nonexistent_upstream_partitions); their warnings would drown every run's log.
warnings.filterwarnings("ignore", category=BetaWarning)
warnings.filterwarnings("ignore", category=PreviewWarning)
