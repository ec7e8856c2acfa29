"""CatalogStorage: where workers find HATS catalogs (RWX PVC, static NFS or hostPath PV, object store, none), and
what the pods need to see them (volumes, mounts, environment, identity)."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.config import IDENTITY_PROVIDERS, StorageConfig
from components.constants import LABELS as PROGRAM_LABELS
from components.constants import STORAGE_COMPONENT_LABEL
from components.object_store_keys import PodStorage, key_wiring, secret_data
from components.options import child_options, manifest, register

VOLUME_NAME = "catalog-data"
LABELS = {**PROGRAM_LABELS, STORAGE_COMPONENT_LABEL[0]: STORAGE_COMPONENT_LABEL[1]}
IDENTITY_ANNOTATION = "lsdb-k8s/workload-identity"  # on the pods: which identity their ServiceAccount carried
KEY_DIR = "/var/run/secrets/lsdb-object-store"  # the credentials Secret's files, read-only on scheduler and workers
KEY_VOLUME = "object-store-key"  # the scheduler mounts the volume of this name too (components/cluster.py)


def service_account_name(cluster_name: str) -> str:
    # From cluster.name (not the live cluster's name): the cloud-side binding names it, so it must not change.
    return f"{cluster_name}-catalog-reader"


def service_account_manifest(storage: StorageConfig, namespace: str, cluster_name: str) -> dict[str, Any] | None:
    """The workload identity's ServiceAccount, mounting no API token: EKS's and Azure's webhooks inject their own
    projected token, GKE's metadata server needs none."""
    if storage.identity is None:
        return None
    provider, value = storage.identity
    annotations = {IDENTITY_PROVIDERS[provider][2]: value}
    name = service_account_name(cluster_name)
    return manifest("v1", "ServiceAccount", name, namespace, LABELS, annotations, automountServiceAccountToken=False)


def object_store_secret_name(cluster_name: str) -> str:
    return f"{cluster_name}-object-store"


def persistent_volume_name(storage: StorageConfig, namespace: str) -> str:
    # PVs are cluster-scoped: include the namespace so two stacks on one cluster do not collide.
    return f"{namespace}-{storage.claim_name}"


def persistent_volume_manifest(storage: StorageConfig, namespace: str) -> dict[str, Any] | None:
    """The static PV for `nfs` (as in the guide: Retain, nfsvers=4.1) or `hostPath` (single-node dev clusters)."""
    if storage.kind not in ("nfs", "hostPath"):
        return None
    spec: dict[str, Any] = {
        "capacity": {"storage": storage.size},
        "accessModes": [storage.access_mode],
        "persistentVolumeReclaimPolicy": "Retain",
        "storageClassName": "",
        # Only our claim may bind it, even if another claim with the same size appears first.
        "claimRef": {"namespace": namespace, "name": storage.claim_name},
    }
    if storage.kind == "nfs":
        spec["nfs"] = {"server": storage.nfs.server, "path": storage.nfs.path}
        spec["mountOptions"] = ["nfsvers=4.1"]
    else:
        spec["hostPath"] = {"path": storage.host_path.path, "type": "DirectoryOrCreate"}
    return manifest("v1", "PersistentVolume", persistent_volume_name(storage, namespace), None, LABELS, spec=spec)


def persistent_volume_claim_manifest(storage: StorageConfig, namespace: str) -> dict[str, Any] | None:
    if not storage.creates_claim:  # existingClaim: the claim is the user's, never created nor deleted here
        return None
    spec: dict[str, Any] = {"accessModes": [storage.access_mode], "resources": {"requests": {"storage": storage.size}}}
    if storage.kind != "pvc":  # bind to the static PV above, never to a dynamically provisioned one
        spec |= {"storageClassName": "", "volumeName": persistent_volume_name(storage, namespace)}
    elif storage.storage_class_name:
        spec["storageClassName"] = storage.storage_class_name
    return manifest("v1", "PersistentVolumeClaim", storage.claim_name, namespace, LABELS, spec=spec)


def object_store_secret_manifest(
    storage: StorageConfig, namespace: str, cluster_name: str, credentials: dict[str, str]
) -> dict[str, Any] | None:
    if not storage.credential_keys:
        return None
    data = secret_data(storage.credential_env, credentials, "storage.objectStore.credentials")
    secret = object_store_secret_name(cluster_name)
    return manifest("v1", "Secret", secret, namespace, LABELS, type="Opaque", stringData=data)


def pod_storage(storage: StorageConfig, cluster_name: str) -> PodStorage:
    if storage.mounts_volume:
        return PodStorage(
            volumes=[{"name": VOLUME_NAME, "persistentVolumeClaim": {"claimName": storage.claim_name}}],
            mounts=[{"name": VOLUME_NAME, "mountPath": storage.mount_path}],
        )
    if storage.identity is not None:
        provider, value = storage.identity
        return PodStorage(
            service_account=service_account_name(cluster_name),
            pod_labels=IDENTITY_PROVIDERS[provider][3],
            # Webhooks inject the identity when a pod is created: a new identity must mean new pods.
            pod_annotations={IDENTITY_ANNOTATION: f"{provider}:{value}"},
        )
    if not storage.credential_keys:
        return PodStorage()
    return key_wiring(storage.credential_env, object_store_secret_name(cluster_name), KEY_VOLUME, KEY_DIR)


class CatalogStorage(pulumi.ComponentResource):
    """The catalog volume, or the object-store credentials (`credentials`: a Pulumi secret) or identity."""

    volume: k8s.core.v1.PersistentVolume | None = None
    claim: k8s.core.v1.PersistentVolumeClaim | None = None
    secret: k8s.core.v1.Secret | None = None
    service_account: k8s.core.v1.ServiceAccount | None = None

    def __init__(
        self,
        name: str,
        storage: StorageConfig,
        namespace: str,
        cluster_name: str,
        credentials: pulumi.Output[dict[str, str]] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("lsdb-k8s:storage:CatalogStorage", name, {}, opts)
        child = child_options(self, opts)
        self.pod_storage = pod_storage(storage, cluster_name)
        if pv := persistent_volume_manifest(storage, namespace):
            self.volume = register(k8s.core.v1.PersistentVolume, f"{name}-pv", pv, child)
        if pvc := persistent_volume_claim_manifest(storage, namespace):
            claim_opts = child_options(self, opts, self.volume)
            self.claim = register(k8s.core.v1.PersistentVolumeClaim, f"{name}-pvc", pvc, claim_opts)
        if storage.credential_keys and credentials is not None:
            secret = credentials.apply(lambda c: object_store_secret_manifest(storage, namespace, cluster_name, c))
            data = pulumi.Output.secret(secret.apply(lambda m: m["stringData"] if m else {}))
            # The shape not from `secret`, which the credentials make secret: the name stays readable in the state.
            shape = manifest("v1", "Secret", object_store_secret_name(cluster_name), namespace, LABELS, type="Opaque")
            self.secret = register(k8s.core.v1.Secret, f"{name}-object-store", shape, child, string_data=data)
        if account := service_account_manifest(storage, namespace, cluster_name):
            self.service_account = register(k8s.core.v1.ServiceAccount, f"{name}-service-account", account, child)
        claim_name = self.claim.metadata.name if self.claim else None
        self.register_outputs(
            {"claimName": claim_name, "mountPath": storage.mount_path if storage.mounts_volume else None}
        )
