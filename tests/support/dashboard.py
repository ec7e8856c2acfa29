"""The metric names a Grafana dashboard's queries select: what the tests check Dask's processes serve."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

METRIC_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{")


def dashboard_metric_names(dashboard: Mapping[str, Any]) -> set[str]:
    """The metric names every query of the dashboard selects (`name{...}`)."""
    names: set[str] = set()
    for panel in dashboard.get("panels", []):
        for target in panel.get("targets", []):
            names.update(METRIC_SELECTOR.findall(str(target.get("expr", ""))))
    return names
