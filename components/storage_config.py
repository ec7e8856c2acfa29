"""`storage`: where workers find the HATS catalogs, one model per `storage.kind` (a discriminated union): each kind
takes only its own keys (`storage.nfs`, `storage.hostPath`, `storage.objectStore`)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from functools import partial
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field
from pydantic_core import InitErrorDetails

from components.lock import read_lock
from components.section import (
    SECRET,
    AbsolutePath,
    CredentialValue,
    DefaultText,
    DocType,
    Fix,
    ObjectName,
    Quantity,
    Section,
    empty_section,
    json_object,
    masked_object,
    problem,
    reject,
)

AccessMode = Literal["ReadWriteMany", "ReadOnlyMany", "ReadWriteOnce", "ReadWriteOncePod"]

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
KNOWN_SCHEMES = ", ".join(s + "://" for s in sorted([*OBJECT_STORES, *SCHEME_ALIASES]))


class NfsConfig(Section):
    server: Annotated[str, Fix("set the NFS host")]
    """`nfs`: the NFS server's host name or address."""
    path: Annotated[AbsolutePath, Fix("e.g. /exports/hats")]
    """`nfs`: the absolute export path, e.g. `/exports/hats`."""


class HostPathConfig(Section):
    path: Annotated[AbsolutePath, Fix("e.g. /lsdb-catalogs")]
    """`hostPath`: the node's directory; single-node dev clusters (kind) only."""


# Keyless workload identity: the cloud maps a Kubernetes ServiceAccount to a cloud identity. Each provider's
# webhook or metadata server reads these ServiceAccount annotations (and, for Azure, the pod label).
# AWS IRSA: https://docs.aws.amazon.com/eks/latest/userguide/associate-service-account-role.html
# GKE Workload Identity Federation: https://cloud.google.com/kubernetes-engine/docs/how-to/workload-identity
# Azure Workload Identity: https://learn.microsoft.com/en-us/azure/aks/workload-identity-deploy-cluster
#   (annotation and label: https://azure.github.io/azure-workload-identity/docs/topics/service-account-labels-and-annotations.html)
# provider -> (its field, the URL scheme it serves, the ServiceAccount annotation, the pod labels it needs, the
# identity's form, what it is, an example)
IDENTITY_PROVIDERS: dict[str, tuple[str, str, str, dict[str, str], str, str, str]] = {
    "aws": ("roleArn", "s3", "eks.amazonaws.com/role-arn", {},
            r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}$", "an IAM role ARN",
            "arn:aws:iam::123456789012:role/lsdb-reader"),
    "gcp": ("serviceAccount", "gs", "iam.gke.io/gcp-service-account", {},
            r"^[a-z][a-z0-9-]{4,28}[a-z0-9]@[a-z0-9-]+\.iam\.gserviceaccount\.com$", "a Google service account",
            "lsdb-reader@my-project.iam.gserviceaccount.com"),
    "azure": ("clientId", "abfs", "azure.workload.identity/client-id", {"azure.workload.identity/use": "true"},
              r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", "a client ID (GUID)",
              "00000000-0000-0000-0000-000000000000"),
}  # fmt: skip


def _identity(value: str | None, provider: str) -> str | None:
    *_, regex, what, example = IDENTITY_PROVIDERS[provider]
    if value is None or re.match(regex, value):
        return value
    raise reject(f"is not {what}", f"use e.g. {example}")


class AwsIdentityConfig(Section):
    role_arn: Annotated[str | None, AfterValidator(partial(_identity, provider="aws"))] = None
    """IRSA: the IAM role the pods assume (ServiceAccount annotation `eks.amazonaws.com/role-arn`)."""


class GcpIdentityConfig(Section):
    service_account: Annotated[str | None, AfterValidator(partial(_identity, provider="gcp"))] = None
    """GKE Workload Identity: the Google service account to act as (annotation `iam.gke.io/gcp-service-account`)."""


class AzureIdentityConfig(Section):
    client_id: Annotated[str | None, AfterValidator(partial(_identity, provider="azure"))] = None
    """Azure Workload Identity: the managed identity's client ID (annotation `azure.workload.identity/client-id`, pod
    label `azure.workload.identity/use: "true"`)."""


class IdentityConfig(Section):
    """Keyless access to the object store: one cloud's workload identity, bound to the pods' ServiceAccount."""

    aws: AwsIdentityConfig = Field(default_factory=empty_section)
    """IRSA (`s3://`)."""
    gcp: GcpIdentityConfig = Field(default_factory=empty_section)
    """GKE Workload Identity (`gs://`)."""
    azure: AzureIdentityConfig = Field(default_factory=empty_section)
    """Azure Workload Identity (`abfs://`)."""

    @property
    def providers(
        self,
    ) -> dict[str, str]:  # provider -> the identity given for it (role ARN, service account, client ID)
        given = {p: getattr(self, p).model_dump(by_alias=True)[key] for p, (key, *_) in IDENTITY_PROVIDERS.items()}
        return {p: str(value) for p, value in given.items() if value}


