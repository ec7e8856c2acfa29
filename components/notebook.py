"""A JupyterLab beside the cluster (`notebook.enabled`, docs/notebook.md): a client of the stable scheduler Service.

Pure builders of dicts (`deployment_manifest`, `service_manifest`, ...); `LsdbNotebook` registers them. The pod is
built from the cluster's pod pieces (components/cluster.py), so it is hardened alike.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pulumi_tls as tls

from components.cluster import (
    CONTAINER_SECURITY_CONTEXT,
    HOME_DIR,
    TLS_FILES,
    http_probes,
    in_cluster_address,
    pod_spec,
    secret_volume,
    tls_env,
    tls_mounts,
    tls_volumes,
    writable_mounts,
    writable_volumes,
)
from components.config import StackConfig
from components.constants import (
    CLIENT_LABEL,
    DASHBOARD_LABEL,
    DASHBOARD_PORT_NAME,
    LABELS,
    SCHEDULER_PORT_NAME,
    scheduler_service_name,
)
from components.notebook_config import NotebookConfig
from components.options import child_options
from components.security import cluster_pods, dns_egress, gke_metadata_egress, ip_egress
from components.storage import PodStorage

NOTEBOOK_PORT = 8888
PORT_NAME = "http"
COMPONENT = "notebook"
STARTER_DIR = "/opt/lsdb-notebook"  # docker/notebook/ in the image's notebook target
STARTER = "starter.ipynb"
TOKEN_DIR = "/var/run/secrets/lsdb-notebook"
TOKEN_FILE = "token"
HOME_VOLUME = "home"
CATALOG_ENV = "LSDB_CATALOG"
STORAGE_OPTIONS_ENV = "LSDB_STORAGE_OPTIONS"
CONE_ENV = "LSDB_CONE"
COLUMNS_ENV = "LSDB_COLUMNS"
TOKEN_LENGTH = 48
# The init container: copy the starter into the home unless the user already has one (never overwrite their edits).
COPY_STARTER = "import os, shutil, sys; os.path.exists(sys.argv[2]) or shutil.copyfile(sys.argv[1], sys.argv[2])"
CLIENT_TLS_ROLES = ("DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION", "DASK_DISTRIBUTED__COMM__TLS__CA_FILE",
                    "DASK_DISTRIBUTED__COMM__TLS__CLIENT__")  # fmt: skip


def notebook_name(cluster_name: str) -> str:
    """Never `cluster.name` itself, which the cluster's NetworkPolicies select by."""
    return f"{cluster_name}-notebook"


def token_secret_name(cluster_name: str) -> str:
    return f"{cluster_name}-notebook-token"


def tls_secret_name(cluster_name: str) -> str:
    return f"{cluster_name}-notebook-tls"


def home_claim_name(cluster_name: str) -> str:
    return f"{cluster_name}-notebook-home"


def selector_labels(cluster_name: str) -> dict[str, str]:
    return {**LABELS, "app.kubernetes.io/name": notebook_name(cluster_name), "app.kubernetes.io/component": COMPONENT}


def _metadata(spec: NotebookSpec, name: str) -> dict[str, Any]:
    return {"name": name, "namespace": spec.namespace, "labels": selector_labels(spec.cluster_name)}


def token_from_key(private_key_pem: str) -> str:
    """A digest of a random key kept in the Pulumi state (stable across `pulumi up`; pulumi-random is no dependency)."""
    return hashlib.sha256(private_key_pem.encode()).hexdigest()[:TOKEN_LENGTH]


@dataclass(frozen=True)
class NotebookSpec:
    """What the notebook's objects are built from, but the image."""

    notebook: NotebookConfig
    cluster_name: str
    namespace: str
    storage: PodStorage
    tls: bool = False
    catalog: str | None = None  # what the starter opens: the first provisioned catalog, else verify.catalogPath
    storage_options: dict[str, Any] = field(default_factory=dict)  # lsdb.open_catalog's, as the verification's
    cone: dict[str, float] = field(default_factory=dict)  # ra, dec, radiusArcsec (verify.cone)
    columns: list[str] = field(default_factory=list)  # verify.columns
    pull_secret: str | None = None
    # security.networkPolicy, and what the notebook's egress must reach besides the scheduler
    network_policy: bool = True
    object_store_cidrs: tuple[str, ...] = ()  # storage.kind objectStore: security.egressCidrs (empty: none)
    object_store_ports: tuple[int, ...] = ()
    gcp_identity: bool = False


