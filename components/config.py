"""The stack's configuration: one declarative pydantic model, read and validated before any resource exists.

Each key is declared once, as a field with its type, default and description; the README's
configuration tables and the stack-file JSON Schema are generated from these declarations
(`python -m tools.config_docs`). `parse_stack_config` turns pydantic's errors into one `ConfigError`
listing every problem as `<key as users write it> = <value>: <what>. Fix: <fix>`.

Secret values (object-store credentials, registry password) never enter the model: before validation
they are replaced by a marker saying whether Pulumi holds them encrypted, and `secret_config` hands the
values to resources as Pulumi secrets.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import os
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import pulumi
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from components.constants import NAME_LIMIT, derived_names, max_cluster_name_length, worker_deployment_name
from components.lock import read_lock
from components.verification.query import Fix, VerifyConfig
from components.verification.query import Section as Section  # the sections' base (tools/config_docs.py reads it here)

PROJECT = "lsdb-k8s"

# Kubernetes resource.Quantity (positive; no signs in requests/limits we accept).
QUANTITY = re.compile(r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][0-9]+|m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
MEMORY_UNITS = {
    "": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}  # fmt: skip
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
PYTHON_VERSION = re.compile(r"^3\.[0-9]+\.[0-9]+$")
DIGEST_REF = re.compile(r"^[^\s@]+@sha256:[0-9a-f]{64}$")
DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# The live DaskCluster is `<name>-<8 hex>`; its longest derived name, a worker Deployment
# `<name>-<h>-default-worker-<10 hex>`, must stay a 63-character label (components.constants.derived_names).
MAX_CLUSTER_NAME = max_cluster_name_length()

# Guide, "Resource sizing recommendations": workers, CPU and memory per worker; the autoscaler range
# spans the table's worker counts. Scheduler values are the guide manifest's. Threads stay at 2
# ("keep --nthreads at 1 or 2 per worker for LSDB workloads").
SIZE_PRESETS: dict[str, dict[str, Any]] = {
    "small": {"replicas": 2, "cpu": "2", "memory": "4Gi", "minimum": 2, "maximum": 4},
    "medium": {"replicas": 4, "cpu": "2", "memory": "4Gi", "minimum": 4, "maximum": 8},
    "large": {"replicas": 6, "cpu": "2", "memory": "8Gi", "minimum": 6, "maximum": 12},
    "xlarge": {"replicas": 12, "cpu": "4", "memory": "16Gi", "minimum": 12, "maximum": 24},
}
SizeName = Literal["small", "medium", "large", "xlarge"]
StorageKind = Literal["pvc", "nfs", "hostPath", "existingClaim", "objectStore", "none"]
AccessMode = Literal["ReadWriteMany", "ReadOnlyMany", "ReadWriteOnce", "ReadWriteOncePod"]
CREATED_CLAIM_KINDS: tuple[str, ...] = ("pvc", "nfs", "hostPath")  # the program creates the claim (and PV)
VOLUME_KINDS: tuple[str, ...] = (*CREATED_CLAIM_KINDS, "existingClaim")  # the pods mount a PersistentVolumeClaim
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


# ------------------------------------------------------------------------------------------------------------
# Reusable field types
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DefaultText:
    """Field metadata: how the docs show a default that is not a constant (it follows another key)."""

    text: str


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


def _number_as_text(value: Any) -> Any:
    # `cpu: 2` in YAML is a number; Kubernetes quantities are strings.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(int(value)) if float(value).is_integer() else str(value)
    return value


def _positive_quantity(value: str) -> str:
    m = QUANTITY.match(value)
    if not m or float(m.group(1)) <= 0:
        raise PydanticCustomError(
            "quantity", "is not a positive Kubernetes quantity", {"fix": 'use e.g. "2", "500m" (CPU) or "4Gi" (memory)'}
        )
    return value


def _label_check(max_len: int, why: str = "") -> Callable[[str], str]:
    def check(value: str) -> str:
        if DNS_LABEL.match(value) and len(value) <= max_len:
            return value
        raise PydanticCustomError(
            "dns_label",
            f"is not a lowercase RFC 1123 label of at most {max_len} characters{why}",
            {"fix": "use lowercase letters, digits and '-', starting and ending with a letter or digit"},
        )

    return check


def _label_schema(max_len: int) -> WithJsonSchema:
    return WithJsonSchema({"type": "string", "pattern": DNS_LABEL.pattern, "maxLength": max_len})


Quantity = Annotated[
    str,
    BeforeValidator(_number_as_text),
    AfterValidator(_positive_quantity),
    WithJsonSchema({"anyOf": [{"type": "string", "pattern": QUANTITY.pattern}, {"type": "number", "minimum": 0}]}),
]
DnsLabel = Annotated[str, AfterValidator(_label_check(63)), _label_schema(63)]


def _cluster_name_check(value: str) -> str:
    fix = (
        f"use at most {MAX_CLUSTER_NAME} lowercase letters, digits and '-', starting with a letter and ending with a"
        " letter or digit"
    )
    if not DNS_1035_LABEL.match(value):
        what = "is not a DNS-1035 label (lowercase letters, digits and '-', starting with a letter): Services need one"
        raise PydanticCustomError("cluster_name", what, {"fix": fix})
    if len(value) > MAX_CLUSTER_NAME:
        kind, longest = max(derived_names(value).items(), key=lambda item: len(item[1]))
        what = (
            f"is {len(value)} characters, more than the maximum of {MAX_CLUSTER_NAME}: the {kind} {longest!r} would be"
            f" {len(longest)} characters, over the Kubernetes limit of {NAME_LIMIT}"
        )
        raise PydanticCustomError("cluster_name", what, {"fix": fix})
    return value


ClusterName = Annotated[
    str, AfterValidator(_cluster_name_check),
    WithJsonSchema({"type": "string", "pattern": DNS_1035_LABEL.pattern, "maxLength": MAX_CLUSTER_NAME}),
]  # fmt: skip
ObjectName = Annotated[str, AfterValidator(_label_check(253)), _label_schema(253)]


def _absolute(what: str, example: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if value.startswith("/") and value != "/":
            return value
        raise PydanticCustomError("absolute_path", f"must be {what}", {"fix": f"use e.g. {example}"})

    return check


# A secret in the stack file is `{secure: v1:...}` (`pulumi config set --secret`). Before validation its value is
# replaced by one of these markers (see `_mark_secrets`): the model knows only whether it is set and encrypted.
SECRET = "[secret]"
PLAINTEXT = "[plaintext]"


class _SecretField:
    """Annotated metadata marking a field whose value must be a Pulumi secret."""


Secret = Annotated[
    Literal["[secret]", "[plaintext]"],
    _SecretField(),
    WithJsonSchema(
        {
            "type": "object",
            "properties": {"secure": {"type": "string"}},
            "required": ["secure"],
            "additionalProperties": False,
            "description": "A Pulumi secret: set it with `pulumi config set --path --secret <key> <value>`.",
        }
    ),
]


def _json_object(value: Any) -> Any:
    # `pulumi config set key '{"a": 1}'` (without --path) stores the object as a JSON string.
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _comma_list(value: Any) -> Any:
    if isinstance(value, str):
        return [c.strip() for c in value.split(",") if c.strip()]
    return value


class Problems:
    """Rule violations found by a model validator; raised together as one pydantic error (`rules`)."""

    def __init__(self) -> None:
        self.items: list[tuple[str, Any, str, str]] = []

    def add(self, key: str, value: Any, what: str, fix: str) -> None:
        """`key` is relative to the model that checks the rule (the report prefixes the model's location)."""
        self.items.append((key, value, what, fix))

    def raise_any(self) -> None:
        if self.items:
            raise PydanticCustomError(
                "rules", "{count} rule(s) broken", {"count": len(self.items), "rules": self.items}
            )


def _empty_section() -> Any:
    """The default of a section left out: an empty object, validated (`validate_default`) like a written one."""
    return {}


# ------------------------------------------------------------------------------------------------------------
# Sections
# ------------------------------------------------------------------------------------------------------------


class OperatorConfig(Section):
    """The Dask Kubernetes Operator: installed by this stack, or taken from the stack that installed it."""

    install: Annotated[bool, DefaultText("`true` (`false` with `fromStack`)")] = Field(
        True,
        description="Install the operator and its CRDs. `false` where another team already did: check with "
        "`kubectl get crd | grep dask` (four `*.kubernetes.dask.org` CRDs).",
    )
    namespace: DnsLabel = Field(
        "dask-operator", description="The operator's own namespace (must differ from `namespace`)."
    )
    chart_source: Literal["repository", "package"] = Field(
        "repository",
        description="`repository` = `https://helm.dask.org`; `package` = the chart shipped inside the pinned "
        "`dask-kubernetes` wheel, with its placeholder version and image tag replaced by the locked version (for "
        "clusters without internet access, together with `operator.image` pointing at a mirror).",
    )
    from_stack: str | None = Field(
        None,
        description="The stack that installed the operator: `<stack>` (same organization and project as this stack; "
        "on a self-managed backend the organization is `organization`) or `<org>/<project>/<stack>`. Its "
        "`operatorNamespace`/`operatorVersion` exports are read and the deploy fails if the version differs from "
        "the lock. Implies `install: false`.",
    )
    image: str | None = Field(
        None,
        description="Operator image repository, for mirrors and air-gapped registries (default "
        "`ghcr.io/dask/dask-kubernetes-operator`); the tag is always the locked dask-kubernetes version.",
    )

    @model_validator(mode="before")
    @classmethod
    def _install_follows_from_stack(cls, value: Any) -> Any:
        value = _json_object(value)
        if isinstance(value, dict) and value.get("fromStack") is not None and "install" not in value:
            return {**value, "install": False}
        return value

    @model_validator(mode="after")
    def _rules(self) -> OperatorConfig:
        p = Problems()
        if self.from_stack is not None and self.install:
            p.add(
                "install", True, "conflicts with operator.fromStack (that stack installed the operator)",
                "remove operator.install or set it to false",
            )  # fmt: skip
        if self.from_stack is not None and self.from_stack.count("/") not in (0, 2):
            p.add(
                "fromStack", self.from_stack, "is not a stack name",
                "use <stack> (same organization and project) or <org>/<project>/<stack>",
            )  # fmt: skip
        if self.image is not None and ("@" in self.image or ":" in self.image.rsplit("/", 1)[-1]):
            p.add(
                "image", self.image, "must not carry a tag or digest",
                "give the repository only; the tag is the locked dask-kubernetes version",
            )  # fmt: skip
        p.raise_any()
        return self


class NfsConfig(Section):
    server: str | None = Field(None, description="`nfs`: the NFS server's host name or address.")
    path: str | None = Field(None, description="`nfs`: the absolute export path, e.g. `/exports/hats`.")


class HostPathConfig(Section):
    path: str | None = Field(
        None, description="`hostPath`: the node's directory; single-node dev clusters (kind) only."
    )


# Keyless workload identity: the cloud maps a Kubernetes ServiceAccount to a cloud identity. Each provider's
# webhook or metadata server reads these ServiceAccount annotations (and, for Azure, the pod label).
# AWS IRSA: https://docs.aws.amazon.com/eks/latest/userguide/associate-service-account-role.html
# GKE Workload Identity Federation: https://cloud.google.com/kubernetes-engine/docs/how-to/workload-identity
# Azure Workload Identity: https://learn.microsoft.com/en-us/azure/aks/workload-identity-deploy-cluster
#   (annotation and label: https://azure.github.io/azure-workload-identity/docs/topics/service-account-labels-and-annotations.html)
AWS_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}$")
GCP_SERVICE_ACCOUNT = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]@[a-z0-9-]+\.iam\.gserviceaccount\.com$")
AZURE_CLIENT_ID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
# provider -> (its field, the URL scheme it serves, the ServiceAccount annotation, the pod labels it needs)
IDENTITY_PROVIDERS: dict[str, tuple[str, str, str, dict[str, str]]] = {
    "aws": ("roleArn", "s3", "eks.amazonaws.com/role-arn", {}),
    "gcp": ("serviceAccount", "gs", "iam.gke.io/gcp-service-account", {}),
    "azure": ("clientId", "abfs", "azure.workload.identity/client-id", {"azure.workload.identity/use": "true"}),
}


