"""Which executor runs the jobs: a Dask cluster when TRAINING_CLUSTER names one, else local
processes (measured faster to start than a local Dask cluster; see the README)."""

from __future__ import annotations

from training.jobs.queue import Executor
from training.settings import ServerSettings
from training.store.runs import RunStore


def make_executor(store: RunStore, settings: ServerSettings, *, recover: bool = True) -> Executor:
    """``recover``: take up the store's waiting and running runs at start (the service)."""
    if settings.training_cluster:
        from training.jobs.cluster import ClusterExecutor

        return ClusterExecutor(
            store,
            address=settings.training_cluster,
            max_queued=settings.training_max_queued,
            connect_timeout_s=settings.training_cluster_timeout_s,
            recover=recover,
        )
    from training.jobs.executor import LocalProcessExecutor

    return LocalProcessExecutor(
        store,
        max_jobs=settings.training_max_jobs,
        max_queued=settings.training_max_queued,
        memory_mb=settings.training_job_memory_mb,
        logs=settings.run_logs_dir,
        recover=recover,
    )