def notebook_spec(
    config: StackConfig, storage: PodStorage, pull_secret: str | None, catalog: str | None
) -> NotebookSpec:
    """`storage`: the cluster pods' (CatalogStorage.pod_storage); `catalog`: what the starter opens."""
    object_store = config.storage.kind == "objectStore"
    identity = config.storage.identity
    return NotebookSpec(
        notebook=config.notebook,
        cluster_name=config.cluster.name,
        namespace=config.namespace,
        storage=storage,
        tls=config.security.tls,
        catalog=catalog,
        storage_options=config.storage.catalog_storage_options,
        cone={"ra": config.verify.ra, "dec": config.verify.dec, "radiusArcsec": config.verify.radius_arcsec},
        columns=list(config.verify.columns),
        pull_secret=pull_secret,
        network_policy=config.security.network_policy,
        object_store_cidrs=tuple(config.security.egress_cidrs) if object_store else (),
        object_store_ports=tuple(config.security.egress_ports) if object_store else (),
        gcp_identity=identity is not None and identity[0] == "gcp",
    )


def scheduler_address(spec: NotebookSpec) -> str:
    """The stable Service's: it follows the live cluster across upgrades."""
    return in_cluster_address(scheduler_service_name(spec.cluster_name), spec.namespace, spec.tls)


def notebook_env(spec: NotebookSpec) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "DASK_SCHEDULER_ADDRESS", "value": scheduler_address(spec)},
        {"name": CATALOG_ENV, "value": spec.catalog or ""},
        {"name": STORAGE_OPTIONS_ENV, "value": json.dumps(spec.storage_options, sort_keys=True)},
        {"name": CONE_ENV, "value": json.dumps(spec.cone, sort_keys=True)},
        {"name": COLUMNS_ENV, "value": json.dumps(spec.columns)},
        {"name": "JUPYTER_TOKEN_FILE", "value": f"{TOKEN_DIR}/{TOKEN_FILE}"},
        *(e for e in tls_env(spec.tls) if e["name"].startswith(CLIENT_TLS_ROLES)),  # the client role's
    ]
    return env + copy.deepcopy(spec.storage.env)


def notebook_command() -> list[str]:
    return [
        "jupyter-lab", "--no-browser",
        "--ServerApp.ip=0.0.0.0", f"--ServerApp.port={NOTEBOOK_PORT}",
        f"--ServerApp.root_dir={HOME_DIR}",
        "--ServerApp.allow_remote_access=True",  # reached through the Service's DNS name
        "--ServerApp.open_browser=False",
        # The image is the lock: no extension installs from PyPI (the root filesystem is read-only anyway).
        "--LabApp.extension_manager=readonly",
    ]  # fmt: skip


