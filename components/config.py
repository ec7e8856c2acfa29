"""The stack's configuration: one declarative pydantic model, read and validated before any resource exists.

Each key is a field (docs/configuration.md and the JSON Schema are generated from them: `python -m tools.config_docs`).
The secret fields never hold their values: `secret_config` hands them to resources as Pulumi secrets.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import reduce
from operator import getitem
from typing import Annotated, Any, Literal

import pulumi
from pydantic import AfterValidator, BeforeValidator, Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import InitErrorDetails

from components.catalog_config import CatalogConfig, catalog_path, job_node_selector, provisioning_problems
from components.cluster_config import ClusterConfig, WorkerPodConfig, label_problems
from components.config_report import report
from components.lock import base_image
from components.notebook_config import NotebookConfig, notebook_problems
from components.section import (
    DIGEST_REF,
    SECRET,
    SINGLE_NODE_MODES,
    Cidr,
    DefaultText,
    DnsLabel,
    DocType,
    Fix,
    Password,
    Port,
    Section,
    aliases,
    comma_list,
    empty_section,
    json_object,
    problem,
    raise_problems,
    reject,
)
from components.storage_config import IDENTITY_PROVIDERS, ObjectStoreStorage, StorageConfig, url_scheme
from components.verification.query import VerifyConfig

# Parts of the model the components import from here.
__all__ = ["IDENTITY_PROVIDERS", "ClusterConfig", "StorageConfig", "WorkerPodConfig"]

PROJECT = "lsdb-k8s"
PYTHON_VERSION = re.compile(r"^3\.[0-9]+\.[0-9]+$")
PLATFORM_KEYS = ("role", "kubeContext", "operator")
STACK_FIX = "use <stack> (same organization and project) or <org>/<project>/<stack>"


class ConfigError(pulumi.RunError):
    """Every problem in the stack configuration, at once (a `RunError`: Pulumi prints it without a traceback)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{len(problems)} problem(s) in the stack configuration (nothing was deployed):\n{lines}")


def _image_reference(value: str | None) -> str | None:
    """No floating tag; a repository (or operator image) without tag or digest, lowercase."""
    if value and re.search(r"(^|[:/])latest($|@)", value):
        raise reject("uses the floating tag 'latest'", "use a digest-pinned reference; tags are derived")
    return value


def _repository(value: str | None) -> str | None:
    if value and ("@" in value or ":" in value.rsplit("/", 1)[-1]):
        raise reject("must not carry a tag or digest", "give the repository only; the tag and digest are derived")
    if value and value != value.lower():
        raise reject("must be lowercase", "use lowercase letters")
    return value


Repository = Annotated[str | None, AfterValidator(_image_reference), AfterValidator(_repository)]


