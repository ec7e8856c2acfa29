"""The Pulumi dynamic resource `LsdbVerification`: the check, run during `pulumi up`.

How the provider reaches the engine: Pulumi serializes the provider object with dill
(`pulumi.dynamic.dynamic.serialize_provider`) into the resource's `__provider` input, and the dynamic-provider
process (`$PULUMI_RUNTIME_VIRTUALENV/bin/python -u -m pulumi.dynamic`, the project's `.venv`) unpickles it.
`LsdbVerificationProvider` is a module-level class, so dill pickles it BY REFERENCE
(`components.verification.resource.LsdbVerificationProvider`): the pickle is a few hundred bytes, and the
provider process imports the class from the project, which `make venv` installs editable into that virtualenv
(`pip install --no-deps -e .`), so it resolves from any working directory.

This module imports pulumi and the light parts of the package only: `pulumi up` imports it while evaluating the
program, and lsdb, dask, distributed, pandas, pyarrow and kr8s must not load there (tests check it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import pulumi
import pulumi.dynamic
from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, DiffResult, ResourceProvider, UpdateResult
from pulumi.runtime.rpc import UNKNOWN  # a value not known at preview

from components.lock import PROJECT_DIR
from components.verification.check import VerificationResult
from components.verification.query import (
    DEFAULT_CONNECT,
    DEFAULT_TIMEOUT,
    DIRECT,
    OUTPUT_KEYS,
    connect_problem,
    storage_option_flags,
)

# Inputs whose change re-runs the check: the cluster, the image, the operator, the catalog and the query.
# An operator (and CRD) upgrade re-runs it too: it decides how the cluster's pods are built. Connection details
# (connect, schedulerAddress, kubeContext) and the timeout do not: they change how we look, not what we check.
RERUN_KEYS: tuple[str, ...] = (
    "clusterSpecHash",
    # The DaskCluster's uid: a cluster the operator deleted (idleTimeout) and `pulumi up --refresh` recreated is
    # a new object with the same spec, and is verified anew.
    "clusterUid",
    "imageRef",
    "operatorVersion",
    "catalogPath",
    "ra",
    "dec",
    "radiusArcsec",
    "columns",
    "minRows",
    "minWorkers",
    "storageOptions",
)
# The engine hands numbers back as floats: 180 and 180.0 are the same input.
NUMBER_KEYS: tuple[str, ...] = ("ra", "dec", "radiusArcsec", "minRows", "minWorkers")
# The cone's identity: the resource id is a digest of these.
ID_KEYS: tuple[str, ...] = ("clusterName", "namespace", "catalogPath", "ra", "dec", "radiusArcsec")
# The client certificate bundle ({"ca", "cert", "key"} PEM) of a TLS cluster: a secret input, written to files
# only the child reads (mode 0600, in a temporary directory), never echoed into the outputs.
TLS_KEY = "clientTls"
TLS_PARTS = ("ca", "cert", "key")


def _camel(field: str) -> str:
    """`cluster_spec_hash` -> `clusterSpecHash`: the Pulumi property name of a `VerificationArgs` field."""
    head, *rest = field.split("_")
    return head + "".join(part.title() for part in rest)


@dataclasses.dataclass(frozen=True)
class VerificationArgs:
    """The inputs of `LsdbVerification` (Pulumi Inputs: plain values or Outputs).

    The property names the engine sees are these fields in camelCase (`catalog_path` -> `catalogPath`).
    `namespace`, `cluster_name` and `kube_context` name the scheduler Service for the port-forward and the
    objects in error messages; `image_ref` and `cluster_spec_hash` are there so that a new image or cluster
    spec re-runs the check.
    """

    namespace: pulumi.Input[str]
    cluster_name: pulumi.Input[str]
    catalog_path: pulumi.Input[str]
    ra: pulumi.Input[float]
    dec: pulumi.Input[float]
    radius_arcsec: pulumi.Input[float]
    image_ref: pulumi.Input[str]
    cluster_spec_hash: pulumi.Input[str]
    scheduler_address: pulumi.Input[str] | None = None
    kube_context: pulumi.Input[str] | None = None
    connect: pulumi.Input[str] = DEFAULT_CONNECT
    columns: pulumi.Input[Sequence[pulumi.Input[str]]] | None = None
    min_rows: pulumi.Input[int] = 1
    min_workers: pulumi.Input[int] = 1
    timeout_seconds: pulumi.Input[float] = DEFAULT_TIMEOUT
    # `lsdb.open_catalog(..., storage_options=...)`: the stack's `catalogStorageOptions` (never a secret).
    storage_options: pulumi.Input[Mapping[str, Any]] | None = None
    operator_version: pulumi.Input[str] | None = None  # the dask-kubernetes the cluster's operator runs
    client_tls: pulumi.Input[Mapping[str, str]] | None = None
    cluster_uid: pulumi.Input[str] | None = None  # metadata.uid of the DaskCluster, set by the API server

    def validate(self) -> None:
        """Reject what is wrong already in the program; Outputs are checked by the provider once known."""
        if isinstance(self.connect, str) and (problem := connect_problem(self.connect)):
            raise ValueError(problem)
        if self.connect == DIRECT and self.scheduler_address is None:
            raise ValueError("connect='direct' needs scheduler_address")

    def to_props(self) -> dict[str, Any]:
        """The resource's input properties, camelCase, in field order."""
        props = {_camel(f.name): getattr(self, f.name) for f in dataclasses.fields(self)}
        if isinstance(self.columns, list | tuple):
            props["columns"] = list(self.columns)
        return props


