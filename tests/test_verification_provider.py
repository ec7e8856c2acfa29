"""The verification's Pulumi side without a cluster: serialization, program evaluation, diff, check, deadlines.

`create` never runs under Pulumi mocks, so the provider class is exercised directly; the end-to-end `create`
against real Dask processes is in tests/test_verification.py.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from components.lock import PROJECT_DIR, read_lock
from components.verification import (
    CHECKED_PACKAGES,
    LsdbVerificationProvider,
    compare_versions,
    new_provider,
)

UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"
HEAVY = ("lsdb", "hats", "nested_pandas", "dask", "distributed", "pandas", "pyarrow", "kr8s")

SERIALIZE = """
import hashlib, sys
sys.path.insert(0, sys.argv[1])
from pulumi.dynamic.dynamic import serialize_provider
from components.verification import new_provider
print(serialize_provider(new_provider()))
"""

EVALUATE_UNDER_MOCKS = """
import json, sys
sys.path.insert(0, sys.argv[1])
import pulumi
from pulumi.runtime.sync_await import _sync_await

class Mocks(pulumi.runtime.Mocks):
    def __init__(self):
        self.registered = []
    def new_resource(self, args):
        plain = {k: v for k, v in args.inputs.items() if k != "__provider"}
        self.registered.append({"type": args.typ, "name": args.name, "keys": sorted(args.inputs), "inputs": plain})
        return f"{args.name}-id", {**args.inputs, "rows": 12.0, "workers": 2.0}
    def call(self, args):
        return {}, None

mocks = Mocks()
pulumi.runtime.set_mocks(mocks, project="lsdb-k8s", stack="test", preview=False)
from components.verification import LsdbVerification

verification = LsdbVerification(
    "verify",
    namespace="lsdb-test",
    cluster_name="lsdb-cluster",
    kube_context="kind-lsdb-dev",
    catalog_path="/data/sample",
    ra=180.0,
    dec=0.0,
    radius_arcsec=3600.0,
    connect=pulumi.Output.from_input("portForward"),
    columns=pulumi.Output.from_input(["id", "ra", "dec"]),
    min_rows=1,
    min_workers=1,
    timeout_seconds=300.0,
    image_ref=pulumi.Output.from_input("localhost:5001/lsdb-dask@sha256:abc"),
    cluster_spec_hash=pulumi.Output.from_input("hash-1"),
)
rows = _sync_await(verification.rows.future())
heavy = sorted(m for m in sys.modules if m.split(".")[0] in sys.argv[2].split(","))
print(json.dumps({"heavy": heavy, "registered": mocks.registered, "rows": rows}))
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
    assert len(first) > 1000
    assert first == second


def test_provider_class_is_pickled_by_value() -> None:
    """dill can only ship the class (not a reference to components.verification) if it cannot look it up."""
    import base64

    import dill
    from pulumi.dynamic.dynamic import serialize_provider

    loaded: list[tuple[str, str]] = []

    class Recording(dill.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            loaded.append((module, name))
            return super().find_class(module, name)

    assert "<locals>" in LsdbVerificationProvider.__qualname__
    raw = base64.b64decode(serialize_provider(new_provider()))
    copy = Recording(io.BytesIO(raw)).load()
    modules = {module for module, _ in loaded}
    assert "pulumi.dynamic.dynamic" in modules  # the base class, by reference: installed everywhere
    assert not [m for m in modules if m.split(".")[0] == "components"], modules
    assert copy.locked_versions == dict(sorted(read_lock().items()))
    assert copy.runtime_source == (PROJECT_DIR / "components" / "verification.py").read_text()


def test_program_evaluation_imports_no_heavy_package(tmp_path: Path) -> None:
    """Importing the module and constructing the resource under mocks must not pay for lsdb/dask/pandas."""
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
    assert out["rows"] == 12.0


def test_constructor_rejects_a_bad_connect_mode() -> None:
    from components.verification import LsdbVerification

    common: dict[str, Any] = dict(
        namespace="ns", cluster_name="c", catalog_path="/data/x", ra=1.0, dec=2.0, radius_arcsec=3.0,
        image_ref="img", cluster_spec_hash="h",
    )  # fmt: skip
    with pytest.raises(ValueError, match="connect must be 'portForward' or 'direct'"):
        LsdbVerification("v", connect="tunnel", **common)
    with pytest.raises(ValueError, match="needs scheduler_address"):
        LsdbVerification("v", connect="direct", **common)


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
                   {"kubeContext": "other"}):  # fmt: skip
        assert provider.diff("id", old, inputs(**change)).changes is False, change


@pytest.mark.parametrize(
    "change",
    [
        {"clusterSpecHash": "hash-2"},
        {"imageRef": "localhost:5001/lsdb-dask@sha256:def"},
        {"catalogPath": "/data/other"},
        {"ra": 10},
        {"dec": 1.5},
        {"radiusArcsec": 60},
        {"columns": ["id", "ra"]},
        {"minRows": 5},
        {"minWorkers": 2},
        {"clusterSpecHash": UNKNOWN},
        {"imageRef": UNKNOWN},
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
    assert provider.delete("id", stored(inputs())) is None


# ---------------------------------------------------------------------------------------------------------------
# The provider's own deadline and error path (no cluster needed)
# ---------------------------------------------------------------------------------------------------------------


def test_provider_kills_a_check_that_overruns_its_deadline() -> None:
    stuck = LsdbVerificationProvider("import time\ntime.sleep(60)\n", {})
    stuck.GRACE_SECONDS = 0.5
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"did not finish within 1\.5 s"):
        stuck.create(inputs(connect="direct", schedulerAddress="tcp://127.0.0.1:1", timeoutSeconds=1.0))
    assert time.monotonic() - started < 10


def test_provider_fails_with_the_stage_message(provider: Any) -> None:
    from tests.support.dask_processes import silent_listener

    with silent_listener() as address:
        started = time.monotonic()
        with pytest.raises(RuntimeError) as info:
            provider.create(inputs(connect="direct", schedulerAddress=address, timeoutSeconds=3.0))
    message = str(info.value)
    assert message.startswith("LSDB verification failed at stage 'connect'")
    assert "kubectl --context kind-lsdb-dev get svc lsdb-dev-scheduler -n lsdb-dev" in message
    assert time.monotonic() - started < 3.0 + 15  # the child's python and distributed imports


def test_provider_reports_a_crashed_check() -> None:
    broken = LsdbVerificationProvider("raise SystemExit('boom: the runtime could not start')\n", {})
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
