"""The Dagster CLI as the tests launch it: ``python -m dagster`` of this interpreter on the project's
code location (the console script a user types is tested as written in the README and deploy tests)."""

import sys

MATERIALIZE = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "midfreq_assets.definitions"]


def materialize_argv(select: str, *where: str) -> list[str]:
    """``dagster asset materialize --select <select>`` plus ``where`` (``--partition ...``, ``--partition-range ...``)."""
    return [*MATERIALIZE, "--select", select, *where]
