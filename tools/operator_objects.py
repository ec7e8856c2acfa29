"""The objects the pinned Dask operator creates for a DaskCluster, built with its own controller's builders.

`operator_objects(daskcluster)` calls `build_scheduler_deployment_spec`, `build_scheduler_service_spec`,
`build_default_worker_group_spec` and `build_worker_deployment_spec` of the pinned
`dask_kubernetes.operator.controller` the way `daskcluster_create_components`, `daskworkergroup_create` and
`daskworkergroup_replica_update` call them (same metadata merging, `kopf.adopt`, `kopf.label`), so the injected
environment (`DASK_SCHEDULER_ADDRESS`, `DASK_WORKER_NAME`) is the operator's own. Used by `make scan` (checkov
on what the operator creates), the NetworkPolicy tests and the pod emulator (tools/pod_emulator.py).
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any


class OperatorError(Exception):
    """The objects cannot be derived (a DaskWorkerGroup of another cluster)."""


@dataclass
class OperatorObjects:
    """What the operator creates for one DaskCluster (plain dicts, as it would send them to the API server)."""

    cluster: dict[str, Any]  # the DaskCluster as the API server holds it (namespace and uid set)
    scheduler_deployment: dict[str, Any]
    scheduler_service: dict[str, Any]
    worker_deployments: list[dict[str, Any]]  # every group's, the default group's first
    extra_worker_groups: list[dict[str, Any]]  # the `worker_groups` as the cluster adopted them

    @property
    def deployments(self) -> list[dict[str, Any]]:
        return [self.scheduler_deployment, *self.worker_deployments]


def _merged_metadata(meta: Any, section: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """The controller's `_get_annotations`/`_get_labels` of the owner, updated by the section's own metadata."""
    from dask_kubernetes.operator.controller import controller as op

    annotations: dict[str, str] = op._get_annotations(meta)
    labels: dict[str, str] = op._get_labels(meta)
    annotations.update(**section.get("metadata", {}).get("annotations", {}))
    labels.update(**section.get("metadata", {}).get("labels", {}))
    return annotations, labels


def operator_objects(
    daskcluster: Mapping[str, Any],
    namespace: str = "default",
    uuids: Iterable[str] | None = None,
    worker_groups: Iterable[Mapping[str, Any]] = (),
) -> OperatorObjects:
    """Derive the operator's objects from a DaskCluster manifest with the pinned controller's builders.

    `namespace` applies when the manifest has none (as `kubectl apply` without -n). `uuids` fixes the
    worker Deployment suffixes (the operator uses `uuid4().hex[:10]`). `worker_groups`: extra DaskWorkerGroup
    manifests of this cluster, handled as `daskworkergroup_create` does (adopted by the cluster, then scaled).
    """
    import kopf
    from dask_kubernetes.operator.controller import controller as op

    raw = copy.deepcopy(dict(daskcluster))
    raw.setdefault("metadata", {}).setdefault("namespace", namespace)
    raw["metadata"].setdefault("uid", str(uuid.uuid4()))  # the API server assigns one; owner references need it
    cluster_body = kopf.Body(raw)  # type: ignore[arg-type]
    name, ns = cluster_body.meta.name, cluster_body.meta.namespace
    assert name and ns
    spec = cluster_body.spec

    # daskcluster_create_components
    scheduler_spec = spec.get("scheduler", {})
    annotations, labels = _merged_metadata(cluster_body.meta, scheduler_spec)
    scheduler_deployment = op.build_scheduler_deployment_spec(name, scheduler_spec.get("spec"), annotations, labels)
    kopf.adopt(scheduler_deployment, owner=cluster_body)
    scheduler_service = op.build_scheduler_service_spec(name, scheduler_spec.get("service"), annotations, labels)
    kopf.adopt(scheduler_service, owner=cluster_body)
    worker_spec = spec.get("worker", {})
    annotations, labels = _merged_metadata(cluster_body.meta, worker_spec)
    groups = [_adopted(op.build_default_worker_group_spec(name, worker_spec, annotations, labels), cluster_body, ns)]
    for extra in worker_groups:
        if extra["spec"]["cluster"] != name:
            group, other = extra["metadata"]["name"], extra["spec"]["cluster"]
            raise OperatorError(f"DaskWorkerGroup {group} belongs to cluster {other}, not {name}")
        groups.append(_adopted(extra, cluster_body, ns))
    suffixes = iter(uuids or ())
    worker_deployments = [d for g in groups for d in _scaled(g, cluster_body, ns, suffixes)]

    plain = copy.deepcopy  # detach from kopf's views and from each other
    return OperatorObjects(
        cluster=plain(raw),
        scheduler_deployment=plain(scheduler_deployment),
        scheduler_service=plain(scheduler_service),
        worker_deployments=[plain(d) for d in worker_deployments],
        extra_worker_groups=[plain(g) for g in groups[1:]],
    )


def _adopted(group: Mapping[str, Any], cluster_body: Any, namespace: str) -> dict[str, Any]:
    """daskworkergroup_create: the cluster adopts the group (kr8s adopt sets the owner reference and namespace)."""
    import kopf

    adopted = copy.deepcopy(dict(group))
    adopted["metadata"]["namespace"] = namespace
    adopted["metadata"]["uid"] = str(uuid.uuid4())
    kopf.append_owner_reference(adopted, owner=cluster_body)
    return adopted


def _scaled(group: dict[str, Any], cluster_body: Any, namespace: str, suffixes: Iterator[str]) -> list[dict[str, Any]]:
    """daskworkergroup_replica_update, scaling a group from 0 to its spec.worker.replicas."""
    import kopf
    from dask_kubernetes.operator.controller import controller as op

    body = kopf.Body(group)  # type: ignore[arg-type]
    worker = body.spec["worker"]
    annotations, labels = _merged_metadata(body.meta, worker)
    deployments = []
    for _ in range(int(worker.get("replicas", 1))):
        data: dict[str, Any] = op.build_worker_deployment_spec(
            worker_group_name=body.meta.name,
            namespace=namespace,
            cluster_name=body.spec["cluster"],
            uuid=next(suffixes, None) or uuid.uuid4().hex[:10],
            pod_spec=worker["spec"],
            annotations=annotations,
            labels=labels,
        )
        kopf.adopt(data, owner=body)
        kopf.label(data, labels=dict(cluster_body.meta.labels))
        deployments.append(data)
    return deployments
