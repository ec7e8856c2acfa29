"""The verification's Pulumi side without a cluster: serialization, program evaluation, diff, check, deadlines.

`create` never runs under Pulumi mocks, so the provider class is exercised directly; the end-to-end `create`
against real Dask processes is in tests/test_verification.py.
"""

from __future__ import annotations

import inspect
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from components.config import VerifyConfig as ConfigVerifyConfig
from components.lock import PROJECT_DIR, read_lock
from components.verification.check import CHECKED_PACKAGES, compare_versions
from components.verification.query import (
    CONNECT_MODES,
    OUTPUT_KEYS,
    VerificationQuery,
    VerificationResult,
    VerifyConfig,
)
from components.verification.resource import (
    CLUSTER_RERUN_KEYS,
    NOT_RERUN_FIELDS,
    QUERY_KEYS,
    LsdbVerification,
    LsdbVerificationProvider,
    VerificationArgs,
    child_argv,
    new_provider,
    query_of,
)

UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"
HEAVY = ("lsdb", "hats", "nested_pandas", "dask", "distributed", "pandas", "pyarrow", "kr8s")

SERIALIZE = """
import hashlib, sys
sys.path.insert(0, sys.argv[1])
from pulumi.dynamic.dynamic import serialize_provider
from components.verification.resource import new_provider
print(serialize_provider(new_provider()))
"""

# Program evaluation under Pulumi's public test API: `set_mocks`, and `pulumi.runtime.test`, which waits for the
# registrations and resolves the outputs.
EVALUATE_UNDER_MOCKS = """
import json, sys
sys.path.insert(0, sys.argv[1])
import pulumi

class RecordingMocks(pulumi.runtime.Mocks):
    def __init__(self):
        self.registered = []
    def new_resource(self, args):
        plain = {k: v for k, v in args.inputs.items() if k != "__provider"}
        self.registered.append({"type": args.typ, "name": args.name, "keys": sorted(args.inputs), "inputs": plain})
        return f"{args.name}-id", {**args.inputs, "rows": 12.0, "workers": 2.0}
    def call(self, args):
        return {}, None

mocks = RecordingMocks()
pulumi.runtime.set_mocks(mocks, project="lsdb-k8s", stack="test", preview=False)
from components.verification.query import VerificationQuery
from components.verification.resource import LsdbVerification, VerificationArgs

seen = {}

@pulumi.runtime.test
def evaluate():
    verification = LsdbVerification(
        "verify",
        VerificationArgs(
            query=VerificationQuery(
                catalog_path="/data/sample",
                cone={"ra": 180.0, "dec": 0.0, "radius_arcsec": 3600.0},
                connect="portForward",
                columns=["id", "ra", "dec"],
                min_rows=1,
                min_workers=1,
                timeout_seconds=300.0,
            ),
            namespace="lsdb-test",
            cluster_name="lsdb-cluster",
            kube_context="kind-lsdb-dev",
            image_ref=pulumi.Output.from_input("localhost:5001/lsdb-dask@sha256:abc"),
            cluster_spec_hash=pulumi.Output.from_input("hash-1"),
        ),
    )
    return pulumi.Output.all(**verification.outputs()).apply(seen.update)

evaluate()
heavy = sorted(m for m in sys.modules if m.split(".")[0] in sys.argv[2].split(","))
print(json.dumps({"heavy": heavy, "registered": mocks.registered, "outputs": seen}))
"""


def fresh_python(code: str, *args: str, cwd: Path, hash_seed: str = "random") -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONHASHSEED"] = hash_seed
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


def test_serialized_provider_is_byte_identical_across_processes(tmp_path: Path) -> None:
    """Otherwise every `pulumi up` would show the verification as changed. Different hash seeds on purpose."""
    first = fresh_python(SERIALIZE, str(PROJECT_DIR), cwd=tmp_path, hash_seed="1")
    second = fresh_python(SERIALIZE, str(PROJECT_DIR), cwd=PROJECT_DIR, hash_seed="2")
    assert first == second
    assert len(first) < 1024  # a class reference, not the module source (~86 KB before)


