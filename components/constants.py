"""Facts shared by the program, the verification and the offline tools: ports, labels, operator names.

One definition each. The operator's own naming rules are pinned here rather than imported from
`dask_kubernetes` because importing that package at program evaluation imports dask and writes
`~/.config/dask` (`dask_kubernetes/config.py`); tests/test_constants.py checks them against the pinned wheel.
"""

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
KUBERNETES_MAX_RESOURCE_NAME_LENGTH = 63
# The labels the operator puts on the pods it creates (controller.build_*_deployment_spec).
CLUSTER_NAME_LABEL = "dask.org/cluster-name"
COMPONENT_LABEL = "dask.org/component"
WORKER_GROUP_LABEL = "dask.org/workergroup-name"

# Every object this program creates carries these labels.
PART_OF = "lsdb-k8s"
LABELS: dict[str, str] = {"app.kubernetes.io/part-of": PART_OF}
# The DaskCluster's own label, which the operator copies onto every pod it creates (blue and green alike).
APP_NAME_LABEL = "app.kubernetes.io/name"
# Pods in the cluster's namespace with this label may use the scheduler (the NetworkPolicy admits them).
CLIENT_LABEL = {"lsdb-k8s/client": "true"}
# Kubernetes (1.22+) labels every namespace with its own name; namespaceSelectors use it.
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


def scheduler_service_name(cluster_name: str) -> str:
    """The Service (and Deployment) the operator creates for a DaskCluster's scheduler."""
    return SCHEDULER_NAME_TEMPLATE.format(cluster_name=cluster_name)


def pod_selector(cluster_name: str, component: str) -> str:
    """`kubectl -l` selector for the scheduler or worker pods of one DaskCluster."""
    return f"{CLUSTER_NAME_LABEL}={cluster_name},{COMPONENT_LABEL}={component}"


def kubectl(kube_context: str | None) -> str:
    """`kubectl`, with `--context` when the stack names one (every command we print carries it)."""
    return f"kubectl --context {kube_context}" if kube_context else "kubectl"