def _volumes(spec: NotebookSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, mounts): the writable directories (home: the claim with notebook.storage), the token, the TLS
    bundle, the catalog storage read-only."""
    storage, name = spec.notebook.storage, spec.cluster_name
    home: dict[str, Any] = {"emptyDir": {}}
    if storage.enabled:
        home = {"persistentVolumeClaim": {"claimName": storage.existing_claim or home_claim_name(name)}}
    volumes = [
        *(v for v in writable_volumes() if v["name"] != HOME_VOLUME),
        {"name": HOME_VOLUME, **home},
        secret_volume("token", token_secret_name(name)),
        *tls_volumes(tls_secret_name(name) if spec.tls else None),
        *copy.deepcopy(spec.storage.volumes),
    ]
    mounts = [
        *writable_mounts(),
        {"name": "token", "mountPath": TOKEN_DIR, "readOnly": True},
        *tls_mounts(spec.tls),
        *({**m, "readOnly": True} for m in spec.storage.worker_mounts),
    ]
    return volumes, mounts


def deployment_manifest(spec: NotebookSpec, image: str) -> dict[str, Any]:
    nb = spec.notebook
    volumes, mounts = _volumes(spec)
    selector = selector_labels(spec.cluster_name)
    pod_labels = {**selector, **CLIENT_LABEL, **(DASHBOARD_LABEL if nb.dashboard else {}), **spec.storage.pod_labels}
    container = {
        "name": "jupyterlab",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": notebook_command(),
        "env": notebook_env(spec),
        "ports": [{"name": PORT_NAME, "containerPort": NOTEBOOK_PORT, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": nb.cpu, "memory": nb.memory}, "limits": {"memory": nb.memory}},
        "securityContext": copy.deepcopy(CONTAINER_SECURITY_CONTEXT),  # one per container
        "volumeMounts": mounts,
        **http_probes(PORT_NAME, "/api", 30),
    }
    home = next(m for m in mounts if m["name"] == HOME_VOLUME)
    init = {
        "name": "starter",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-c", COPY_STARTER, f"{STARTER_DIR}/{STARTER}", f"{HOME_DIR}/{STARTER}"],
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
        "securityContext": copy.deepcopy(CONTAINER_SECURITY_CONTEXT),
        "volumeMounts": [home],
    }
    pod = pod_spec([container], volumes, spec.pull_secret, spec.storage.service_account, initContainers=[init])
    template_metadata: dict[str, Any] = {"labels": pod_labels}
    if spec.storage.pod_annotations:
        template_metadata["annotations"] = dict(spec.storage.pod_annotations)
    reasons = [
        "CKV_K8S_11=a CPU limit throttles the kernel and its Dask client's heartbeats while the cluster does the "
        "work; the request (notebook.cpu) reserves the CPU",
        *spec.storage.scanner_skips,  # the storage's, as on the cluster's pods (abfs keys as variables)
    ]
    annotations = {f"checkov.io/skip{n}": reason for n, reason in enumerate(reasons, 1)}
    metadata = {**_metadata(spec, notebook_name(spec.cluster_name)), "annotations": annotations}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": selector},
            "template": {"metadata": template_metadata, "spec": pod},
        },
    }


def service_manifest(spec: NotebookSpec) -> dict[str, Any]:
    selector = selector_labels(spec.cluster_name)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(spec, notebook_name(spec.cluster_name)),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": PORT_NAME, "protocol": "TCP", "port": NOTEBOOK_PORT, "targetPort": PORT_NAME}],
        },
    }


def home_claim_manifest(spec: NotebookSpec) -> dict[str, Any] | None:
    storage = spec.notebook.storage
    if storage.size is None:
        return None
    claim: dict[str, Any] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": storage.size}}}
    if storage.storage_class_name:
        claim["storageClassName"] = storage.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _metadata(spec, home_claim_name(spec.cluster_name)),
        "spec": claim,
    }


def network_policy_manifest(spec: NotebookSpec) -> dict[str, Any] | None:
    """None without security.networkPolicy; the cluster's policies admit the notebook as a client."""
    if not spec.network_policy:
        return None
    ports = [SCHEDULER_PORT_NAME, *([DASHBOARD_PORT_NAME] if spec.notebook.dashboard else [])]
    scheduler = {"podSelector": cluster_pods(spec.cluster_name, "scheduler")}
    egress = [dns_egress(), {"to": [scheduler], "ports": [{"protocol": "TCP", "port": p} for p in ports]}]
    if spec.object_store_cidrs:
        egress.append(ip_egress(spec.object_store_cidrs, spec.object_store_ports))
    if spec.gcp_identity:
        egress.append(gke_metadata_egress())
    selector = selector_labels(spec.cluster_name)
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(spec, notebook_name(spec.cluster_name)),
        "spec": {
            "podSelector": {"matchLabels": selector},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [{"podSelector": {}}], "ports": [{"protocol": "TCP", "port": PORT_NAME}]}],
            "egress": egress,
        },
    }


