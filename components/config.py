"""The stack's configuration: one validated, typed model read before any resource is registered.

`parse_stack_config` is pure (plain dicts in, dataclasses out) so every rule is table-testable;
`read_stack_config` feeds it from `pulumi.Config`. All problems are collected and raised together
as one `ConfigError`, each naming the key, the bad value and the fix.
Secret values (object-store credentials, registry password) never enter the model: it records only
which keys are set, and `secret_config` hands the values to resources as Pulumi secrets.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pulumi

from components.lock import read_lock

# Key names as users write them (`pulumi config set --path cluster.workers.replicas 4`).
TOP_LEVEL_KEYS = ("namespace", "kubeContext", "operator", "storage", "cluster", "image", "verify")

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# Kubernetes resource.Quantity (positive; no signs in requests/limits we accept).
QUANTITY = re.compile(r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][0-9]+|m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
MEMORY_UNITS = {
    "": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}  # fmt: skip
PYTHON_VERSION = re.compile(r"^3\.[0-9]+\.[0-9]+$")
DIGEST_REF = re.compile(r"^[^\s@]+@sha256:[0-9a-f]{64}$")
# The operator appends "-scheduler" (10 chars) to the cluster name for Service and Deployment names.
MAX_CLUSTER_NAME = 53

# Guide, "Resource sizing recommendations": workers, CPU and memory per worker; the autoscaler range
# spans the table's worker counts. Scheduler values are the guide manifest's. Threads stay at 2
# ("keep --nthreads at 1 or 2 per worker for LSDB workloads").
SIZE_PRESETS: dict[str, dict[str, Any]] = {
    "small": {"replicas": 2, "cpu": "2", "memory": "4Gi", "minimum": 2, "maximum": 4},
    "medium": {"replicas": 4, "cpu": "2", "memory": "4Gi", "minimum": 4, "maximum": 8},
    "large": {"replicas": 6, "cpu": "2", "memory": "8Gi", "minimum": 6, "maximum": 12},
    "xlarge": {"replicas": 12, "cpu": "4", "memory": "16Gi", "minimum": 12, "maximum": 24},
}
SCHEDULER_DEFAULTS = {"cpu": "2", "memory": "6Gi"}
DEFAULT_THREADS = 2

STORAGE_KINDS = ("pvc", "nfs", "hostPath", "objectStore", "none")
ACCESS_MODES = ("ReadWriteMany", "ReadOnlyMany", "ReadWriteOnce", "ReadWriteOncePod")
SINGLE_NODE_MODES = ("ReadWriteOnce", "ReadWriteOncePod")

# URL scheme -> (fsspec driver distribution that must be in the lock, credential keys -> env var).
# The env var names are the ones s3fs (botocore), gcsfs (google-auth) and adlfs read by themselves.
OBJECT_STORES: dict[str, tuple[str, dict[str, str]]] = {
    "s3": ("s3fs", {
        "accessKeyId": "AWS_ACCESS_KEY_ID", "secretAccessKey": "AWS_SECRET_ACCESS_KEY",
        "sessionToken": "AWS_SESSION_TOKEN", "region": "AWS_DEFAULT_REGION", "endpointUrl": "AWS_ENDPOINT_URL",
    }),
    "gs": ("gcsfs", {"serviceAccountJson": "GOOGLE_APPLICATION_CREDENTIALS"}),
    "abfs": ("adlfs", {
        "accountName": "AZURE_STORAGE_ACCOUNT_NAME", "accountKey": "AZURE_STORAGE_ACCOUNT_KEY",
        "connectionString": "AZURE_STORAGE_CONNECTION_STRING", "sasToken": "AZURE_STORAGE_SAS_TOKEN",
    }),
    "https": ("aiohttp", {}),
}  # fmt: skip
SCHEME_ALIASES = {"s3a": "s3", "gcs": "gs", "abfss": "abfs", "az": "abfs", "http": "https"}


class ConfigError(pulumi.RunError):
    """Every problem in the stack configuration, reported at once.

    A `pulumi.RunError`: Pulumi prints the message alone, without a traceback of the program."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{len(problems)} problem(s) in the stack configuration (nothing was deployed):\n{lines}")