def test_provider_class_is_pickled_by_reference() -> None:
    """dill finds the module-level class by module + qualified name, so the pickle carries only that name."""
    import base64

    import dill
    from pulumi.dynamic.dynamic import serialize_provider

    loaded: list[tuple[str, str]] = []

    class Recording(dill.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            loaded.append((module, name))
            return super().find_class(module, name)

    assert "<locals>" not in LsdbVerificationProvider.__qualname__
    raw = base64.b64decode(serialize_provider(new_provider()))
    copy = Recording(io.BytesIO(raw)).load()
    assert loaded == [("components.verification.resource", "LsdbVerificationProvider")]
    assert type(copy) is LsdbVerificationProvider
    assert vars(copy) == {}  # stateless: the lock is read at run time (see the class docstring)
    assert b"def verify_catalog_query" not in raw


def test_program_evaluation_imports_no_heavy_package(tmp_path: Path) -> None:
    """Importing the package and constructing the resource under mocks must not pay for lsdb/dask/pandas."""
    out = json.loads(fresh_python(EVALUATE_UNDER_MOCKS, str(PROJECT_DIR), ",".join(HEAVY), cwd=tmp_path))
    assert out["heavy"] == []
    (registered,) = out["registered"]
    assert registered["type"] == "pulumi-python:dynamic/lsdb:Verification"
    assert {"__provider", "catalogPath", "clusterSpecHash", "imageRef", "radiusArcsec"} <= set(registered["keys"])
    # Inputs may be Outputs; the engine gets their values.
    assert registered["inputs"]["connect"] == "portForward"
    assert registered["inputs"]["columns"] == ["id", "ra", "dec"]
    assert registered["inputs"]["imageRef"] == "localhost:5001/lsdb-dask@sha256:abc"
    assert registered["inputs"]["minRows"] == 1
    assert list(out["outputs"]) == list(OUTPUT_KEYS)
    assert out["outputs"]["rows"] == 12.0 and out["outputs"]["workers"] == 2.0


def query(**change: Any) -> VerificationQuery:
    return VerificationQuery(**{"catalog_path": "/data/x", "cone": {"ra": 1.0, "dec": 2.0, "radius_arcsec": 3.0},
                                **change})  # fmt: skip


def test_constructor_takes_verification_args_and_rejects_a_bad_connect_mode() -> None:
    common: dict[str, Any] = dict(namespace="ns", cluster_name="c", image_ref="img", cluster_spec_hash="h")
    with pytest.raises(ValidationError) as info:
        LsdbVerification("v", VerificationArgs(query=query(connect="tunnel"), **common))
    assert [e["loc"] for e in info.value.errors()] == [("connect",)]
    with pytest.raises(ValueError, match="needs scheduler_address"):
        LsdbVerification("v", VerificationArgs(query=query(connect="direct"), **common))


def test_verification_args_become_the_camel_case_properties() -> None:
    args = VerificationArgs(
        query=query(columns=("id", "ra")), namespace="ns", cluster_name="c", image_ref="img", cluster_spec_hash="h"
    )
    props = args.to_props()
    assert list(props) == [
        "namespace", "clusterName", "imageRef", "clusterSpecHash", "schedulerAddress", "kubeContext",
        "operatorVersion", "clientTls", "clusterUid",
        # The query's keys, the cone's at the top level as the resource has always had them (stored state matches).
        "catalogPath", "columns", "minRows", "minWorkers", "timeoutSeconds", "connect", "storageOptions",
        "sampleRows", "stages", "ra", "dec", "radiusArcsec",
    ]  # fmt: skip
    assert props["columns"] == ["id", "ra"] and props["connect"] == "portForward" and props["ra"] == 1.0
    assert query_of(props) == args.query  # and back, validated by the same model


# ---------------------------------------------------------------------------------------------------------------
# One definition: output keys and connect modes
# ---------------------------------------------------------------------------------------------------------------


def test_declared_outputs_returned_outs_and_export_are_output_keys() -> None:
    assert OUTPUT_KEYS == (
        "rows", "partitions", "workers", "workersByGroup", "elapsedSeconds", "versions", "sample", "stageSeconds",
        "warnings",
    )  # fmt: skip
    result = VerificationResult(
        rows=3, partitions=1, workers=2, workers_by_group={"c-default": 2}, elapsed_seconds=0.5, versions={},
        sample=[], scheduler="tcp://s:8786", catalog_path="/data/x", stage_seconds={}, warnings=[],
    )  # fmt: skip
    assert list(result.to_outputs()) == list(OUTPUT_KEYS)
    # The CLI's JSON (snake_case, with "ok") read back by the provider, numbers as the engine may give them.
    report = {"ok": True, **json.loads(json.dumps(result.model_dump())), "rows": 3.0}
    assert VerificationResult.model_validate(report) == result
    # The export: LsdbVerification.outputs() reads the same tuple.
    assert "OUTPUT_KEYS" in inspect.getsource(LsdbVerification.outputs)


def test_connect_modes_come_from_one_tuple(provider: Any) -> None:
    from components.verification.cli import main

    assert CONNECT_MODES == ("portForward", "direct")
    (failure,) = provider.check({}, inputs(connect="tunnel")).failures
    assert failure.property == "connect" and "'portForward' or 'direct'" in failure.reason
    with pytest.raises(SystemExit) as exit_info:
        main(["--connect", "tunnel", "--catalog", "/data/x", "--ra", "1", "--dec", "2", "--radius-arcsec", "3"])
    assert exit_info.value.code == 2
    for mode in CONNECT_MODES:  # every mode the resource accepts, the CLI accepts
        assert provider.check({}, inputs(connect=mode, schedulerAddress="tcp://s:8786")).failures == []
        assert "invalid choice" not in cli_usage_error("--connect", mode)
    assert "(choose from " + ", ".join(repr(m) for m in CONNECT_MODES) + ")" in cli_usage_error("--connect", "x")


def cli_usage_error(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "components.verification", *args, "--catalog", "/x", "--ra", "1", "--dec", "2",
         "--radius-arcsec", "3", "--namespace", "n", "--cluster-name", "c", "--timeout", "-1"],
        cwd=PROJECT_DIR, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return proc.stderr


def test_the_query_is_the_config_section() -> None:
    """One model: the stack's verify section is the query's base, with its bounds; the query adds only what the
    check takes from elsewhere. ra in [0, 360), dec in [-90, 90], radius > 0, min_rows >= 0, min_workers >= 1,
    timeout > 0, a catalog path that is not blank."""
    assert ConfigVerifyConfig is VerifyConfig and issubclass(VerificationQuery, VerifyConfig)
    added = set(VerificationQuery.model_fields) - set(VerifyConfig.model_fields)
    assert added == {"storage_options", "sample_rows", "stages"}

    def bad(**change: Any) -> list[tuple[str | int, ...]]:
        cone = {"ra": 0.0, "dec": -90.0, "radius_arcsec": 0.1, **change.pop("cone", {})}
        try:
            VerificationQuery(**{"catalog_path": "/data/x", "cone": cone, **change})
        except ValidationError as exc:
            return [e["loc"] for e in exc.errors()]
        return []

    assert bad() == [] and bad(cone={"ra": 359.999, "dec": 90.0}, min_rows=0, min_workers=1, timeout_seconds=0.01) == []
    for change in ({"cone": {"ra": 360.0}}, {"cone": {"ra": -0.1}}, {"cone": {"ra": float("nan")}},
                   {"cone": {"dec": 90.5}}, {"cone": {"radius_arcsec": 0.0}}, {"min_rows": -1}, {"min_workers": 0},
                   {"timeout_seconds": 0.0}, {"catalog_path": " "}):  # fmt: skip
        assert len(bad(**change)) == 1, change


def test_the_query_reaches_the_child_as_one_json_document_validated_by_the_model() -> None:
    props = inputs(storageOptions={"anon": False}, connect="direct", schedulerAddress="tcp://s:8786")
    argv = child_argv(props)
    document = argv[argv.index("--query") + 1]
    assert VerificationQuery.model_validate_json(document) == query_of(props)
    assert json.loads(document)["cone"] == {"ra": 180.0, "dec": 0.0, "radiusArcsec": 3600.0}
    assert argv[argv.index("--scheduler") + 1] == "tcp://s:8786"
    # Derived from the model: every query key but the section's switch, the cone's keys flat.
    assert set(QUERY_KEYS) == {"catalogPath", "ra", "dec", "radiusArcsec", "columns", "minRows", "minWorkers",
                               "timeoutSeconds", "connect", "storageOptions", "sampleRows", "stages"}  # fmt: skip
    assert set(VerificationQuery.model_fields) >= NOT_RERUN_FIELDS
    assert CLUSTER_RERUN_KEYS == ("clusterSpecHash", "clusterUid", "imageRef", "operatorVersion")


# ---------------------------------------------------------------------------------------------------------------
# diff and check
# ---------------------------------------------------------------------------------------------------------------


def inputs(**overrides: Any) -> dict[str, Any]:
    props = {
        "schedulerAddress": None,
        "namespace": "lsdb-dev",
        "clusterName": "lsdb-dev",
        "kubeContext": "kind-lsdb-dev",
        "connect": "portForward",
        "catalogPath": "/data/sample",
        "ra": 180,
        "dec": 0,
        "radiusArcsec": 3600,
        "columns": ["id", "ra", "dec"],
        "minRows": 1,
        "minWorkers": 1,
        "timeoutSeconds": 300,
        "imageRef": "localhost:5001/lsdb-dask@sha256:abc",
        "clusterSpecHash": "hash-1",
        "operatorVersion": "2026.3.0",
        "clusterUid": "6b0d3c1e-0000-4000-8000-000000000001",
    }
    props.update(overrides)
    return props


def stored(props: dict[str, Any]) -> dict[str, Any]:
    """What the engine hands back as olds: the outputs of create, every number a float."""
    outs = {k: float(v) if isinstance(v, int) else v for k, v in props.items()}
    return {**outs, "rows": 12.0, "partitions": 1.0, "workers": 2.0, "sample": [{"id": 1.0}]}


@pytest.fixture(scope="module")
def provider() -> Any:
    return new_provider()


def test_diff_is_quiet_when_nothing_that_matters_changed(provider: Any) -> None:
    old = stored(inputs())
    assert provider.diff("id", old, inputs()).changes is False
    # Connection details and the timeout do not re-run the check.
    for change in ({"timeoutSeconds": 600}, {"connect": "direct", "schedulerAddress": "tcp://x:8786"},
                   {"kubeContext": "other"}, {"sampleRows": 10}):  # fmt: skip
        assert provider.diff("id", old, inputs(**change)).changes is False, change


@pytest.mark.parametrize(
    "change",
    [
        {"clusterSpecHash": "hash-2"},
        {"imageRef": "localhost:5001/lsdb-dask@sha256:def"},
        {"operatorVersion": "2099.1.0"},  # an operator (and CRD) upgrade re-runs the check
        {"catalogPath": "/data/other"},
        {"ra": 10},
        {"dec": 1.5},
        {"radiusArcsec": 60},
        {"columns": ["id", "ra"]},
        {"minRows": 5},
        {"minWorkers": 2},
        {"storageOptions": {"anon": False}},
        {"catalogPath": UNKNOWN},
        {"clusterSpecHash": UNKNOWN},
        {"imageRef": UNKNOWN},
        # Same spec, new object: the operator deleted the cluster (idleTimeout), `pulumi up --refresh` recreated it.
        {"clusterUid": "6b0d3c1e-0000-4000-8000-000000000002"},
        {"clusterUid": UNKNOWN},  # the preview of that recreation
    ],
)
def test_diff_reruns_when_cluster_image_catalog_or_query_change(provider: Any, change: dict[str, Any]) -> None:
    result = provider.diff("id", stored(inputs()), inputs(**change))
    assert result.changes is True
    assert result.replaces == []


def test_check_reports_bad_connection_settings(provider: Any) -> None:
    assert provider.check({}, inputs()).failures == []
    failures = provider.check({}, inputs(connect="tunnel")).failures
    assert [f.property for f in failures] == ["connect"]
    failures = provider.check({}, inputs(connect="direct")).failures
    assert [f.property for f in failures] == ["schedulerAddress"]
    # The query, validated by its model: each problem on the property users set (the cone's keys are flat).
    failures = provider.check({}, inputs(ra=400, columns=["id", ""])).failures
    assert [f.property for f in failures] == ["ra", "columns"]
    assert provider.delete("id", stored(inputs())) is None


# ---------------------------------------------------------------------------------------------------------------
# The provider's own deadline and error path (no cluster needed)
# ---------------------------------------------------------------------------------------------------------------


class ChildRuns(LsdbVerificationProvider):
    """The provider with its child replaced by `code` (a hung or crashing check)."""

    def __init__(self, code: str) -> None:
        self.code = code

    def command(self, argv: Sequence[str]) -> list[str]:
        return [sys.executable, "-c", self.code, *argv]


def test_provider_kills_a_check_that_overruns_its_deadline() -> None:
    stuck = ChildRuns("import time\ntime.sleep(60)\n")
    stuck.GRACE_SECONDS = 0.25
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"did not finish within 0\.75 s"):
        stuck.create(inputs(connect="direct", schedulerAddress="tcp://127.0.0.1:1", timeoutSeconds=0.5))
    assert time.monotonic() - started < 10