def _pattern(regex: re.Pattern[str], what: str, example: str) -> Callable[[str | None], str | None]:
    def check(value: str | None) -> str | None:
        if value is None or regex.match(value):
            return value
        raise PydanticCustomError("pattern", f"is not {what}", {"fix": f"use e.g. {example}"})

    return check


class AwsIdentityConfig(Section):
    role_arn: Annotated[
        str | None,
        AfterValidator(_pattern(AWS_ROLE_ARN, "an IAM role ARN", "arn:aws:iam::123456789012:role/lsdb-reader")),
    ] = Field(
        None, description="IRSA: the IAM role the pods assume (ServiceAccount annotation `eks.amazonaws.com/role-arn`)."
    )


class GcpIdentityConfig(Section):
    service_account: Annotated[
        str | None,
        AfterValidator(
            _pattern(GCP_SERVICE_ACCOUNT, "a Google service account", "lsdb-reader@my-project.iam.gserviceaccount.com")
        ),
    ] = Field(
        None,
        description="GKE Workload Identity: the Google service account to act as (annotation "
        "`iam.gke.io/gcp-service-account`).",
    )


class AzureIdentityConfig(Section):
    client_id: Annotated[
        str | None,
        AfterValidator(_pattern(AZURE_CLIENT_ID, "a client ID (GUID)", "00000000-0000-0000-0000-000000000000")),
    ] = Field(
        None,
        description="Azure Workload Identity: the managed identity's client ID (annotation "
        '`azure.workload.identity/client-id`, pod label `azure.workload.identity/use: "true"`).',
    )


class IdentityConfig(Section):
    """Keyless access to the object store: one cloud's workload identity, bound to the pods' ServiceAccount."""

    aws: AwsIdentityConfig = Field(default_factory=_empty_section, description="IRSA (`s3://`).")
    gcp: GcpIdentityConfig = Field(default_factory=_empty_section, description="GKE Workload Identity (`gs://`).")
    azure: AzureIdentityConfig = Field(
        default_factory=_empty_section, description="Azure Workload Identity (`abfs://`)."
    )

    @property
    def providers(self) -> dict[str, str]:
        """provider -> the identity given for it (role ARN, service account, client ID)."""
        given = {}
        for provider, (key, *_rest) in IDENTITY_PROVIDERS.items():
            value = getattr(self, provider).model_dump(by_alias=True).get(key)
            if value:
                given[provider] = str(value)
        return given


