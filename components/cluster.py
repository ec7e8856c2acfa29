"""LsdbDaskCluster: the DaskCluster, DaskAutoscaler, DaskWorkerGroups and scheduler PodDisruptionBudget; the pod
pieces every pod of the stack shares (the notebook's, the catalog copy Job's).

Blue/green (docs/lifecycle.md): the pinned operator applies nothing of a changed DaskCluster but `replicas`, so the
DaskCluster is `<cluster.name>-<h>`, `<h>` a digest of all it does not reconcile (`unreconciled`). The manifests are
built once with the image's identity (known at evaluation); the resources carry the pushed digest (`with_image`).
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components import scheduler_downscale
from components.config import ClusterConfig, WorkerPodConfig
from components.constants import (
    API_VERSION,
    APP_NAME_LABEL,
    CLUSTER_NAME_LABEL,
    COMPONENT_LABEL,
    DASHBOARD_PORT,
    DASHBOARD_PORT_NAME,
    DEFAULT_GROUP,
    GROUP_LABEL,
    LABELS,
    NANNY_PORT,
    NANNY_PORT_NAME,
    SCHEDULER_PORT,
    SCHEDULER_PORT_NAME,
    SPEC_DIGEST_LENGTH,
    WORKER_DASHBOARD_PORT,
    WORKER_PORT,
    WORKER_PORT_NAME,
    default_worker_group_name,
    live_cluster_name,
    scheduler_service_name,
)
from components.options import child_options
from components.placement import pod_placement, worker_spread_selector
from components.storage import KEY_VOLUME, PodStorage

SCRATCH_DIR = "/scratch"  # Dask's local directory for spilling; an emptyDir, so spill never fills the image layer
RUN_AS_USER = 10001  # the image's non-root `dask` user (docker/Dockerfile); >= 10000, outside host user ranges
HOME_DIR = "/home/dask"  # the image's WORKDIR and HOME (dask writes ~/.config/dask there)
# The root filesystem is read-only: every path Dask, Python or a library may write is an emptyDir.
WRITABLE_DIRS = {"dask-scratch": SCRATCH_DIR, "tmp": "/tmp", "home": HOME_DIR}
TLS_DIR = "/etc/dask-tls"  # the cluster's certificate Secret, mounted read-only
TLS_FILES = {"ca": "ca.crt", "cert": "tls.crt", "key": "tls.key"}  # keys of the Secret (kubernetes.io/tls + ca.crt)


# distributed's default routes plus the API: the operator's autoscaler reads /api/v1/adaptive_target (its fallback
# RPC breaks across Dask versions). Dask parses the value with ast.literal_eval: a list literal, never "a,b".
SCHEDULER_HTTP_ROUTES = [
    "distributed.http.scheduler.prometheus",
    "distributed.http.scheduler.info",
    "distributed.http.scheduler.json",
    "distributed.http.health",
    "distributed.http.proxy",
    "distributed.http.statics",
    "distributed.http.scheduler.api",
]

POD_SECURITY_CONTEXT = {
    "runAsNonRoot": True,
    "runAsUser": RUN_AS_USER,
    "runAsGroup": RUN_AS_USER,
    "fsGroup": RUN_AS_USER,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY_CONTEXT = {
    "allowPrivilegeEscalation": False,
    "privileged": False,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
    "readOnlyRootFilesystem": True,
}


@dataclass(frozen=True)
class ClusterSpec:
    """What the manifests of one DaskCluster are built from, but the image."""

    cluster: ClusterConfig
    namespace: str
    storage: PodStorage
    pull_secret: str | None = None
    tls_secret: str | None = None  # the Secret holding `TLS_FILES` (certificate, key, the stack's CA); None: no TLS


def worker_args(workers: WorkerPodConfig) -> list[str]:
    # No scheduler address argument: DASK_SCHEDULER_ADDRESS (the operator's tcp://, or ours with TLS) says it.
    return [
        "dask", "worker",
        "--name", "$(DASK_WORKER_NAME)",
        "--nthreads", str(workers.threads),
        "--memory-limit", str(workers.memory_bytes),
        "--dashboard-address", f":{WORKER_DASHBOARD_PORT}",
        "--worker-port", str(WORKER_PORT),
        "--nanny-port", str(NANNY_PORT),
        "--local-directory", SCRATCH_DIR,
    ]  # fmt: skip


def writable_volumes() -> list[dict[str, Any]]:
    return [{"name": name, "emptyDir": {}} for name in WRITABLE_DIRS]


def secret_volume(name: str, secret: str) -> dict[str, Any]:
    return {"name": name, "secret": {"secretName": secret, "defaultMode": 0o440}}


def writable_mounts() -> list[dict[str, Any]]:
    return [{"name": name, "mountPath": path} for name, path in WRITABLE_DIRS.items()]


def tls_env(tls: bool) -> list[dict[str, str]]:
    """Dask's own TLS keys (distributed.comm.tls.*): every role presents the cluster certificate, trusts the CA,
    and plain TCP is refused. https://distributed.dask.org/en/stable/tls.html"""
    if not tls:
        return []
    ca, cert, key = (f"{TLS_DIR}/{TLS_FILES[k]}" for k in ("ca", "cert", "key"))
    env = [{"name": "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION", "value": "True"}]
    env.append({"name": "DASK_DISTRIBUTED__COMM__TLS__CA_FILE", "value": ca})
    for role in ("SCHEDULER", "WORKER", "CLIENT"):
        env.append({"name": f"DASK_DISTRIBUTED__COMM__TLS__{role}__CERT", "value": cert})
        env.append({"name": f"DASK_DISTRIBUTED__COMM__TLS__{role}__KEY", "value": key})
    return env