def test_provider_fails_with_the_stage_message(provider: Any) -> None:
    from tests.support.dask_processes import silent_listener

    with silent_listener() as address:
        started = time.monotonic()
        with pytest.raises(RuntimeError) as info:
            provider.create(inputs(connect="direct", schedulerAddress=address, timeoutSeconds=1.0))
    message = str(info.value)
    assert message.startswith("LSDB verification failed at stage 'connect'")
    assert "kubectl --context kind-lsdb-dev get svc lsdb-dev-scheduler -n lsdb-dev" in message
    assert time.monotonic() - started < 1.0 + 15  # the child's python and distributed imports


def test_provider_reports_a_crashed_check() -> None:
    broken = ChildRuns("raise SystemExit('boom: the runtime could not start')\n")
    with pytest.raises(RuntimeError, match="crashed \\(exit code 1\\)"):
        broken.create(inputs(connect="direct", schedulerAddress="tcp://127.0.0.1:1"))


# ---------------------------------------------------------------------------------------------------------------
# Version comparison (pure)
# ---------------------------------------------------------------------------------------------------------------


def report(client: dict[str, Any], scheduler: dict[str, Any], workers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "client": {"packages": client},
        "scheduler": {"packages": scheduler},
        "workers": {addr: {"packages": pkgs} for addr, pkgs in workers.items()},
    }