@dataclass(frozen=True)
class OperatorConfig:
    install: bool = True
    namespace: str = "dask-operator"
    chart_source: str = "repository"  # "repository" (helm.dask.org) or "package" (chart in the pinned wheel)
    from_stack: str | None = None  # fully qualified stack that installed the operator


@dataclass(frozen=True)
class StorageConfig:
    kind: str = "none"
    mount_path: str = "/data"
    claim_name: str = "hats-catalog-pvc"
    size: str = "100Gi"
    storage_class_name: str | None = None
    access_mode: str = "ReadWriteMany"
    nfs_server: str | None = None
    nfs_path: str | None = None
    host_path: str | None = None
    object_store_url: str | None = None
    object_store_scheme: str | None = None  # canonical scheme (s3, gs, abfs, https)
    credential_keys: tuple[str, ...] = ()  # names only; values stay Pulumi secrets

    @property
    def credential_env(self) -> dict[str, str]:
        """Credential key -> environment variable the fsspec driver reads."""
        if self.object_store_scheme is None:
            return {}
        env = OBJECT_STORES[self.object_store_scheme][1]
        return {k: env[k] for k in self.credential_keys}


@dataclass(frozen=True)
class WorkersConfig:
    replicas: int
    threads: int
    cpu: str
    memory: str
    cpu_limit: str | None = None

    @property
    def memory_bytes(self) -> int:
        return quantity_bytes(self.memory)


@dataclass(frozen=True)
class SchedulerConfig:
    cpu: str
    memory: str


@dataclass(frozen=True)
class AutoscalerConfig:
    enabled: bool
    minimum: int
    maximum: int


@dataclass(frozen=True)
class ClusterConfig:
    name: str
    size: str
    workers: WorkersConfig
    scheduler: SchedulerConfig
    autoscaler: AutoscalerConfig
    idle_timeout_seconds: int = 0

    @property
    def max_workers(self) -> int:
        return self.autoscaler.maximum if self.autoscaler.enabled else self.workers.replicas


@dataclass(frozen=True)
class ImageConfig:
    repository: str | None = None
    python_version: str = "3.11.7"
    platform: str = "linux/amd64"
    push: bool = True
    registry_server: str | None = None
    registry_username: str | None = None
    has_registry_password: bool = False
    ref: str | None = None  # prebuilt, digest-pinned image: nothing is built
    client_check: str = "error"  # "error" or "warn" when the client env differs from the lock


@dataclass(frozen=True)
class VerifyConfig:
    enabled: bool = True
    catalog_path: str | None = None
    ra: float = 180.0
    dec: float = 0.0
    radius_arcsec: float = 600.0
    columns: tuple[str, ...] = ("ra", "dec")
    min_rows: int = 1
    min_workers: int = 1
    timeout_seconds: float = 300.0
    connect: str = "portForward"


@dataclass(frozen=True)
class StackConfig:
    namespace: str
    kube_context: str | None
    operator: OperatorConfig
    storage: StorageConfig
    cluster: ClusterConfig
    image: ImageConfig
    verify: VerifyConfig


def quantity_bytes(quantity: str) -> int:
    """Bytes in a Kubernetes memory quantity ("4Gi" -> 4294967296)."""
    m = QUANTITY.match(quantity)
    if not m:
        raise ValueError(f"{quantity!r} is not a Kubernetes quantity")
    number, suffix = float(m.group(1)), m.group(3) or ""
    if suffix.lower().startswith("e") and suffix[1:].isdigit():
        return int(number * 10 ** int(suffix[1:]))
    if suffix == "m":
        return int(number / 1000)
    return int(number * MEMORY_UNITS[suffix])