def url_scheme(path: str) -> str | None:
    """The canonical scheme (s3, gs, abfs, https, or the raw one) of a URL, None for a plain path."""
    if "://" not in path:
        return None
    raw = path.split("://", 1)[0].lower()
    return SCHEME_ALIASES.get(raw, raw)


def _object_store_url(url: str) -> str:
    scheme = url_scheme(url)
    if scheme not in OBJECT_STORES:
        raise reject(
            "has no URL scheme with an fsspec driver in the lock", f"use a URL starting with one of: {KNOWN_SCHEMES}"
        )
    driver = OBJECT_STORES[scheme][0]
    if driver not in read_lock():
        raise reject(
            f"needs the fsspec driver '{driver}', which is not in the lock",
            f"add {driver} to docker/requirements.in and run `python -m tools.relock`",
        )
    return url


def credential_problems(scheme: str, credentials: Iterable[str], of: str) -> list[InitErrorDetails]:
    """A problem for each credential key the `scheme`'s driver does not read (`of`: what the credentials open)."""
    allowed = OBJECT_STORES[scheme][1]
    fix = f"use: {', '.join(allowed) or 'none (public https needs no credentials)'}"
    return [
        problem(("credentials", k), SECRET, f"is not a credential for {scheme}:// {of}", fix)
        for k in credentials
        if k not in allowed
    ]


def credential_env(scheme: str | None, keys: Iterable[str]) -> dict[str, str]:
    """Credential key -> the environment variable the `scheme`'s fsspec driver reads, for the keys it reads."""
    env = OBJECT_STORES[scheme][1] if scheme in OBJECT_STORES else {}
    return {k: env[k] for k in keys if k in env}


def storage_options(scheme: str | None, anonymous: bool) -> dict[str, Any]:
    """What `lsdb.open_catalog(path, storage_options=...)` needs beyond the pods' environment and identity: hats
    opens s3:// anonymously unless told otherwise (`get_upath_for_protocol`), so s3 and abfs say `anon`
    explicitly; gcsfs gets `token`."""
    if scheme in ("s3", "abfs"):
        return {"anon": anonymous}
    if scheme == "gs":
        return {"token": "anon" if anonymous else "google_default"}
    return {}


class ObjectStoreConfig(Section):
    url: Annotated[str, AfterValidator(_object_store_url)]
    """`objectStore`: `s3://`, `gs://`, `abfs://` (aliases `s3a`, `gcs`, `abfss`, `az`), or `https://` (alias `http`).
    The scheme must have its fsspec driver in the lock. No volume is mounted."""
    credentials: Annotated[dict[str, CredentialValue], BeforeValidator(masked_object), DocType("secret")] = Field(
        default_factory=empty_section
    )
    """**Secret.** s3: `accessKeyId`, `secretAccessKey`, `sessionToken`, `region`, `endpointUrl`; gs:
    `serviceAccountJson` (mounted as a file, `GOOGLE_APPLICATION_CREDENTIALS`); abfs: `accountName`, `accountKey`,
    `connectionString`, `sasToken`. Stored in a Secret mounted read-only on scheduler and workers as the files the
    driver reads (s3: AWS `credentials` and `config` files; gs: the key file); abfs keys, which adlfs reads from no
    file, as its environment variables. Plaintext values are rejected."""
    anonymous: bool = False
    """Public bucket or container: open catalogs without credentials (`anon=True`). Without it, s3/abfs catalogs are
    opened with credentials (`anon=False`): the keys above, the identity below, or the node's own."""
    identity: IdentityConfig = Field(default_factory=empty_section)
    """Keyless workload identity instead of `credentials`: the program creates a ServiceAccount carrying it and runs
    scheduler and workers under it. The cloud-side IAM binding is yours (docs/storage.md)."""

    @property
    def scheme(self) -> str:  # s3, gs, abfs or https
        return url_scheme(self.url) or ""

    def problems(self) -> Iterator[InitErrorDetails]:
        """Known credentials; one way in (static credentials, one workload identity, or anonymous); the identity's
        cloud serves the URL."""
        yield from credential_problems(self.scheme, self.credentials, "storage")
        providers = self.identity.providers
        if len(providers) > 1:
            yield problem(
                "identity", sorted(providers), "names more than one cloud",
                "keep the one that serves storage.objectStore.url",
            )  # fmt: skip
        if providers and self.credentials:
            yield problem(
                "identity", sorted(providers), "is set together with objectStore.credentials",
                "use one: remove the static keys (`pulumi config rm --path storage.objectStore.credentials`) "
                "or the identity",
            )  # fmt: skip
        if self.anonymous and (providers or self.credentials):
            yield problem(
                "anonymous", True, "is set together with credentials or an identity",
                "remove objectStore.anonymous for a private bucket, or the credentials/identity for a public one",
            )  # fmt: skip
        clouds = ", ".join(f"{q} for {s}://" for q, (_k, s, *_r) in IDENTITY_PROVIDERS.items())
        for provider, value in providers.items():
            key, serves, *_ = IDENTITY_PROVIDERS[provider]
            if serves != self.scheme:
                yield problem(
                    ("identity", provider, key), value,
                    f"is a {provider} identity, but storage.objectStore.url is {self.scheme}://",
                    f"use the identity of the cloud serving {self.scheme}:// ({clouds})",
                )  # fmt: skip