def locked_packages(**changes: Any) -> dict[str, Any]:
    lock = read_lock()
    pkgs: dict[str, Any] = {"python": "3.11.7.final.0"}
    pkgs.update({p: lock[p] for p in CHECKED_PACKAGES})
    pkgs.update(changes)
    return pkgs


def test_versions_agree() -> None:
    good = locked_packages()
    agreed, problems, warnings = compare_versions(report(good, good, {"tcp://w1": good, "tcp://w2": good}), read_lock())
    assert problems == [] and warnings == []
    assert agreed["python"] == "3.11.7"
    assert agreed["lsdb"] == read_lock()["lsdb"]
    assert set(agreed) == {"python", *CHECKED_PACKAGES}


def test_a_package_missing_on_a_worker_is_a_wrong_image() -> None:
    good = locked_packages()
    bad = locked_packages(lsdb=None, hats=None)
    _, problems, _ = compare_versions(report(good, good, {"tcp://w1": good, "tcp://w2": bad}), read_lock())
    assert any(p.startswith("lsdb:") and "1 of 2 workers (tcp://w2) has nothing (not installed)" in p for p in problems)
    assert any(p.startswith("hats:") for p in problems)


def test_python_minor_mismatch_fails_and_micro_mismatch_warns() -> None:
    good = locked_packages()
    _, problems, _ = compare_versions(report(locked_packages(python="3.12.1.final.0"), good, {"w": good}), {})
    assert [p for p in problems if p.startswith("python:")]
    _, problems, warnings = compare_versions(report(locked_packages(python="3.11.9.final.0"), good, {"w": good}), {})
    assert problems == []
    assert warnings and "python micro versions differ" in warnings[0]