def _secret(spec: NotebookSpec, name: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(spec, name),
        "type": "Opaque",
        "stringData": data,
    }


def token_secret_manifest(spec: NotebookSpec, token: str) -> dict[str, Any]:
    return _secret(spec, token_secret_name(spec.cluster_name), {TOKEN_FILE: token})


def tls_secret_manifest(spec: NotebookSpec, bundle: dict[str, str]) -> dict[str, Any]:
    """The client bundle (`ca`, `cert`, `key`: ClusterSecurity.client_tls) under the cluster's file names."""
    return _secret(spec, tls_secret_name(spec.cluster_name), {TLS_FILES[k]: bundle[k] for k in ("ca", "cert", "key")})


def notebook_urls(spec: NotebookSpec, kubectl: str = "kubectl") -> dict[str, str]:
    """`notebookUrl` (in-cluster, no token in it) and `portForwardNotebook`."""
    name = notebook_name(spec.cluster_name)
    return {
        "notebookUrl": f"http://{name}.{spec.namespace}.svc.cluster.local:{NOTEBOOK_PORT}/lab",
        "portForwardNotebook": f"{kubectl} --namespace {spec.namespace} port-forward svc/{name} "
        f"{NOTEBOOK_PORT}:{NOTEBOOK_PORT}",
    }


@dataclass(frozen=True)
class LsdbNotebookArgs:
    spec: NotebookSpec
    image: pulumi.Input[str]  # the notebook image's digest reference
    client_tls: pulumi.Output[dict[str, Any]] | None = None  # with TLS: the client bundle (a Pulumi secret)


class LsdbNotebook(pulumi.ComponentResource):
    """The notebook's Secrets, claim, NetworkPolicy, Deployment and Service."""

    token: pulumi.Output[str]
    deployment: k8s.apps.v1.Deployment

    def __init__(self, name: str, args: LsdbNotebookArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("lsdb-k8s:notebook:LsdbNotebook", name, {}, opts)
        spec = args.spec
        child = child_options(self, opts)
        seed = tls.PrivateKey(f"{name}-token-seed", algorithm="ED25519", opts=child)
        self.token = pulumi.Output.secret(seed.private_key_pem.apply(token_from_key))
        shape = token_secret_manifest(spec, "")
        needs: list[pulumi.Resource] = [
            k8s.core.v1.Secret(
                f"{name}-token",
                metadata=shape["metadata"],
                type="Opaque",
                string_data=pulumi.Output.secret({TOKEN_FILE: self.token}),
                opts=child,
            )
        ]
        if spec.tls and args.client_tls is not None:
            shape = tls_secret_manifest(spec, {"ca": "", "cert": "", "key": ""})
            data = args.client_tls.apply(lambda bundle: tls_secret_manifest(spec, bundle)["stringData"])
            needs.append(k8s.core.v1.Secret(
                f"{name}-tls", metadata=shape["metadata"], type="Opaque",
                string_data=pulumi.Output.secret(data), opts=child,
            ))  # fmt: skip
        if (claim := home_claim_manifest(spec)) is not None:
            needs.append(k8s.core.v1.PersistentVolumeClaim(
                f"{name}-home", metadata=claim["metadata"], spec=claim["spec"], opts=child,
            ))  # fmt: skip
        if (policy := network_policy_manifest(spec)) is not None:
            needs.append(k8s.networking.v1.NetworkPolicy(
                f"{name}-netpol", metadata=policy["metadata"], spec=policy["spec"], opts=child,
            ))  # fmt: skip
        deployment = pulumi.Output.from_input(args.image).apply(lambda image: deployment_manifest(spec, image))
        self.deployment = k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata=deployment_manifest(spec, "")["metadata"],
            spec=deployment.apply(lambda d: d["spec"]),
            opts=child_options(self, opts, *needs),
        )
        service = service_manifest(spec)
        k8s.core.v1.Service(f"{name}-service", metadata=service["metadata"], spec=service["spec"], opts=child)
        self.register_outputs({"deployment": self.deployment.metadata["name"]})
