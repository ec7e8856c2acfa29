"""The scheduler preload (components/scheduler_downscale.py) in-process, with a stand-in scheduler: which workers
it offers for retirement. tests/test_worker_groups_scale.py checks the same on real Dask processes (slow); this is
the fast test mutation testing runs (docs/mutation.md)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from distributed.diagnostics.plugin import SchedulerPlugin

from components.scheduler_downscale import PLUGIN_NAME, PREFIX_ENV, dask_setup


class Scheduler:
    def __init__(self) -> None:
        self.plugins: list[Any] = []

    def add_plugin(self, plugin: Any) -> None:
        self.plugins.append(plugin)


def test_only_the_default_groups_workers_are_offered_for_retirement(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PREFIX_ENV, "lsdb-x-default-worker-")
    scheduler = Scheduler()
    dask_setup(scheduler)  # type: ignore[arg-type]
    (plugin,) = scheduler.plugins
    assert isinstance(plugin, SchedulerPlugin) and plugin.name == PLUGIN_NAME
    workers = [SimpleNamespace(name=n) for n in ("lsdb-x-default-worker-a1", "lsdb-x-highmem-worker-b2", 3)]
    assert plugin.valid_workers_downscaling(scheduler, workers) == [workers[0]]


def test_a_numeric_worker_name_is_compared_as_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PREFIX_ENV, "1")
    scheduler = Scheduler()
    dask_setup(scheduler)  # type: ignore[arg-type]
    workers = [SimpleNamespace(name=12), SimpleNamespace(name=21)]
    assert scheduler.plugins[0].valid_workers_downscaling(scheduler, workers) == [workers[0]]


@pytest.mark.parametrize("value", [None, ""])
def test_without_the_prefix_the_scheduler_refuses_to_start(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    if value is None:
        monkeypatch.delenv(PREFIX_ENV, raising=False)
    else:
        monkeypatch.setenv(PREFIX_ENV, value)
    scheduler = Scheduler()
    with pytest.raises(RuntimeError, match=f"^{PREFIX_ENV} is not set: the scheduler cannot tell the default"):
        dask_setup(scheduler)  # type: ignore[arg-type]
    assert scheduler.plugins == []
