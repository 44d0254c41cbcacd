"""midfreq's Dagster code location (``defs``) and its pure-Python domain code (``domain``)."""

from midfreq_assets.definitions import defs

__all__ = ["defs"]
