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
SCHEDULER_PORT_NAME = "tcp-comm"  # the operator looks the ports up by these names
DASHBOARD_PORT_NAME = "http-dashboard"

# dask_kubernetes.constants (pinned by tests/test_constants.py).
SCHEDULER_NAME_TEMPLATE = "{cluster_name}-scheduler"
KUBERNETES_MAX_RESOURCE_NAME_LENGTH = 63
# The labels the operator puts on the pods it creates (controller.build_*_deployment_spec).
CLUSTER_NAME_LABEL = "dask.org/cluster-name"
COMPONENT_LABEL = "dask.org/component"
WORKER_GROUP_LABEL = "dask.org/workergroup-name"

# Labels this program sets on the pods (through the DaskCluster and DaskWorkerGroup metadata, which the
# operator copies): stable across a blue/green rename of the DaskCluster, unlike dask.org/cluster-name.
APP_NAME_LABEL = "app.kubernetes.io/name"  # = cluster.name
GROUP_LABEL = "lsdb-k8s/worker-group"  # the worker group as configured: "default" or a cluster.workerGroups key
DEFAULT_GROUP = "default"  # the operator's default group is "<cluster>-default"

# Every object this program creates carries these labels.
PART_OF = "lsdb-k8s"
LABELS: dict[str, str] = {"app.kubernetes.io/part-of": PART_OF}


def scheduler_service_name(cluster_name: str) -> str:
    """The Service (and Deployment) the operator creates for a DaskCluster's scheduler."""
    return SCHEDULER_NAME_TEMPLATE.format(cluster_name=cluster_name)


def pod_selector(cluster_name: str, component: str) -> str:
    """`kubectl -l` selector for the scheduler or worker pods of one DaskCluster."""
    return f"{CLUSTER_NAME_LABEL}={cluster_name},{COMPONENT_LABEL}={component}"


def kubectl(kube_context: str | None) -> str:
    """`kubectl`, with `--context` when the stack names one (every command we print carries it)."""
    return f"kubectl --context {kube_context}" if kube_context else "kubectl"