STORAGE_KIND_DOC = (
    "`pvc` (a new claim), `nfs` or `hostPath` (a static PV and its claim), `existingClaim` (mount the claim "
    "`claimName` that already exists; nothing is created or deleted), `objectStore` or `none`."
)


class _Storage(Section):
    """What every storage kind takes; each kind adds its own section (`nfs`, `hostPath`, `objectStore`)."""

    kind: str  # each kind's model declares its own tag (keeping this position among the keys)
    mount_path: Annotated[AbsolutePath, Fix("use e.g. /data")] = "/data"
    """Where workers see the catalogs."""
    claim_name: ObjectName = "hats-catalog-pvc"
    """PVC name (`pvc`, `nfs`, `hostPath`; the existing claim for `existingClaim`)."""
    size: Quantity = "100Gi"
    """Requested/declared capacity."""
    storage_class_name: str | None = None
    """`pvc` only: a RWX-capable class (`kubectl get storageclass`); default: the cluster's default."""
    access_mode: AccessMode = "ReadWriteMany"
    """The single-node modes (`ReadWriteOnce`, `ReadWriteOncePod`) are rejected when more than one worker can run."""

    @property
    def mounts_volume(self) -> bool:  # the pods mount a PersistentVolumeClaim
        return self.kind in ("pvc", "nfs", "hostPath", "existingClaim")

    @property
    def creates_claim(self) -> bool:  # the program creates the claim (and its PV)
        return self.kind in ("pvc", "nfs", "hostPath")

    # What an object store adds (none for the other kinds): its scheme, the names of the credentials set (their
    # values stay Pulumi secrets), credential key -> the variable its driver reads, (provider, identity) of its
    # workload identity, and what `lsdb.open_catalog(path, storage_options=...)` needs.
    @property
    def _store(self) -> ObjectStoreConfig | None:
        return self.object_store if isinstance(self, ObjectStoreStorage) else None

    @property
    def object_store_scheme(self) -> str | None:
        return self._store.scheme if self._store else None

    @property
    def credential_keys(self) -> tuple[str, ...]:
        return tuple(self._store.credentials) if self._store else ()

    @property
    def credential_env(self) -> dict[str, str]:
        return credential_env(self.object_store_scheme, self.credential_keys)

    @property
    def identity(self) -> tuple[str, str] | None:
        return next(iter(self._store.identity.providers.items()), None) if self._store else None

    @property
    def catalog_storage_options(self) -> dict[str, Any]:
        return storage_options(self._store.scheme, self._store.anonymous) if self._store else {}


class PvcStorage(_Storage):
    kind: Annotated[Literal["pvc"], DefaultText("`none`")] = Field(description=STORAGE_KIND_DOC)


class NfsStorage(_Storage):
    kind: Literal["nfs"] = Field(description=STORAGE_KIND_DOC)
    nfs: NfsConfig = Field(default_factory=empty_section)
    """`nfs`: static PV (Retain, `nfsvers=4.1`), claim bound by `volumeName` (`storageClassName: ""`)."""


class HostPathStorage(_Storage):
    kind: Literal["hostPath"] = Field(description=STORAGE_KIND_DOC)
    host_path: HostPathConfig = Field(default_factory=empty_section)
    """`hostPath`: static PV on a node path."""


class ExistingClaimStorage(_Storage):
    kind: Literal["existingClaim"] = Field(description=STORAGE_KIND_DOC)


class ObjectStoreStorage(_Storage):
    kind: Literal["objectStore"] = Field(description=STORAGE_KIND_DOC)
    object_store: ObjectStoreConfig = Field(default_factory=empty_section)
    """`objectStore` settings."""


class NoStorage(_Storage):
    kind: Literal["none"] = Field("none", description=STORAGE_KIND_DOC)


def _default_kind(value: Any) -> Any:
    value = json_object(value)
    return {"kind": "none", **value} if isinstance(value, dict) else value


# Where workers find the HATS catalogs: one model per `storage.kind`, each taking only its own keys.
StorageConfig = Annotated[
    PvcStorage | NfsStorage | HostPathStorage | ExistingClaimStorage | ObjectStoreStorage | NoStorage,
    Field(discriminator="kind"),
    BeforeValidator(_default_kind),
]
