"""`pulumi up --stack <env>`: read and validate config, build the components, export how to reach the cluster."""

import pulumi
import pulumi_kubernetes as k8s

from components.client_check import enforce_client_environment
from components.cluster import LsdbDaskCluster
from components.config import read_stack_config, secret_config
from components.dask_operator import DaskOperator, operator_from_stack
from components.image import LsdbImage
from components.storage import CatalogStorage
from components.verification import LsdbVerification

# Validation raises ConfigError listing every problem before any resource is registered.
config = read_stack_config()
# The client (this interpreter, which also runs the verification) must match the image's lock.
enforce_client_environment(config.image)
namespace = config.namespace

provider_opts = None
if config.kube_context:
    provider = k8s.Provider("kube", context=config.kube_context)
    provider_opts = pulumi.ResourceOptions(providers=[provider])

operator_deps: list[pulumi.Resource] = []
if config.operator.install:
    operator = DaskOperator(
        "dask-operator", config.operator.namespace, config.operator.chart_source, opts=provider_opts
    )
    operator_deps = [*operator.crds, operator.release]
    pulumi.export("operatorNamespace", config.operator.namespace)
    pulumi.export("operatorVersion", operator.version)
elif config.operator.from_stack:
    # Another stack installed the operator: it must serve the CRDs of the dask-kubernetes we pin.
    pulumi.export("operatorNamespace", operator_from_stack(config.operator.from_stack))

ns_deps: list[pulumi.Resource] = []
if namespace != "default":
    ns_deps = [
        k8s.core.v1.Namespace(
            "namespace",
            metadata={"name": namespace, "labels": {"app.kubernetes.io/part-of": "lsdb-k8s"}},
            opts=provider_opts,
        )
    ]

credentials = None
if config.storage.credential_keys:
    credentials = secret_config("storage", ("objectStore", "credentials"))
storage = CatalogStorage(
    "catalog-storage",
    config.storage,
    namespace,
    config.cluster.name,
    credentials=credentials,
    depends_on=ns_deps,
    opts=provider_opts,
)

password = secret_config("image", ("registry", "password")) if config.image.has_registry_password else None
image = LsdbImage(
    "lsdb-image",
    config.image,
    namespace,
    config.cluster.name,
    registry_password=password,
    depends_on=ns_deps,
    opts=provider_opts,
)

cluster = LsdbDaskCluster(
    "lsdb-cluster",
    config.cluster,
    namespace,
    image=image.ref,
    storage=storage.pod_storage,
    kube_context=config.kube_context,
    pull_secret=image.pull_secret_name,
    depends_on=[*operator_deps, *ns_deps, *storage.resources, *([image.pull_secret] if image.pull_secret else [])],
    opts=provider_opts,
)

pulumi.export("namespace", namespace)
pulumi.export("clusterName", cluster.cluster_name)
pulumi.export("imageRef", image.ref)
for key in (
    "schedulerAddress",
    "dashboardUrl",
    "portForwardScheduler",
    "localSchedulerAddress",
    "portForwardDashboard",
    "localDashboardUrl",
    "kubectlSchedulerPods",
    "kubectlWorkerPods",
):
    pulumi.export(key, cluster.endpoints[key])

if config.verify.enabled:
    v = config.verify
    verification = LsdbVerification(
        "lsdb-verification",
        scheduler_address=cluster.endpoints["schedulerAddress"],
        namespace=namespace,
        cluster_name=cluster.cluster_name,
        kube_context=config.kube_context,
        connect=v.connect,
        catalog_path=v.catalog_path,
        ra=v.ra,
        dec=v.dec,
        radius_arcsec=v.radius_arcsec,
        columns=list(v.columns),
        min_rows=v.min_rows,
        min_workers=v.min_workers,
        timeout_seconds=v.timeout_seconds,
        image_ref=image.ref,
        cluster_spec_hash=cluster.spec_hash,
        opts=pulumi.ResourceOptions(
            depends_on=[cluster.dask_cluster, *([cluster.autoscaler] if cluster.autoscaler else [])]
        ),
    )
    pulumi.export(
        "verification",
        {
            "rows": verification.rows,
            "partitions": verification.partitions,
            "workers": verification.workers,
            "elapsedSeconds": verification.elapsedSeconds,
            "versions": verification.versions,
            "sample": verification.sample,
        },
    )