def tls_volumes(tls_secret: str | None) -> list[dict[str, Any]]:
    return [] if tls_secret is None else [secret_volume("dask-tls", tls_secret)]


def tls_mounts(tls: bool) -> list[dict[str, Any]]:
    return [{"name": "dask-tls", "mountPath": TLS_DIR, "readOnly": True}] if tls else []


def http_probes(port: str, path: str, initial_delay: int) -> dict[str, Any]:
    """Readiness and a generous liveness (a worker or kernel busy with a large partition answers late, and a
    restart loses its data) on an HTTP path: the worker's /health, the notebook's /api."""
    get = {"httpGet": {"port": port, "path": path}}
    return {
        "readinessProbe": {**get, "periodSeconds": 5, "timeoutSeconds": 5},
        "livenessProbe": {**get, "initialDelaySeconds": initial_delay, "periodSeconds": 20, "timeoutSeconds": 10,
                          "failureThreshold": 6},
    }  # fmt: skip


def scheduler_service_ports() -> list[dict[str, Any]]:
    """The ports of a scheduler Service (the operator's and the stable one): targets named like the container's."""
    return [
        {"name": name, "protocol": "TCP", "port": port, "targetPort": name}
        for name, port in ((SCHEDULER_PORT_NAME, SCHEDULER_PORT), (DASHBOARD_PORT_NAME, DASHBOARD_PORT))
    ]


