"""Object-store credentials handed to the fsspec drivers as files where the driver reads files (CKV_K8S_35), for the
cluster's pods (components/storage.py) and the catalog copy Job (components/catalogs.py). Which file or variable
each driver reads: docs/storage.md's table (abfs reads no file: `secretKeyRef` variables, with `ENV_SKIP`). And
PodStorage: what a pod needs to read the catalogs, keys or not."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Variable -> (file in the Secret, option in its `[default]` profile).
INI_OPTIONS = {
    "AWS_ACCESS_KEY_ID": ("credentials", "aws_access_key_id"),
    "AWS_SECRET_ACCESS_KEY": ("credentials", "aws_secret_access_key"),
    "AWS_SESSION_TOKEN": ("credentials", "aws_session_token"),
    "AWS_DEFAULT_REGION": ("config", "region"),
    "AWS_ENDPOINT_URL": ("config", "endpoint_url"),
}
WHOLE_FILES = {"GOOGLE_APPLICATION_CREDENTIALS": "service-account.json"}  # variable -> file holding the value
# File in the Secret -> the variable naming its path for the driver.
FILE_VARIABLES = {"credentials": "AWS_SHARED_CREDENTIALS_FILE", "config": "AWS_CONFIG_FILE"} | {
    file: variable for variable, file in WHOLE_FILES.items()
}
ENV_SKIP = (
    "CKV_K8S_35=adlfs reads Azure account keys, connection strings and SAS tokens from environment variables or "
    "storage options only, never from a file; the values come from the Secret, never from the manifest"
)


@dataclass(frozen=True)
class PodStorage:
    """What a pod needs to read the catalogs: the claim, or a credentials Secret (`key_wiring`), or an identity."""

    volumes: list[dict[str, Any]] = field(default_factory=list)
    mounts: list[dict[str, Any]] = field(default_factory=list)
    env: list[dict[str, Any]] = field(default_factory=list)
    # Workload identity: the pods run as this ServiceAccount, with these pod labels.
    service_account: str | None = None
    pod_labels: dict[str, str] = field(default_factory=dict)
    pod_annotations: dict[str, str] = field(default_factory=dict)
    scanner_skips: tuple[str, ...] = ()  # checkov skips with their reasons for pods carrying `env` (abfs keys)


def _file(variable: str) -> str | None:
    return WHOLE_FILES.get(variable) or INI_OPTIONS.get(variable, (None, ""))[0]


def _one_line(value: str, where: str) -> str:
    line = value.strip()
    if "\n" in line or "\r" in line:
        raise ValueError(
            f"{where} holds a line break: an s3 credential is one line (it is written to an AWS credentials or "
            f"config file); re-set it: pulumi config set --path --secret {where} <value>"
        )
    return line


def secret_data(credential_env: Mapping[str, str], credentials: Mapping[str, str], where: str) -> dict[str, str]:
    """The Secret's data: file name -> content, or (abfs) variable -> value. `credential_env`: credential key ->
    the driver's variable; `where`: the config path of the credentials, for errors."""
    data = {WHOLE_FILES.get(v, v): credentials[k] for k, v in credential_env.items() if v not in INI_OPTIONS}
    keys = {variable: key for key, variable in credential_env.items()}
    ini: dict[str, list[str]] = {}
    for variable, (file, option) in INI_OPTIONS.items():  # a fixed order: a reordered config is the same file
        if (key := keys.get(variable)) is not None:
            ini.setdefault(file, ["[default]"]).append(f"{option} = {_one_line(credentials[key], f'{where}.{key}')}")
    return data | {file: "\n".join(lines) + "\n" for file, lines in sorted(ini.items())}


def key_wiring(credential_env: Mapping[str, str], secret: str, volume: str, key_dir: str) -> PodStorage:
    """Env, volume and read-only mount at `key_dir` handing Secret `secret` (of `secret_data`) to the driver."""
    files = sorted({f for variable in credential_env.values() if (f := _file(variable)) is not None})
    env: list[dict[str, Any]] = [{"name": FILE_VARIABLES[f], "value": f"{key_dir}/{f}"} for f in files]
    from_env = [v for v in credential_env.values() if _file(v) is None]
    env += [{"name": v, "valueFrom": {"secretKeyRef": {"name": secret, "key": v}}} for v in from_env]
    if not files:
        return PodStorage(env=env, scanner_skips=(ENV_SKIP,) if from_env else ())
    return PodStorage(
        volumes=[{"name": volume, "secret": {"secretName": secret}}],
        mounts=[{"name": volume, "mountPath": key_dir, "readOnly": True}],
        env=env,
        scanner_skips=(ENV_SKIP,) if from_env else (),
    )
