"""`notebook`: a JupyterLab beside the cluster (components/notebook.py builds its objects)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Annotated, Any

from pydantic import Field
from pydantic_core import InitErrorDetails

from components.section import (
    DIGEST_REF,
    SINGLE_NODE_MODES,
    DefaultText,
    Fix,
    ObjectName,
    Quantity,
    Section,
    empty_section,
    problem,
)


class NotebookStorageConfig(Section):
    """The home directory's claim: without one the home is an emptyDir and nothing the user writes persists."""

    size: Quantity | None = None
    """Create a claim of this size (ReadWriteOnce) for `/home/dask`: notebooks and files written there survive a restart
    of the notebook pod and a cluster upgrade; `pulumi destroy` deletes the claim."""
    storage_class_name: str | None = None
    """With `size`: the claim's storage class (default: the cluster's default)."""
    existing_claim: ObjectName | None = None
    """Mount this existing claim at `/home/dask` instead (never created nor deleted here)."""

    @property
    def enabled(self) -> bool:
        return self.size is not None or self.existing_claim is not None

    def problems(self) -> Iterator[InitErrorDetails]:
        if self.size is not None and self.existing_claim is not None:
            yield problem(
                "existingClaim", self.existing_claim, "is set together with notebook.storage.size",
                "give size (a new claim) or existingClaim (yours), not both",
            )  # fmt: skip
        if self.storage_class_name is not None and self.size is None:
            yield problem(
                "storageClassName", self.storage_class_name, "applies only to a claim created here",
                "set notebook.storage.size too, or remove storageClassName",
            )  # fmt: skip


class NotebookConfig(Section):
    """A JupyterLab Deployment and ClusterIP Service in `namespace`, a client of the scheduler (docs/notebook.md)."""

    enabled: bool = False
    """Run JupyterLab (the image's `notebook` target: the lock plus JupyterLab) beside the cluster, with
    `DASK_SCHEDULER_ADDRESS` set to the stable scheduler Service and the catalogs mounted read-only."""
    cpu: Quantity = "1"
    """Notebook CPU request."""
    memory: Quantity = "4Gi"
    """Notebook memory, request and limit (results are collected here)."""
    dashboard: bool = False
    """Label the notebook pod `lsdb-k8s/dashboard: "true"`: it may then read the scheduler's HTTP port (8787: the
    dashboard and its unauthenticated HTTP API). Off: it reaches the Dask port (8786) only."""
    storage: NotebookStorageConfig = Field(default_factory=empty_section)
    """A claim for the home directory; without it nothing written in the notebook persists."""
    image_ref: Annotated[
        str | None,
        DefaultText("built from docker/ (target `notebook`)"),
        Fix("use repository@sha256:<64 hex> of the notebook target built from the same lock"),
    ] = Field(None, pattern=DIGEST_REF)
    """Prebuilt notebook image `repository@sha256:<digest>` (required when `image.ref` is prebuilt: build it with
    `docker build --target notebook docker/`)."""


def notebook_problems(notebook: NotebookConfig, data: Mapping[str, Any]) -> Iterator[InitErrorDetails]:
    """Why this notebook cannot run with the sections validated before it (`data`: name -> section); empty: it can.
    Reported at the notebook's keys."""
    if not notebook.enabled:
        return
    image, storage = data.get("image"), data.get("storage")
    if image is not None and image.ref is not None and notebook.image_ref is None:
        yield problem(
            "imageRef", None, "is required when image.ref is prebuilt (nothing is built, so no notebook image either)",
            "build `docker build --target notebook docker/`, push it, and set notebook.imageRef to its digest",
        )  # fmt: skip
    # A single-node claim: the notebook, one more pod mounting it, may land on another node than the worker.
    if storage is not None and storage.mounts_volume and storage.access_mode in SINGLE_NODE_MODES:
        yield problem(
            "enabled", True, f"mounts the catalog claim in one more pod, which may run on another node, but "
            f"storage.accessMode is {storage.access_mode}",
            "use ReadWriteMany or ReadOnlyMany, or notebook.enabled false",
        )  # fmt: skip
