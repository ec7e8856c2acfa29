"""LsdbDaskCluster: the DaskCluster, DaskAutoscaler, DaskWorkerGroups and scheduler PodDisruptionBudget; the pod
pieces every pod of the stack shares (the notebook's, the catalog copy Job's).

Blue/green (docs/lifecycle.md): the pinned operator applies nothing of a changed DaskCluster but `replicas`, so the
DaskCluster is `<cluster.name>-<h>`, `<h>` a digest of all it does not reconcile. The manifests are built with the
image's identity (known at evaluation); the resources carry the pushed digest (`with_image`).
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
from components.object_store_keys import PodStorage
from components.options import child_options, manifest, register
from components.placement import pod_placement, worker_spread_selector
from components.storage import KEY_VOLUME

SCRATCH_DIR = "/scratch"  # Dask's local directory for spilling; an emptyDir, so spill never fills the image layer
RUN_AS_USER = 10001  # the image's non-root `dask` user (docker/Dockerfile); >= 10000, outside host user ranges
HOME_DIR = "/home/dask"  # the image's WORKDIR and HOME (dask writes ~/.config/dask there)
# The root filesystem is read-only: every path Dask, Python or a library may write is an emptyDir.
WRITABLE_DIRS = {"dask-scratch": SCRATCH_DIR, "tmp": "/tmp", "home": HOME_DIR}
TLS_DIR = "/etc/dask-tls"  # the cluster's certificate Secret, mounted read-only
TLS_FILES = {"ca": "ca.crt", "cert": "tls.crt", "key": "tls.key"}  # keys of the Secret (kubernetes.io/tls + ca.crt)
CPU_SKIP = (
    "CKV_K8S_11=CPU limits throttle Dask's event loop and heartbeats; requests reserve the CPU, and "
    "the group's cpuLimit (cluster.workers.cpuLimit, cluster.workerGroups.<g>.cpuLimit) sets limits where a "
    "ResourceQuota requires them"
)

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


def container(
    name: str,
    image: str,
    resources: dict[str, Any],
    mounts: list[dict[str, Any]],
    ports: dict[str, int] | None = None,
    env: list[dict[str, Any]] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A container of the stack, hardened alike (its own copy of the security context); `ports`: name -> port."""
    built = {"name": name, "image": image, **fields, "resources": resources, "volumeMounts": mounts}
    if ports:
        built["ports"] = [{"name": n, "containerPort": p, "protocol": "TCP"} for n, p in ports.items()]
    if env is not None:
        built["env"] = env
    return built | {"securityContext": copy.deepcopy(CONTAINER_SECURITY_CONTEXT)}


def resources(cpu: str, memory: str, cpu_limit: str | None = None) -> dict[str, Any]:
    """The memory request is the limit; CPU is limited only where asked (a quota that requires it)."""
    return {
        "requests": {"cpu": cpu, "memory": memory},
        "limits": {"memory": memory} | ({"cpu": cpu_limit} if cpu_limit else {}),
    }


def writable_volumes() -> list[dict[str, Any]]:
    return [{"name": name, "emptyDir": {}} for name in WRITABLE_DIRS]


def writable_mounts() -> list[dict[str, Any]]:
    return [{"name": name, "mountPath": path} for name, path in WRITABLE_DIRS.items()]


def secret_volume(name: str, secret: str) -> dict[str, Any]:
    return {"name": name, "secret": {"secretName": secret, "defaultMode": 0o440}}