class OperatorConfig(Section):
    """The Dask Kubernetes Operator: installed by this stack, or taken from the stack that installed it."""

    install: Annotated[bool, DefaultText("`true` (`false` with `fromStack`)")] = True
    """Install the operator and its CRDs. `false` where another team already did: check with
    `kubectl get crd | grep dask` (four `*.kubernetes.dask.org` CRDs)."""
    namespace: DnsLabel = "dask-operator"
    """The operator's own namespace (must differ from `namespace`)."""
    chart_source: Literal["repository", "package"] = "repository"
    """`repository` = `https://helm.dask.org`; `package` = the chart shipped inside the pinned `dask-kubernetes` wheel,
    with its placeholder version and image tag replaced by the locked version (for clusters without internet access,
    together with `operator.image` pointing at a mirror)."""
    from_stack: Annotated[str | None, Fix(STACK_FIX)] = Field(None, pattern=r"^[^/]+(/[^/]+/[^/]+)?$")
    """The stack that installed the operator: `<stack>` (same organization and project as this stack; on a self-managed
    backend the organization is `organization`) or `<org>/<project>/<stack>`. Its `operatorNamespace`/`operatorVersion`
    exports are read and the deploy fails if the version differs from the lock. Implies `install: false`."""
    image: Repository = None
    """Operator image repository, for mirrors and air-gapped registries (default
    `ghcr.io/dask/dask-kubernetes-operator`); the tag is always the locked dask-kubernetes version."""

    @classmethod
    def prepare(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value.get("fromStack") is not None and "install" not in value:
            return {**value, "install": False}
        return value

    def problems(self) -> Iterator[InitErrorDetails]:
        if self.from_stack is not None and self.install:
            yield problem(
                "install", True, "conflicts with operator.fromStack (that stack installed the operator)",
                "remove operator.install or set it to false",
            )  # fmt: skip


class RegistryConfig(Section):
    server: str | None = None
    """Registry host for push and pull credentials, e.g. `ghcr.io`."""
    username: str | None = None
    """Registry user."""
    password: Annotated[Password | None, DocType("secret")] = None
    """**Secret.** Registry password or token."""

    def problems(self) -> Iterator[InitErrorDetails]:
        if self.password is not None and not (self.server and self.username):
            yield problem(
                (), "[password set]", "needs server and username with the password",
                "set image.registry.server and image.registry.username",
            )  # fmt: skip


class ImageConfig(Section):
    """The LSDB image: built from docker/ and the lock, or a prebuilt digest."""

    repository: Repository = None
    """Registry repository without tag, e.g. `ghcr.io/<org>/lsdb-dask` (required unless `ref`)."""
    python_version: Annotated[
        str, Fix("pin the base image to a patch release, e.g. 3.11.7 (match your client's Python)")
    ] = Field("3.11.7", pattern=PYTHON_VERSION.pattern)
    """Base image Python, `X.Y.Z`; match your client's Python."""
    platform: str = "linux/amd64"
    """Build platform (part of the tag)."""
    push: bool = True
    """Must stay `true` when building: the cluster pulls by registry digest (dev pushes to `localhost:5001`)."""
    registry: RegistryConfig = Field(default_factory=empty_section)
    """Push and pull credentials (password as a secret)."""
    ref: Annotated[
        str | None,
        AfterValidator(_image_reference),
        Fix("use repository@sha256:<64 hex> (`docker buildx imagetools inspect <image>` prints the digest)"),
    ] = Field(None, pattern=DIGEST_REF)
    """Prebuilt `repository@sha256:<digest>`; skips the build."""
    client_check: Literal["error", "warn"] = "error"
    """`error` or `warn` when the client environment differs from the lock."""

    def problems(self) -> Iterator[InitErrorDetails]:
        if self.ref is not None:  # a prebuilt image: pythonVersion says which Python it runs (the client check)
            return
        if not self.push:
            yield problem(
                "push", False, "leaves no registry digest for the cluster to pull (it never uses tags)",
                "set image.push true (dev uses the local registry) or give a prebuilt image.ref",
            )  # fmt: skip
        base = base_image()
        if self.python_version != base.python_version:
            yield problem(
                "pythonVersion", self.python_version,
                f"differs from {base.python_version}, the Python of the base image docker/Dockerfile pins ({base.ref})",
                f"pulumi config set --path image.pythonVersion {base.python_version}, or move the image to another "
                "release with `python -m tools.relock --python X.Y.Z`",
            )  # fmt: skip


class SecurityConfig(Section):
    """Who may reach the cluster, and how: NetworkPolicies, TLS between client, scheduler and workers."""

    network_policy: bool = True
    """Create NetworkPolicies: deny all ingress and egress of the cluster's pods except what the README's security
    section lists."""
    client_namespaces: Annotated[list[DnsLabel], BeforeValidator(comma_list)] = Field(default_factory=list)
    """Namespaces whose pods may use the scheduler's Dask port (8786) besides pods labelled `lsdb-k8s/client: "true"` in
    `namespace`."""
    dashboard_namespaces: Annotated[list[DnsLabel], BeforeValidator(comma_list)] = Field(default_factory=list)
    """Namespaces whose pods may reach the scheduler's HTTP port (8787) besides pods labelled
    `lsdb-k8s/dashboard: "true"` in `namespace`: the dashboard, and with it the unauthenticated HTTP API
    (`/api/v1/retire_workers`, …). By default only the operator's namespace and, with `monitoring.enabled`,
    `monitoring.prometheusNamespace` reach it."""
    egress_cidrs: Annotated[list[Cidr], BeforeValidator(comma_list)] = Field(default_factory=lambda: ["0.0.0.0/0"])
    """`storage.kind: objectStore`: address blocks of the object store the pods may reach (on `egressPorts`);
    `catalogs`: those of the sources the provisioning Jobs may reach. NFS and hostPath are mounted by the node and need
    none."""
    egress_ports: Annotated[list[Port], BeforeValidator(comma_list)] = Field(default_factory=lambda: [443])
    """`storage.kind: objectStore`: TCP ports of the object store (e.g. `9000` for a MinIO endpoint); also the
    provisioning Jobs' to `s3://`, `gs://`, `abfs://` sources."""
    tls: Annotated[bool, DefaultText("`true` (the dev stack file sets `false`)")] = True
    """Mutual TLS between client, scheduler and workers with a CA per stack and a certificate per cluster (pulumi-tls);
    the scheduler address becomes `tls://`, the client bundle the secret export `clientTls`."""
    tls_generation: Annotated[int, Fix("use 0 or more: raise it by one to replace the CA, keys and certificates")] = (
        Field(0, ge=0)
    )
    """Raise by one to replace the CA, every key and certificate at the next `pulumi up` (a leaked key): a new cluster
    starts with them; clients need the new `clientTls`. Certificates also rotate on their own schedule
    (docs/security.md)."""

    @classmethod
    def prepare(cls, value: dict[str, Any]) -> dict[str, Any]:
        if "metricsNamespaces" in value:
            raise_problems("security", [problem(
                "metricsNamespaces", value["metricsNamespaces"],
                "was replaced by monitoring.prometheusNamespace (scrapers are let in while monitoring.enabled is true)",
                "remove it; set monitoring.enabled true and monitoring.prometheusNamespace to your Prometheus's "
                "namespace (default monitoring)",
            )])  # fmt: skip
        return value


class MonitoringConfig(Section):
    """Prometheus monitors for the scheduler and workers, and a Grafana dashboard (needs the prometheus-operator)."""

    enabled: bool = False
    """Scrape `/metrics` of the scheduler (ServiceMonitor) and workers (PodMonitor): through the operator chart's own
    monitors when this stack installs the operator, else created here. Needs the prometheus-operator CRDs
    (`kubectl get crd servicemonitors.monitoring.coreos.com`)."""
    prometheus_namespace: DnsLabel = "monitoring"
    """Namespace of the Prometheus that scrapes the cluster (kube-prometheus-stack's usual `monitoring`): with `enabled`
    and `security.networkPolicy`, every pod of it may read `/metrics` on the scheduler's port 8787 and the workers'
    8788, nothing else."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Labels on the monitors so your Prometheus selects them (its `serviceMonitorSelector` / `podMonitorSelector`),
    e.g. `{release: kube-prometheus-stack}`."""
    dashboard: bool = True
    """With `enabled`: a Grafana dashboard ConfigMap."""
    dashboard_labels: dict[str, str] = Field(default_factory=lambda: {"grafana_dashboard": "1"})
    """Labels the Grafana dashboard sidecar watches for."""
    dashboard_namespace: DnsLabel | None = None
    """Namespace of the dashboard ConfigMap (default: `namespace`); it must exist."""

    def problems(self) -> Iterator[InitErrorDetails]:
        fix = "use a Kubernetes label (key ≤ 63 characters, value ≤ 63)"
        yield from label_problems("labels", self.labels, fix)
        yield from label_problems("dashboardLabels", self.dashboard_labels, fix)


class StackConfig(Section):
    """Everything `pulumi up --stack <env>` reads, under the `lsdb-k8s:` prefix of `Pulumi.<stack>.yaml`."""

    role: Literal["cluster", "platform"] = "cluster"
    """`cluster`: a Dask cluster (with the operator, or taking it from `operator.fromStack`); `platform`: only the
    cluster-wide operator and its CRDs, for the other stacks to share (then only `operator` and `kubeContext` may be
    set)."""
    namespace: DnsLabel = "lsdb"
    """Namespace for the cluster, storage claim and secrets."""
    create_namespace: bool = True
    """Create `namespace` (and delete it on destroy). `false` uses a namespace that already exists and leaves it alone;
    `default` is never created."""
    kube_context: str | None = None
    """kubeconfig context for every Kubernetes resource and for the verification's port-forward (default: the current
    context)."""
    operator: OperatorConfig = Field(default_factory=empty_section)
    """The Dask Kubernetes Operator."""
    storage: StorageConfig = Field(default_factory=empty_section)
    """Catalog storage."""
    catalogs: Annotated[dict[DnsLabel, CatalogConfig], BeforeValidator(json_object)] = Field(default_factory=dict)
    """HATS catalogs copied onto the storage claim before the cluster is verified, by name: a Kubernetes Job per catalog
    writes `<storage.mountPath>/catalogs/<name>` (docs/storage.md, "Provisioning catalogs"). The first one is the
    default `verify.catalogPath`."""
    cluster: ClusterConfig = Field(default_factory=empty_section)
    """The Dask cluster."""
    image: ImageConfig = Field(default_factory=empty_section)
    """The LSDB image."""
    verify: VerifyConfig = Field(default_factory=empty_section)
    """Post-deploy verification."""
    security: SecurityConfig = Field(default_factory=empty_section)
    """NetworkPolicies and TLS (secure by default)."""
    monitoring: MonitoringConfig = Field(default_factory=empty_section)
    """Prometheus metrics and the Grafana dashboard."""
    notebook: NotebookConfig = Field(default_factory=empty_section)
    """JupyterLab beside the cluster."""

    @property
    def is_platform(self) -> bool:
        return self.role == "platform"

    # Rules across sections. Those whose key lies in a section validate that section and read the sections declared
    # before it (`info.data` holds those that are valid), so they are reported even when another section is not.
    @field_validator("operator", "image", "notebook")
    @classmethod
    def _section_rules(cls, section: Any, info: ValidationInfo) -> Any:
        raise_problems(str(info.field_name), SECTION_RULES[str(info.field_name)](section, info.data))
        return section

    @field_validator("verify")
    @classmethod
    def _verify_rules(cls, verify: VerifyConfig, info: ValidationInfo) -> VerifyConfig:
        verify = _default_catalog_path(verify, info.data)
        raise_problems("verify", _verify_problems(verify, info.data))
        return verify

    def problems(self) -> Iterator[InitErrorDetails]:
        """Rules whose key is not in the last section they read: reported once every section is valid."""
        storage, cluster = self.storage, self.cluster
        if storage.creates_claim and storage.access_mode in SINGLE_NODE_MODES and cluster.max_workers > 1:
            yield problem(
                "storage.accessMode", storage.access_mode,
                f"lets only one node mount the catalog, but up to {cluster.max_workers} workers may run",
                "use ReadWriteMany (or ReadOnlyMany), or limit workers (and autoscaler.maximum) to 1",
            )  # fmt: skip
        yield from provisioning_problems(self.catalogs, storage, job_node_selector(cluster))
        yield from _idle_timeout_outlasts_the_check(cluster, self.verify)
        yield from _egress_rule_problems(self.security, storage, self.catalogs)
        given = {type(self).model_fields[name].alias or name for name in self.model_fields_set}
        for key in sorted(given - set(PLATFORM_KEYS)) if self.is_platform else ():
            yield problem(
                key, "[set]", "is set, but role platform installs only the operator and its CRDs",
                f"remove it from this stack (a platform stack takes only {', '.join(PLATFORM_KEYS)})",
            )  # fmt: skip


def _operator_problems(operator: OperatorConfig, data: dict[str, Any]) -> Iterator[InitErrorDetails]:
    if operator.install and operator.namespace == data.get("namespace"):
        yield problem(
            "namespace", operator.namespace, "is the same as the cluster namespace",
            "keep the cluster-wide operator in its own namespace (default dask-operator)",
        )  # fmt: skip
    if data.get("role") == "platform" and (not operator.install or operator.from_stack):
        yield problem("install", False, "must be true for role platform", "remove operator.install/fromStack")


def _image_problems(image: ImageConfig, data: dict[str, Any]) -> Iterator[InitErrorDetails]:
    if data.get("role") == "cluster" and image.ref is None and not image.repository:
        yield problem("repository", None, "is required when image.ref is not set", "e.g. ghcr.io/<org>/lsdb-dask")


SECTION_RULES: dict[str, Callable[[Any, dict[str, Any]], Iterable[InitErrorDetails]]] = {
    "operator": _operator_problems, "image": _image_problems, "notebook": notebook_problems,
}  # fmt: skip


def _default_catalog_path(verify: VerifyConfig, data: dict[str, Any]) -> VerifyConfig:
    """Without `verify.catalogPath`, the first catalog provisioned onto the claim."""
    catalogs, storage = data.get("catalogs"), data.get("storage")
    if data.get("role") != "cluster" or not verify.enabled or verify.catalog_path:
        return verify
    if not catalogs or storage is None or not storage.mounts_volume:
        return verify
    return verify.model_copy(update={"catalog_path": catalog_path(storage, next(iter(catalogs)))})


def _verify_problems(verify: VerifyConfig, data: dict[str, Any]) -> Iterator[InitErrorDetails]:
    if data.get("role") != "cluster" or not verify.enabled:
        return
    if not verify.catalog_path:
        # Given catalogs but no claim to copy them onto, or an invalid catalogs section: reported on their own.
        if data.get("catalogs") == {}:
            yield problem(
                "catalogPath", None, "is required while verification is enabled",
                "set the catalog path as workers see it (e.g. /data/catalogs/my_catalog), provision one "
                "(catalogs.<name>), or verify.enabled false",
            )  # fmt: skip
    elif "storage" in data:
        yield from _catalog_in_storage(verify.catalog_path, data["storage"])
    if "cluster" in data:
        yield from _workers_to_wait_for(verify.min_workers, data["cluster"])


def _catalog_in_storage(path: str, storage: StorageConfig) -> Iterator[InitErrorDetails]:
    """The catalog is where the workers can read it: in the configured object store, or under the mount."""
    scheme, store = url_scheme(path), storage.object_store_scheme
    if scheme is not None and store is None:
        what = f"is a {scheme}:// URL but storage.kind is {storage.kind}"
        fix = (
            f"set storage.kind objectStore and storage.objectStore.url to the {scheme}:// bucket or server "
            "(its credentials, identity or anonymous access are what the workers use)"
        )
    elif scheme is not None and scheme != store:
        what = f"is a {scheme}:// URL but storage.objectStore.url is {store}://"
        fix = "give a catalog in the configured object store, or change storage.objectStore.url"
    elif scheme is None and isinstance(storage, ObjectStoreStorage):
        what = "is a local path, but storage.kind objectStore mounts no volume"
        fix = f"give the catalog's URL, e.g. {storage.object_store.url.rstrip('/')}/<catalog>"
    elif (
        scheme is None
        and storage.mounts_volume
        and not (path.rstrip("/") + "/").startswith(storage.mount_path.rstrip("/") + "/")
    ):
        what = f"is not under storage.mountPath ({storage.mount_path})"
        fix = "give the path as workers see it, below the mount path"
    else:
        return
    yield problem("catalogPath", path, what, fix)


def _workers_to_wait_for(min_workers: int, cluster: ClusterConfig) -> Iterator[InitErrorDetails]:
    # The verification waits for verify.minWorkers workers of any group; only cluster.min_workers are sure to be there.
    if min_workers <= cluster.min_workers:
        return
    floor = (
        f"cluster.autoscaler.minimum ({cluster.autoscaler.minimum}), the workers the autoscaler keeps"
        if cluster.autoscaler.enabled
        else f"cluster.workers.replicas ({cluster.workers.replicas})"
    )
    groups = sum(g.replicas for g in cluster.worker_groups.values())
    what = f"exceeds {floor}" + (f", plus {groups} in cluster.workerGroups" if cluster.worker_groups else "")
    raise_floor = "cluster.autoscaler.minimum" if cluster.autoscaler.enabled else "the worker count"
    yield problem("minWorkers", min_workers, what, f"lower verify.minWorkers or raise {raise_floor}")


def _idle_timeout_outlasts_the_check(cluster: ClusterConfig, verify: VerifyConfig) -> Iterator[InitErrorDetails]:
    # The operator's idle check (`daskcluster_autoshutdown`, every 5 s) deletes the DaskCluster once the scheduler has
    # been idle for idleTimeout, and a new scheduler counts as idle from its start until its first task: a shorter
    # timeout deletes the cluster while its post-deploy check (the verification, or with verification off the
    # readiness gate, which has the same deadline) is still waiting for it.
    idle, deadline = cluster.idle_timeout_seconds, verify.timeout_seconds
    if not 0 < idle < deadline:
        return
    yield problem(
        "cluster.idleTimeoutSeconds", idle,
        f"is shorter than verify.timeoutSeconds ({deadline:g}), the time the post-deploy check may take: the operator "
        "counts a new scheduler as idle from its start and would delete the cluster while it is being checked",
        f"set cluster.idleTimeoutSeconds to at least {math.ceil(deadline)} (an hour or more for interactive use), "
        "0 (never), or lower verify.timeoutSeconds",
    )  # fmt: skip


def _egress_rule_problems(
    security: SecurityConfig, storage: StorageConfig, catalogs: Mapping[str, CatalogConfig]
) -> Iterator[InitErrorDetails]:
    # Kubernetes reads an empty `to` or `ports` of a NetworkPolicy rule as every address or port: refused where the
    # object-store rule (objectStore storage) or a copy Job's rule (`catalogs`; https sources use their URL's port)
    # is rendered, harmless elsewhere.
    object_store = isinstance(storage, ObjectStoreStorage)
    if not security.network_policy or not (object_store or catalogs):
        return
    if not security.egress_cidrs:
        yield problem(
            "security.egressCidrs", [], "is empty, and a NetworkPolicy egress rule without address blocks lets the "
            "pods reach every address", "list the address blocks of the object store and the catalog sources "
            "(0.0.0.0/0 allows any)",
        )  # fmt: skip
    if not security.egress_ports and (object_store or any(c.scheme != "https" for c in catalogs.values())):
        yield problem(
            "security.egressPorts", [], "is empty, and a NetworkPolicy egress rule without ports lets the pods "
            "reach every port", "list the TCP ports of the object store and the catalog sources (e.g. 443)",
        )  # fmt: skip


def parse_stack_config(raw: Mapping[str, Any], secret_keys: frozenset[str] = frozenset()) -> StackConfig:
    """Validate the stack's raw config (top-level key -> value) into a `StackConfig`, or raise `ConfigError`.

    `secret_keys` are the top-level keys Pulumi holds encrypted; secret values must live under them.
    """
    known = set(aliases(StackConfig))
    # An unknown key set as a secret is reported without its value.
    shown = {k: SECRET if k in secret_keys and k not in known else v for k, v in raw.items()}
    try:
        return StackConfig.model_validate(shown, by_alias=True, by_name=False, context={"secret_keys": secret_keys})
    except ValidationError as error:
        raise ConfigError(report(error, StackConfig)) from None


def read_stack_config() -> StackConfig:
    """Read and validate this stack's config; raises ConfigError before any resource exists.

    Each key of the model (`pulumi.Config().get`), plus the keys the CLI passes in `PULUMI_CONFIG`, so that unknown
    ones are reported. The SDK lists no keys set with `pulumi.runtime.set_all_config` (the mocks): there an unknown
    top-level key goes unnoticed."""
    config = pulumi.Config()
    prefix = f"{config.name}:"
    passed = [*pulumi.runtime.get_config_env(), *pulumi.runtime.get_config_secret_keys_env()]
    keys = dict.fromkeys([*aliases(StackConfig), *(k.removeprefix(prefix) for k in passed if k.startswith(prefix))])
    raw = {key: value for key in keys if (value := config.get(key)) is not None}
    secret = {key for key in raw if pulumi.runtime.is_config_secret(config.full_key(key))}
    secret |= {k.removeprefix(prefix) for k in pulumi.runtime.get_config_secret_keys_env() if k.startswith(prefix)}
    return parse_stack_config(raw, frozenset(secret))


def secret_config(key: str, path: tuple[str, ...]) -> pulumi.Output[Any]:
    """One value under a secret top-level key, as a Pulumi secret Output (encrypted in state, masked in logs)."""
    return pulumi.Config().require_secret_object(key).apply(lambda value: reduce(getitem, path, value))
