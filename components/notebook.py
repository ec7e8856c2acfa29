"""A JupyterLab beside the cluster (`notebook.enabled`, docs/notebook.md): a client of the stable scheduler Service.
Its pod is built from the cluster's pod pieces (components/cluster.py), so it is hardened alike."""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pulumi_tls as tls

from components.cluster import (
    HOME_DIR,
    TLS_FILES,
    container,
    http_probes,
    in_cluster_address,
    pod_metadata,
    pod_spec,
    resources,
    secret_volume,
    skip_annotations,
    tls_pieces,
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
    kubectl,
    scheduler_service_name,
)
from components.image import LsdbImage
from components.object_store_keys import PodStorage
from components.options import child_options, manifest, register
from components.security import cluster_pods, dns_egress, gke_metadata_egress, ip_egress

NOTEBOOK_PORT = 8888
PORT_NAME = "http"
COMPONENT = "notebook"
STARTER_DIR = "/opt/lsdb-notebook"  # docker/notebook/ in the image's notebook target
STARTER = "starter.ipynb"
TOKEN_DIR = "/var/run/secrets/lsdb-notebook"
TOKEN_FILE = "token"
HOME_VOLUME = "home"
# The init container: copy the starter into the home unless the user already has one (never overwrite their edits).
COPY_STARTER = "import os, shutil, sys; os.path.exists(sys.argv[2]) or shutil.copyfile(sys.argv[1], sys.argv[2])"
COMMAND = (
    "jupyter-lab", "--no-browser",
    "--ServerApp.ip=0.0.0.0", f"--ServerApp.port={NOTEBOOK_PORT}",
    f"--ServerApp.root_dir={HOME_DIR}",
    "--ServerApp.allow_remote_access=True",  # reached through the Service's DNS name
    "--ServerApp.open_browser=False",
    # The image is the lock: no extension installs from PyPI (the root filesystem is read-only anyway).
    "--LabApp.extension_manager=readonly",
)  # fmt: skip


def notebook_name(cluster_name: str, part: str = "") -> str:
    """`<cluster.name>-notebook`, and its `part`s' (`-token`, `-tls`, `-home`); never `cluster.name` itself, which the
    cluster's NetworkPolicies select by."""
    return f"{cluster_name}-notebook" + (f"-{part}" if part else "")


def selector_labels(cluster_name: str) -> dict[str, str]:
    return {**LABELS, "app.kubernetes.io/name": notebook_name(cluster_name), "app.kubernetes.io/component": COMPONENT}


def _manifest(
    config: StackConfig, api_version: str, kind: str, name: str | None = None, **fields: Any
) -> dict[str, Any]:
    """An object of the notebook's, named like it unless `name` is given."""
    cluster = config.cluster.name
    labels = selector_labels(cluster)
    return manifest(api_version, kind, name or notebook_name(cluster), config.namespace, labels, **fields)


def token_from_key(private_key_pem: str) -> str:
    """A digest of a random key kept in the Pulumi state (stable across `pulumi up`; pulumi-random is no dependency)."""
    return hashlib.sha256(private_key_pem.encode()).hexdigest()[:48]


def notebook_env(config: StackConfig, storage: PodStorage, catalog: str | None) -> list[dict[str, Any]]:
    """`storage`: the cluster pods' (CatalogStorage.pod_storage); `catalog`: what the starter opens (the first
    provisioned catalog, else verify.catalogPath)."""
    verify, tls = config.verify, config.security.tls
    cone = verify.cone.model_dump(by_alias=True)
    # The stable Service's address: it follows the live cluster across upgrades.
    scheduler = in_cluster_address(scheduler_service_name(config.cluster.name), config.namespace, tls)
    env: list[dict[str, Any]] = [
        {"name": "DASK_SCHEDULER_ADDRESS", "value": scheduler},
        {"name": "LSDB_CATALOG", "value": catalog or ""},
        {"name": "LSDB_STORAGE_OPTIONS", "value": json.dumps(config.storage.catalog_storage_options, sort_keys=True)},
        {"name": "LSDB_CONE", "value": json.dumps(cone, sort_keys=True)},
        {"name": "LSDB_COLUMNS", "value": json.dumps(list(verify.columns))},
        {"name": "JUPYTER_TOKEN_FILE", "value": f"{TOKEN_DIR}/{TOKEN_FILE}"},
        *_tls(config)[0],
    ]
    return env + copy.deepcopy(storage.env)