def tls_pieces(
    secret: str | None, roles: tuple[str, ...] = ("SCHEDULER", "WORKER", "CLIENT")
) -> tuple[list[dict[str, str]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(env, volumes, mounts) of the certificate Secret `secret` (None: no TLS). The env is Dask's own TLS keys
    (distributed.comm.tls.*): each role presents the certificate, trusts the CA, and plain TCP is refused.
    https://distributed.dask.org/en/stable/tls.html"""
    if secret is None:
        return [], [], []
    ca, cert, key = (f"{TLS_DIR}/{TLS_FILES[k]}" for k in ("ca", "cert", "key"))
    env = [{"name": "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION", "value": "True"}]
    env.append({"name": "DASK_DISTRIBUTED__COMM__TLS__CA_FILE", "value": ca})
    for role in roles:
        env.append({"name": f"DASK_DISTRIBUTED__COMM__TLS__{role}__CERT", "value": cert})
        env.append({"name": f"DASK_DISTRIBUTED__COMM__TLS__{role}__KEY", "value": key})
    mount = {"name": "dask-tls", "mountPath": TLS_DIR, "readOnly": True}
    return env, [secret_volume("dask-tls", secret)], [mount]


def http_probes(port: str, path: str, initial_delay: int) -> dict[str, Any]:
    """Readiness and a generous liveness (a worker or kernel busy with a large partition answers late, and a
    restart loses its data) on an HTTP path: the worker's /health, the notebook's /api."""
    get = {"httpGet": {"port": port, "path": path}}
    return {
        "readinessProbe": {**get, "periodSeconds": 5, "timeoutSeconds": 5},
        "livenessProbe": {**get, "initialDelaySeconds": initial_delay, "periodSeconds": 20, "timeoutSeconds": 10,
                          "failureThreshold": 6},
    }  # fmt: skip


def pod_spec(
    containers: list[dict[str, Any]],
    volumes: list[dict[str, Any]],
    pull_secret: str | None,
    service_account: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """Every pod of the stack: restricted Pod Security, and no API token (none calls the Kubernetes API; a workload
    identity's webhooks inject their own token, GKE's metadata server identifies the pod)."""
    spec = {"securityContext": POD_SECURITY_CONTEXT, "automountServiceAccountToken": False, "containers": containers}
    pull_secrets = [{"name": pull_secret}] if pull_secret else None
    optional = {"serviceAccountName": service_account, "volumes": volumes, "imagePullSecrets": pull_secrets}
    return spec | {key: value for key, value in optional.items() if value} | fields


def pod_metadata(storage: PodStorage, labels: dict[str, str]) -> dict[str, Any]:
    """Pod-template metadata: `labels`, the workload identity's label and annotation."""
    items = (("labels", labels | storage.pod_labels), ("annotations", storage.pod_annotations))
    return {key: dict(value) for key, value in items if value}


def skip_annotations(*reasons: str) -> dict[str, str]:
    """checkov skips with their reasons (the operator copies a DaskCluster's onto its Deployments); "" skips none."""
    return {f"checkov.io/skip{n}": reason for n, reason in enumerate([r for r in reasons if r], 1)}


def in_cluster_address(service: str, namespace: str, tls: bool = False) -> str:
    """The Dask address of a scheduler Service, as pods in the cluster reach it (`tls://` with TLS)."""
    return f"{'tls' if tls else 'tcp'}://{service}.{namespace}.svc.cluster.local:{SCHEDULER_PORT}"


def scheduler_service_ports() -> list[dict[str, Any]]:
    """The ports of a scheduler Service (the operator's and the stable one): targets named like the container's."""
    return [
        {"name": name, "protocol": "TCP", "port": port, "targetPort": name}
        for name, port in ((SCHEDULER_PORT_NAME, SCHEDULER_PORT), (DASHBOARD_PORT_NAME, DASHBOARD_PORT))
    ]


def worker_template(
    spec: ClusterSpec, group: str, workers: WorkerPodConfig, image: str, live: str | None
) -> dict[str, Any]:
    """`spec.worker` of a DaskCluster (the default group) or DaskWorkerGroup, without `replicas`. `live`: the live
    DaskCluster, whose scheduler address the workers dial with TLS (the operator injects its tcp:// one only when the
    variable is absent); None: the unnamed draft `<h>` digests."""
    storage = spec.storage
    tls_env, tls_volumes, tls_mounts = tls_pieces(spec.tls_secret)
    if live and spec.tls_secret:
        address = in_cluster_address(scheduler_service_name(live), spec.namespace, tls=True)
        tls_env = [*tls_env, {"name": "DASK_SCHEDULER_ADDRESS", "value": address}]
    # No scheduler address argument: DASK_SCHEDULER_ADDRESS (the operator's tcp://, or ours with TLS) says it.
    args = [
        "dask", "worker",
        "--name", "$(DASK_WORKER_NAME)",
        "--nthreads", str(workers.threads),
        "--memory-limit", str(workers.memory_bytes),
        "--dashboard-address", f":{WORKER_DASHBOARD_PORT}",
        "--worker-port", str(WORKER_PORT),
        "--nanny-port", str(NANNY_PORT),
        "--local-directory", SCRATCH_DIR,
    ]  # fmt: skip
    worker = container(
        "worker",
        image,
        resources(workers.cpu, workers.memory, workers.cpu_limit),
        [*storage.mounts, *writable_mounts(), *tls_mounts],
        {DASHBOARD_PORT_NAME: WORKER_DASHBOARD_PORT, WORKER_PORT_NAME: WORKER_PORT, NANNY_PORT_NAME: NANNY_PORT},
        [*storage.env, *tls_env] or None,
        args=args,
        **http_probes(DASHBOARD_PORT_NAME, "/health", 15),
    )
    spread = worker_spread_selector(spec.cluster.name, group)  # over nodes, by default
    placement = pod_placement(workers.placement.pod_fields(), spot=workers.spot, spread=spread)
    volumes = [*storage.volumes, *writable_volumes(), *tls_volumes]
    return {
        "metadata": pod_metadata(storage, {GROUP_LABEL: group}),
        "spec": pod_spec([worker], volumes, spec.pull_secret, storage.service_account, **placement),
    }


def dask_cluster_manifest(spec: ClusterSpec, image: str, live: str | None) -> dict[str, Any]:
    """The DaskCluster `live`; None: the draft without what names it (name, Service selector, the scheduler's
    worker-name prefix, the workers' TLS scheduler address)."""
    cluster, storage = spec.cluster, spec.storage
    tls_env, tls_volumes, tls_mounts = tls_pieces(spec.tls_secret)
    # A quota namespace that needs limits.cpu on workers needs it on the scheduler too (guide tip).
    cpu_limited = any(g.cpu_limit for g in (cluster.workers, *cluster.worker_groups.values()))
    s = cluster.scheduler
    # components/scheduler_downscale.py as source text (no image change; a change of it changes `<h>`), a list literal
    # with `$` doubled (Kubernetes expands `$(VAR)`); its worker-name prefix: the default group's.
    source = Path(scheduler_downscale.__file__).read_text()
    downscale = [{"name": "DASK_DISTRIBUTED__SCHEDULER__PRELOAD", "value": json.dumps([source]).replace("$", "$$")}]
    if live:
        downscale.append(
            {"name": scheduler_downscale.PREFIX_ENV, "value": f"{default_worker_group_name(live)}-worker-"}
        )
    scheduler = container(
        "scheduler",
        image,
        resources(s.cpu, s.memory, s.cpu if cpu_limited else None),
        # The scheduler opens catalogs too (lsdb reads metadata where the client asks): it mounts the object-store key.
        [*(m for m in storage.mounts if m["name"] == KEY_VOLUME), *writable_mounts(), *tls_mounts],
        {SCHEDULER_PORT_NAME: SCHEDULER_PORT, DASHBOARD_PORT_NAME: DASHBOARD_PORT},
        [
            {"name": "DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES", "value": json.dumps(SCHEDULER_HTTP_ROUTES)},
            *downscale,
            *storage.env,
            *tls_env,
        ],
        args=[
            "dask", "scheduler", *(["--protocol", "tls"] if spec.tls_secret else []),
            "--port", str(SCHEDULER_PORT), "--dashboard-address", f":{DASHBOARD_PORT}",
        ],
        readinessProbe={
            "httpGet": {"port": DASHBOARD_PORT_NAME, "path": "/health"},
            "initialDelaySeconds": 0, "periodSeconds": 1, "timeoutSeconds": 300,
        },
        livenessProbe={
            "httpGet": {"port": DASHBOARD_PORT_NAME, "path": "/health"}, "initialDelaySeconds": 15, "periodSeconds": 20,
        },
    )  # fmt: skip
    volumes = [*(v for v in storage.volumes if v["name"] == KEY_VOLUME), *writable_volumes(), *tls_volumes]
    # kept off the spot nodes any worker group uses
    placement = pod_placement(cluster.scheduler.placement.pod_fields(), avoid_spot=cluster.spot_providers)
    # Copied onto every pod: `app.kubernetes.io/name: <cluster.name>` selects blue and green alike.
    metadata: dict[str, Any] = {"namespace": spec.namespace, "labels": {**LABELS, APP_NAME_LABEL: cluster.name}}
    metadata |= {"name": live} if live else {}
    if skips := skip_annotations("" if cluster.workers.cpu_limit else CPU_SKIP, *storage.scanner_skips):
        metadata["annotations"] = skips
    selector = {CLUSTER_NAME_LABEL: live} if live else {}
    body: dict[str, Any] = {
        "idleTimeout": cluster.idle_timeout_seconds,
        "worker": {
            "replicas": cluster.workers.replicas,
            **worker_template(spec, DEFAULT_GROUP, cluster.workers, image, live),
        },
        "scheduler": {
            "spec": pod_spec([scheduler], volumes, spec.pull_secret, storage.service_account, **placement),
            "service": {
                "type": "ClusterIP",
                "selector": {**selector, COMPONENT_LABEL: "scheduler"},
                "ports": scheduler_service_ports(),
            },
        },
    }
    if scheduler_metadata := pod_metadata(storage, {}):
        body["scheduler"]["metadata"] = scheduler_metadata
    return {"apiVersion": API_VERSION, "kind": "DaskCluster", "metadata": metadata, "spec": body}


def spec_digest(value: Any) -> str:
    """The one digest of manifests: `<h>` is its prefix, the verification's `clusterSpecHash` all of it."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


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
    """The manifests of `<cluster.name>-<h>`, `<h>` digesting the unnamed draft with `image_identity` (known at
    evaluation and changing exactly when the image's content does; the pushed digest is known only after the
    build), less what the operator reconciles (the default group's `replicas`, `idleTimeout`). The extra groups'
    `replicas` stay in: the scheduler offers only the default group's workers to retire."""
    cluster, namespace = spec.cluster, spec.namespace

    def build(live: str | None) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        workers = {  # `spec.worker` (replicas included) of each extra worker group, by configured name
            group: {"replicas": w.replicas, **worker_template(spec, group, w, image_identity, live)}
            for group, w in sorted(cluster.worker_groups.items())
        }
        return dask_cluster_manifest(spec, image_identity, live), workers

    draft, draft_workers = build(None)
    draft["spec"].pop("idleTimeout")
    draft["spec"]["worker"].pop("replicas")
    digest = spec_digest({"daskCluster": draft, "workerGroups": draft_workers})[:SPEC_DIGEST_LENGTH]
    live = live_cluster_name(cluster.name, digest)
    dask_cluster, workers = build(live)
    app = {**LABELS, APP_NAME_LABEL: cluster.name}
    groups = {}
    for group, worker in workers.items():
        # The operator copies the DaskWorkerGroup's own annotations (not the DaskCluster's) onto its Deployments.
        cpu_skip = "" if cluster.worker_groups[group].cpu_limit else CPU_SKIP
        skips = skip_annotations(cpu_skip, *spec.storage.scanner_skips)
        labels, body = {**app, GROUP_LABEL: group}, {"cluster": live, "worker": worker}
        groups[group] = manifest(API_VERSION, "DaskWorkerGroup", f"{live}-{group}", namespace, labels, skips, spec=body)
    autoscaler = None
    if cluster.autoscaler.enabled:  # its range is reconciled, so it is not in `<h>`
        scale = {"cluster": live, "minimum": cluster.autoscaler.minimum, "maximum": cluster.autoscaler.maximum}
        autoscaler = manifest(API_VERSION, "DaskAutoscaler", live, namespace, LABELS, spec=scale)
    budget = None
    if cluster.scheduler.disruption_budget:
        # No voluntary eviction (drain, node upgrade, autoscaler scale-down) of the live scheduler pod; deletions (a
        # blue/green switch) are not evictions.
        selector = {"matchLabels": {CLUSTER_NAME_LABEL: live, COMPONENT_LABEL: "scheduler"}}
        rule = {"maxUnavailable": 0, "selector": selector}
        budget = manifest("policy/v1", "PodDisruptionBudget", scheduler_service_name(live), namespace, app, spec=rule)
    return ClusterManifests(spec, digest, live, dask_cluster, groups, autoscaler, budget)


def with_image(manifest: dict[str, Any], image: str) -> dict[str, Any]:
    """A copy of a DaskCluster or DaskWorkerGroup manifest whose every container runs `image`."""
    out = copy.deepcopy(manifest)
    pods = [out["spec"]["worker"], *([out["spec"]["scheduler"]] if "scheduler" in out["spec"] else [])]
    for pod in pods:
        for c in pod["spec"]["containers"]:
            c["image"] = image
    return out


class LsdbDaskCluster(pulumi.ComponentResource):
    """The manifests `m` (built by the program, which needs the live name first: the certificate's names) running
    the pushed `image`, under logical names carrying `<h>` (docs/lifecycle.md). The groups come after the DaskCluster:
    the operator adopts them, so deleting the cluster deletes them. Depend on the certificate Secret's creator."""

    def __init__(
        self, name: str, m: ClusterManifests, image: pulumi.Input[str], opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("lsdb-k8s:cluster:LsdbDaskCluster", name, {}, opts)
        self.live_name, self.digest, self.spec_hash = m.live_name, m.digest, m.spec_hash
        pushed = pulumi.Output.from_input(image)

        def custom(logical: str, obj: dict[str, Any], *deps: pulumi.Resource) -> k8s.apiextensions.CustomResource:
            spec: pulumi.Input[dict[str, Any]] = obj["spec"]
            if "worker" in obj["spec"]:  # a DaskCluster or DaskWorkerGroup: its pods run the pushed image
                spec = pushed.apply(lambda ref: with_image(obj, ref)["spec"])
            logical_name, child = f"{name}-{logical}-{self.digest}", child_options(self, opts, *deps)
            return register(k8s.apiextensions.CustomResource, logical_name, obj, child, spec=spec)

        self.dask_cluster = custom("daskcluster", m.dask_cluster)
        self.autoscaler = custom("daskautoscaler", m.autoscaler, self.dask_cluster) if m.autoscaler else None
        self.worker_groups = {
            g: custom(f"workergroup-{g}", group, self.dask_cluster) for g, group in m.worker_groups.items()
        }
        self.worker_group_names = {g: group["metadata"]["name"] for g, group in m.worker_groups.items()}
        self.disruption_budget: k8s.policy.v1.PodDisruptionBudget | None = None
        if m.disruption_budget is not None:  # the new cluster gets its own; the old one goes with the old cluster
            self.disruption_budget = register(
                k8s.policy.v1.PodDisruptionBudget,
                f"{name}-scheduler-pdb-{self.digest}",
                m.disruption_budget,
                child_options(self, opts, self.dask_cluster),
            )
        # Everything downstream is derived from the name the API server holds.
        metadata = self.dask_cluster.metadata
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