class ObjectStoreConfig(Section):
    url: str | None = Field(
        None,
        description="`objectStore`: `s3://`, `gs://`, `abfs://` (aliases `s3a`, `gcs`, `abfss`, `az`), or `https://` "
        "(alias `http`). The scheme must have its fsspec driver in the lock. No volume is mounted.",
    )
    credentials: dict[str, Secret] = Field(
        default_factory=_empty_section,
        description="**Secret.** s3: `accessKeyId`, `secretAccessKey`, `sessionToken`, `region`, `endpointUrl`; "
        "gs: `serviceAccountJson` (mounted as a file, `GOOGLE_APPLICATION_CREDENTIALS`); abfs: `accountName`, "
        "`accountKey`, `connectionString`, `sasToken`. Stored in a Secret and exposed to scheduler and workers as "
        "the environment variables s3fs/gcsfs/adlfs read. Plaintext values are rejected.",
    )
    anonymous: bool = Field(
        False,
        description="Public bucket or container: open catalogs without credentials (`anon=True`). Without it, "
        "s3/abfs catalogs are opened with credentials (`anon=False`): the keys above, the identity below, or the "
        "node's own.",
    )
    identity: IdentityConfig = Field(
        default_factory=_empty_section,
        description="Keyless workload identity instead of `credentials`: the program creates a ServiceAccount "
        "carrying it and runs scheduler and workers under it. The cloud-side IAM binding is yours (see README).",
    )

    @property
    def scheme(self) -> str | None:
        """The canonical scheme (s3, gs, abfs, https) of `url`, or None."""
        raw = self.url.split("://", 1)[0] if self.url and "://" in self.url else ""
        scheme = SCHEME_ALIASES.get(raw, raw)
        return scheme if scheme in OBJECT_STORES else None


class StorageConfig(Section):
    """Where workers find the HATS catalogs."""

    kind: StorageKind = Field(
        "none",
        description="`pvc` (a new claim), `nfs` or `hostPath` (a static PV and its claim), `existingClaim` (mount "
        "the claim `claimName` that already exists; nothing is created or deleted), `objectStore` or `none`.",
    )
    mount_path: Annotated[str, AfterValidator(_absolute("an absolute path below /", "/data"))] = Field(
        "/data", description="Where workers see the catalogs."
    )
    claim_name: ObjectName = Field(
        "hats-catalog-pvc", description="PVC name (`pvc`, `nfs`, `hostPath`; the existing claim for `existingClaim`)."
    )
    size: Quantity = Field("100Gi", description="Requested/declared capacity.")
    storage_class_name: str | None = Field(
        None,
        description="`pvc` only: a RWX-capable class (`kubectl get storageclass`); default: the cluster's default.",
    )
    access_mode: AccessMode = Field(
        "ReadWriteMany",
        description="`ReadWriteMany`, `ReadOnlyMany`, `ReadWriteOnce`, `ReadWriteOncePod`. Single-node modes are "
        "rejected when more than one worker can run.",
    )
    nfs: NfsConfig = Field(
        default_factory=_empty_section,
        description='`nfs`: static PV (Retain, `nfsvers=4.1`), claim bound by `volumeName` (`storageClassName: ""`).',
    )
    host_path: HostPathConfig = Field(
        default_factory=_empty_section, description="`hostPath`: static PV on a node path."
    )
    object_store: ObjectStoreConfig = Field(default_factory=_empty_section, description="`objectStore` settings.")

    @property
    def mounts_volume(self) -> bool:
        return self.kind in VOLUME_KINDS

    @property
    def creates_claim(self) -> bool:
        return self.kind in CREATED_CLAIM_KINDS

    @property
    def object_store_scheme(self) -> str | None:
        return self.object_store.scheme if self.kind == "objectStore" else None

    @property
    def credential_keys(self) -> tuple[str, ...]:
        """Names of the credentials set (values stay Pulumi secrets)."""
        if self.object_store_scheme is None:
            return ()
        allowed = OBJECT_STORES[self.object_store_scheme][1]
        return tuple(k for k in self.object_store.credentials if k in allowed)

    @property
    def credential_env(self) -> dict[str, str]:
        """Credential key -> environment variable the fsspec driver reads."""
        if self.object_store_scheme is None:
            return {}
        env = OBJECT_STORES[self.object_store_scheme][1]
        return {k: env[k] for k in self.credential_keys}

    @property
    def identity(self) -> tuple[str, str] | None:
        """(provider, role ARN / service account / client ID) of the workload identity, or None."""
        providers = self.object_store.identity.providers if self.kind == "objectStore" else {}
        return next(iter(providers.items()), None)

    @property
    def catalog_storage_options(self) -> dict[str, Any]:
        """What `lsdb.open_catalog(path, storage_options=...)` needs for this storage (the pods' environment and
        identity do the rest). hats opens s3:// anonymously unless told otherwise (`get_upath_for_protocol`), so
        s3 and abfs say `anon` explicitly; gcsfs gets `token`."""
        scheme = self.object_store_scheme
        anonymous = self.object_store.anonymous
        if scheme in ("s3", "abfs"):
            return {"anon": anonymous}
        if scheme == "gs":
            return {"token": "anon" if anonymous else "google_default"}
        return {}

    @model_validator(mode="after")
    def _rules(self) -> StorageConfig:
        p = Problems()
        if self.kind == "nfs":
            if not self.nfs.server:
                p.add("nfs.server", self.nfs.server, "is required for storage.kind nfs", "set the NFS host")
            if not self.nfs.path or not self.nfs.path.startswith("/"):
                p.add("nfs.path", self.nfs.path, "must be the absolute export path", "e.g. /exports/hats")
        if self.kind == "hostPath" and (not self.host_path.path or not self.host_path.path.startswith("/")):
            p.add("hostPath.path", self.host_path.path, "must be an absolute node path", "e.g. /lsdb-catalogs")
        creds = self.object_store.credentials
        if self.kind == "objectStore":
            self._object_store_rules(p)
        else:
            set_here = [k for k, on in (
                ("credentials", bool(creds)), ("identity", bool(self.object_store.identity.providers)),
                ("anonymous", self.object_store.anonymous),
            ) if on]  # fmt: skip
            for key in set_here:
                p.add(
                    f"objectStore.{key}", SECRET if key == "credentials" else "[set]",
                    f"is set but storage.kind is {self.kind}", "remove it, or set storage.kind objectStore",
                )  # fmt: skip
        if any(v == PLAINTEXT for v in creds.values()):
            p.add(
                "objectStore.credentials", PLAINTEXT, "is stored in plaintext in the stack file",
                "re-set each as a secret: "
                "pulumi config set --path --secret storage.objectStore.credentials.<key> <value>",
            )  # fmt: skip
        p.raise_any()
        return self

    def _object_store_rules(self, p: Problems) -> None:
        url = self.object_store.url
        scheme = self.object_store.scheme
        if scheme is None:
            known = sorted([*OBJECT_STORES, *SCHEME_ALIASES])
            p.add(
                "objectStore.url", url, "has no URL scheme with an fsspec driver in the lock",
                f"use a URL starting with one of: {', '.join(s + '://' for s in known)}",
            )  # fmt: skip
            return
        driver, allowed = OBJECT_STORES[scheme]
        if driver not in read_lock():
            p.add(
                "objectStore.url", url, f"needs the fsspec driver '{driver}', which is not in the lock",
                f"add {driver} to docker/requirements.in and run `python -m tools.relock`",
            )  # fmt: skip
        for k in self.object_store.credentials:
            if k not in allowed:
                p.add(
                    f"objectStore.credentials.{k}", SECRET, f"is not a credential for {scheme}:// storage",
                    f"use: {', '.join(allowed) or 'none (public https needs no credentials)'}",
                )  # fmt: skip
        self._access_rules(p, scheme)

    def _access_rules(self, p: Problems, scheme: str) -> None:
        """One way in: static credentials, one workload identity, or anonymous; the identity's cloud serves the URL."""
        store = self.object_store
        providers = store.identity.providers
        if len(providers) > 1:
            p.add(
                "objectStore.identity", sorted(providers), "names more than one cloud",
                "keep the one that serves storage.objectStore.url",
            )  # fmt: skip
        if providers and store.credentials:
            p.add(
                "objectStore.identity", sorted(providers), "is set together with objectStore.credentials",
                "use one: remove the static keys (`pulumi config rm --path storage.objectStore.credentials`) "
                "or the identity",
            )  # fmt: skip
        if store.anonymous and (providers or store.credentials):
            p.add(
                "objectStore.anonymous", True, "is set together with credentials or an identity",
                "remove objectStore.anonymous for a private bucket, or the credentials/identity for a public one",
            )  # fmt: skip
        for provider in providers:
            key, serves, _annotation, _labels = IDENTITY_PROVIDERS[provider]
            if serves != scheme:
                p.add(
                    f"objectStore.identity.{provider}.{key}", providers[provider],
                    f"is a {provider} identity, but storage.objectStore.url is {scheme}://",
                    f"use the identity of the cloud serving {scheme}:// ("
                    + ", ".join(f"{q} for {s}://" for q, (_k, s, _a, _l) in IDENTITY_PROVIDERS.items()) + ")",
                )  # fmt: skip


LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
LABEL_PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
MAX_LABEL_VALUE = 63  # Kubernetes label values (and the DNS labels worker group keys must be)
RESERVED_GROUPS = ("default",)  # the operator's own default group is `<cluster>-default`


def label_problems(labels: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """(key, value, what is wrong) for each entry that is not a valid Kubernetes label."""
    found = []
    for key, value in labels.items():
        prefix, _, name = key.rpartition("/")
        if not name or len(name) > 63 or not LABEL_NAME.match(name) or (prefix and (
            len(prefix) > 253 or not LABEL_PREFIX.match(prefix)
        )):  # fmt: skip
            found.append((key, value, "is not a valid Kubernetes label key"))
        elif len(value) > MAX_LABEL_VALUE or not LABEL_NAME.match(value):
            found.append((key, value, "is not a valid Kubernetes label value (≤ 63 characters: letters, digits, -_.)"))
    return found


POD_SCHEDULING_DOC = "https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/pod-v1/#scheduling"


class PlacementConfig(Section):
    """Where a pod runs: PodSpec scheduling fields, checked against the Kubernetes schema before deploying."""

    node_selector: dict[str, str] = Field(
        default_factory=dict, description="`nodeSelector`: node labels the pod requires (values are strings)."
    )
    tolerations: list[dict[str, Any]] = Field(
        default_factory=list, description="`tolerations` (PodSpec), e.g. `[{key: gpu, operator: Exists}]`."
    )
    affinity: dict[str, Any] = Field(
        default_factory=dict, description="`affinity` (PodSpec): `nodeAffinity`, `podAffinity`, `podAntiAffinity`."
    )
    priority_class_name: str | None = Field(None, description="`priorityClassName` (the PriorityClass must exist).")
    topology_spread_constraints: Annotated[
        list[dict[str, Any]] | None, DefaultText("workers: spread over nodes; scheduler: none")
    ] = Field(
        None,
        description="`topologySpreadConstraints` (PodSpec). Workers default to one preferred spread over nodes "
        "(`kubernetes.io/hostname`, `ScheduleAnyway`); `[]` turns it off.",
    )

    def pod_fields(self) -> dict[str, Any]:
        """The PodSpec fields as written (camelCase); `topologySpreadConstraints` None means 'the default'."""
        return {
            "nodeSelector": dict(self.node_selector),
            "tolerations": list(self.tolerations),
            "affinity": dict(self.affinity),
            "priorityClassName": self.priority_class_name,
            "topologySpreadConstraints": self.topology_spread_constraints,
        }

    @model_validator(mode="after")
    def _rules(self) -> PlacementConfig:
        from components.placement import placement_problems

        p = Problems()
        for key, value, what in label_problems(self.node_selector):
            p.add(f"nodeSelector.{key}", value, what, "use a node label as `kubectl get nodes --show-labels` shows it")
        for key, value, what in placement_problems(self.pod_fields()):
            p.add(key, value, f"is not valid in a Kubernetes PodSpec ({what})", f"see {POD_SCHEDULING_DOC}")
        p.raise_any()
        return self


class WorkerPodConfig(Section):
    """What every worker group has: threads, resources, placement (the default group and cluster.workerGroups)."""

    threads: Annotated[int, Fix("use 1 or 2 for LSDB workloads")] = Field(
        2, ge=1, description="`--nthreads` (≥ 1; keep 1 or 2 for LSDB)."
    )
    cpu: Quantity = Field("2", description="CPU request per worker.")
    memory: Quantity = Field(
        "4Gi", description="Memory per worker: request, limit and Dask's `--memory-limit` (≥ 1Gi)."
    )
    cpu_limit: Quantity | None = Field(
        None,
        description="Adds `limits.cpu` to workers (and the scheduler's CPU as its limit), for namespaces whose "
        "ResourceQuota requires it.",
    )
    spot: Literal["aws", "gcp", "azure"] | None = Field(
        None,
        description="Run these workers on spot nodes of `aws` (EKS), `gcp` (GKE) or `azure` (AKS): the provider's "
        "spot node label and toleration are added, and the scheduler gets a required node affinity keeping it off "
        "spot nodes.",
    )
    placement: PlacementConfig = Field(
        default_factory=_empty_section, description="Where these workers run (merged with `spot`)."
    )

    @property
    def memory_bytes(self) -> int:
        return quantity_bytes(self.memory)

    @model_validator(mode="after")
    def _rules(self) -> WorkerPodConfig:
        p = Problems()
        if self.memory_bytes < 2**30:
            p.add(
                "memory", self.memory, "is below 1Gi, too little for an LSDB partition",
                "use at least 1Gi; the guide recommends 4Gi",
            )  # fmt: skip
        p.raise_any()
        return self


class WorkersConfig(WorkerPodConfig):
    replicas: Annotated[int, DefaultText("from `cluster.size`"), Fix("use 0 or more")] = Field(
        2, ge=0, description="Initial workers (≥ 0)."
    )
    cpu: Annotated[Quantity, DefaultText("from `cluster.size`")] = Field("2", description="CPU request per worker.")
    memory: Annotated[Quantity, DefaultText("from `cluster.size`")] = Field(
        "4Gi", description="Memory per worker: request, limit and Dask's `--memory-limit` (≥ 1Gi)."
    )


def _group_name(value: str) -> str:
    if not DNS_LABEL.match(value) or len(value) > MAX_LABEL_VALUE:
        raise PydanticCustomError(
            "group_name", "is not a lowercase RFC 1123 label",
            {"fix": "name the group with lowercase letters, digits and '-', e.g. highmem"},
        )  # fmt: skip
    if value in RESERVED_GROUPS:
        raise PydanticCustomError(
            "group_name", "is the operator's own default worker group",
            {"fix": "configure the default group under cluster.workers, or pick another name"},
        )  # fmt: skip
    return value


GroupName = Annotated[str, AfterValidator(_group_name)]


class WorkerGroupConfig(WorkerPodConfig):
    """An extra DaskWorkerGroup of the live cluster (same image, storage, security and memory rules)."""

    replicas: Annotated[int, Fix("use 0 or more")] = Field(
        1, ge=0, description="Workers in this group (≥ 0; fixed: only the default group autoscales)."
    )


class SchedulerConfig(Section):
    cpu: Quantity = Field("2", description="Scheduler CPU request (the guide's).")
    memory: Quantity = Field("6Gi", description="Scheduler memory, request and limit (the guide's).")
    placement: PlacementConfig = Field(
        default_factory=_empty_section,
        description="Where the scheduler runs (kept off spot nodes whenever any workers use `spot`).",
    )
    disruption_budget: bool = Field(
        True,
        description="A PodDisruptionBudget (`maxUnavailable: 0`) so node drains wait instead of evicting the "
        "scheduler (which loses every running task).",
    )


class AutoscalerConfig(Section):
    enabled: bool = Field(True, description="Create a `DaskAutoscaler`.")
    minimum: Annotated[int, DefaultText("from `cluster.size`")] = Field(
        2, description="Fewest workers (`0 ≤ minimum ≤ maximum`)."
    )
    maximum: Annotated[int, DefaultText("from `cluster.size`")] = Field(4, description="Most workers (≥ 1).")

    @model_validator(mode="after")
    def _rules(self) -> AutoscalerConfig:
        p = Problems()
        if self.enabled:
            if self.maximum < 1:
                p.add("maximum", self.maximum, "must be at least 1", "use 1 or more")
            if self.minimum < 0:
                p.add("minimum", self.minimum, "must not be negative", "use 0 or more")
            if self.minimum > self.maximum:
                p.add(
                    "minimum", self.minimum, f"is greater than cluster.autoscaler.maximum ({self.maximum})",
                    "lower minimum or raise maximum",
                )  # fmt: skip
        p.raise_any()
        return self


class ClusterConfig(Section):
    """The DaskCluster, its workers, scheduler and autoscaler."""

    name: ClusterName = Field(
        "lsdb-cluster",
        description=f"Base name: the DaskCluster is `<name>-<hash>`, the stable Service `<name>-scheduler`;"
        f" a DNS-1035 label (starts with a letter), ≤ {MAX_CLUSTER_NAME} characters.",
    )
    size: SizeName = Field("small", description="Preset from the sizing table; explicit values override it.")
    workers: WorkersConfig = Field(default_factory=_empty_section, description="The default worker group.")
    scheduler: SchedulerConfig = Field(default_factory=_empty_section, description="The scheduler pod.")
    autoscaler: AutoscalerConfig = Field(default_factory=_empty_section, description="The `DaskAutoscaler`.")
    idle_timeout_seconds: Annotated[int, Fix("use 0 (never) or a number of seconds")] = Field(
        0, ge=0, description="Delete the cluster after this many idle seconds (`0` = never)."
    )
    worker_groups: dict[GroupName, WorkerGroupConfig] = Field(
        default_factory=dict,
        description="Extra worker groups by name (a DNS label): each a `DaskWorkerGroup` `<cluster.name>-<h>-<name>` "
        "of the live cluster with `replicas`, `threads`, `cpu`, `memory`, `cpuLimit`, `spot`, `placement`.",
    )

    @model_validator(mode="before")
    @classmethod
    def _apply_size_preset(cls, value: Any) -> Any:
        """Fill what the user left out from the `size` preset (an unknown size is reported; `small` stands in)."""
        value = _json_object(value)
        if not isinstance(value, dict):
            return value
        preset = SIZE_PRESETS.get(str(value.get("size", "small")), SIZE_PRESETS["small"])
        out = dict(value)
        for section, keys in (("workers", ("replicas", "cpu", "memory")), ("autoscaler", ("minimum", "maximum"))):
            given = _json_object(out.get(section, {}))
            if isinstance(given, dict):
                out[section] = {**{k: preset[k] for k in keys}, **given}
        return out

    @property
    def max_workers(self) -> int:
        """The most workers the cluster can have: the default group's ceiling plus every extra group."""
        default = self.autoscaler.maximum if self.autoscaler.enabled else self.workers.replicas
        return default + sum(g.replicas for g in self.worker_groups.values())

    @property
    def min_workers(self) -> int:
        """The workers the cluster always has: the default group's floor (the autoscaler may scale it down to its
        minimum at any time) plus every extra group, which the autoscaler does not scale."""
        default = self.autoscaler.minimum if self.autoscaler.enabled else self.workers.replicas
        return default + sum(g.replicas for g in self.worker_groups.values())

    @property
    def spot_providers(self) -> list[str]:
        """Providers whose spot nodes some workers use (the scheduler stays off them)."""
        groups = [self.workers, *self.worker_groups.values()]
        return sorted({g.spot for g in groups if g.spot})

    @model_validator(mode="after")
    def _rules(self) -> ClusterConfig:
        p = Problems()
        for group in self.worker_groups:
            # The longest name derived from the group: its worker Deployments `<live>-<group>-worker-<uuid>`; the
            # DaskWorkerGroup `<live>-<group>` is also a pod label value. Both must fit NAME_LIMIT.
            longest = worker_deployment_name(self.name, group)
            if len(longest) > NAME_LIMIT:
                room = len(group) - (len(longest) - NAME_LIMIT)
                p.add(
                    f"workerGroups.{group}", "{...}",
                    f"makes the operator's worker Deployment names ({len(longest)} characters, e.g. '{longest}') "
                    f"longer than {NAME_LIMIT}",
                    f"shorten the group name to at most {max(room, 0)} characters, or cluster.name",
                )  # fmt: skip
        p.raise_any()
        return self


class RegistryConfig(Section):
    server: str | None = Field(None, description="Registry host for push and pull credentials, e.g. `ghcr.io`.")
    username: str | None = Field(None, description="Registry user.")
    password: Secret | None = Field(None, description="**Secret.** Registry password or token.")


class ImageConfig(Section):
    """The LSDB image: built from docker/ and the lock, or a prebuilt digest."""

    repository: str | None = Field(
        None, description="Registry repository without tag, e.g. `ghcr.io/<org>/lsdb-dask` (required unless `ref`)."
    )
    python_version: str = Field("3.11.7", description="Base image Python, `X.Y.Z`; match your client's Python.")
    platform: str = Field("linux/amd64", description="Build platform (part of the tag).")
    push: bool = Field(
        True,
        description="Must stay `true` when building: the cluster pulls by registry digest "
        "(dev pushes to `localhost:5001`).",
    )
    registry: RegistryConfig = Field(
        default_factory=_empty_section, description="Push and pull credentials (password as a secret)."
    )
    ref: str | None = Field(None, description="Prebuilt `repository@sha256:<digest>`; skips the build.")
    client_check: Literal["error", "warn"] = Field(
        "error", description="`error` or `warn` when the client environment differs from the lock."
    )

    @property
    def has_registry_password(self) -> bool:
        return self.registry.password is not None

    @property
    def registry_server(self) -> str | None:
        return self.registry.server

    @property
    def registry_username(self) -> str | None:
        return self.registry.username

    @model_validator(mode="after")
    def _rules(self) -> ImageConfig:
        p = Problems()
        if not PYTHON_VERSION.match(self.python_version):
            p.add(
                "pythonVersion", self.python_version, "must be a patch release X.Y.Z",
                "pin the base image to a patch release, e.g. 3.11.7 (match your client's Python)",
            )  # fmt: skip
        if self.ref is not None:
            if not DIGEST_REF.match(self.ref):
                p.add(
                    "ref", self.ref, "is not pinned by digest",
                    "use repository@sha256:<64 hex> (`docker buildx imagetools inspect <image>` prints the digest)",
                )  # fmt: skip
        elif not self.push:
            p.add(
                "push", False, "leaves no registry digest for the cluster to pull (it never uses tags)",
                "set image.push true (dev uses the local registry) or give a prebuilt image.ref",
            )  # fmt: skip
        self._reference_rules(p)
        self._registry_rules(p)
        p.raise_any()
        return self

    def _reference_rules(self, p: Problems) -> None:
        for k, v in (("repository", self.repository), ("ref", self.ref)):
            if v and re.search(r"(^|[:/])latest($|@)", v):
                p.add(k, v, "uses the floating tag 'latest'", "use a digest-pinned reference; tags are derived")
        repo = self.repository
        if repo and ("@" in repo or ":" in repo.rsplit("/", 1)[-1]):
            p.add(
                "repository", repo, "must not carry a tag or digest",
                "give the repository only; the tag is derived from the lock and the digest pinned",
            )  # fmt: skip
        if repo and repo != repo.lower():
            p.add("repository", repo, "must be lowercase", "use lowercase letters")

    def _registry_rules(self, p: Problems) -> None:
        if self.registry.password is not None:
            if not (self.registry.server and self.registry.username):
                p.add(
                    "registry", "[password set]", "needs server and username with the password",
                    "set image.registry.server and image.registry.username",
                )  # fmt: skip
            if self.registry.password == PLAINTEXT:
                p.add(
                    "registry.password", PLAINTEXT, "is stored in plaintext in the stack file",
                    "re-set it as a secret: pulumi config set --path --secret image.registry.password <value>",
                )  # fmt: skip


def _cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise PydanticCustomError(
            "cidr", "is not an IP address block", {"fix": "use CIDR notation, e.g. 0.0.0.0/0 or 10.0.0.0/8"}
        ) from None


Cidr = Annotated[str, AfterValidator(_cidr), WithJsonSchema({"type": "string"})]


def _port(value: int) -> int:
    if 1 <= value <= 65535:
        return value
    raise PydanticCustomError("port", "is not a TCP port", {"fix": "use a port between 1 and 65535"})


Port = Annotated[int, AfterValidator(_port), WithJsonSchema({"type": "integer", "minimum": 1, "maximum": 65535})]


class SecurityConfig(Section):
    """Who may reach the cluster, and how: NetworkPolicies, TLS between client, scheduler and workers."""

    network_policy: bool = Field(
        True,
        description="Create NetworkPolicies: deny all ingress and egress of the cluster's pods except what the "
        "README's security section lists.",
    )
    client_namespaces: Annotated[list[DnsLabel], BeforeValidator(_comma_list)] = Field(
        default_factory=list,
        description="Namespaces whose pods may use the scheduler (comm and dashboard) besides pods labelled "
        '`lsdb-k8s/client: "true"` in `namespace`.',
    )
    metrics_namespaces: Annotated[list[DnsLabel], BeforeValidator(_comma_list)] = Field(
        default_factory=list,
        description="Namespaces of metrics scrapers (e.g. `monitoring`): may read the scheduler's and workers' "
        "dashboard ports (`/metrics`).",
    )
    egress_cidrs: Annotated[list[Cidr], BeforeValidator(_comma_list)] = Field(
        default_factory=lambda: ["0.0.0.0/0"],
        description="`storage.kind: objectStore`: address blocks of the object store the pods may reach "
        "(on `egressPorts`). NFS and hostPath are mounted by the node and need none.",
    )
    egress_ports: Annotated[list[Port], BeforeValidator(_comma_list)] = Field(
        default_factory=lambda: [443],
        description="`storage.kind: objectStore`: TCP ports of the object store (e.g. `9000` for a MinIO endpoint).",
    )
    tls: Annotated[bool, DefaultText("`true` (the dev stack file sets `false`)")] = Field(
        True,
        description="Mutual TLS between client, scheduler and workers with a CA per stack and a certificate per "
        "cluster (pulumi-tls); the scheduler address becomes `tls://`, the client bundle the secret export "
        "`clientTls`.",
    )


class MonitoringConfig(Section):
    """Prometheus monitors for the scheduler and workers, and a Grafana dashboard (needs the prometheus-operator)."""

    enabled: bool = Field(
        False,
        description="Scrape `/metrics` of the scheduler (ServiceMonitor) and workers (PodMonitor): through the "
        "operator chart's own monitors when this stack installs the operator, else created here. Needs the "
        "prometheus-operator CRDs (`kubectl get crd servicemonitors.monitoring.coreos.com`).",
    )
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="Labels on the monitors so your Prometheus selects them (its `serviceMonitorSelector` / "
        "`podMonitorSelector`), e.g. `{release: kube-prometheus-stack}`.",
    )
    dashboard: bool = Field(True, description="With `enabled`: a Grafana dashboard ConfigMap.")
    dashboard_labels: dict[str, str] = Field(
        default_factory=lambda: {"grafana_dashboard": "1"},
        description="Labels the Grafana dashboard sidecar watches for.",
    )
    dashboard_namespace: DnsLabel | None = Field(
        None, description="Namespace of the dashboard ConfigMap (default: `namespace`); it must exist."
    )

    @model_validator(mode="after")
    def _rules(self) -> MonitoringConfig:
        p = Problems()
        for section, labels in (("labels", self.labels), ("dashboardLabels", self.dashboard_labels)):
            for key, value, what in label_problems(labels):
                p.add(f"{section}.{key}", value, what, "use a Kubernetes label (key ≤ 63 characters, value ≤ 63)")
        p.raise_any()
        return self


