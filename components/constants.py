"""Ports, labels and the operator's naming rules, one definition each. The operator's are pinned here, not imported
(importing dask_kubernetes imports dask and writes ~/.config/dask); tests/test_constants.py checks them."""

from __future__ import annotations

API_VERSION = "kubernetes.dask.org/v1"
SCHEDULER_PORT = 8786  # Dask comm, the Service port named tcp-comm
DASHBOARD_PORT = 8787  # scheduler HTTP (dashboard, /health, /metrics, /api/v1), named http-dashboard
WORKER_DASHBOARD_PORT = 8788
# Pinned (`--worker-port`, `--nanny-port`) so the NetworkPolicy can name them instead of opening every port.
WORKER_PORT = 8789
NANNY_PORT = 8790
SCHEDULER_PORT_NAME = "tcp-comm"  # the operator looks the ports up by these names
DASHBOARD_PORT_NAME = "http-dashboard"
WORKER_PORT_NAME = "tcp-worker"
NANNY_PORT_NAME = "tcp-nanny"

# dask_kubernetes.constants (pinned by tests/test_constants.py).
SCHEDULER_NAME_TEMPLATE = "{cluster_name}-scheduler"
# The labels the operator puts on the pods it creates (controller.build_*_deployment_spec).
CLUSTER_NAME_LABEL = "dask.org/cluster-name"
COMPONENT_LABEL = "dask.org/component"
WORKER_GROUP_LABEL = "dask.org/workergroup-name"

# Labels this program sets on the pods (through the DaskCluster and DaskWorkerGroup metadata, which the
# operator copies): stable across a blue/green rename of the DaskCluster, unlike dask.org/cluster-name.
APP_NAME_LABEL = "app.kubernetes.io/name"  # = cluster.name
GROUP_LABEL = "lsdb-k8s/worker-group"  # the worker group as configured: "default" or a cluster.workerGroups key
DEFAULT_GROUP = "default"  # the operator's default group is "<cluster>-default"

# Every object this program creates carries this label.
PART_OF_LABEL, PART_OF = "app.kubernetes.io/part-of", "lsdb-k8s"
LABELS: dict[str, str] = {PART_OF_LABEL: PART_OF}
# Pods in the cluster's namespace with this label may use the scheduler's Dask port (the NetworkPolicy admits them).
CLIENT_LABEL = {"lsdb-k8s/client": "true"}
# Pods in the cluster's namespace with this label may read the scheduler's HTTP port: the dashboard, and with it the
# unauthenticated HTTP API (`/api/v1/retire_workers` …). An opt-in, apart from the client label.
DASHBOARD_LABEL = {"lsdb-k8s/dashboard": "true"}
# Kubernetes (1.22+) labels every namespace with its own name; namespaceSelectors use it.
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
# Both namespaces (operator and cluster) enforce the restricted Pod Security Standard: the API server itself rejects
# a pod that regresses. https://kubernetes.io/docs/concepts/security/pod-security-admission/
POD_SECURITY_LABELS = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "audit", "warn")}
# CatalogStorage's objects (claim, volume, object-store Secret, identity ServiceAccount) carry this one too.
STORAGE_COMPONENT_LABEL: tuple[str, str] = ("app.kubernetes.io/component", "catalog-storage")
SPEC_DIGEST_LENGTH = 8  # the `<h>` of `<cluster.name>-<h>` (components/cluster.py)
# Each derived name must be a DNS-1035 label (Services) or a label value (the operator puts the cluster and worker
# group names in pod labels): 63 characters. Deployments may be DNS subdomains, but Kubernetes advises DNS labels
# "for best compatibility" (pod hostnames): https://kubernetes.io/docs/concepts/workloads/controllers/deployment/
NAME_LIMIT = 63  # dask_kubernetes.constants.KUBERNETES_MAX_RESOURCE_NAME_LENGTH


def scheduler_service_name(cluster_name: str) -> str:
    """The operator's scheduler Service of a DaskCluster, and, of `cluster.name`, the program's stable one."""
    return SCHEDULER_NAME_TEMPLATE.format(cluster_name=cluster_name)


def live_cluster_name(name: str, digest: str) -> str:
    """The DaskCluster (and DaskAutoscaler) name: `cluster.name` plus the spec digest, `<name>-<h>`."""
    return f"{name}-{digest}"


def default_worker_group_name(live: str) -> str:
    """The operator's default worker group (controller.daskcluster_create_components)."""
    return f"{live}-{DEFAULT_GROUP}"


def worker_deployment_name(name: str, group: str) -> str:
    """The longest worker Deployment name of worker group `<live>-<group>`: the operator's
    `<group>-worker-<uuid4().hex[:10]>` (controller.build_worker_deployment_spec), with the longest digest."""
    return f"{live_cluster_name(name, 'f' * SPEC_DIGEST_LENGTH)}-{group}-worker-{'f' * 10}"


def derived_names(name: str) -> dict[str, str]:
    """Every name the program and the operator derive from `cluster.name`, with the longest digest and uuid."""
    live = live_cluster_name(name, "f" * SPEC_DIGEST_LENGTH)
    return {
        "DaskCluster": live,
        "stable Service": scheduler_service_name(name),
        "scheduler Service": scheduler_service_name(live),
        "worker group": default_worker_group_name(live),
        "worker Deployment": worker_deployment_name(name, DEFAULT_GROUP),
    }


def max_cluster_name_length() -> int:
    """The longest `cluster.name` whose every derived name fits NAME_LIMIT."""
    return NAME_LIMIT - max(len(derived) for derived in derived_names("").values())


def pod_selector(cluster_name: str, component: str) -> str:
    """`kubectl -l` selector for the scheduler or worker pods of one DaskCluster."""
    return f"{CLUSTER_NAME_LABEL}={cluster_name},{COMPONENT_LABEL}={component}"


def kubectl(kube_context: str | None) -> str:
    """`kubectl`, with `--context` when the stack names one (every command we print carries it)."""
    return f"kubectl --context {kube_context}" if kube_context else "kubectl"
