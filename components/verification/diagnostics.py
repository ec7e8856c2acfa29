"""The guide's troubleshooting per stage, naming the real namespace, cluster, kube context and the objects the
operator creates (`components.constants`)."""

from __future__ import annotations

from components.constants import (
    CLUSTER_NAME_LABEL,
    DASHBOARD_PORT,
    SCHEDULER_PORT,
    STORAGE_COMPONENT_LABEL,
    kubectl,
    pod_selector,
    scheduler_service_name,
)
from components.verification.query import ClusterRef


class Fixes:
    """`fixes(stage)`: what to do when `stage` fails; unknown names show as `<namespace>` and `<cluster>`."""

    def __init__(self, cluster: ClusterRef | None = None, catalog_path: str | None = None) -> None:
        cluster = cluster or ClusterRef()
        self.ns = cluster.namespace or "<namespace>"
        self.cl = cluster.cluster_name or "<cluster>"
        self.kubectl = kubectl(cluster.kube_context)
        self.catalog_path = catalog_path or ""

    def port_forward(self) -> str:
        """The fix when the port-forward itself cannot start."""
        return (
            f"check this machine reaches the cluster with the stack's kube context (kubeContext in the stack config,"
            f" KUBECONFIG): `{self.kubectl} get svc {scheduler_service_name(self.cl)} -n {self.ns}`; then:"
            f" {self('connect')}"
        )

    def _open_object_store(self) -> str:
        """The `open` fix for a catalog URL: the storage settings the workers used."""
        if self.catalog_path.split("://", 1)[0].lower() in ("http", "https"):
            return (
                f"the workers read {self.catalog_path} over HTTP: check the URL serves the catalog's properties"
                " and partition files (`curl -I <url>/hats.properties`) and that the pods may reach that host"
            )
        return (
            f"the workers read {self.catalog_path} with the credentials of storage.objectStore: check the access key"
            " pair (re-set a wrong one with `pulumi config set --path --secret"
            " storage.objectStore.credentials.<key> <value>` and run `pulumi up`; the Secret is"
            f" `{self.kubectl} get secret -n {self.ns} -l {'='.join(STORAGE_COMPONENT_LABEL)}` (keys: the files the"
            " driver reads; abfs: its variables)), or the IAM binding of storage.objectStore.identity, or set"
            " storage.objectStore.anonymous true for a public bucket; check storage.objectStore.url (and endpointUrl)"
            " points at the bucket and the catalog exists there; requested columns must exist in the catalog"
        )

    def __call__(self, stage: str) -> str:
        ns, cl, k = self.ns, self.cl, self.kubectl
        svc, worker_pods = scheduler_service_name(cl), pod_selector(cl, "worker")
        texts = {
            "config": "check the verification settings (verify.* in the stack config, or the command-line flags)",
            "connect": (
                f"verify the scheduler pod is running: `{k} get pods -n {ns} -l {pod_selector(cl, 'scheduler')}`;"
                f" check the service exists: `{k} get svc {svc} -n {ns}`; inside the cluster use the fully"
                f" qualified name tcp://{svc}.{ns}.svc.cluster.local:{SCHEDULER_PORT}; from a workstation use"
                f" connect: portForward (or `{k} port-forward -n {ns} svc/{svc} {SCHEDULER_PORT}:{SCHEDULER_PORT}`"
                f" and tcp://localhost:{SCHEDULER_PORT}). Port {SCHEDULER_PORT} speaks the Dask protocol;"
                f" {DASHBOARD_PORT} is the dashboard (HTTP) and cannot be the scheduler address"
            ),
            "workers": (
                f"`{k} get pods -n {ns} -l {worker_pods}`; worker pods stay Pending until the"
                f" catalog PVC is Bound (`{k} get pvc -n {ns}`); look for OOMKilled, ImagePullBackOff or"
                f" CrashLoopBackOff in `{k} describe pod -n {ns} <worker-pod>` and read `{k} logs -n {ns}"
                f" <worker-pod>`; with the autoscaler, verify.minWorkers must not exceed its minimum"
            ),
            "versions": (
                "use the digest-pinned image built from docker/requirements.lock for scheduler and workers, and"
                " install the same lock in the client (`pip install -r docker/requirements.lock`); a package missing"
                f" on the cluster means a pod runs another image: `{k} get pods -n {ns} -l {CLUSTER_NAME_LABEL}={cl}"
                " -o jsonpath='{..image}'`"
            ),
            "open": self._open_object_store()
            if "://" in self.catalog_path
            else (
                "give the catalog path as the workers see it (the volume mountPath inside the worker pods, e.g."
                f" /data/<catalog>), not a path on this machine; check the catalog PVC is Bound (`{k} get pvc -n"
                f" {ns}`) and mounted in the workers (`{k} describe pod -n {ns} -l {worker_pods}`);"
                " for object stores (s3://, gs://, abfs://) check the workers' credentials secret;"
                " requested columns must exist in the catalog"
            ),
            "compute": (
                f"a worker failed while reading the partitions: look for OOMKilled in `{k} describe pod -n {ns}"
                f" -l {worker_pods}` and errors in `{k} logs -n {ns} <worker-pod>`; raise the"
                " worker memory or query a smaller cone; check every partition file of the catalog is readable by"
                " the workers"
            ),
            "rows": (
                "the cone has no (or too few) rows: check verify.cone ra/dec (degrees) and radiusArcsec (arcseconds)"
                " point at a region the catalog covers, or lower verify.minRows"
            ),
        }
        return texts[stage]
