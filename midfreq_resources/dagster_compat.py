"""The one place midfreq leans on Dagster internals (dagster is pinned; ``tests/resources`` cover these).

``add_partitions_metadata``: each partition of a range run gets its own metadata in one update.
``context.add_asset_metadata(..., partition_key=k)`` lists the run's partition keys and copies the
step's whole metadata accumulator on every call, so a year-long range costs O(days^2) (0.5 s for 365
days, seconds for four years); this does the same update once. Without the internals it falls back to
the public call per partition.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dagster import AssetKey


def _step_context(context: Any) -> Any:
    """The StepExecutionContext behind an asset context or an IO manager's OutputContext."""
    for attr in ("_step_execution_context", "step_context"):
        step = getattr(context, attr, None)
        if step is not None and hasattr(step, "_metadata_accumulator"):
            return step
    op = getattr(context, "op_execution_context", None)
    step = getattr(op, "_step_execution_context", None) if op is not None else None
    return step if step is not None and hasattr(step, "_metadata_accumulator") else None


def add_partitions_metadata(context: Any, asset_key: AssetKey, by_partition: Mapping[str, Mapping[str, Any]]) -> None:
    """Merge ``by_partition[k]`` into the metadata of partition ``k`` of ``asset_key`` (keys of this run)."""
    step = _step_context(context)
    try:
        from dagster._core.execution.context.metadata_logging import (
            AssetMetadataHandle,
            OutputMetadataAccumulator,
        )
    except ImportError:  # pragma: no cover - a Dagster without them
        step = None
    if step is None:
        for key, metadata in by_partition.items():
            context.add_asset_metadata(metadata, asset_key=asset_key, partition_key=key)
        return
    current = dict(step._metadata_accumulator.per_output_metadata)
    for key, metadata in by_partition.items():
        handle = AssetMetadataHandle(asset_key=asset_key, partition_key=key)
        current[handle] = {**current.get(handle, {}), **metadata}
    step._metadata_accumulator = OutputMetadataAccumulator(per_output_metadata=current)