class LsdbVerificationProvider(ResourceProvider):
    """Runs the check in a child process, `python -m components.verification --json ...`, with a hard deadline.

    Why a child: lsdb and dask never load into the process that talks to the engine, and a hung connection is
    killed (timeoutSeconds + `GRACE_SECONDS`) instead of hanging `pulumi up`. The child is this interpreter
    with this process's project first on its path, so it runs the very code this class was imported from.

    State: none. The serialized provider is a reference to this class and nothing else, so it is the same
    bytes in every process and for every lock. The versions the check compares against are read from
    `components.lock.read_lock()` (docker/requirements.lock) at run time, by the child: the lock is part of
    the project this process imports, so it is the lock the image of this `pulumi up` was built from, and
    a lock change reaches the check through `imageRef`, a RERUN key. Pickling the lock (or the module source,
    as an earlier version did) into the state would only make the state larger and not more correct.
    """

    GRACE_SECONDS = 60.0
    CHILD_MODULE = "components.verification"

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        """Connection settings that only become known as Outputs are checked here (plain ones earlier too)."""
        failures = []
        connect = news.get("connect")
        if isinstance(connect, str) and connect != UNKNOWN and (problem := connect_problem(connect)):
            failures.append(CheckFailure("connect", problem))
        if connect == DIRECT and not news.get("schedulerAddress"):
            failures.append(CheckFailure("schedulerAddress", "is required with connect: direct"))
        return CheckResult(news, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        """Changes only when a RERUN key changed (or is not known yet); never replaces."""

        def norm(key: str, value: Any) -> Any:
            if value == UNKNOWN:
                return UNKNOWN
            if key in NUMBER_KEYS and isinstance(value, int | float):
                return float(value)
            if isinstance(value, list | tuple):
                return [str(v) for v in value]
            return value

        changed = [k for k in RERUN_KEYS if news.get(k) == UNKNOWN or norm(k, olds.get(k)) != norm(k, news.get(k))]
        return DiffResult(changes=bool(changed), replaces=[], delete_before_replace=False)

    def create(self, props: dict[str, Any]) -> CreateResult:
        outs = self._verify(props)
        query = {k: outs.get(k) for k in ID_KEYS}
        digest = hashlib.sha256(json.dumps(query, sort_keys=True, default=str).encode()).hexdigest()[:16]
        return CreateResult(f"lsdb-verification-{digest}", outs)

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(self._verify(news))

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        """Nothing to delete: the verification owns no cluster object."""

    def command(self, argv: Sequence[str]) -> list[str]:
        """The child's command line (tests replace it to simulate a hung or crashing check)."""
        return [sys.executable, "-m", self.CHILD_MODULE, *argv]

    def _verify(self, props: Mapping[str, Any]) -> dict[str, Any]:
        inputs = {k: v for k, v in props.items() if k not in ("__provider", TLS_KEY)}
        client_tls = props.get(TLS_KEY) or None
        timeout = float(inputs.get("timeoutSeconds") or DEFAULT_TIMEOUT)
        deadline = timeout + self.GRACE_SECONDS
        # The project this process imported comes first on the child's path: the child runs this very code, even
        # where the virtualenv's editable install points at another checkout.
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_DIR), os.environ.get("PYTHONPATH")])),
        }
        with tempfile.TemporaryDirectory(prefix="lsdb-verification-") as tmp:
            argv = child_argv(inputs, timeout) + tls_argv(client_tls, tmp)
            try:
                proc = subprocess.run(
                    self.command(argv),
                    cwd=tmp,  # nothing the check (or dask) writes lands in the project
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=deadline,
                )
            except subprocess.TimeoutExpired:
                raise RuntimeError(
                    f"LSDB verification failed: the check did not finish within {deadline:g} s"
                    " (timeoutSeconds plus a grace period) and was killed"
                ) from None
        report = _last_json_line(proc.stdout)
        if report is None:
            tail = "\n".join((proc.stderr or "").strip().splitlines()[-15:])
            raise RuntimeError(f"LSDB verification crashed (exit code {proc.returncode}):\n{tail}")
        if not report.get("ok"):
            raise RuntimeError(report.get("message") or "LSDB verification failed")
        # The inputs stay in the outputs: diff compares them on the next `pulumi up`.
        return {**inputs, **VerificationResult.from_dict(report).to_outputs()}


