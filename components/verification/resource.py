"""The Pulumi dynamic resource `LsdbVerification`: the check, run during `pulumi up` in a child process. The
provider is pickled by reference (docs/development.md); never lsdb, dask, distributed, pandas, pyarrow or kr8s here.
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
from contextlib import suppress
from typing import Any

import pulumi
import pulumi.dynamic
from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, DiffResult, ResourceProvider, UpdateResult
from pulumi.runtime.rpc import UNKNOWN  # a value not known at preview
from pydantic import ValidationError
from pydantic.alias_generators import to_camel, to_snake

from components.lock import PROJECT_DIR
from components.verification.query import DIRECT, GATE, OUTPUT_KEYS, ConeConfig, VerificationQuery, VerificationResult

CONE_KEYS: tuple[str, ...] = tuple(to_camel(name) for name in ConeConfig.model_fields)
# Cluster inputs whose change re-runs the check. The operator decides how the pods are built; the DaskCluster's uid
# is new when the operator deleted it (idleTimeout) and `pulumi up --refresh` recreated it with the same spec.
CLUSTER_RERUN_KEYS: tuple[str, ...] = ("clusterSpecHash", "clusterUid", "imageRef", "operatorVersion")
# Query fields that change how we look or what we show, not what we check: they never re-run it.
NOT_RERUN_FIELDS = {"enabled", "connect", "timeout_seconds", "sample_rows"}
# The cone's identity: the resource id is a digest of these.
ID_KEYS: tuple[str, ...] = ("clusterName", "namespace", "catalogPath", *CONE_KEYS)
# The client certificate bundle ({"ca", "cert", "key"} PEM) of a TLS cluster: a secret input, written to owner-only
# files in a temporary directory, never echoed into the outputs.
TLS_KEY = "clientTls"
TLS_PARTS = ("ca", "cert", "key")


def query_props(query: VerificationQuery) -> dict[str, Any]:
    """The query as the resource's input properties, the cone's flat (`ra`, not `cone.ra`) as they have always been:
    a stack's stored inputs keep matching."""
    data = query.model_dump(by_alias=True, exclude={"enabled"})
    cone = data.pop("cone")
    return {**data, **cone}


QUERY_KEYS: tuple[str, ...] = tuple(query_props(VerificationQuery(stages=GATE)))


def query_of(props: Mapping[str, Any]) -> VerificationQuery:
    """The query back from the resource's properties (the engine's floats become ints)."""
    data = {k: props[k] for k in QUERY_KEYS if props.get(k) is not None}
    cone = {k: data.pop(k) for k in CONE_KEYS if k in data}
    return VerificationQuery.model_validate({**data, "cone": cone})


@dataclasses.dataclass(frozen=True)
class VerificationArgs:
    """The inputs of `LsdbVerification` (properties: these fields in camelCase, and `QUERY_KEYS`); the image, spec
    hash, operator version and uid re-run the check when they change."""

    query: VerificationQuery
    namespace: pulumi.Input[str]
    cluster_name: pulumi.Input[str]
    image_ref: pulumi.Input[str]
    cluster_spec_hash: pulumi.Input[str]
    scheduler_address: pulumi.Input[str] | None = None
    kube_context: pulumi.Input[str] | None = None
    operator_version: pulumi.Input[str] | None = None  # the dask-kubernetes the cluster's operator runs
    client_tls: pulumi.Input[Mapping[str, str]] | None = None
    cluster_uid: pulumi.Input[str] | None = None  # metadata.uid of the DaskCluster, set by the API server

    def to_props(self) -> dict[str, Any]:
        fields = {to_camel(f.name): getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "query"}
        return {**fields, **query_props(self.query)}