def test_without_a_lock_the_sides_must_agree_with_each_other() -> None:
    good = locked_packages()
    assert compare_versions(report(good, good, {"w": good}), None)[1] == []
    _, problems, _ = compare_versions(report(locked_packages(pandas="2.0.0"), good, {"w": good}), None)
    assert [p for p in problems if p.startswith("pandas:") and "client has 2.0.0" in p]


# ---------------------------------------------------------------------------------------------------------------
# The gate (verify.enabled false): the same resource and child, connect and workers only, no catalog
# ---------------------------------------------------------------------------------------------------------------


def test_the_gate_needs_no_catalog_but_the_query_does(provider: Any) -> None:
    gate = VerificationQuery(stages="gate", min_workers=0)  # a cluster the autoscaler may scale to zero
    assert gate.catalog_path is None and json.loads(gate.to_json())["stages"] == "gate"
    with pytest.raises(ValidationError) as info:
        VerificationQuery(min_workers=0)
    assert [e["loc"] for e in info.value.errors()] == [("catalogPath",), ("minWorkers",)]
    assert provider.check({}, gate_inputs()).failures == []
    assert [f.property for f in provider.check({}, inputs(catalogPath=None)).failures] == ["catalogPath"]
    # Gate to full query (verify.enabled turned on) re-runs it; stored states without `stages` are full queries.
    assert provider.diff("id", stored(gate_inputs()), inputs()).changes is True
    assert query_of(inputs()).stages == "all"