class StackConfig(Section):
    """Everything `pulumi up --stack <env>` reads, under the `lsdb-k8s:` prefix of `Pulumi.<stack>.yaml`."""

    role: Literal["cluster", "platform"] = Field(
        "cluster",
        description="`cluster`: a Dask cluster (with the operator, or taking it from `operator.fromStack`); "
        "`platform`: only the cluster-wide operator and its CRDs, for the other stacks to share (then only "
        "`operator` and `kubeContext` may be set).",
    )
    namespace: DnsLabel = Field("lsdb", description="Namespace for the cluster, storage claim and secrets.")
    create_namespace: bool = Field(
        True,
        description="Create `namespace` (and delete it on destroy). `false` uses a namespace that already exists "
        "and leaves it alone; `default` is never created.",
    )
    kube_context: str | None = Field(
        None,
        description="kubeconfig context for every Kubernetes resource and for the verification's port-forward "
        "(default: the current context).",
    )
    operator: OperatorConfig = Field(default_factory=_empty_section, description="The Dask Kubernetes Operator.")
    storage: StorageConfig = Field(default_factory=_empty_section, description="Catalog storage.")
    cluster: ClusterConfig = Field(default_factory=_empty_section, description="The Dask cluster.")
    image: ImageConfig = Field(default_factory=_empty_section, description="The LSDB image.")
    verify: VerifyConfig = Field(default_factory=_empty_section, description="Post-deploy verification.")
    security: SecurityConfig = Field(
        default_factory=_empty_section, description="NetworkPolicies and TLS (secure by default)."
    )
    monitoring: MonitoringConfig = Field(
        default_factory=_empty_section, description="Prometheus metrics and the Grafana dashboard."
    )

    @property
    def is_platform(self) -> bool:
        return self.role == "platform"

    @model_validator(mode="after")
    def _rules(self) -> StackConfig:
        p = Problems()
        given = {StackConfig.model_fields[name].alias or name for name in self.model_fields_set}
        for rule in CROSS_SECTION_RULES:
            rule.check(p, {name: getattr(self, name) for name in rule.sections} | {"given": given})
        p.raise_any()
        return self


