"""A Dask scheduler preload (it runs in the scheduler, not in the program): only the default worker group's workers
`<live>-default-worker-<uuid>` are candidates to retire, for every caller of `workers_to_close`. Why: every scale-down
makes the pinned operator ask the scheduler which workers to retire (HTTP, else RPC) and delete the Deployments
named in the answer, whatever their group (dask/dask-kubernetes#914); only the default group scales in place. Kept
short: the scheduler logs this text when it starts."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from distributed import Scheduler
    from distributed.scheduler import WorkerState

PREFIX_ENV = "LSDB_DOWNSCALE_WORKER_PREFIX"  # `<live cluster>-default-worker-`, set by the program
PLUGIN_NAME = "lsdb-k8s-default-group-downscaling"


def dask_setup(scheduler: Scheduler) -> None:
    """Register the plugin; without the prefix the scheduler refuses to start rather than retire any group's."""
    from distributed.diagnostics.plugin import SchedulerPlugin

    prefix = os.environ.get(PREFIX_ENV, "")
    if not prefix:
        raise RuntimeError(f"{PREFIX_ENV} is not set: the scheduler cannot tell the default worker group's workers")

    class DefaultGroupDownscaling(SchedulerPlugin):
        name = PLUGIN_NAME

        def valid_workers_downscaling(self, scheduler: Scheduler, workers: list[WorkerState]) -> list[WorkerState]:
            return [ws for ws in workers if str(ws.name).startswith(prefix)]

    scheduler.add_plugin(DefaultGroupDownscaling())