def child_argv(inputs: Mapping[str, Any], timeout: float) -> list[str]:
    """The CLI flags for one run of the check, from the resource's input properties."""
    connect = str(inputs.get("connect") or DEFAULT_CONNECT)
    argv = [
        "--json",
        "--catalog", str(inputs["catalogPath"]),
        "--ra", repr(float(inputs["ra"])),
        "--dec", repr(float(inputs["dec"])),
        "--radius-arcsec", repr(float(inputs["radiusArcsec"])),
        "--min-rows", str(int(inputs.get("minRows") or 0)),
        "--min-workers", str(int(inputs.get("minWorkers") or 1)),
        "--timeout", repr(timeout),
        "--connect", connect,
    ]  # fmt: skip
    columns = [str(c) for c in (inputs.get("columns") or [])]
    if columns:
        argv += ["--columns", ",".join(columns)]
    for flag, key in (
        ("--namespace", "namespace"),
        ("--cluster-name", "clusterName"),
        ("--kube-context", "kubeContext"),
    ):
        if inputs.get(key):
            argv += [flag, str(inputs[key])]
    if connect == DIRECT:
        argv += ["--scheduler", str(inputs["schedulerAddress"])]
    argv += storage_option_flags(inputs.get("storageOptions") or {})
    return argv


def tls_argv(client_tls: Mapping[str, Any] | None, directory: str) -> list[str]:
    """Write the client certificate bundle to owner-only files in `directory`; the CLI flags naming them."""
    if not client_tls:
        return []
    missing = [part for part in TLS_PARTS if not client_tls.get(part)]
    if missing:
        raise RuntimeError(f"LSDB verification: the {TLS_KEY} input lacks {', '.join(missing)}")
    argv = []
    for part in TLS_PARTS:
        path = os.path.join(directory, f"client-{part}.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(str(client_tls[part]))
        argv += [f"--tls-{part}-file", path]
    return argv


def _last_json_line(stdout: str) -> dict[str, Any] | None:
    """The CLI's `--json` report: the last line of stdout that parses as a JSON object."""
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            return value if isinstance(value, dict) else None
    return None


def new_provider() -> LsdbVerificationProvider:
    """The provider `LsdbVerification` serializes into its `__provider` input (stateless: see the class)."""
    return LsdbVerificationProvider()


class LsdbVerification(pulumi.dynamic.Resource, module="lsdb", name="Verification"):
    """Runs the check against the deployed cluster during `pulumi up`.

    Type `pulumi-python:dynamic/lsdb:Verification`. Re-runs only when a RERUN key changes (the cluster spec
    hash, the image, the catalog or the query); deleting it deletes nothing. Outputs: `OUTPUT_KEYS`, declared
    below in that order. Numbers come back from the engine as floats; `int(...)` them before comparing.
    """

    rows: pulumi.Output[float]
    partitions: pulumi.Output[float]
    workers: pulumi.Output[float]
    workersByGroup: pulumi.Output[dict[str, float]]  # the output property's name: DaskWorkerGroup -> workers
    elapsedSeconds: pulumi.Output[float]  # the output property's name
    versions: pulumi.Output[dict[str, str]]
    sample: pulumi.Output[list[dict[str, Any]]]
    stageSeconds: pulumi.Output[dict[str, float]]
    warnings: pulumi.Output[list[str]]

    def __init__(self, name: str, args: VerificationArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        args.validate()
        props = {**args.to_props(), **dict.fromkeys(OUTPUT_KEYS)}
        # Belt and braces: the provider never returns the bundle, and the engine would keep it secret if it did.
        secret = pulumi.ResourceOptions(additional_secret_outputs=[TLS_KEY])
        super().__init__(new_provider(), name, props, pulumi.ResourceOptions.merge(opts, secret))

    def outputs(self) -> dict[str, pulumi.Output[Any]]:
        """Every output, by `OUTPUT_KEYS`: what the program exports as `verification`."""
        return {key: getattr(self, key) for key in OUTPUT_KEYS}
