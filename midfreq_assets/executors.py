"""Executor switch: where a run's steps execute, chosen by the deployment, not by the code.

``MIDFREQ_EXECUTOR`` selects one of:

- ``multiprocess`` (default): one process per step on the machine running the run;
  ``MIDFREQ_MAX_CONCURRENT_STEPS`` caps the parallel steps (default: Dagster's, the CPU count).
- ``in_process``: every step in the run's own process (debugging, tiny machines).
- ``k8s``: each step in its own Kubernetes Job (``pip install dagster-k8s``); the Job image,
  namespace and resources come from the run launcher / Helm values or the run config.
- ``celery``: steps sent to Celery workers (``pip install dagster-celery``). dagster-celery itself
  only reads broker and backend from the run config (``execution: config: broker:``); when
  ``DAGSTER_CELERY_BROKER_URL`` (and ``DAGSTER_CELERY_BACKEND_URL``) are set, the executor is
  configured from them instead, as ``{env: ...}`` references resolved in each run's process, so
  runs launched by schedules and sensors reach the workers too and no URL lands in a job snapshot.

The integrations are imported only when selected, so the default install does not need them.
"""

import os

from dagster import ExecutorDefinition, in_process_executor, multiprocess_executor

EXECUTOR_ENV = "MIDFREQ_EXECUTOR"
MAX_CONCURRENT_ENV = "MIDFREQ_MAX_CONCURRENT_STEPS"
DEFAULT_EXECUTOR = "multiprocess"
EXECUTORS = ("in_process", "multiprocess", "k8s", "celery")
CELERY_BROKER_ENV = "DAGSTER_CELERY_BROKER_URL"
CELERY_BACKEND_ENV = "DAGSTER_CELERY_BACKEND_URL"

_ALIASES = {
    "in-process": "in_process",
    "inprocess": "in_process",
    "multi_process": "multiprocess",
    "kubernetes": "k8s",
    "k8s_job": "k8s",
}


class ExecutorSelectionError(ValueError):
    """``MIDFREQ_EXECUTOR`` names an unknown executor or one whose package is not installed."""


def _normalize(name: str) -> str:
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in EXECUTORS:
        raise ExecutorSelectionError(
            f"{EXECUTOR_ENV}={name!r} is not a known executor; choose one of {', '.join(EXECUTORS)}"
        )
    return key


def _missing(package: str, name: str, err: ImportError) -> ExecutorSelectionError:
    return ExecutorSelectionError(
        f"{EXECUTOR_ENV}={name} needs the {package} package, which is not installed "
        f"(pip install {package}, matching your dagster version): {err}"
    )


def _multiprocess() -> ExecutorDefinition:
    raw = os.environ.get(MAX_CONCURRENT_ENV, "").strip()
    if not raw:
        return multiprocess_executor
    try:
        limit = int(raw)
    except ValueError as err:
        raise ExecutorSelectionError(f"{MAX_CONCURRENT_ENV}={raw!r} is not an integer") from err
    if limit < 0:
        raise ExecutorSelectionError(f"{MAX_CONCURRENT_ENV}={raw!r} must be >= 0 (0 = CPU count)")
    return multiprocess_executor.configured({"max_concurrent": limit}, name="multiprocess_executor")


def select_executor(name: str | None = None) -> ExecutorDefinition:
    """The executor named by ``name`` or ``$MIDFREQ_EXECUTOR`` (default ``multiprocess``)."""
    chosen = _normalize(name if name is not None else os.environ.get(EXECUTOR_ENV, "") or DEFAULT_EXECUTOR)
    if chosen == "in_process":
        return in_process_executor
    if chosen == "multiprocess":
        return _multiprocess()
    if chosen == "k8s":
        try:
            from dagster_k8s import k8s_job_executor
        except ImportError as err:
            raise _missing("dagster-k8s", chosen, err) from err
        return k8s_job_executor
    try:
        from dagster_celery import celery_executor
    except ImportError as err:
        raise _missing("dagster-celery", chosen, err) from err
    return _celery(celery_executor)


def _celery(celery_executor: ExecutorDefinition) -> ExecutorDefinition:
    """``celery_executor`` with broker/backend from the environment when it names them."""
    if not os.environ.get(CELERY_BROKER_ENV, "").strip():
        if os.environ.get(CELERY_BACKEND_ENV, "").strip():
            raise ExecutorSelectionError(
                f"{CELERY_BACKEND_ENV} is set but {CELERY_BROKER_ENV} is not: "
                "the workers' broker must be named too"
            )
        return celery_executor
    config = {"broker": {"env": CELERY_BROKER_ENV}}
    if os.environ.get(CELERY_BACKEND_ENV, "").strip():
        config["backend"] = {"env": CELERY_BACKEND_ENV}
    return celery_executor.configured(config, name="celery_executor")
