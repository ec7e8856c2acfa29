"""`cluster`: the DaskCluster's workers, worker groups, scheduler, autoscaler and pod placement."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, Field, WithJsonSchema
from pydantic_core import InitErrorDetails

from components.constants import NAME_LIMIT, derived_names, max_cluster_name_length, worker_deployment_name
from components.placement import crd_dropped, crd_pod_spec, placement_problems
from components.section import (
    DNS_LABEL,
    DefaultText,
    Fix,
    Quantity,
    Section,
    empty_section,
    json_object,
    problem,
    quantity_bytes,
    reject,
)

DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# The live DaskCluster is `<name>-<8 hex>`; its longest derived name, a worker Deployment
# `<name>-<h>-default-worker-<10 hex>`, must stay a 63-character label (components.constants.derived_names).
MAX_CLUSTER_NAME = max_cluster_name_length()
# The guide: "Keep --nthreads at 1 or 2 per worker for LSDB workloads" (policy/lsdb_guardrails.py enforces the
# same bounds on the rendered pods; tests/test_config.py checks the two agree).
MIN_THREADS, MAX_THREADS = 1, 2

# Guide, "Resource sizing recommendations": workers, CPU and memory per worker; the autoscaler range
# spans the table's worker counts. Scheduler values are the guide manifest's.
SIZE_PRESETS: dict[str, dict[str, Any]] = {
    "small": {"replicas": 2, "cpu": "2", "memory": "4Gi", "minimum": 2, "maximum": 4},
    "medium": {"replicas": 4, "cpu": "2", "memory": "4Gi", "minimum": 4, "maximum": 8},
    "large": {"replicas": 6, "cpu": "2", "memory": "8Gi", "minimum": 6, "maximum": 12},
    "xlarge": {"replicas": 12, "cpu": "4", "memory": "16Gi", "minimum": 12, "maximum": 24},
}
LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
LABEL_PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
MAX_LABEL_VALUE = 63  # Kubernetes label values (and the DNS labels worker group keys must be)
POD_SCHEDULING_DOC = "https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/pod-v1/#scheduling"


def _cluster_name(value: str) -> str:
    fix = (
        f"use at most {MAX_CLUSTER_NAME} lowercase letters, digits and '-', starting with a letter and ending with a"
        " letter or digit"
    )
    if not DNS_1035_LABEL.match(value):
        what = "is not a DNS-1035 label (lowercase letters, digits and '-', starting with a letter): Services need one"
        raise reject(what, fix)
    if len(value) > MAX_CLUSTER_NAME:
        kind, longest = max(derived_names(value).items(), key=lambda item: len(item[1]))
        what = (
            f"is {len(value)} characters, more than the maximum of {MAX_CLUSTER_NAME}: the {kind} {longest!r} would be"
            f" {len(longest)} characters, over the Kubernetes limit of {NAME_LIMIT}"
        )
        raise reject(what, fix)
    return value


def label_problems(section: str, labels: Mapping[str, str], fix: str) -> Iterator[InitErrorDetails]:
    """A problem for each entry of `labels` (at `<section>.<key>`) that is not a valid Kubernetes label."""
    for key, value in labels.items():
        prefix, _, name = key.rpartition("/")
        if not name or len(name) > 63 or not LABEL_NAME.match(name) or (prefix and (
            len(prefix) > 253 or not LABEL_PREFIX.match(prefix)
        )):  # fmt: skip
            yield problem((section, key), value, "is not a valid Kubernetes label key", fix)
        elif len(value) > MAX_LABEL_VALUE or not LABEL_NAME.match(value):
            what = "is not a valid Kubernetes label value (≤ 63 characters: letters, digits, -_.)"
            yield problem((section, key), value, what, fix)


class PlacementConfig(Section):
    """Where a pod runs: PodSpec scheduling fields, checked against the Kubernetes schema before deploying."""

    node_selector: dict[str, str] = Field(default_factory=dict)
    """`nodeSelector`: node labels the pod requires (values are strings)."""
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    """`tolerations` (PodSpec), e.g. `[{key: gpu, operator: Exists}]`."""
    affinity: dict[str, Any] = Field(default_factory=dict)
    """`affinity` (PodSpec): `nodeAffinity`, `podAffinity`, `podAntiAffinity`."""
    priority_class_name: str | None = None
    """`priorityClassName` (the PriorityClass must exist)."""
    topology_spread_constraints: Annotated[
        list[dict[str, Any]] | None, DefaultText("workers: spread over nodes; scheduler: none")
    ] = None
    """`topologySpreadConstraints` (PodSpec, without the fields the pinned CRDs drop: `minDomains`,
    `nodeAffinityPolicy`, `nodeTaintsPolicy`, `matchLabelKeys`). Workers default to one preferred spread over nodes
    (`kubernetes.io/hostname`, `ScheduleAnyway`); `[]` turns it off."""

    def pod_fields(self) -> dict[str, Any]:
        """The PodSpec fields as written (camelCase); `topologySpreadConstraints` None means 'the default'."""
        return self.model_dump(by_alias=True)

    def problems(self) -> Iterator[InitErrorDetails]:
        fix = "use a node label as `kubectl get nodes --show-labels` shows it"
        yield from label_problems("nodeSelector", self.node_selector, fix)
        for key, value, what in placement_problems(self.pod_fields()):
            yield problem((key,), value, f"is not valid in a Kubernetes PodSpec ({what})", f"see {POD_SCHEDULING_DOC}")

    def crd_problems(self, kind: str, pod: str) -> Iterator[InitErrorDetails]:
        """A problem (at `placement.<path>`) for each field the pinned CRD of `kind` would prune from
        `spec.<pod>.spec`: valid in a PodSpec, but not in the dask-kubernetes CRD's structural schema."""
        fields = {k: v for k, v in self.pod_fields().items() if v not in (None, {}, [])}
        for path, value in crd_dropped(fields, crd_pod_spec(kind, pod)) if fields else ():
            parent = ".".join(p for p in path[:-1] if isinstance(p, str))  # `kubectl explain` takes no indices
            yield problem(
                ("placement", *path), value, f"is not kept by the pinned {kind} CRD (the API server drops it)",
                f"remove it (`kubectl explain {kind.lower()}.spec.{pod}.spec.{parent}` lists the fields the CRD keeps)",
            )  # fmt: skip