# ------------------------------------------------------------------------------------------------------------
# Rules across sections: each names the sections it reads, so it also runs when only those sections are valid.
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CrossRule:
    sections: tuple[str, ...]
    check: Callable[[Problems, dict[str, Any]], None]


def _operator_namespace(p: Problems, s: dict[str, Any]) -> None:
    if s["operator"].install and s["operator"].namespace == s["namespace"]:
        p.add(
            "operator.namespace", s["operator"].namespace, "is the same as the cluster namespace",
            "keep the cluster-wide operator in its own namespace (default dask-operator)",
        )  # fmt: skip


def _single_node_storage(p: Problems, s: dict[str, Any]) -> None:
    storage, cluster = s["storage"], s["cluster"]
    if storage.creates_claim and storage.access_mode in SINGLE_NODE_MODES and cluster.max_workers > 1:
        p.add(
            "storage.accessMode", storage.access_mode,
            f"lets only one node mount the catalog, but up to {cluster.max_workers} workers may run",
            "use ReadWriteMany (or ReadOnlyMany), or limit workers (and autoscaler.maximum) to 1",
        )  # fmt: skip


def _verify_workers(p: Problems, s: dict[str, Any]) -> None:
    # The verification waits for verify.minWorkers workers of any group; only cluster.min_workers are sure to be there.
    verify, cluster = s["verify"], s["cluster"]
    if s["role"] != "cluster" or not verify.enabled or verify.min_workers <= cluster.min_workers:
        return
    floor = (
        f"cluster.autoscaler.minimum ({cluster.autoscaler.minimum}), the workers the autoscaler keeps"
        if cluster.autoscaler.enabled
        else f"cluster.workers.replicas ({cluster.workers.replicas})"
    )
    groups = sum(g.replicas for g in cluster.worker_groups.values())
    what = f"exceeds {floor}" + (f", plus {groups} in cluster.workerGroups" if cluster.worker_groups else "")
    raise_floor = "cluster.autoscaler.minimum" if cluster.autoscaler.enabled else "the worker count"
    p.add("verify.minWorkers", verify.min_workers, what, f"lower verify.minWorkers or raise {raise_floor}")