class _Reader:
    """Walks the raw config, converting values and collecting problems instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def problem(self, key: str, value: Any, what: str, fix: str) -> None:
        shown = json.dumps(value) if not isinstance(value, str) else repr(value)
        self.problems.append(f"{key} = {shown}: {what}. Fix: {fix}")

    def section(self, raw: Any, key: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        if raw is None:
            return {}
        if isinstance(raw, str):
            with contextlib.suppress(json.JSONDecodeError):
                raw = json.loads(raw)
        if not isinstance(raw, Mapping):
            self.problem(key, raw, "must be an object", f"set its fields with `pulumi config set --path {key}.<field>`")
            return {}
        for k in raw:
            if k not in allowed:
                close = difflib.get_close_matches(k, allowed, n=1)
                hint = f"did you mean '{key}.{close[0]}'?" if close else f"allowed keys: {', '.join(allowed)}"
                self.problem(f"{key}.{k}", raw[k], "is not a known key", hint)
        return dict(raw)

    def string(self, d: Mapping[str, Any], k: str, key: str, default: str | None) -> str | None:
        v = d.get(k, default)
        if v is None or isinstance(v, str):
            return v
        self.problem(f"{key}.{k}" if key else k, v, "must be a string", "quote the value")
        return default

    def integer(self, d: Mapping[str, Any], k: str, key: str, default: int) -> int:
        v = d.get(k, default)
        if isinstance(v, str) and re.fullmatch(r"-?[0-9]+", v.strip()):
            v = int(v)
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if isinstance(v, int) and not isinstance(v, bool):
            return v
        self.problem(f"{key}.{k}", v, "must be a whole number", "use digits only, e.g. 4")
        return default

    def number(self, d: Mapping[str, Any], k: str, key: str, default: float) -> float:
        v = d.get(k, default)
        try:
            if isinstance(v, bool):
                raise ValueError
            return float(v)
        except (TypeError, ValueError):
            self.problem(f"{key}.{k}", v, "must be a number", "use a decimal number, e.g. 180.0")
            return default

    def boolean(self, d: Mapping[str, Any], k: str, key: str, default: bool) -> bool:
        v = d.get(k, default)
        if isinstance(v, str) and v.lower() in ("true", "false"):
            v = v.lower() == "true"
        if isinstance(v, bool):
            return v
        self.problem(f"{key}.{k}", v, "must be true or false", "use true or false")
        return default

    def choice(self, d: Mapping[str, Any], k: str, key: str, default: str, choices: tuple[str, ...]) -> str:
        v = self.string(d, k, key, default)
        if v in choices:
            return v
        self.problem(f"{key}.{k}", v, "is not one of the allowed values", f"use one of: {', '.join(choices)}")
        return default

    def quantity(self, d: Mapping[str, Any], k: str, key: str, default: str | None) -> str | None:
        v = d.get(k, default)
        if isinstance(v, int | float) and not isinstance(v, bool):
            v = format(v, "g")
        if v is None:
            return None
        if isinstance(v, str) and QUANTITY.match(v) and float(QUANTITY.match(v).group(1)) > 0:
            return v
        self.problem(
            f"{key}.{k}", v, "is not a positive Kubernetes quantity", 'use e.g. "2", "500m" (CPU) or "4Gi" (memory)'
        )
        return default


def _dns_label(r: _Reader, key: str, value: str | None, max_len: int = 63, why: str = "") -> None:
    if value is None or (DNS_LABEL.match(value) and len(value) <= max_len):
        return
    r.problem(
        key,
        value,
        f"is not a lowercase RFC 1123 label of at most {max_len} characters{why}",
        "use lowercase letters, digits and '-', starting and ending with a letter or digit",
    )


def _operator(r: _Reader, raw: Any) -> OperatorConfig:
    d = r.section(raw, "operator", ("install", "namespace", "chartSource", "fromStack"))
    from_stack = r.string(d, "fromStack", "operator", None)
    cfg = OperatorConfig(
        install=r.boolean(d, "install", "operator", from_stack is None),
        namespace=r.string(d, "namespace", "operator", "dask-operator") or "dask-operator",
        chart_source=r.choice(d, "chartSource", "operator", "repository", ("repository", "package")),
        from_stack=from_stack,
    )
    _dns_label(r, "operator.namespace", cfg.namespace)
    if from_stack is not None and cfg.install:
        r.problem(
            "operator.install", True, "conflicts with operator.fromStack (that stack installed the operator)",
            "remove operator.install or set it to false",
        )  # fmt: skip
    if from_stack is not None and from_stack.count("/") != 2:
        r.problem(
            "operator.fromStack", from_stack, "is not a fully qualified stack name", "use <org>/<project>/<stack>"
        )
    return cfg


def _storage(r: _Reader, raw: Any) -> StorageConfig:
    d = r.section(
        raw,
        "storage",
        ("kind", "mountPath", "claimName", "size", "storageClassName", "accessMode", "nfs", "hostPath", "objectStore"),
    )
    kind = r.choice(d, "kind", "storage", "none", STORAGE_KINDS)
    mount_path = r.string(d, "mountPath", "storage", "/data") or "/data"
    if not mount_path.startswith("/") or mount_path == "/":
        r.problem("storage.mountPath", mount_path, "must be an absolute path below /", "use e.g. /data")
    claim_name = r.string(d, "claimName", "storage", "hats-catalog-pvc") or "hats-catalog-pvc"
    _dns_label(r, "storage.claimName", claim_name, 253)
    nfs = r.section(d.get("nfs"), "storage.nfs", ("server", "path"))
    host = r.section(d.get("hostPath"), "storage.hostPath", ("path",))
    obj = r.section(d.get("objectStore"), "storage.objectStore", ("url", "credentials"))
    cfg = StorageConfig(
        kind=kind,
        mount_path=mount_path,
        claim_name=claim_name,
        size=r.quantity(d, "size", "storage", "100Gi") or "100Gi",
        storage_class_name=r.string(d, "storageClassName", "storage", None),
        access_mode=r.choice(d, "accessMode", "storage", "ReadWriteMany", ACCESS_MODES),
        nfs_server=r.string(nfs, "server", "storage.nfs", None),
        nfs_path=r.string(nfs, "path", "storage.nfs", None),
        host_path=r.string(host, "path", "storage.hostPath", None),
        object_store_url=r.string(obj, "url", "storage.objectStore", None),
    )
    if kind == "nfs":
        if not cfg.nfs_server:
            r.problem("storage.nfs.server", cfg.nfs_server, "is required for storage.kind nfs", "set the NFS host")
        if not cfg.nfs_path or not cfg.nfs_path.startswith("/"):
            r.problem("storage.nfs.path", cfg.nfs_path, "must be the absolute export path", "e.g. /exports/hats")
    if kind == "hostPath" and (not cfg.host_path or not cfg.host_path.startswith("/")):
        r.problem("storage.hostPath.path", cfg.host_path, "must be an absolute node path", "e.g. /lsdb-catalogs")
    if kind == "objectStore":
        return _object_store(r, cfg, obj)
    if obj.get("credentials") is not None:
        r.problem(
            "storage.objectStore.credentials", "[secret]", f"is set but storage.kind is {kind}",
            "remove it, or set storage.kind objectStore",
        )  # fmt: skip
    return cfg


def _object_store(r: _Reader, cfg: StorageConfig, obj: Mapping[str, Any]) -> StorageConfig:
    url = cfg.object_store_url or ""
    raw_scheme = url.split("://", 1)[0] if "://" in url else ""
    scheme = SCHEME_ALIASES.get(raw_scheme, raw_scheme)
    known = sorted([*OBJECT_STORES, *SCHEME_ALIASES])
    if scheme not in OBJECT_STORES:
        r.problem(
            "storage.objectStore.url", url or None, "has no URL scheme with an fsspec driver in the lock",
            f"use a URL starting with one of: {', '.join(s + '://' for s in known)}",
        )  # fmt: skip
        return cfg
    driver, allowed = OBJECT_STORES[scheme]
    if driver not in read_lock():
        r.problem(
            "storage.objectStore.url", url, f"needs the fsspec driver '{driver}', which is not in the lock",
            f"add {driver} to docker/requirements.in and run `python scripts/lock.py`",
        )  # fmt: skip
    creds = obj.get("credentials") or {}
    if not isinstance(creds, Mapping):
        r.problem("storage.objectStore.credentials", "[secret]", "must be an object", "set one key per credential")
        creds = {}
    for k in creds:
        if k not in allowed:
            r.problem(
                f"storage.objectStore.credentials.{k}", "[secret]", f"is not a credential for {scheme}:// storage",
                f"use: {', '.join(allowed) or 'none (public https needs no credentials)'}",
            )  # fmt: skip
    return StorageConfig(
        **{**cfg.__dict__, "object_store_scheme": scheme, "credential_keys": tuple(k for k in creds if k in allowed)}
    )


def _cluster(r: _Reader, raw: Any) -> ClusterConfig:
    d = r.section(raw, "cluster", ("name", "size", "workers", "scheduler", "autoscaler", "idleTimeoutSeconds"))
    name = r.string(d, "name", "cluster", "lsdb-cluster") or "lsdb-cluster"
    _dns_label(r, "cluster.name", name, MAX_CLUSTER_NAME, " (the operator appends '-scheduler')")
    size = r.choice(d, "size", "cluster", "small", tuple(SIZE_PRESETS))
    preset = SIZE_PRESETS[size]
    w = r.section(d.get("workers"), "cluster.workers", ("replicas", "threads", "cpu", "memory", "cpuLimit"))
    s = r.section(d.get("scheduler"), "cluster.scheduler", ("cpu", "memory"))
    a = r.section(d.get("autoscaler"), "cluster.autoscaler", ("enabled", "minimum", "maximum"))
    workers = WorkersConfig(
        replicas=r.integer(w, "replicas", "cluster.workers", preset["replicas"]),
        threads=r.integer(w, "threads", "cluster.workers", DEFAULT_THREADS),
        cpu=r.quantity(w, "cpu", "cluster.workers", preset["cpu"]) or preset["cpu"],
        memory=r.quantity(w, "memory", "cluster.workers", preset["memory"]) or preset["memory"],
        cpu_limit=r.quantity(w, "cpuLimit", "cluster.workers", None),
    )
    scheduler = SchedulerConfig(
        cpu=r.quantity(s, "cpu", "cluster.scheduler", SCHEDULER_DEFAULTS["cpu"]) or SCHEDULER_DEFAULTS["cpu"],
        memory=r.quantity(s, "memory", "cluster.scheduler", SCHEDULER_DEFAULTS["memory"])
        or SCHEDULER_DEFAULTS["memory"],
    )
    autoscaler = AutoscalerConfig(
        enabled=r.boolean(a, "enabled", "cluster.autoscaler", True),
        minimum=r.integer(a, "minimum", "cluster.autoscaler", preset["minimum"]),
        maximum=r.integer(a, "maximum", "cluster.autoscaler", preset["maximum"]),
    )
    idle = r.integer(d, "idleTimeoutSeconds", "cluster", 0)
    if workers.replicas < 0:
        r.problem("cluster.workers.replicas", workers.replicas, "must not be negative", "use 0 or more")
    if workers.threads < 1:
        r.problem("cluster.workers.threads", workers.threads, "must be at least 1", "use 1 or 2 for LSDB workloads")
    if workers.memory_bytes < 2**30:
        r.problem(
            "cluster.workers.memory", workers.memory, "is below 1Gi, too little for an LSDB partition",
            "use at least 1Gi; the guide recommends 4Gi",
        )  # fmt: skip
    if autoscaler.enabled:
        if autoscaler.maximum < 1:
            r.problem("cluster.autoscaler.maximum", autoscaler.maximum, "must be at least 1", "use 1 or more")
        if autoscaler.minimum < 0:
            r.problem("cluster.autoscaler.minimum", autoscaler.minimum, "must not be negative", "use 0 or more")
        if autoscaler.minimum > autoscaler.maximum:
            r.problem(
                "cluster.autoscaler.minimum", autoscaler.minimum,
                f"is greater than cluster.autoscaler.maximum ({autoscaler.maximum})", "lower minimum or raise maximum",
            )  # fmt: skip
    if idle < 0:
        r.problem("cluster.idleTimeoutSeconds", idle, "must not be negative", "use 0 (never) or a number of seconds")
    return ClusterConfig(name, size, workers, scheduler, autoscaler, idle)


def _image(r: _Reader, raw: Any, secret_keys: frozenset[str]) -> ImageConfig:
    d = r.section(raw, "image", ("repository", "pythonVersion", "platform", "push", "registry", "ref", "clientCheck"))
    reg = r.section(d.get("registry"), "image.registry", ("server", "username", "password"))
    cfg = ImageConfig(
        repository=r.string(d, "repository", "image", None),
        python_version=r.string(d, "pythonVersion", "image", "3.11.7") or "3.11.7",
        platform=r.string(d, "platform", "image", "linux/amd64") or "linux/amd64",
        push=r.boolean(d, "push", "image", True),
        registry_server=r.string(reg, "server", "image.registry", None),
        registry_username=r.string(reg, "username", "image.registry", None),
        has_registry_password=reg.get("password") is not None,
        ref=r.string(d, "ref", "image", None),
        client_check=r.choice(d, "clientCheck", "image", "error", ("error", "warn")),
    )
    if not PYTHON_VERSION.match(cfg.python_version):
        r.problem(
            "image.pythonVersion", cfg.python_version, "must be a patch release X.Y.Z",
            "pin the base image to a patch release, e.g. 3.11.7 (match your client's Python)",
        )  # fmt: skip
    if cfg.ref is not None:
        if not DIGEST_REF.match(cfg.ref):
            r.problem(
                "image.ref", cfg.ref, "is not pinned by digest",
                "use repository@sha256:<64 hex> (`docker buildx imagetools inspect <image>` prints the digest)",
            )  # fmt: skip
    elif not cfg.push:
        r.problem(
            "image.push", False, "leaves no registry digest for the cluster to pull (it never uses tags)",
            "set image.push true (dev uses the local registry) or give a prebuilt image.ref",
        )  # fmt: skip
    if cfg.ref is None and not cfg.repository:
        r.problem("image.repository", None, "is required when image.ref is not set", "e.g. ghcr.io/<org>/lsdb-dask")
    for k, v in (("image.repository", cfg.repository), ("image.ref", cfg.ref)):
        if v and re.search(r"(^|[:/])latest($|@)", v):
            r.problem(k, v, "uses the floating tag 'latest'", "use a digest-pinned reference; tags are derived")
    if cfg.repository and ("@" in cfg.repository or ":" in cfg.repository.rsplit("/", 1)[-1]):
        r.problem(
            "image.repository", cfg.repository, "must not carry a tag or digest",
            "give the repository only; the tag is derived from the lock and the digest pinned",
        )  # fmt: skip
    if cfg.repository and cfg.repository != cfg.repository.lower():
        r.problem("image.repository", cfg.repository, "must be lowercase", "use lowercase letters")
    if cfg.has_registry_password:
        if not (cfg.registry_server and cfg.registry_username):
            r.problem(
                "image.registry", "[password set]", "needs server and username with the password",
                "set image.registry.server and image.registry.username",
            )  # fmt: skip
        if "image" not in secret_keys:
            r.problem(
                "image.registry.password", "[plaintext]", "is stored in plaintext in the stack file",
                "re-set it as a secret: pulumi config set --path --secret image.registry.password <value>",
            )  # fmt: skip
    return cfg


def _verify(r: _Reader, raw: Any) -> VerifyConfig:
    keys = ("enabled", "catalogPath", "cone", "columns", "minRows", "minWorkers", "timeoutSeconds", "connect")
    d = r.section(raw, "verify", keys)
    cone = r.section(d.get("cone"), "verify.cone", ("ra", "dec", "radiusArcsec"))
    columns = d.get("columns", ["ra", "dec"])
    if isinstance(columns, str):
        columns = [c.strip() for c in columns.split(",") if c.strip()]
    if not isinstance(columns, list) or not all(isinstance(c, str) and c for c in columns):
        r.problem("verify.columns", columns, "must be a list of column names", 'e.g. ["ra", "dec"]')
        columns = ["ra", "dec"]
    cfg = VerifyConfig(
        enabled=r.boolean(d, "enabled", "verify", True),
        catalog_path=r.string(d, "catalogPath", "verify", None),
        ra=r.number(cone, "ra", "verify.cone", 180.0),
        dec=r.number(cone, "dec", "verify.cone", 0.0),
        radius_arcsec=r.number(cone, "radiusArcsec", "verify.cone", 600.0),
        columns=tuple(columns),
        min_rows=r.integer(d, "minRows", "verify", 1),
        min_workers=r.integer(d, "minWorkers", "verify", 1),
        timeout_seconds=r.number(d, "timeoutSeconds", "verify", 300.0),
        connect=r.choice(d, "connect", "verify", "portForward", ("portForward", "direct")),
    )
    if cfg.enabled and not cfg.catalog_path:
        r.problem(
            "verify.catalogPath", None, "is required while verification is enabled",
            "set the catalog path as workers see it (e.g. /data/catalogs/my_catalog), or verify.enabled false",
        )  # fmt: skip
    if not 0 <= cfg.ra < 360:
        r.problem("verify.cone.ra", cfg.ra, "is outside [0, 360) degrees", "use a right ascension in degrees")
    if not -90 <= cfg.dec <= 90:
        r.problem("verify.cone.dec", cfg.dec, "is outside [-90, 90] degrees", "use a declination in degrees")
    if cfg.radius_arcsec <= 0:
        r.problem("verify.cone.radiusArcsec", cfg.radius_arcsec, "must be positive", "e.g. 600")
    if cfg.min_rows < 0:
        r.problem("verify.minRows", cfg.min_rows, "must not be negative", "use 0 or more")
    if cfg.min_workers < 1:
        r.problem("verify.minWorkers", cfg.min_workers, "must be at least 1", "use 1 or more")
    if cfg.timeout_seconds <= 0:
        r.problem("verify.timeoutSeconds", cfg.timeout_seconds, "must be positive", "e.g. 300")
    return cfg


def parse_stack_config(raw: Mapping[str, Any], secret_keys: frozenset[str] = frozenset()) -> StackConfig:
    """Validate the stack's raw config (top-level key -> value) into a `StackConfig`, or raise `ConfigError`.

    `secret_keys` are the top-level keys Pulumi holds encrypted; secret values must live under them.
    """
    r = _Reader()
    for k in raw:
        if k not in TOP_LEVEL_KEYS:
            close = difflib.get_close_matches(k, TOP_LEVEL_KEYS, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"allowed keys: {', '.join(TOP_LEVEL_KEYS)}"
            r.problem(k, raw[k] if k not in secret_keys else "[secret]", "is not a known key", hint)
    namespace = r.string(raw, "namespace", "", "lsdb") or "lsdb"
    _dns_label(r, "namespace", namespace)
    kube_context = r.string(raw, "kubeContext", "", None)
    operator = _operator(r, raw.get("operator"))
    storage = _storage(r, raw.get("storage"))
    if storage.credential_keys and "storage" not in secret_keys:
        r.problem(
            "storage.objectStore.credentials", "[plaintext]", "is stored in plaintext in the stack file",
            "re-set each as a secret: pulumi config set --path --secret storage.objectStore.credentials.<key> <value>",
        )  # fmt: skip
    if operator.install and operator.namespace == namespace:
        r.problem(
            "operator.namespace", operator.namespace, "is the same as the cluster namespace",
            "keep the cluster-wide operator in its own namespace (default dask-operator)",
        )  # fmt: skip
    cluster = _cluster(r, raw.get("cluster"))
    image = _image(r, raw.get("image"), secret_keys)
    verify = _verify(r, raw.get("verify"))
    if (
        storage.kind in ("pvc", "nfs", "hostPath")
        and storage.access_mode in SINGLE_NODE_MODES
        and cluster.max_workers > 1
    ):
        r.problem(
            "storage.accessMode", storage.access_mode,
            f"lets only one node mount the catalog, but up to {cluster.max_workers} workers may run",
            "use ReadWriteMany (or ReadOnlyMany), or limit workers (and autoscaler.maximum) to 1",
        )  # fmt: skip
    if verify.enabled and verify.min_workers > cluster.max_workers:
        r.problem(
            "verify.minWorkers", verify.min_workers,
            f"exceeds the most workers the cluster can have ({cluster.max_workers})",
            "lower verify.minWorkers or raise the worker count",
        )  # fmt: skip
    if verify.enabled and storage.kind in ("pvc", "nfs", "hostPath") and verify.catalog_path:
        inside = verify.catalog_path.rstrip("/") + "/"
        if "://" not in inside and not inside.startswith(storage.mount_path.rstrip("/") + "/"):
            r.problem(
                "verify.catalogPath", verify.catalog_path, f"is not under storage.mountPath ({storage.mount_path})",
                "give the path as workers see it, below the mount path",
            )  # fmt: skip
    if r.problems:
        raise ConfigError(r.problems)
    return StackConfig(namespace, kube_context, operator, storage, cluster, image, verify)


def raw_stack_config(project: str) -> tuple[dict[str, Any], frozenset[str]]:
    """The stack's config as Pulumi hands it to the program: `<project>:<key>` -> value, JSON for objects."""
    from pulumi.runtime import config as runtime_config

    merged: dict[str, Any] = {}
    env = os.environ.get("PULUMI_CONFIG")
    if env:
        merged.update(json.loads(env))
    merged.update(runtime_config.CONFIG.get())
    prefix = f"{project}:"
    raw: dict[str, Any] = {}
    secret: set[str] = set()
    for full_key, value in merged.items():
        if not full_key.startswith(prefix):
            continue  # provider settings such as kubernetes:context belong to their providers
        key = full_key[len(prefix) :]
        try:
            raw[key] = json.loads(value) if isinstance(value, str) and value[:1] in "{[" else value
        except json.JSONDecodeError:
            raw[key] = value
        if runtime_config.is_config_secret(full_key):
            secret.add(key)
    secret.update(k[len(prefix) :] for k in runtime_config.get_config_secret_keys_env() if k.startswith(prefix))
    return raw, frozenset(secret)


def read_stack_config() -> StackConfig:
    """Read and validate this stack's config; raises ConfigError before any resource exists."""
    raw, secret = raw_stack_config(pulumi.get_project())
    return parse_stack_config(raw, secret)


def secret_config(key: str, path: tuple[str, ...], transform: Callable[[Any], Any] | None = None) -> pulumi.Output:
    """One value under a secret top-level key, as a Pulumi secret Output (encrypted in state, masked in logs)."""

    def dig(value: Any) -> Any:
        for part in path:
            value = value[part]
        return transform(value) if transform else value

    return pulumi.Config().require_secret_object(key).apply(dig)