def gate_inputs(**overrides: Any) -> dict[str, Any]:
    props = {k: v for k, v in inputs(**overrides).items() if k not in ("catalogPath", "columns", "minRows")}
    return {"stages": "gate", **props}


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tools.local_dask import LocalDaskCluster

    with LocalDaskCluster(tmp_path_factory.mktemp("gate"), n_workers=1) as cluster:
        yield cluster


def stage_message(message: str) -> str:
    """The failure message without its budget (`within 2.93 s`), which differs from run to run."""
    import re

    return re.sub(r"within [0-9.]+ s", "within <budget> s", message)


def test_the_gate_passes_against_real_dask_processes_without_any_catalog(provider: Any, one_worker: Any) -> None:
    outs = provider.create(gate_inputs(connect="direct", schedulerAddress=one_worker.address, timeoutSeconds=60)).outs
    assert outs["workers"] == 1 and outs["workersByGroup"] == {"(not an operator worker)": 1}
    assert list(outs["stageSeconds"]) == ["connect", "workers"]  # no versions, open, compute or rows
    assert outs["rows"] is None and outs["versions"] == {} and outs["sample"] == []


def test_the_gate_fails_at_workers_with_the_verifications_message(provider: Any, one_worker: Any) -> None:
    """The gate and the full query, side by side (each child waits out its workers stage: the two waits overlap)."""
    from concurrent.futures import ThreadPoolExecutor

    too_few = {"connect": "direct", "schedulerAddress": one_worker.address, "minWorkers": 2, "timeoutSeconds": 4}

    def failed(props: dict[str, Any]) -> str:
        with pytest.raises(RuntimeError) as info:
            provider.create(props)
        return stage_message(str(info.value))

    with ThreadPoolExecutor(2) as pool:
        gate, verification = pool.map(failed, (gate_inputs(**too_few), inputs(**too_few, catalogPath="/data/none")))
    assert gate.startswith(
        f"LSDB verification failed at stage 'workers': 1 worker(s) joined the scheduler at {one_worker.address},"
        " fewer than min_workers=2"
    )
    assert gate == verification
