"""The Pulumi program as a function: `program(config)` builds every component and returns the stack exports;
`main()` (what `__main__.py` runs) reads the config and checks the client first."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.catalogs import CatalogProvisioning
from components.client_check import enforce_client_environment
from components.cluster import ClusterSpec, LsdbDaskCluster, cluster_manifests
from components.config import StackConfig, read_stack_config, secret_config
from components.constants import (
    DASHBOARD_PORT,
    LABELS,
    POD_SECURITY_LABELS,
    SCHEDULER_PORT,
    scheduler_service_name,
)
from components.dask_operator import DaskOperator, operator_from_stack, operator_version
from components.endpoint import StableEndpoint, StableEndpointSelector
from components.image import LsdbImage
from components.monitoring import LsdbMonitoring, chart_monitoring_values
from components.notebook import LsdbNotebook, notebook_urls
from components.security import ClusterSecurity, tls_secret_name
from components.storage import CatalogStorage
from components.tls_schedule import certificate_schedule
from components.verification.query import GATE, VerificationQuery
from components.verification.resource import LsdbVerification, VerificationArgs


def program(config: StackConfig, today: date | None = None) -> dict[str, Any]:
    """Register every resource of the stack; return the exports. `today` (UTC): the day whose TLS epoch the cluster
    serves (components/tls_schedule.py); tests pass one."""
    today = today or datetime.now(UTC).date()  # the program's one reading of the clock
    exports: dict[str, Any] = {}
    namespace, provider_opts = config.namespace, None
    if config.kube_context:
        provider = k8s.Provider("kube", context=config.kube_context)
        provider_opts = pulumi.ResourceOptions(providers=[provider])

    def opts(*depends_on: pulumi.Resource | None) -> pulumi.ResourceOptions:
        deps = [d for d in depends_on if d is not None]
        return pulumi.ResourceOptions.merge(provider_opts, pulumi.ResourceOptions(depends_on=deps))

    operator, operator_namespace = _operator(config, opts(), exports)
    if config.is_platform:
        return exports  # the platform stack: the operator and its CRDs only

    cluster_namespace = None
    if config.create_namespace and namespace != "default":
        cluster_namespace = k8s.core.v1.Namespace(
            "namespace", metadata={"name": namespace, "labels": {**LABELS, **POD_SECURITY_LABELS}}, opts=provider_opts
        )

    credentials = secret_config("storage", ("objectStore", "credentials")) if config.storage.credential_keys else None
    storage = CatalogStorage(
        "catalog-storage", config.storage, namespace, config.cluster.name, credentials, opts(cluster_namespace)
    )
    password = secret_config("image", ("registry", "password")) if config.image.registry.password is not None else None
    build_notebook = config.notebook.enabled and config.notebook.image_ref is None
    image = LsdbImage("lsdb-image", config.image, namespace, config.cluster.name, password, build_notebook,
                      opts(cluster_namespace))  # fmt: skip
    provisioning = None
    if config.catalogs:
        catalogs = {
            n: secret_config("catalogs", (n, "credentials")) for n, c in config.catalogs.items() if c.credentials
        }
        provisioning = CatalogProvisioning("catalog-provisioning", config, image.ref, image.pull_secret_name, catalogs,
                                           opts(cluster_namespace, storage, image))  # fmt: skip
        exports["catalogPaths"] = provisioning.paths  # name -> the path workers open (lsdb.open_catalog)
    # The certificate Secret's name is the TLS epoch's (a new epoch: a new Secret, a new `<h>`, a new cluster), known
    # before the certificate, whose SANs name the stable and the candidate scheduler Service.
    tls_tag = certificate_schedule(today, config.security.tls_generation).tag
    tls_secret = tls_secret_name(config.cluster.name, tls_tag) if config.security.tls else None
    spec = ClusterSpec(config.cluster, namespace, storage.pod_storage, image.pull_secret_name, tls_secret)
    manifests = cluster_manifests(spec, image.identity)
    live_name = manifests.live_name
    security = ClusterSecurity("lsdb-security", config, operator_namespace, live_name, today, opts(cluster_namespace))
    # The stable Service comes before every cluster and goes after all of them (the clusters depend on it); it routes
    # nothing until the selector below points it at a verified cluster.
    endpoint = StableEndpoint("scheduler-endpoint", config, live_name, opts(cluster_namespace))
    cluster_opts = opts(operator, cluster_namespace, storage, image, security, endpoint)
    cluster = LsdbDaskCluster("lsdb-cluster", manifests, image.ref, cluster_opts)
    exports |= {"namespace": namespace, "clusterName": cluster.cluster_name, "imageRef": image.ref}
    exports["workerGroups"] = cluster.worker_group_names
    # What a user passes to `lsdb.open_catalog(url, storage_options=...)` in the cluster (no secret in it).
    exports["catalogStorageOptions"] = config.storage.catalog_storage_options

    verification = _verification(config, cluster, image, security, provisioning)
    if config.verify.enabled:  # the gate's outputs are no verification result (no rows, no versions)
        exports["verification"] = verification.outputs()

    # Switched to the new cluster only after it passed the verification (or its gate): a failed check fails `pulumi up`
    # here, and the stable Service keeps selecting the old cluster (docs/lifecycle.md).
    selector_opts = opts(endpoint, cluster, verification, provisioning)
    selector = StableEndpointSelector("scheduler-endpoint-selector", config, live_name, selector_opts)
    exports |= endpoint.endpoints
    exports |= forward_commands(namespace, scheduler_service_name(config.cluster.name), config.kube_context)
    if security.client_tls is not None:
        exports["clientTls"] = security.client_tls  # a Pulumi secret: `pulumi stack output --show-secrets clientTls`
        exports["tlsCertificateExpiry"] = security.certificate_expiry  # the live cluster's certificate (RFC 3339)
        # The first `pulumi up` on or after these days starts a new cluster with new certificates (and a new CA).
        exports["tlsNextRotation"] = security.schedule.next_cert_rotation.isoformat()
        exports["tlsNextCaRotation"] = security.schedule.next_ca_rotation.isoformat()

    # After the switch: the notebook's client bundle (rewritten at a certificate rotation) changes only once the
    # stable Service selects the cluster that trusts it, and a failed `pulumi up` leaves the notebook as it was.
    if config.notebook.enabled:
        catalog = next(iter(provisioning.paths.values())) if provisioning else config.verify.catalog_path
        notebook = LsdbNotebook("lsdb-notebook", config, storage.pod_storage, image, catalog, security.client_tls,
                                opts(cluster_namespace, storage, image, selector))  # fmt: skip
        exports |= {**notebook_urls(config), "notebookToken": notebook.token}

    if config.monitoring.enabled:
        LsdbMonitoring("lsdb-monitoring", config, cluster.cluster_name, exports.get("verification"),
                       opts(cluster, verification))  # fmt: skip
    return exports


def forward_commands(namespace: str, service: str, kube_context: str | None) -> dict[str, str]:
    """tools/forward.py resolves the stable Service for every connection, so it follows upgrades (`kubectl
    port-forward svc/...` binds one pod and exits when it goes)."""
    context = f" --context {kube_context}" if kube_context else ""
    command = f".venv/bin/python -m tools.forward{context} --namespace {namespace} --service {service}"
    return {
        "portForwardScheduler": f"{command} {SCHEDULER_PORT}:{SCHEDULER_PORT}",
        "portForwardDashboard": f"{command} {DASHBOARD_PORT}:{DASHBOARD_PORT}",
    }


def _operator(
    config: StackConfig, opts: pulumi.ResourceOptions, exports: dict[str, Any]
) -> tuple[DaskOperator | None, pulumi.Input[str]]:
    """The operator this stack installs (or None), and the namespace it runs in (this stack's or fromStack's)."""
    if config.operator.install:
        # With monitoring on, the chart's own ServiceMonitor/PodMonitor scrape this stack's cluster namespace. A
        # platform stack runs no cluster: the environments taking its operator create their own monitors.
        values = None if config.is_platform else chart_monitoring_values(config.monitoring, config.namespace) or None
        operator = DaskOperator("dask-operator", config.operator, values, config.kube_context, opts)
        exports["operatorNamespace"] = config.operator.namespace
        exports["operatorVersion"] = operator.version
        return operator, config.operator.namespace
    if config.operator.from_stack:
        # Another stack installed the operator: it must serve the CRDs of the dask-kubernetes we pin.
        exports["operatorNamespace"] = operator_from_stack(config.operator.from_stack)
        return None, exports["operatorNamespace"]
    return None, config.operator.namespace


def _verification(
    config: StackConfig,
    cluster: LsdbDaskCluster,
    image: LsdbImage,
    security: ClusterSecurity,
    provisioning: CatalogProvisioning | None,
) -> LsdbVerification:
    """The verification of THIS cluster through its own Service (a new cluster, a new resource). With
    `verify.enabled: false` only its gate (connect, workers: `verify.minWorkers` or the fewer the cluster always
    has)."""
    verify = config.verify
    if verify.enabled:
        query = VerificationQuery.model_validate(
            {**verify.model_dump(), "storage_options": config.storage.catalog_storage_options}
        )
    else:  # only what the gate uses: a change to the rest of a disabled verify section does not re-run it
        query = VerificationQuery(
            stages=GATE,
            min_workers=min(verify.min_workers, config.cluster.min_workers),
            timeout_seconds=verify.timeout_seconds,
            connect=verify.connect,
        )
    return LsdbVerification(
        f"lsdb-verification-{cluster.digest}",
        VerificationArgs(
            query=query,
            scheduler_address=cluster.candidate_address,
            namespace=config.namespace,
            cluster_name=cluster.cluster_name,
            cluster_uid=cluster.cluster_uid,
            kube_context=config.kube_context,
            image_ref=image.ref,
            cluster_spec_hash=cluster.spec_hash,
            operator_version=operator_version(),  # this stack's or fromStack's: checked equal to the lock
            client_tls=security.client_tls,
        ),
        # The check reads the catalog: it waits for the copy Jobs to complete (pulumi-kubernetes awaits a Job).
        pulumi.ResourceOptions(depends_on=[cluster, *([provisioning] if provisioning else [])]),
    )


def main() -> None:
    """What `pulumi up` runs: validate, check the client, build, export."""
    config = read_stack_config()  # raises ConfigError listing every problem before any resource is registered
    # The client (this interpreter, which also runs the verification) must match the image's lock. A platform stack
    # builds no image and runs no verification (and may not set `image.*`, so the check's fix would be refused).
    if not config.is_platform:
        enforce_client_environment(config.image)
    for key, value in program(config).items():
        pulumi.export(key, value)
