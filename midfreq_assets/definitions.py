"""The code location: every module of ``midfreq_assets/defs/`` contributes its definitions.

Dagster's ``load_from_defs_folder`` walks the folder (``[tool.dg]`` in ``pyproject.toml``) and
merges each module's ``defs``: resources per deployment, ingestion, one set per vault, the price
research. Adding a vault YAML adds its definitions; nothing here lists them.
"""

from __future__ import annotations

from pathlib import Path

from dagster import load_from_defs_folder

defs = load_from_defs_folder(path_within_project=Path(__file__).parent)
