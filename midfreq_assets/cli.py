"""The ``midfreq`` console script: ``replay`` and ``record`` (``midfreq_resources.replay.cli``) plus
``pipeline`` (:mod:`midfreq_assets.pipeline`, which runs the Dagster jobs) and ``execution-server``
(:mod:`midfreq_resources.execution.cli`, the local execution endpoint)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from midfreq_assets.pipeline import add_pipeline_command
from midfreq_resources.execution.cli import add_execution_command
from midfreq_resources.replay import cli


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``midfreq`` console script."""
    return cli.main(argv, commands=[add_pipeline_command, add_execution_command])


if __name__ == "__main__":
    sys.exit(main())
