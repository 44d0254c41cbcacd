"""The code location's configuration: loaded once per config directory, read by every definition.

Every ``defs/`` module builds its assets, checks, jobs and schedules from :func:`current_project`,
and the assets close over the same config objects, so what a run computes is what the graph
shows (no resource re-reads the YAML at run time). ``MIDFREQ_CONFIG_DIR`` picks the directory.
"""

from __future__ import annotations

import functools
from pathlib import Path

from midfreq_assets.domain.config.base import config_dir
from midfreq_assets.domain.config.project import Project, load_project


@functools.cache
def _load(directory: str) -> Project:
    return load_project(Path(directory))


def current_project() -> Project:
    """The :class:`Project` of ``$MIDFREQ_CONFIG_DIR`` (default ``configs/``), loaded once."""
    return _load(str(config_dir().resolve()))