class LsdbVerificationProvider(ResourceProvider):
    """Runs `python -m components.verification --json ...` in a child process: lsdb and dask never load into the
    process that talks to the engine, and a hung check is killed (timeoutSeconds + `GRACE_SECONDS`). Stateless (a
    lock change re-runs it through `imageRef`); it owns no cluster object, so `delete` does nothing."""

    GRACE_SECONDS = 60.0

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        """The query, once every value is known; `direct` needs the scheduler's address."""
        failures = []
        if not any(news.get(k) == UNKNOWN for k in QUERY_KEYS):
            try:
                query_of(news)
            except ValidationError as exc:
                for error in exc.errors():  # the property: the query's key, the cone's (`ra`) for ("cone", "ra")
                    key = next((str(p) for p in error["loc"] if str(p) in QUERY_KEYS), "cone")
                    failures.append(CheckFailure(key, error["msg"]))
        if news.get("connect") == DIRECT and not news.get("schedulerAddress"):
            failures.append(CheckFailure("schedulerAddress", "is required with connect: direct"))
        return CheckResult(news, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        """Changes when the cluster (`CLUSTER_RERUN_KEYS`) or what the query checks changed or is not known yet;
        never replaces. The query is compared as its model reads it (180 and 180.0 are one input)."""

        def checked(props: Mapping[str, Any]) -> dict[str, Any] | None:
            try:
                return query_of(props).model_dump(exclude=NOT_RERUN_FIELDS)
            except ValidationError:  # a value not known yet (or an unreadable old state): run the check again
                return None

        changed = [k for k in CLUSTER_RERUN_KEYS if news.get(k) == UNKNOWN or olds.get(k) != news.get(k)]
        query_changed = checked(news) is None or checked(olds) != checked(news)
        return DiffResult(changes=bool(changed) or query_changed, replaces=[], delete_before_replace=False)

    def create(self, props: dict[str, Any]) -> CreateResult:
        outs = self._verify(props)
        query = {k: outs.get(k) for k in ID_KEYS}
        digest = hashlib.sha256(json.dumps(query, sort_keys=True).encode()).hexdigest()[:16]  # engine values: JSON
        return CreateResult(f"lsdb-verification-{digest}", outs)

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(self._verify(news))

    def command(self, argv: Sequence[str]) -> list[str]:
        """The child's command line (tests replace it to simulate a hung or crashing check)."""
        return [sys.executable, "-m", "components.verification", *argv]

    def _verify(self, props: Mapping[str, Any]) -> dict[str, Any]:
        inputs = {k: v for k, v in props.items() if k not in ("__provider", TLS_KEY)}
        client_tls = props.get(TLS_KEY) or None
        deadline = query_of(inputs).timeout_seconds + self.GRACE_SECONDS
        # The project this process imported comes first on the child's path: the child runs this very code, even
        # where the virtualenv's editable install points at another checkout.
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_DIR), os.environ.get("PYTHONPATH")])),
        }
        with tempfile.TemporaryDirectory(prefix="lsdb-verification-") as tmp:
            argv = child_argv(inputs) + tls_argv(client_tls, tmp)
            try:  # cwd: nothing the check (or dask) writes lands in the project
                proc = subprocess.run(
                    self.command(argv), cwd=tmp, env=env, capture_output=True, text=True, timeout=deadline
                )
            except subprocess.TimeoutExpired:
                raise RuntimeError(
                    f"LSDB verification failed: the check did not finish within {deadline:g} s"
                    " (timeoutSeconds plus a grace period) and was killed"
                ) from None
        report = _last_json_line(proc.stdout)
        if report is None:
            tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
            raise RuntimeError(f"LSDB verification crashed (exit code {proc.returncode}):\n{tail}")
        if not report.get("ok"):
            raise RuntimeError(report.get("message") or "LSDB verification failed")
        # The inputs stay in the outputs: diff compares them on the next `pulumi up`.
        return {**inputs, **VerificationResult.model_validate(report).to_outputs()}


def child_argv(inputs: Mapping[str, Any]) -> list[str]:
    """The CLI arguments for one run: the query as one JSON document, and where the cluster is."""
    query = query_of(inputs)
    argv = ["--json", "--query", query.to_json()]
    for key in ("namespace", "clusterName", "kubeContext"):
        if inputs.get(key):
            argv += ["--" + to_snake(key).replace("_", "-"), str(inputs[key])]
    if query.connect == DIRECT:
        argv += ["--scheduler", str(inputs["schedulerAddress"])]
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
        if line.startswith("{"):  # one that parses is an object
            with suppress(ValueError):
                report: dict[str, Any] = json.loads(line)
                return report
    return None


def new_provider() -> LsdbVerificationProvider:
    """The provider `LsdbVerification` serializes into its `__provider` input."""
    return LsdbVerificationProvider()


class LsdbVerification(pulumi.dynamic.Resource, module="lsdb", name="Verification"):
    """The check during `pulumi up` (type `pulumi-python:dynamic/lsdb:Verification`); outputs `OUTPUT_KEYS` (numbers
    come back from the engine as floats)."""

    def __init__(self, name: str, args: VerificationArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        if args.query.connect == DIRECT and args.scheduler_address is None:  # Outputs: the provider checks them
            raise ValueError("connect='direct' needs scheduler_address")
        props = {**args.to_props(), **dict.fromkeys(OUTPUT_KEYS)}
        # Belt and braces: the provider never returns the bundle, and the engine would keep it secret if it did.
        secret = pulumi.ResourceOptions(additional_secret_outputs=[TLS_KEY])
        super().__init__(new_provider(), name, props, pulumi.ResourceOptions.merge(opts, secret))

    def outputs(self) -> dict[str, pulumi.Output[Any]]:
        """What the program exports as `verification`."""
        return {key: getattr(self, key) for key in OUTPUT_KEYS}