def pod_spec(
    containers: list[dict[str, Any]],
    volumes: list[dict[str, Any]],
    pull_secret: str | None,
    service_account: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """Every pod of the stack: restricted Pod Security, and no API token (none calls the Kubernetes API; a workload
    identity's webhooks inject their own token, GKE's metadata server identifies the pod)."""
    spec: dict[str, Any] = {
        "securityContext": POD_SECURITY_CONTEXT,
        "automountServiceAccountToken": False,
        "containers": containers,
    }
    if service_account:
        spec["serviceAccountName"] = service_account
    if volumes:
        spec["volumes"] = volumes
    if pull_secret:
        spec["imagePullSecrets"] = [{"name": pull_secret}]
    return spec | fields


def pod_metadata(storage: PodStorage) -> dict[str, Any]:
    """Pod-template metadata (the operator copies it onto the pods): the workload identity's label and annotation."""
    items = (("labels", storage.pod_labels), ("annotations", storage.pod_annotations))
    return {key: dict(value) for key, value in items if value}


def worker_template(spec: ClusterSpec, group: str, workers: WorkerPodConfig, image: str) -> dict[str, Any]:
    """`spec.worker` of a DaskCluster (the default group) or DaskWorkerGroup, without `replicas` nor, with TLS, the
    scheduler address (`_name_cluster` adds it). Only threads, resources and placement differ between groups;
    GROUP_LABEL names the group on the pods whatever the DaskCluster's name."""
    storage, tls = spec.storage, spec.tls_secret is not None
    worker: dict[str, Any] = {
        "name": "worker",
        "image": image,
        "args": worker_args(workers),
        "resources": {
            "requests": {"cpu": workers.cpu, "memory": workers.memory},
            "limits": {"memory": workers.memory} | ({"cpu": workers.cpu_limit} if workers.cpu_limit else {}),
        },
        "ports": [
            {"name": DASHBOARD_PORT_NAME, "containerPort": WORKER_DASHBOARD_PORT, "protocol": "TCP"},
            {"name": WORKER_PORT_NAME, "containerPort": WORKER_PORT, "protocol": "TCP"},
            {"name": NANNY_PORT_NAME, "containerPort": NANNY_PORT, "protocol": "TCP"},
        ],
        **http_probes(DASHBOARD_PORT_NAME, "/health", 15),
        "volumeMounts": [*storage.worker_mounts, *writable_mounts(), *tls_mounts(tls)],
        "securityContext": CONTAINER_SECURITY_CONTEXT,
    }
    if worker_env := [*storage.env, *tls_env(tls)]:
        worker["env"] = worker_env
    volumes = [*storage.volumes, *writable_volumes(), *tls_volumes(spec.tls_secret)]
    spread = worker_spread_selector(spec.cluster.name, group)  # over nodes, by default
    placement = pod_placement(workers.placement.pod_fields(), spot=workers.spot, spread=spread)
    metadata = pod_metadata(storage)
    metadata["labels"] = {GROUP_LABEL: group, **metadata.get("labels", {})}
    return {
        "metadata": metadata,
        "spec": pod_spec([worker], volumes, spec.pull_secret, storage.service_account, **placement),
    }


def worker_group_name(cluster_name: str, group: str) -> str:
    """The DaskWorkerGroup of `group` for the DaskCluster `cluster_name` (the operator's own is `<cluster>-default`)."""
    return f"{cluster_name}-{group}"


def worker_group_manifest(spec: ClusterSpec, cluster_name: str, group: str, worker: dict[str, Any]) -> dict[str, Any]:
    """The DaskWorkerGroup of one extra group, for the live DaskCluster `cluster_name`."""
    cluster, namespace = spec.cluster, spec.namespace
    labels = {**LABELS, APP_NAME_LABEL: cluster.name, GROUP_LABEL: group}
    metadata: dict[str, Any] = {
        "name": worker_group_name(cluster_name, group),
        "namespace": namespace,
        "labels": labels,
    }
    # The operator copies the DaskWorkerGroup's own annotations (not the DaskCluster's) onto its Deployments.
    if skips := scanner_skips(cluster.worker_groups[group].cpu_limit, spec.storage):
        metadata["annotations"] = skips
    return {"apiVersion": API_VERSION, "kind": "DaskWorkerGroup", "metadata": metadata,
            "spec": {"cluster": cluster_name, "worker": worker}}  # fmt: skip


def scheduler_disruption_budget_manifest(
    cluster: ClusterConfig, namespace: str, cluster_name: str
) -> dict[str, Any] | None:
    """No voluntary eviction (drain, node upgrade, autoscaler scale-down) of the live scheduler pod; deletions (a
    blue/green switch) are not evictions. None when `cluster.scheduler.disruptionBudget` is false."""
    if not cluster.scheduler.disruption_budget:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {
            "name": scheduler_service_name(cluster_name),
            "namespace": namespace,
            "labels": {**LABELS, APP_NAME_LABEL: cluster.name},
        },
        "spec": {
            "maxUnavailable": 0,
            "selector": {"matchLabels": {CLUSTER_NAME_LABEL: cluster_name, COMPONENT_LABEL: "scheduler"}},
        },
    }


def spec_digest(value: Any) -> str:
    """The one digest of manifests: `<h>` is its prefix, the verification's `clusterSpecHash` all of it."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def unreconciled(dask_cluster: dict[str, Any], workers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What `<h>` digests: all but what the operator reconciles (the default group's `replicas`, `idleTimeout`). The
    extra groups' `replicas` stay in: the scheduler offers only the default group's workers to retire."""
    view = copy.deepcopy({"daskCluster": dask_cluster, "workerGroups": workers})
    view["daskCluster"]["spec"].pop("idleTimeout")
    view["daskCluster"]["spec"]["worker"].pop("replicas")
    return view