def url_scheme(path: str) -> str | None:
    """The canonical scheme (s3, gs, abfs, https, or the raw one) of a URL, None for a plain path."""
    if "://" not in path:
        return None
    raw = path.split("://", 1)[0].lower()
    return SCHEME_ALIASES.get(raw, raw)


def _required_for_a_cluster(p: Problems, s: dict[str, Any]) -> None:
    if s["role"] != "cluster":
        return
    if s["image"].ref is None and not s["image"].repository:
        p.add("image.repository", None, "is required when image.ref is not set", "e.g. ghcr.io/<org>/lsdb-dask")
    if s["verify"].enabled and not s["verify"].catalog_path:
        p.add(
            "verify.catalogPath", None, "is required while verification is enabled",
            "set the catalog path as workers see it (e.g. /data/catalogs/my_catalog), or verify.enabled false",
        )  # fmt: skip


PLATFORM_KEYS = ("role", "kubeContext", "operator")


def _platform_only(p: Problems, s: dict[str, Any]) -> None:
    if s["role"] != "platform":
        return
    for key in sorted(s["given"] - set(PLATFORM_KEYS)):
        p.add(
            key, "[set]", "is set, but role platform installs only the operator and its CRDs",
            f"remove it from this stack (a platform stack takes only {', '.join(PLATFORM_KEYS)})",
        )  # fmt: skip
    if not s["operator"].install or s["operator"].from_stack:
        p.add("operator.install", False, "must be true for role platform", "remove operator.install/fromStack")


def _verify_path_under_mount(p: Problems, s: dict[str, Any]) -> None:
    verify, storage = s["verify"], s["storage"]
    if not (verify.enabled and verify.catalog_path):
        return
    path: str = verify.catalog_path
    scheme = url_scheme(path)
    if scheme is not None:
        store = storage.object_store_scheme
        if store is None:
            p.add(
                "verify.catalogPath", path, f"is a {scheme}:// URL but storage.kind is {storage.kind}",
                f"set storage.kind objectStore and storage.objectStore.url to the {scheme}:// bucket or server "
                "(its credentials, identity or anonymous access are what the workers use)",
            )  # fmt: skip
        elif scheme != store:
            p.add(
                "verify.catalogPath", path, f"is a {scheme}:// URL but storage.objectStore.url is {store}://",
                "give a catalog in the configured object store, or change storage.objectStore.url",
            )  # fmt: skip
    elif storage.kind == "objectStore":
        p.add(
            "verify.catalogPath", path, "is a local path, but storage.kind objectStore mounts no volume",
            f"give the catalog's URL, e.g. {(storage.object_store.url or 's3://bucket').rstrip('/')}/<catalog>",
        )  # fmt: skip
    elif storage.mounts_volume and not (path.rstrip("/") + "/").startswith(storage.mount_path.rstrip("/") + "/"):
        p.add(
            "verify.catalogPath", path, f"is not under storage.mountPath ({storage.mount_path})",
            "give the path as workers see it, below the mount path",
        )  # fmt: skip


CROSS_SECTION_RULES = (
    CrossRule(("operator", "namespace"), _operator_namespace),
    CrossRule(("storage", "cluster"), _single_node_storage),
    CrossRule(("role", "verify", "cluster"), _verify_workers),
    CrossRule(("verify", "storage"), _verify_path_under_mount),
    CrossRule(("role", "image", "verify"), _required_for_a_cluster),
    CrossRule(("role", "operator"), _platform_only),
)


# ------------------------------------------------------------------------------------------------------------
# Parsing and the error report
# ------------------------------------------------------------------------------------------------------------

_BUILTIN_MESSAGES: dict[str, tuple[str, str]] = {
    "int_parsing": ("must be a whole number", "use digits only, e.g. 4"),
    "int_type": ("must be a whole number", "use digits only, e.g. 4"),
    "int_from_float": ("must be a whole number", "use digits only, e.g. 4"),
    "float_parsing": ("must be a number", "use a decimal number, e.g. 180.0"),
    "float_type": ("must be a number", "use a decimal number, e.g. 180.0"),
    "bool_parsing": ("must be true or false", "use true or false"),
    "bool_type": ("must be true or false", "use true or false"),
    "string_type": ("must be a string", "quote the value"),
    "list_type": ("must be a list", 'e.g. ["ra", "dec"]'),
    "string_too_short": ("must not be empty", "give a value"),
}


def _shown(value: Any) -> str:
    return repr(value) if isinstance(value, str) else json.dumps(value, default=str)


