"""Catalog provisioning (`catalogs`, docs/storage.md): per catalog a ConfigMap holding the copy engine
(components/provision/catalog_copy.py), a credentials Secret, a NetworkPolicy and the Job copying onto the claim.
The Job is kept (no `ttlSecondsAfterFinished`): deleted by Kubernetes, `pulumi up --refresh` would copy again."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pulumi
import pulumi_kubernetes as k8s

from components.catalog_config import DIGEST_LENGTH, SUFFIX, CatalogConfig, catalog_path, job_node_selector
from components.cluster import container, pod_spec, skip_annotations, spec_digest, writable_mounts, writable_volumes
from components.config import StackConfig
from components.constants import LABELS as PROGRAM_LABELS
from components.object_store_keys import key_wiring, secret_data
from components.options import child_options, manifest, register
from components.provision import catalog_copy
from components.security import dns_egress, ip_egress

ENGINE_PATH = Path(catalog_copy.__file__)
ENGINE_FILE = ENGINE_PATH.name
CODE_DIR = "/opt/lsdb-provision"
CODE_VOLUME = "provision-code"
CLAIM_VOLUME = "catalog-data"
KEY_VOLUME = "provision-key"
KEY_DIR = "/var/run/secrets/lsdb-provision"
COMPONENT = "catalog-provision"
CATALOG_LABEL = "lsdb-k8s/catalog"
THREADS = 8
BACKOFF_LIMIT = 2  # a transient source error is retried twice; the copy resumes where it stopped
JOB_TIMEOUT = "60m"  # how long `pulumi up` waits for the copy (pulumi-kubernetes' default is 10 minutes)
RESOURCES = {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}
DEFAULT_PORTS = {"https": 443, "http": 80}


def engine_source() -> str:
    return ENGINE_PATH.read_text()


def code_config_map_manifest(name: str, namespace: str, source: str) -> dict[str, Any]:
    """The engine's source as a ConfigMap, its content hash in the name (immutable: a change is a new one)."""
    config_map = f"{name}-provision-code-{spec_digest(source)[:DIGEST_LENGTH]}"
    return manifest("v1", "ConfigMap", config_map, namespace, labels(name), immutable=True, data={ENGINE_FILE: source})


def labels(name: str) -> dict[str, str]:
    return {**PROGRAM_LABELS, "app.kubernetes.io/component": COMPONENT, CATALOG_LABEL: name}


def credentials_secret_name(name: str) -> str:
    return f"{name}-provision-credentials"


def credentials_secret_manifest(
    name: str, catalog: CatalogConfig, namespace: str, credentials: Mapping[str, str]
) -> dict[str, Any] | None:
    """The credentials as the files the driver reads (abfs: the variables' values); None without credentials."""
    if not catalog.credential_env:
        return None
    data = secret_data(catalog.credential_env, credentials, f"catalogs.{name}.credentials")
    secret = credentials_secret_name(name)
    return manifest("v1", "Secret", secret, namespace, labels(name), type="Opaque", stringData=data)


def provision_job_manifest(
    name: str, catalog: CatalogConfig, config: StackConfig, pull_secret: str | None, source: str, image: str
) -> dict[str, Any]:
    """The Job copying catalog `name` onto the claim; `source` is the engine's text (its ConfigMap's content)."""
    storage, node_selector = config.storage, job_node_selector(config.cluster)
    keys = key_wiring(catalog.credential_env, credentials_secret_name(name), KEY_VOLUME, KEY_DIR)
    config_map = code_config_map_manifest(name, config.namespace, source)["metadata"]["name"]
    command = [
        "python", f"{CODE_DIR}/{ENGINE_FILE}",
        "--source", catalog.source,
        "--dest", catalog_path(storage, name),
        "--threads", str(THREADS),
        "--storage-options", json.dumps(catalog.storage_options),
    ]  # fmt: skip
    mounts: list[dict[str, Any]] = [
        {"name": CLAIM_VOLUME, "mountPath": storage.mount_path},
        {"name": CODE_VOLUME, "mountPath": CODE_DIR, "readOnly": True},
        *writable_mounts(),
        *keys.mounts,
    ]
    copier = container(
        "provision", image, RESOURCES, mounts, env=keys.env, imagePullPolicy="IfNotPresent", command=command
    )
    volumes = [
        {"name": CLAIM_VOLUME, "persistentVolumeClaim": {"claimName": storage.claim_name}},
        {"name": CODE_VOLUME, "configMap": {"name": config_map}},
        *writable_volumes(),
        *keys.volumes,
    ]
    placement: dict[str, Any] = {"nodeSelector": node_selector} if node_selector else {}
    pod = pod_spec([copier], volumes, pull_secret, restartPolicy="Never", **placement)
    annotations = {"pulumi.com/replaceUnready": "true"} | skip_annotations(*keys.scanner_skips)
    spec = {"backoffLimit": BACKOFF_LIMIT, "template": {"metadata": {"labels": labels(name)}, "spec": pod}}
    # `<name>-provision-<h>`, `<h>` a digest of the spec (source, access, engine, image): a Job's pod template is
    # immutable, and a new name lets Pulumi create the new Job before deleting the old.
    job_name = f"{name}{SUFFIX}{spec_digest(spec)[:DIGEST_LENGTH]}"
    return manifest("batch/v1", "Job", job_name, config.namespace, labels(name), annotations, spec=spec)