def _tls(config: StackConfig) -> tuple[list[dict[str, str]], list[dict[str, Any]], list[dict[str, Any]]]:
    return tls_pieces(notebook_name(config.cluster.name, "tls") if config.security.tls else None, roles=("CLIENT",))


def deployment_manifest(
    config: StackConfig, storage: PodStorage, pull_secret: str | None, catalog: str | None, image: str
) -> dict[str, Any]:
    """The writable directories (home: the claim with notebook.storage), the token, the TLS bundle and the catalog
    storage (read-only) mounted; the starter copied into the home by an init container."""
    nb, name = config.notebook, config.cluster.name
    _, tls_volumes, tls_mounts = _tls(config)
    home: dict[str, Any] = {"emptyDir": {}}
    if nb.storage.enabled:
        home = {"persistentVolumeClaim": {"claimName": nb.storage.existing_claim or notebook_name(name, "home")}}
    volumes = [
        *(v for v in writable_volumes() if v["name"] != HOME_VOLUME),
        {"name": HOME_VOLUME, **home},
        secret_volume("token", notebook_name(name, "token")),
        *tls_volumes,
        *copy.deepcopy(storage.volumes),
    ]
    mounts = [
        *writable_mounts(),
        {"name": "token", "mountPath": TOKEN_DIR, "readOnly": True},
        *tls_mounts,
        *({**m, "readOnly": True} for m in storage.mounts),
    ]
    lab = container(
        "jupyterlab",
        image,
        resources(nb.cpu, nb.memory),
        mounts,
        {PORT_NAME: NOTEBOOK_PORT},
        notebook_env(config, storage, catalog),
        imagePullPolicy="IfNotPresent",
        command=list(COMMAND),
        **http_probes(PORT_NAME, "/api", 30),
    )
    init = container(
        "starter",
        image,
        {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
        [m for m in mounts if m["name"] == HOME_VOLUME],
        imagePullPolicy="IfNotPresent",
        command=["python", "-c", COPY_STARTER, f"{STARTER_DIR}/{STARTER}", f"{HOME_DIR}/{STARTER}"],
    )
    pod = pod_spec([lab], volumes, pull_secret, storage.service_account, initContainers=[init])
    selector = selector_labels(name)
    template_metadata = pod_metadata(storage, {**selector, **CLIENT_LABEL, **(DASHBOARD_LABEL if nb.dashboard else {})})
    annotations = skip_annotations(
        "CKV_K8S_11=a CPU limit throttles the kernel and its Dask client's heartbeats while the cluster does the "
        "work; the request (notebook.cpu) reserves the CPU",
        *storage.scanner_skips,  # the storage's, as on the cluster's pods (abfs keys as variables)
    )
    template = {"metadata": template_metadata, "spec": pod}
    spec = {
        "replicas": 1,
        "strategy": {"type": "Recreate"},
        "selector": {"matchLabels": selector},
        "template": template,
    }
    return _manifest(config, "apps/v1", "Deployment", annotations=annotations, spec=spec)


def service_manifest(config: StackConfig) -> dict[str, Any]:
    ports = [{"name": PORT_NAME, "protocol": "TCP", "port": NOTEBOOK_PORT, "targetPort": PORT_NAME}]
    spec = {"type": "ClusterIP", "selector": selector_labels(config.cluster.name), "ports": ports}
    return _manifest(config, "v1", "Service", spec=spec)


def home_claim_manifest(config: StackConfig) -> dict[str, Any] | None:
    storage = config.notebook.storage
    if storage.size is None:
        return None
    claim: dict[str, Any] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": storage.size}}}
    if storage.storage_class_name:
        claim["storageClassName"] = storage.storage_class_name
    return _manifest(config, "v1", "PersistentVolumeClaim", notebook_name(config.cluster.name, "home"), spec=claim)


def network_policy_manifest(config: StackConfig) -> dict[str, Any] | None:
    """None without security.networkPolicy; the cluster's policies admit the notebook as a client. Egress: DNS, the
    scheduler, and what the workers reach of an object store (security.egressCidrs, the GKE metadata server)."""
    security, storage, cluster_name = config.security, config.storage, config.cluster.name
    if not security.network_policy:
        return None
    ports = [SCHEDULER_PORT_NAME, *([DASHBOARD_PORT_NAME] if config.notebook.dashboard else [])]
    scheduler = {"podSelector": cluster_pods(cluster_name, "scheduler")}
    egress = [dns_egress(), {"to": [scheduler], "ports": [{"protocol": "TCP", "port": p} for p in ports]}]
    if storage.kind == "objectStore":  # a non-empty egressCidrs (config.py refuses an empty one here)
        egress.append(ip_egress(security.egress_cidrs, security.egress_ports))
    if storage.identity is not None and storage.identity[0] == "gcp":
        egress.append(gke_metadata_egress())
    ingress = [{"from": [{"podSelector": {}}], "ports": [{"protocol": "TCP", "port": PORT_NAME}]}]
    spec = {"podSelector": {"matchLabels": selector_labels(cluster_name)}, "policyTypes": ["Ingress", "Egress"]}
    return _manifest(
        config, "networking.k8s.io/v1", "NetworkPolicy", spec=spec | {"ingress": ingress, "egress": egress}
    )


def notebook_urls(config: StackConfig) -> dict[str, str]:
    """`notebookUrl` (in-cluster, no token in it) and `portForwardNotebook`."""
    name, namespace = notebook_name(config.cluster.name), config.namespace
    return {
        "notebookUrl": f"http://{name}.{namespace}.svc.cluster.local:{NOTEBOOK_PORT}/lab",
        "portForwardNotebook": f"{kubectl(config.kube_context)} --namespace {namespace} port-forward svc/{name} "
        f"{NOTEBOOK_PORT}:{NOTEBOOK_PORT}",
    }


class LsdbNotebook(pulumi.ComponentResource):
    """The notebook's Secrets, claim, NetworkPolicy, Deployment and Service. `image`: the notebook's is
    `notebook.imageRef` or the one built there; `client_tls`: with TLS, the client bundle (`ca`, `cert`, `key`: a
    Pulumi secret), stored under the cluster's file names."""

    token: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        config: StackConfig,
        storage: PodStorage,
        image: LsdbImage,
        catalog: str | None,
        client_tls: pulumi.Output[dict[str, Any]] | None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("lsdb-k8s:notebook:LsdbNotebook", name, {}, opts)
        ref, pull_secret = config.notebook.image_ref or image.notebook_ref, image.pull_secret_name
        assert ref is not None  # the config requires notebook.imageRef when no image is built
        child, cluster_name = child_options(self, opts), config.cluster.name
        seed = tls.PrivateKey(f"{name}-token-seed", algorithm="ED25519", opts=child)
        self.token = pulumi.Output.secret(seed.private_key_pem.apply(token_from_key))

        def secret(suffix: str, secret_name: str, data: Any) -> k8s.core.v1.Secret:
            fields = _manifest(config, "v1", "Secret", secret_name, type="Opaque")
            return register(
                k8s.core.v1.Secret, f"{name}-{suffix}", fields, child, string_data=pulumi.Output.secret(data)
            )

        needs: list[pulumi.Resource] = [secret("token", notebook_name(cluster_name, "token"), {TOKEN_FILE: self.token})]
        if client_tls is not None:
            bundle = client_tls.apply(lambda b: {TLS_FILES[k]: b[k] for k in ("ca", "cert", "key")})
            needs.append(secret("tls", notebook_name(cluster_name, "tls"), bundle))
        if (claim := home_claim_manifest(config)) is not None:
            needs.append(register(k8s.core.v1.PersistentVolumeClaim, f"{name}-home", claim, child))
        if (policy := network_policy_manifest(config)) is not None:
            needs.append(register(k8s.networking.v1.NetworkPolicy, f"{name}-netpol", policy, child))
        # The metadata known at preview; the spec runs the image built (known after the build).
        built = pulumi.Output.from_input(ref).apply(
            lambda r: deployment_manifest(config, storage, pull_secret, catalog, r)
        )
        shape = deployment_manifest(config, storage, pull_secret, catalog, "")
        deployment = register(k8s.apps.v1.Deployment, f"{name}-deployment", shape, child_options(self, opts, *needs),
                              spec=built["spec"])  # fmt: skip
        register(k8s.core.v1.Service, f"{name}-service", service_manifest(config), child)
        self.register_outputs({"deployment": deployment.metadata["name"]})