def _unwrap(annotation: Any) -> Any:
    """The model class (or dict value type) behind Optional/Annotated wrappers."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def _field_by_alias(model: type[BaseModel], alias: str) -> tuple[str, Any] | None:
    for name, info in model.model_fields.items():
        if (info.alias or name) == alias:
            return name, info
    return None


def _model_at(loc: Iterable[str | int]) -> type[BaseModel] | None:
    """The model class that validates the object at `loc` (keys as users write them)."""
    current: Any = StackConfig
    for part in loc:
        if isinstance(current, type) and issubclass(current, BaseModel):
            found = _field_by_alias(current, str(part))
            if found is None:
                return None
            current = _unwrap(found[1].annotation)
        elif typing.get_origin(current) is dict:
            current = _unwrap(typing.get_args(current)[1])
        else:
            return None
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _field_fix(loc: tuple[str | int, ...]) -> str | None:
    model = _model_at(loc[:-1])
    found = _field_by_alias(model, str(loc[-1])) if model else None
    if found is None:
        return None
    return next((m.text for m in found[1].metadata if isinstance(m, Fix)), None)


def _problem_lines(error: ErrorDetails) -> list[str]:
    # "[key]": pydantic's marker for an error in a dict key (cluster.workerGroups.<key>) rather than its value.
    loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and (p.startswith("function-") or p == "[key]")))
    key = ".".join(str(p) for p in loc)
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    if kind == "rules":
        prefix = f"{key}." if key else ""
        return [f"{prefix}{k} = {_shown(v)}: {what}. Fix: {fix}" for k, v, what, fix in ctx["rules"]]
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1])
        allowed = [info.alias or name for name, info in model.model_fields.items()] if model else []
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        parent = ".".join(str(p) for p in loc[:-1])
        hint = (
            f"did you mean '{parent + '.' if parent else ''}{close[0]}'?"
            if close
            else f"allowed keys: {', '.join(allowed)}"
        )
        return [f"{key} = {_shown(value)}: is not a known key. Fix: {hint}"]
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return [
            f"{key} = {_shown(value)}: must be an object. "
            f"Fix: set its fields with `pulumi config set --path {key}.<field>`"
        ]
    if kind == "literal_error":
        return [
            f"{key} = {_shown(value)}: is not one of the allowed values. Fix: use one of: {ctx.get('expected', '')}"
        ]
    if "fix" in ctx:
        return [f"{key} = {_shown(value)}: {error['msg']}. Fix: {ctx['fix']}"]
    bounds = {
        "greater_than_equal": ("must be at least {ge}", "ge"),
        "greater_than": ("must be greater than {gt}", "gt"),
        "less_than": ("must be less than {lt}", "lt"),
        "less_than_equal": ("must be at most {le}", "le"),
    }
    if kind in bounds:
        what = bounds[kind][0].format(**ctx)
        fix = _field_fix(loc) or f"use a value that {what.removeprefix('must be ')}"
        return [f"{key} = {_shown(value)}: {what}. Fix: {fix}"]
    what, fix = _BUILTIN_MESSAGES.get(kind, (error["msg"].lower(), "see the configuration reference in the README"))
    return [f"{key} = {_shown(value)}: {what}. Fix: {_field_fix(loc) or fix}"]


def _is_secret(annotation: Any) -> bool:
    if typing.get_origin(annotation) is Annotated:
        return any(isinstance(m, _SecretField) for m in annotation.__metadata__)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_is_secret(a) for a in typing.get_args(annotation))
    return False


def _mark_secrets(model: type[BaseModel], raw: Any, encrypted: bool) -> Any:
    """A copy of `raw` with every `Secret` field's value replaced by SECRET or PLAINTEXT (never the value)."""
    raw = _json_object(raw)
    if not isinstance(raw, dict):
        return raw
    out = dict(raw)
    for name, info in model.model_fields.items():
        key = info.alias or name
        if out.get(key) is None:
            continue
        inner = _unwrap(info.annotation)
        if _is_secret(info.annotation):
            out[key] = _secret_marker(out[key], encrypted)
        elif typing.get_origin(inner) is dict and _is_secret(typing.get_args(inner)[1]):
            value = _json_object(out[key])
            out[key] = (
                {k: _secret_marker(v, encrypted) for k, v in value.items()} if isinstance(value, dict) else SECRET
            )
        elif isinstance(inner, type) and issubclass(inner, BaseModel):
            out[key] = _mark_secrets(inner, out[key], encrypted)
    return out


def _secret_marker(value: Any, encrypted: bool) -> str:
    # A stack file read directly holds {secure: ...}; the runtime hands decrypted values with a secret flag.
    return SECRET if encrypted or (isinstance(value, dict) and "secure" in value) else PLAINTEXT


def _cross_rules_on_valid_sections(raw: dict[str, Any]) -> list[str]:
    """The cross-section rules whose sections are each valid, for when some other part of the config is not."""
    valid: dict[str, Any] = {}
    for name, info in StackConfig.model_fields.items():
        alias = info.alias or name
        value = raw.get(alias, {} if info.default_factory is not None else info.default)
        typ = Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
        adapter: TypeAdapter[Any] = TypeAdapter(typing.cast(Any, typ))
        try:
            valid[name] = adapter.validate_python(value, by_alias=True, by_name=False)
        except ValidationError:
            continue
    p = Problems()
    for rule in CROSS_SECTION_RULES:
        if all(name in valid for name in rule.sections):
            rule.check(p, {name: valid[name] for name in rule.sections} | {"given": set(raw)})
    return [f"{k} = {_shown(v)}: {what}. Fix: {fix}" for k, v, what, fix in p.items]


def _mark_top_level(raw: Mapping[str, Any], secret_keys: frozenset[str]) -> dict[str, Any]:
    marked: dict[str, Any] = {}
    for key, value in raw.items():
        model = _model_at((key,))
        if model is not None:
            marked[key] = _mark_secrets(model, value, key in secret_keys)
        else:  # a scalar or unknown key: an unknown secret key is shown as [secret] in its problem
            known = _field_by_alias(StackConfig, key) is not None
            marked[key] = SECRET if key in secret_keys and not known else value
    return marked


def parse_stack_config(raw: Mapping[str, Any], secret_keys: frozenset[str] = frozenset()) -> StackConfig:
    """Validate the stack's raw config (top-level key -> value) into a `StackConfig`, or raise `ConfigError`.

    `secret_keys` are the top-level keys Pulumi holds encrypted; secret values must live under them.
    """
    marked = _mark_top_level(raw, secret_keys)
    try:
        return StackConfig.model_validate(marked, by_alias=True, by_name=False)
    except ValidationError as exc:
        problems: list[str] = []
        for error in exc.errors(include_url=False):
            problems += [line for line in _problem_lines(error) if line not in problems]
        problems += [line for line in _cross_rules_on_valid_sections(marked) if line not in problems]
        raise ConfigError(problems) from None


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
        raw[key] = _json_object(value) if isinstance(value, str) and value[:1] in "{[" else value
        if runtime_config.is_config_secret(full_key):
            secret.add(key)
    secret.update(k[len(prefix) :] for k in runtime_config.get_config_secret_keys_env() if k.startswith(prefix))
    return raw, frozenset(secret)


def read_stack_config() -> StackConfig:
    """Read and validate this stack's config; raises ConfigError before any resource exists."""
    raw, secret = raw_stack_config(pulumi.get_project())
    return parse_stack_config(raw, secret)


def secret_config(key: str, path: tuple[str, ...], transform: Callable[[Any], Any] | None = None) -> pulumi.Output[Any]:
    """One value under a secret top-level key, as a Pulumi secret Output (encrypted in state, masked in logs)."""

    def dig(value: Any) -> Any:
        for part in path:
            value = value[part]
        return transform(value) if transform else value

    return pulumi.Config().require_secret_object(key).apply(dig)