def source_ports(catalog: CatalogConfig, egress_ports: Sequence[int]) -> list[int]:
    """The ports the Job reaches its source on: the URL's (https/http), else `security.egressPorts`."""
    if catalog.scheme == "https":
        parts = urlsplit(catalog.source)
        return [parts.port or DEFAULT_PORTS.get(parts.scheme, 443)]
    return sorted(set(egress_ports))


def provision_network_policy_manifest(
    name: str, catalog: CatalogConfig, namespace: str, egress_cidrs: Sequence[str], egress_ports: Sequence[int]
) -> dict[str, Any]:
    """The Job's pods: no ingress; egress to DNS and to the source (`egress_cidrs` on its ports) only."""
    selector = {"matchLabels": {CATALOG_LABEL: name, "app.kubernetes.io/component": COMPONENT}}
    egress = [dns_egress(), ip_egress(egress_cidrs, source_ports(catalog, egress_ports))]
    spec = {"podSelector": selector, "policyTypes": ["Ingress", "Egress"], "ingress": [], "egress": egress}
    return manifest("networking.k8s.io/v1", "NetworkPolicy", f"{name}-provision", namespace, labels(name), spec=spec)


class CatalogProvisioning(pulumi.ComponentResource):
    """ConfigMap, Secret, NetworkPolicy and Job per entry of `config.catalogs`; depending on this component waits
    for every copy. `image`: the cluster's image reference (the pushed digest: an Output); `credentials`: catalog
    name -> its credentials (key -> value, a Pulumi secret), for the catalogs with credentials."""

    paths: dict[str, str]

    def __init__(
        self,
        name: str,
        config: StackConfig,
        image: pulumi.Input[str],
        pull_secret: str | None,
        credentials: Mapping[str, pulumi.Output[dict[str, str]]],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("lsdb-k8s:catalogs:CatalogProvisioning", name, {}, opts)
        ns, security, source, child = config.namespace, config.security, engine_source(), child_options(self, opts)

        def provision(catalog_name: str, catalog: CatalogConfig) -> None:
            prefix = f"{name}-{catalog_name}"
            code = code_config_map_manifest(catalog_name, ns, source)
            needs: list[pulumi.Resource] = [register(k8s.core.v1.ConfigMap, f"{prefix}-code", code, child)]
            if catalog.credential_env and catalog_name in credentials:
                secret: Any = credentials[catalog_name].apply(
                    lambda creds: credentials_secret_manifest(catalog_name, catalog, ns, creds)
                )
                secret_name = credentials_secret_name(catalog_name)
                shape = manifest("v1", "Secret", secret_name, ns, labels(catalog_name), type="Opaque")
                data = pulumi.Output.secret(secret.apply(lambda manifest: manifest["stringData"]))
                needs.append(register(k8s.core.v1.Secret, f"{prefix}-credentials", shape, child, string_data=data))
            if security.network_policy:
                policy = provision_network_policy_manifest(
                    catalog_name, catalog, ns, security.egress_cidrs, security.egress_ports
                )
                needs.append(register(k8s.networking.v1.NetworkPolicy, f"{prefix}-netpol", policy, child))
            job = pulumi.Output.from_input(image).apply(
                lambda ref: provision_job_manifest(catalog_name, catalog, config, pull_secret, source, ref)
            )
            # pulumi-kubernetes waits for a Job to complete: what depends on the component runs on a complete copy.
            job_opts = child_options(self, opts, *needs)
            job_opts.custom_timeouts = pulumi.CustomTimeouts(create=JOB_TIMEOUT, update=JOB_TIMEOUT)
            register(k8s.batch.v1.Job, f"{prefix}-job", {}, job_opts, metadata=job["metadata"], spec=job["spec"])

        for catalog_name, catalog in config.catalogs.items():
            provision(catalog_name, catalog)
        self.paths = {c: catalog_path(config.storage, c) for c in config.catalogs}
        self.register_outputs({"catalogPaths": self.paths})