def scheduler_downscale_preload() -> dict[str, str]:
    """components/scheduler_downscale.py as source text (no image change; a change of it changes `<h>`), a list
    literal with `$` doubled (Kubernetes expands `$(VAR)`)."""
    source = Path(scheduler_downscale.__file__).read_text()
    return {"name": "DASK_DISTRIBUTED__SCHEDULER__PRELOAD", "value": json.dumps([source]).replace("$", "$$")}


def scheduler_downscale_prefix(live_name: str) -> dict[str, str]:
    """The preload's worker-name prefix: the default group's, `<live>-default-worker-`."""
    return {"name": scheduler_downscale.PREFIX_ENV, "value": f"{default_worker_group_name(live_name)}-worker-"}


def unnamed_dask_cluster(spec: ClusterSpec, image: str) -> dict[str, Any]:
    """The DaskCluster without what names the live cluster (name, Service selector, TLS scheduler address)."""
    cluster, storage, tls = spec.cluster, spec.storage, spec.tls_secret is not None
    # A quota namespace that needs limits.cpu on workers needs it on the scheduler too (guide tip).
    cpu_limited = any(g.cpu_limit for g in (cluster.workers, *cluster.worker_groups.values()))
    s = cluster.scheduler
    scheduler = {
        "name": "scheduler",
        "image": image,
        "args": [
            "dask",
            "scheduler",
            *(["--protocol", "tls"] if tls else []),
            "--port",
            str(SCHEDULER_PORT),
            "--dashboard-address",
            f":{DASHBOARD_PORT}",
        ],
        "env": [
            {"name": "DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES", "value": json.dumps(SCHEDULER_HTTP_ROUTES)},
            scheduler_downscale_preload(),
            *storage.env,
            *tls_env(tls),
        ],
        "resources": {
            "requests": {"cpu": s.cpu, "memory": s.memory},
            "limits": {"memory": s.memory} | ({"cpu": s.cpu} if cpu_limited else {}),
        },
        "ports": [
            {"name": SCHEDULER_PORT_NAME, "containerPort": SCHEDULER_PORT, "protocol": "TCP"},
            {"name": DASHBOARD_PORT_NAME, "containerPort": DASHBOARD_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": {
            "httpGet": {"port": DASHBOARD_PORT_NAME, "path": "/health"},
            "initialDelaySeconds": 0,
            "periodSeconds": 1,
            "timeoutSeconds": 300,
        },
        "livenessProbe": {
            "httpGet": {"port": DASHBOARD_PORT_NAME, "path": "/health"},
            "initialDelaySeconds": 15,
            "periodSeconds": 20,
        },
        "securityContext": CONTAINER_SECURITY_CONTEXT,
    }
    # The scheduler opens catalogs too (lsdb reads metadata where the client asks): it mounts the object-store key.
    scheduler_volumes = [v for v in storage.volumes if v["name"] == KEY_VOLUME]
    scheduler_mounts = [m for m in storage.worker_mounts if m["name"] == KEY_VOLUME]
    scheduler["volumeMounts"] = [*scheduler_mounts, *writable_mounts(), *tls_mounts(tls)]
    # Copied onto every pod: `app.kubernetes.io/name: <cluster.name>` selects blue and green alike.
    labels = {**LABELS, APP_NAME_LABEL: cluster.name}
    metadata: dict[str, Any] = {"namespace": spec.namespace, "labels": labels}
    if skips := scanner_skips(cluster.workers.cpu_limit, storage):
        metadata["annotations"] = skips
    body: dict[str, Any] = {
        "idleTimeout": cluster.idle_timeout_seconds,
        "worker": {
            "replicas": cluster.workers.replicas,
            **worker_template(spec, DEFAULT_GROUP, cluster.workers, image),
        },
        "scheduler": {
            "spec": pod_spec(
                [scheduler],
                [*scheduler_volumes, *writable_volumes(), *tls_volumes(spec.tls_secret)],
                spec.pull_secret,
                storage.service_account,
                # kept off the spot nodes any worker group uses
                **pod_placement(cluster.scheduler.placement.pod_fields(), avoid_spot=cluster.spot_providers),
            ),
            "service": {
                "type": "ClusterIP",
                "selector": {COMPONENT_LABEL: "scheduler"},
                "ports": scheduler_service_ports(),
            },
        },
    }
    if scheduler_metadata := pod_metadata(storage):
        body["scheduler"]["metadata"] = scheduler_metadata
    return {"apiVersion": API_VERSION, "kind": "DaskCluster", "metadata": metadata, "spec": body}


def scanner_skips(cpu_limit: str | None, storage: PodStorage) -> dict[str, str]:
    """checkov skips with their reasons (the operator copies them onto its Deployments), the storage's included."""
    cpu = "" if cpu_limit else (
        "CKV_K8S_11=CPU limits throttle Dask's event loop and heartbeats; requests reserve the CPU, and "
        "the group's cpuLimit (cluster.workers.cpuLimit, cluster.workerGroups.<g>.cpuLimit) sets limits where a "
        "ResourceQuota requires them"
    )  # fmt: skip
    reasons = [r for r in (cpu, *storage.scanner_skips) if r]
    return {f"checkov.io/skip{n}": reason for n, reason in enumerate(reasons, 1)}


def dask_autoscaler_manifest(cluster: ClusterConfig, namespace: str, live_name: str) -> dict[str, Any] | None:
    """The DaskAutoscaler of the live cluster (same name); its range is reconciled, so it is not in `<h>`."""
    if not cluster.autoscaler.enabled:
        return None
    return {
        "apiVersion": API_VERSION,
        "kind": "DaskAutoscaler",
        "metadata": {"name": live_name, "namespace": namespace, "labels": LABELS},
        "spec": {"cluster": live_name, "minimum": cluster.autoscaler.minimum, "maximum": cluster.autoscaler.maximum},
    }


@dataclass(frozen=True)
class ClusterManifests:
    """Every manifest of one DaskCluster, its containers running the image's identity."""

    spec: ClusterSpec
    digest: str  # <h>
    live_name: str  # <cluster.name>-<h>
    dask_cluster: dict[str, Any]
    worker_groups: dict[str, dict[str, Any]]  # the DaskWorkerGroup of each extra group, by configured name
    autoscaler: dict[str, Any] | None
    disruption_budget: dict[str, Any] | None

    @property
    def spec_hash(self) -> str:
        """Re-runs the verification of this cluster when anything of it changes, reconciled fields included."""
        return spec_digest([self.dask_cluster, self.autoscaler, self.worker_groups])


def cluster_manifests(spec: ClusterSpec, image_identity: str) -> ClusterManifests:
    """The manifests of `<cluster.name>-<h>`, `<h>` digesting them with `image_identity` (known at evaluation and
    changing exactly when the image's content does; the pushed digest is known only after the build)."""
    cluster, namespace = spec.cluster, spec.namespace
    dask_cluster = unnamed_dask_cluster(spec, image_identity)
    workers = {  # `spec.worker` (replicas included) of each extra worker group, by configured name
        group: {"replicas": w.replicas, **worker_template(spec, group, w, image_identity)}
        for group, w in sorted(cluster.worker_groups.items())
    }
    digest = spec_digest(unreconciled(dask_cluster, workers))[:SPEC_DIGEST_LENGTH]
    live = live_cluster_name(cluster.name, digest)
    _name_cluster(spec, live, dask_cluster, workers)
    return ClusterManifests(
        spec=spec,
        digest=digest,
        live_name=live,
        dask_cluster=dask_cluster,
        worker_groups={g: worker_group_manifest(spec, live, g, w) for g, w in workers.items()},
        autoscaler=dask_autoscaler_manifest(cluster, namespace, live),
        disruption_budget=scheduler_disruption_budget_manifest(cluster, namespace, live),
    )


def _name_cluster(spec: ClusterSpec, live: str, dask_cluster: dict[str, Any], workers: dict[str, Any]) -> None:
    """Put the live cluster's name where the manifests need it (in place: they were just built)."""
    dask_cluster["metadata"] = {"name": live, **dask_cluster["metadata"]}
    service = dask_cluster["spec"]["scheduler"]["service"]
    service["selector"] = {CLUSTER_NAME_LABEL: live, **service["selector"]}
    scheduler_env = dask_cluster["spec"]["scheduler"]["spec"]["containers"][0]["env"]
    scheduler_env.insert(scheduler_env.index(scheduler_downscale_preload()) + 1, scheduler_downscale_prefix(live))
    if spec.tls_secret is None:
        return
    # The operator injects its tcp:// address only when the variable is absent.
    address = in_cluster_address(scheduler_service_name(live), spec.namespace, tls=True)
    for worker in (dask_cluster["spec"]["worker"], *workers.values()):
        for container in worker["spec"]["containers"]:
            container["env"].append({"name": "DASK_SCHEDULER_ADDRESS", "value": address})


def with_image(manifest: dict[str, Any], image: str) -> dict[str, Any]:
    """A copy of a DaskCluster or DaskWorkerGroup manifest whose every container runs `image`."""
    out = copy.deepcopy(manifest)
    pods = [out["spec"]["worker"], *([out["spec"]["scheduler"]] if "scheduler" in out["spec"] else [])]
    for pod in pods:
        for container in pod["spec"]["containers"]:
            container["image"] = image
    return out


def in_cluster_address(service: str, namespace: str, tls: bool = False) -> str:
    """The Dask address of a scheduler Service, as pods in the cluster reach it (`tls://` with TLS)."""
    return f"{'tls' if tls else 'tcp'}://{service}.{namespace}.svc.cluster.local:{SCHEDULER_PORT}"


class LsdbDaskCluster(pulumi.ComponentResource):
    """The DaskCluster `<cluster.name>-<h>`, its DaskAutoscaler, extra DaskWorkerGroups and scheduler
    PodDisruptionBudget, under logical names carrying `<h>`: a new spec is new resources, and the old ones are
    deleted only at the end of a successful `pulumi up` (never "pending delete"). The groups come after the
    DaskCluster: the operator adopts them, so deleting the cluster deletes them."""

    def __init__(
        self,
        name: str,
        m: ClusterManifests,
        image: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """`m`: built by the program, which needs the live name first (the certificate's names); `image`: the
        pushed digest, in place of the identity they were built and named with. Depend on the certificate Secret's
        creator."""
        super().__init__("lsdb-k8s:cluster:LsdbDaskCluster", name, {}, opts)
        self.live_name, self.digest, self.spec_hash = m.live_name, m.digest, m.spec_hash
        pushed = pulumi.Output.from_input(image)

        def custom(logical: str, manifest: dict[str, Any], *deps: pulumi.Resource) -> k8s.apiextensions.CustomResource:
            spec: pulumi.Input[dict[str, Any]] = manifest["spec"]
            if "worker" in manifest["spec"]:  # a DaskCluster or DaskWorkerGroup: its pods run the pushed image
                spec = pushed.apply(lambda ref: with_image(manifest, ref)["spec"])
            return k8s.apiextensions.CustomResource(
                f"{name}-{logical}-{self.digest}",
                api_version=manifest["apiVersion"],
                kind=manifest["kind"],
                metadata=manifest["metadata"],
                spec=spec,
                opts=child_options(self, opts, *deps),
            )

        self.dask_cluster = custom("daskcluster", m.dask_cluster)
        self.autoscaler = custom("daskautoscaler", m.autoscaler, self.dask_cluster) if m.autoscaler else None
        self.worker_groups = {
            g: custom(f"workergroup-{g}", group, self.dask_cluster) for g, group in m.worker_groups.items()
        }
        self.worker_group_names = {g: group["metadata"]["name"] for g, group in m.worker_groups.items()}
        self.disruption_budget: k8s.policy.v1.PodDisruptionBudget | None = None
        if m.disruption_budget is not None:  # the new cluster gets its own; the old one goes with the old cluster
            self.disruption_budget = k8s.policy.v1.PodDisruptionBudget(
                f"{name}-scheduler-pdb-{self.digest}",
                metadata=m.disruption_budget["metadata"],
                spec=m.disruption_budget["spec"],
                opts=child_options(self, opts, self.dask_cluster),
            )
        # Everything downstream is derived from the name the API server holds.
        metadata = self.dask_cluster.metadata  # type: ignore[attr-defined]  # CustomResource's attributes are dynamic
        self.cluster_name = metadata.apply(lambda meta: str(meta["name"]))
        # A new uid is a new object: the operator deleted it and `up` recreated it.
        self.cluster_uid = metadata.apply(lambda meta: str(meta.get("uid") or ""))
        tls = m.spec.tls_secret is not None
        self.candidate_address = self.cluster_name.apply(
            lambda n: in_cluster_address(scheduler_service_name(n), m.spec.namespace, tls)
        )
        self.register_outputs(
            {"clusterName": self.cluster_name, "digest": self.digest, "workerGroups": self.worker_group_names}
        )
