"""The pinned operator's Helm chart, as the locked dask-kubernetes wheel ships it, and its four CRDs.

Low in the house on purpose: the config's CRD pruning rules (placement.py) read the CRDs, and the operator's
component (dask_operator.py) installs them; neither imports the other for it.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
from pathlib import Path
from typing import Any

import yaml

CHART_NAME = "dask-kubernetes-operator"


def packaged_chart_dir() -> Path:
    """The chart shipped inside the installed dask-kubernetes wheel (found without importing it)."""
    spec = importlib.util.find_spec("dask_kubernetes")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("dask-kubernetes is not installed: run `make venv` (it installs docker/requirements.lock)")
    return Path(spec.submodule_search_locations[0]) / "operator" / "deployment" / "helm" / CHART_NAME


def crd_manifests(chart_dir: Path | None = None) -> list[dict[str, Any]]:
    """The four CRDs (DaskCluster, DaskWorkerGroup, DaskJob, DaskAutoscaler), sorted by name."""
    return copy.deepcopy(_read_crds(chart_dir or packaged_chart_dir()))


@functools.cache
def _read_crds(chart_dir: Path) -> list[dict[str, Any]]:
    # The CRD schemas are large: the C loader (when PyYAML has it) keeps program evaluation fast.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    docs = [yaml.load(p.read_text(), Loader=loader) for p in sorted((chart_dir / "crds").glob("*.yaml"))]
    crds = [d for d in docs if d and d.get("kind") == "CustomResourceDefinition"]
    return sorted(crds, key=lambda d: d["metadata"]["name"])
