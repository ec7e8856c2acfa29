"""`catalogs`: HATS catalogs the program copies onto the stack's claim (components/catalogs.py does the copying)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Annotated, Any

from pydantic import BeforeValidator, Field
from pydantic_core import InitErrorDetails

from components.cluster_config import ClusterConfig
from components.section import CatalogCredentialValue, DocType, Section, empty_section, masked_object, problem
from components.storage_config import (
    KNOWN_SCHEMES,
    OBJECT_STORES,
    StorageConfig,
    credential_env,
    credential_problems,
    storage_options,
    url_scheme,
)

HOSTNAME_LABEL = "kubernetes.io/hostname"
DIGEST_LENGTH = 8
SUFFIX = "-provision-"  # the Job is `<name>-provision-<h>`, a 63-character label (its pods carry it as job-name)
MAX_NAME = 63 - len(SUFFIX) - DIGEST_LENGTH


class CatalogConfig(Section):
    """One catalog copied onto the claim at `<storage.mountPath>/catalogs/<name>`."""

    source: str
    """URL of a HATS catalog or catalog collection: `https://`, `s3://`, `gs://`, `abfs://` (aliases as for
    `storage.objectStore.url`). Read through its metadata only: no directory listing is needed."""
    credentials: Annotated[dict[str, CatalogCredentialValue], BeforeValidator(masked_object), DocType("secret")] = (
        Field(default_factory=empty_section)
    )
    """**Secret.** The source's credentials, the keys of `storage.objectStore.credentials` for its scheme, handed to the
    copy Job only. Plaintext values are rejected."""
    anonymous: bool = False
    """Public bucket or container: read it without credentials."""

    @property
    def scheme(self) -> str | None:  # s3, gs, abfs, https, or None
        scheme = url_scheme(self.source)
        return scheme if scheme in OBJECT_STORES else None

    @property
    def credential_env(self) -> dict[str, str]:
        return credential_env(self.scheme, self.credentials)

    @property
    def storage_options(self) -> dict[str, Any]:  # fsspec's beyond the environment, as the cluster gets them
        return storage_options(self.scheme, self.anonymous)

    def problems(self) -> Iterator[InitErrorDetails]:
        if self.scheme is None:
            what, fix = "has no URL scheme the copy can read", f"use a URL starting with one of: {KNOWN_SCHEMES}"
            yield problem("source", self.source, what, fix)
        else:
            yield from credential_problems(self.scheme, self.credentials, "sources")
        if self.anonymous and self.credentials:
            yield problem(
                "anonymous", True, "is set together with credentials",
                "remove anonymous for a private source, or the credentials for a public one",
            )  # fmt: skip


def catalog_path(storage: StorageConfig, name: str) -> str:
    """Where the workers (and the verification) see catalog `name`."""
    return f"{storage.mount_path.rstrip('/')}/catalogs/{name}"


def provisioning_problems(
    catalogs: Mapping[str, CatalogConfig], storage: StorageConfig, node_selector: Mapping[str, str]
) -> Iterator[InitErrorDetails]:
    """Why these catalogs cannot be provisioned onto this storage (empty: they can), at their keys (stack level).
    A hostPath volume is the directory of whichever node the pod runs on: the Job must follow the workers' one node
    (`job_node_selector`)."""
    if not catalogs:
        return
    if storage.kind == "objectStore":
        yield problem(
            "catalogs", sorted(catalogs),
            "are copied onto a claim, but storage.kind objectStore has none (it reads catalogs in place)",
            "remove catalogs and point verify.catalogPath at the catalog's URL in the object store",
        )  # fmt: skip
    elif storage.kind == "none":
        yield problem(
            "catalogs", sorted(catalogs), "are copied onto a claim, but storage.kind none has none",
            "set storage.kind pvc (or nfs, existingClaim)",
        )  # fmt: skip
    if storage.mounts_volume and storage.access_mode == "ReadOnlyMany":
        yield problem(
            "storage.accessMode", storage.access_mode, "lets the provisioning Job not write the claim",
            "use ReadWriteMany (the workers mount it read-only anyway)",
        )  # fmt: skip
    if storage.kind == "hostPath" and HOSTNAME_LABEL not in node_selector:
        yield problem(
            "storage.kind", storage.kind,
            "makes the provisioning Job copy onto the node it lands on, which need not be the workers'",
            f"pin the workers to one node (cluster.workers.placement.nodeSelector.{HOSTNAME_LABEL}: <node>, the "
            "same in every cluster.workerGroups entry; the Job follows it), or use storage.kind pvc or nfs",
        )  # fmt: skip
    for name in catalogs:
        if len(name) > MAX_NAME:
            yield problem(
                ("catalogs", name), name,
                f"is {len(name)} characters; the Job `<name>{SUFFIX}<hash>` must stay a 63-character label",
                f"use at most {MAX_NAME} characters",
            )  # fmt: skip


def job_node_selector(cluster: ClusterConfig) -> dict[str, str]:
    """The provisioning Job's node selector: the workers' one node when every worker group pins the same
    `kubernetes.io/hostname` (so a hostPath copy lands where the workers read it), else none."""
    nodes = {g.placement.node_selector.get(HOSTNAME_LABEL) for g in (cluster.workers, *cluster.worker_groups.values())}
    node = nodes.pop() if len(nodes) == 1 else None
    return {HOSTNAME_LABEL: node} if node else {}
