"""The one place midfreq leans on Dagster internals (dagster is pinned; ``tests/resources`` cover these).

``add_partitions_metadata``: each partition of a range run gets its own metadata in one update.
``execute_in_process_from``: an in-process run filed under the code location (job page, timeline).
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


def add_partitions_metadata(
    context: Any, asset_key: AssetKey, by_partition: Mapping[str, Mapping[str, Any]]
) -> None:
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


def job_origins(job_name: str, module: str, location: str) -> tuple[Any, Any]:
    """The origins Dagster gives a run launched from the code location ``location`` (workspace.yaml's
    ``python_module: module``): the remote origin the UI files it under (job page, timeline, run links)
    and the Python origin it re-executes from."""
    import sys

    from dagster._core.code_pointer import CodePointer
    from dagster._core.definitions.repository_definition.valid_definitions import SINGLETON_REPOSITORY_NAME
    from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
    from dagster._core.remote_origin import (
        ManagedGrpcPythonEnvCodeLocationOrigin,
        RemoteJobOrigin,
        RemoteRepositoryOrigin,
    )
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

    target = LoadableTargetOrigin(executable_path=sys.executable, module_name=module)
    remote = RemoteJobOrigin(
        RemoteRepositoryOrigin(
            ManagedGrpcPythonEnvCodeLocationOrigin(target, location), SINGLETON_REPOSITORY_NAME
        ),
        job_name,
    )
    python = JobPythonOrigin(
        job_name, RepositoryPythonOrigin(sys.executable, CodePointer.from_module(module, "defs", None))
    )
    return remote, python


def execute_in_process_from(
    job: Any,
    module: str,
    location: str,
    *,
    instance: Any,
    run_config: Mapping | None = None,
    resources: Mapping[str, Any] | None = None,
    partition_key: str | None = None,
    tags: Mapping[str, str] | None = None,
    raise_on_error: bool = False,
) -> Any:
    """``job.execute_in_process(...)`` whose run carries the code location's origin (``job_origins``):
    the same in-process execution, but the UI lists the run on its job page and the timeline, as a run
    launched from the webserver (``execute_in_process`` stores runs without an origin)."""
    from dagster._core.definitions.job_base import InMemoryJob
    from dagster._core.execution.api import (
        ExecuteRunWithPlanIterable,
        create_execution_plan,
        job_execution_iterator,
    )
    from dagster._core.execution.context_creation_job import (
        PlanOrchestrationContextManager,
        orchestration_context_event_generator,
    )
    from dagster._core.execution.execute_in_process import merge_run_tags, type_check_and_normalize_args
    from dagster._core.execution.execute_in_process_result import ExecuteInProcessResult

    run_config, _, _, resource_defs, partition_key, input_values = type_check_and_normalize_args(
        run_config=run_config, partition_key=partition_key, resources=resources
    )
    ephemeral = job.as_ephemeral_job(resource_defs=resource_defs, input_values=input_values)
    if not run_config and ephemeral.partitioned_config and partition_key:
        run_config = ephemeral.partitioned_config.get_run_config_for_partition_key(partition_key)
    wrapped = InMemoryJob(job_def=ephemeral)
    run_tags = merge_run_tags(
        job_def=job,
        partition_key=partition_key,
        tags=tags,
        asset_selection=None,
        instance=instance,
        run_config=run_config,
    )
    plan = create_execution_plan(
        wrapped, run_config=run_config, instance_ref=instance.get_ref() if instance.is_persistent else None
    )
    remote, python = job_origins(job.name, module, location)
    run = instance.create_run_for_job(
        job_def=ephemeral,
        run_config=run_config,
        tags={**ephemeral.run_tags, **run_tags},
        execution_plan=plan,
        remote_job_origin=remote,
        job_code_origin=python,
    )
    output_capture: dict = {}
    events = list(
        ExecuteRunWithPlanIterable(
            execution_plan=plan,
            iterator=job_execution_iterator,
            execution_context_manager=PlanOrchestrationContextManager(
                context_event_generator=orchestration_context_event_generator,
                job=wrapped,
                execution_plan=plan,
                dagster_run=run,
                instance=instance,
                run_config=run_config,
                executor_defs=None,
                output_capture=output_capture,
                raise_on_error=raise_on_error,
            ),
        )
    )
    return ExecuteInProcessResult(
        job_def=ephemeral,
        event_list=events,
        dagster_run=instance.get_run_by_id(run.run_id),
        output_capture=output_capture,
    )