def _worker_memory(value: str) -> str:
    if quantity_bytes(value) < 2**30:
        raise reject("is below 1Gi, too little for an LSDB partition", "use at least 1Gi; the guide recommends 4Gi")
    return value


WorkerMemory = Annotated[Quantity, AfterValidator(_worker_memory)]


class WorkerPodConfig(Section):
    """What every worker group has: threads, resources, placement (the default group and cluster.workerGroups)."""

    # The custom resource whose `spec.worker.spec` holds these workers' pod spec.
    custom_resource: ClassVar[str] = "DaskCluster"

    threads: Annotated[int, Fix(f"use {MIN_THREADS} or {MAX_THREADS} for LSDB workloads")] = Field(
        2, ge=MIN_THREADS, le=MAX_THREADS
    )
    """`--nthreads` (≥ 1; keep 1 or 2 for LSDB)."""
    cpu: Quantity = "2"
    """CPU request per worker."""
    memory: WorkerMemory = "4Gi"
    """Memory per worker: request, limit and Dask's `--memory-limit` (≥ 1Gi)."""
    cpu_limit: Quantity | None = None
    """Adds `limits.cpu` to workers (and the scheduler's CPU as its limit), for namespaces whose ResourceQuota requires
    it."""
    spot: Literal["aws", "gcp", "azure"] | None = None
    """Run these workers on spot nodes of `aws` (EKS), `gcp` (GKE) or `azure` (AKS): the provider's spot node label and
    toleration are added, and the scheduler gets a required node affinity keeping it off spot nodes."""
    placement: PlacementConfig = Field(default_factory=empty_section)
    """Where these workers run (merged with `spot`)."""

    @property
    def memory_bytes(self) -> int:
        return quantity_bytes(self.memory)

    def problems(self) -> Iterator[InitErrorDetails]:
        return self.placement.crd_problems(self.custom_resource, "worker")


class WorkersConfig(WorkerPodConfig):
    replicas: Annotated[int, DefaultText("from `cluster.size`"), Fix("use 0 or more")] = Field(2, ge=0)
    """Initial workers (≥ 0)."""
    cpu: Annotated[Quantity, DefaultText("from `cluster.size`")] = "2"
    """CPU request per worker."""
    memory: Annotated[WorkerMemory, DefaultText("from `cluster.size`")] = "4Gi"
    """Memory per worker: request, limit and Dask's `--memory-limit` (≥ 1Gi)."""


def _group_name(value: str) -> str:
    if not DNS_LABEL.match(value) or len(value) > MAX_LABEL_VALUE:
        raise reject(
            "is not a lowercase RFC 1123 label", "name the group with lowercase letters, digits and '-', e.g. highmem"
        )
    if value == "default":  # the operator's own default group is `<cluster>-default`
        raise reject(
            "is the operator's own default worker group",
            "configure the default group under cluster.workers, or pick another name",
        )
    return value


class WorkerGroupConfig(WorkerPodConfig):
    """An extra DaskWorkerGroup of the live cluster (same image, storage, security and memory rules)."""

    custom_resource: ClassVar[str] = "DaskWorkerGroup"

    replicas: Annotated[int, Fix("use 0 or more")] = Field(1, ge=0)
    """Workers in this group (≥ 0; fixed: only the default group autoscales; a new count starts a new cluster)."""


class SchedulerConfig(Section):
    cpu: Quantity = "2"
    """Scheduler CPU request (the guide's)."""
    memory: Quantity = "6Gi"
    """Scheduler memory, request and limit (the guide's)."""
    placement: PlacementConfig = Field(default_factory=empty_section)
    """Where the scheduler runs (kept off spot nodes whenever any workers use `spot`)."""
    disruption_budget: bool = True
    """A PodDisruptionBudget (`maxUnavailable: 0`) so node drains wait instead of evicting the scheduler (which loses
    every running task)."""

    def problems(self) -> Iterator[InitErrorDetails]:
        return self.placement.crd_problems("DaskCluster", "scheduler")


