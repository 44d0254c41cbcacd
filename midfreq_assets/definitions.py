"""The code location: every module of ``midfreq_assets/defs/`` contributes its definitions.

Dagster's ``load_from_defs_folder`` walks the folder (``[tool.dg]`` in ``pyproject.toml``) and
merges each module's ``defs``: resources per deployment, ingestion, one set per vault, the price
research. Adding a vault YAML adds its definitions; nothing here lists them.

The configuration is loaded first, on its own: a bad file is one short ``ConfigError`` naming the
file and the key (through ``dagster``, ``dg`` and ``midfreq`` alike), not a ``ComponentTreeException``
pointing at whichever defs module happened to read the configuration first. A CLI that imports this
module in its own process (``dagster asset materialize -m ...``) would print the whole import
stack above it: an uncaught ``ConfigError`` is printed as its message alone.
"""

from __future__ import annotations

import sys
from pathlib import Path

from dagster import load_from_defs_folder

from midfreq_assets.domain.config.base import ConfigError
from midfreq_assets.project import current_project


def _config_errors_as_messages(previous):
    def hook(kind, value, tb):
        if issubclass(kind, ConfigError):
            sys.stderr.write(f"ConfigError: {value}\n")
        else:
            previous(kind, value, tb)

    return hook


try:
    current_project()
except ConfigError as exc:
    sys.excepthook = _config_errors_as_messages(sys.excepthook)
    # the message alone (it names file and key): the loader's frames say nothing about the file
    raise ConfigError(str(exc)) from None

defs = load_from_defs_folder(path_within_project=Path(__file__).parent)
