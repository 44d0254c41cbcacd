"""The code location's configuration: loaded once per config directory, read by every definition.

Every ``defs/`` module builds its assets, checks, jobs and schedules from :func:`current_project`,
and the assets close over the same config objects, so what a run computes is what the graph
shows (no resource re-reads the YAML at run time). ``MIDFREQ_CONFIG_DIR`` picks the directory.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Iterator
from pathlib import Path

from midfreq_assets.domain.config.base import config_dir
from midfreq_assets.domain.config.project import Project, load_project


@functools.cache
def _load(directory: str) -> Project:
    return load_project(Path(directory))


_CHOSEN: contextvars.ContextVar[Project | None] = contextvars.ContextVar("midfreq_project", default=None)


def current_project() -> Project:
    """The project a caller chose (:func:`using`), else the one of ``$MIDFREQ_CONFIG_DIR`` (default
    ``configs/``), loaded once."""
    chosen = _CHOSEN.get()
    return chosen if chosen is not None else _load(str(config_dir().resolve()))


def project_at(directory: Path) -> Project:
    """The project of a config directory, loaded once (errors name the file and key)."""
    return _load(str(Path(directory).resolve()))


@contextlib.contextmanager
def using(project: Project) -> Iterator[Project]:
    """Build definitions from ``project`` (``midfreq pipeline --config-dir``) without touching the
    environment: every ``defs/`` module reads it through :func:`current_project`."""
    token = _CHOSEN.set(project)
    try:
        yield project
    finally:
        _CHOSEN.reset(token)