class AutoscalerConfig(Section):
    enabled: bool = True
    """Create a `DaskAutoscaler`."""
    minimum: Annotated[int, DefaultText("from `cluster.size`"), Fix("use 0 or more")] = Field(2, ge=0)
    """Fewest workers (`0 ≤ minimum ≤ maximum`)."""
    maximum: Annotated[int, DefaultText("from `cluster.size`"), Fix("use 1 or more")] = Field(4, ge=1)
    """Most workers (≥ 1)."""

    def problems(self) -> Iterator[InitErrorDetails]:
        if self.enabled and self.minimum > self.maximum:
            what = f"is greater than cluster.autoscaler.maximum ({self.maximum})"
            yield problem("minimum", self.minimum, what, "lower minimum or raise maximum")


class ClusterConfig(Section):
    """The DaskCluster, its workers, scheduler and autoscaler."""

    name: Annotated[
        str,
        AfterValidator(_cluster_name),
        WithJsonSchema({"type": "string", "pattern": DNS_1035_LABEL.pattern, "maxLength": MAX_CLUSTER_NAME}),
    ] = Field(
        "lsdb-cluster",
        description=f"Base name: the DaskCluster is `<name>-<hash>`, the stable Service `<name>-scheduler`;"
        f" a DNS-1035 label (starts with a letter), ≤ {MAX_CLUSTER_NAME} characters.",
    )
    size: Literal["small", "medium", "large", "xlarge"] = "small"
    """Preset from the sizing table; explicit values override it."""
    workers: WorkersConfig = Field(default_factory=empty_section)
    """The default worker group."""
    scheduler: SchedulerConfig = Field(default_factory=empty_section)
    """The scheduler pod."""
    autoscaler: AutoscalerConfig = Field(default_factory=empty_section)
    """The `DaskAutoscaler`."""
    idle_timeout_seconds: Annotated[int, Fix("use 0 (never) or a number of seconds")] = Field(0, ge=0)
    """Delete the cluster after this many idle seconds (`0` = never; else at least `verify.timeoutSeconds`: a new
    scheduler is idle from its start, and the cluster must outlive its check)."""
    worker_groups: dict[Annotated[str, AfterValidator(_group_name)], WorkerGroupConfig] = Field(default_factory=dict)
    """Extra worker groups by name (a DNS label): each a `DaskWorkerGroup` `<cluster.name>-<h>-<name>` of the live
    cluster with `replicas`, `threads`, `cpu`, `memory`, `cpuLimit`, `spot`, `placement`."""

    @classmethod
    def prepare(cls, value: dict[str, Any]) -> dict[str, Any]:
        """Fill what the user left out from the `size` preset (an unknown size is reported; `small` stands in)."""
        preset = SIZE_PRESETS.get(str(value.get("size")), SIZE_PRESETS["small"])
        out = dict(value)
        for section, keys in (("workers", ("replicas", "cpu", "memory")), ("autoscaler", ("minimum", "maximum"))):
            given = json_object(out.get(section, {}))
            if isinstance(given, dict):
                out[section] = {**{k: preset[k] for k in keys}, **given}
        return out

    def _workers(self, autoscaled: int) -> int:
        # The default group's count (the autoscaler's bound when it scales it) plus every extra group's.
        default = autoscaled if self.autoscaler.enabled else self.workers.replicas
        return default + sum(g.replicas for g in self.worker_groups.values())

    @property
    def max_workers(self) -> int:
        """The most workers the cluster can have."""
        return self._workers(self.autoscaler.maximum)

    @property
    def min_workers(self) -> int:
        """The workers the cluster always has (the autoscaler may scale down to its minimum at any time)."""
        return self._workers(self.autoscaler.minimum)

    @property
    def spot_providers(self) -> list[str]:
        """Providers whose spot nodes some workers use (the scheduler stays off them)."""
        return sorted({g.spot for g in (self.workers, *self.worker_groups.values()) if g.spot})

    def problems(self) -> Iterator[InitErrorDetails]:
        # The longest name derived from a group: its worker Deployments `<live>-<group>-worker-<uuid>`; the
        # DaskWorkerGroup `<live>-<group>` is also a pod label value. Both must fit NAME_LIMIT.
        for group in self.worker_groups:
            longest = worker_deployment_name(self.name, group)
            if len(longest) > NAME_LIMIT:
                room = len(group) - (len(longest) - NAME_LIMIT)  # > 0: the cluster name is short enough
                yield problem(
                    ("workerGroups", group), "{...}",
                    f"makes the operator's worker Deployment names ({len(longest)} characters, e.g. '{longest}') "
                    f"longer than {NAME_LIMIT}",
                    f"shorten the group name to at most {room} characters, or cluster.name",
                )  # fmt: skip
