"""What the verification's dynamic provider hands its child process (components/verification/resource.py), called
directly: the command line naming the query and the cluster, the client certificate written to owner-only files,
and the report read back from the child's output. Fast enough for mutation testing (docs/mutation.md);
tests/test_verification_provider.py runs the child against Dask processes."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pulumi
import pulumi.dynamic
import pytest

from components.lock import PROJECT_DIR
from components.verification.query import OUTPUT_KEYS, VerificationQuery
from components.verification.resource import (
    LsdbVerification,
    LsdbVerificationProvider,
    VerificationArgs,
    _last_json_line,
    child_argv,
    new_provider,
    query_props,
    tls_argv,
)

UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"  # what the engine sends for a value not known at preview


def props(**keys: object) -> dict[str, object]:
    query = VerificationQuery.model_validate({"catalogPath": "/data/x", "minRows": 5, **keys})
    return query_props(query)


def flag(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def test_the_child_gets_the_query_and_the_cluster_it_is_about() -> None:
    inputs = {**props(), "namespace": "astro", "clusterName": "lsdb-x-0a1b", "kubeContext": "kind-lsdb"}
    argv = child_argv(inputs)
    assert argv[0] == "--json"
    query = json.loads(flag(argv, "--query") or "")
    assert query["minRows"] == 5 and query["catalogPath"] == "/data/x"  # a check that returns too few rows fails
    assert flag(argv, "--namespace") == "astro" and flag(argv, "--cluster-name") == "lsdb-x-0a1b"
    assert flag(argv, "--kube-context") == "kind-lsdb"
    assert "--scheduler" not in argv  # the port-forward finds the scheduler itself
    assert len(argv) == 9


def test_unset_cluster_keys_are_left_out_and_a_direct_connection_names_the_scheduler() -> None:
    inputs = {**props(connect="direct"), "schedulerAddress": "tcp://10.0.0.1:8786", "kubeContext": ""}
    argv = child_argv(inputs)
    assert flag(argv, "--scheduler") == "tcp://10.0.0.1:8786"
    assert "--namespace" not in argv and "--cluster-name" not in argv and "--kube-context" not in argv


def test_the_client_certificate_goes_to_owner_only_files(tmp_path: Path) -> None:
    assert tls_argv(None, str(tmp_path)) == [] and tls_argv({}, str(tmp_path)) == []
    argv = tls_argv({"ca": "CA", "cert": "CERT", "key": "KEY"}, str(tmp_path))
    assert argv == [
        "--tls-ca-file", str(tmp_path / "client-ca.pem"),
        "--tls-cert-file", str(tmp_path / "client-cert.pem"),
        "--tls-key-file", str(tmp_path / "client-key.pem"),
    ]  # fmt: skip
    for part, text in (("ca", "CA"), ("cert", "CERT"), ("key", "KEY")):
        path = tmp_path / f"client-{part}.pem"
        assert path.read_text() == text
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_an_existing_file_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "client-ca.pem").write_text("someone else's")
    with pytest.raises(FileExistsError):
        tls_argv({"ca": "CA", "cert": "CERT", "key": "KEY"}, str(tmp_path))


def test_an_incomplete_bundle_names_what_it_lacks(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError) as err:
        tls_argv({"ca": "CA", "cert": ""}, str(tmp_path))
    assert str(err.value) == "LSDB verification: the clientTls input lacks cert, key"
    assert list(tmp_path.iterdir()) == []


def test_the_report_is_the_last_json_object_line() -> None:
    out = 'log line\n{"rows": 1}\n{not json\n{"rows": 2, "ok": true}\nbye\n'
    assert _last_json_line(out) == {"rows": 2, "ok": True}
    assert _last_json_line('{"rows": 1}\n{broken') == {"rows": 1}
    assert _last_json_line("[1, 2]\n") is None and _last_json_line('{"a": 1}\n{"[1]": 1} x') == {"a": 1}
    assert _last_json_line("no report\n") is None and _last_json_line("") is None
    assert _last_json_line(' {"a": 1}') is None  # the CLI prints its report at the start of a line


# --- the provider's create, update and check, with a stub child process ------------------------------------------

# The stub stands in for `python -m components.verification`: it records what it was given (argv, working
# directory, PYTHONPATH, the certificate files while they exist) in $STUB_RECORD, writes $STUB_STDERR to stderr,
# prints $STUB_STDOUT and exits with $STUB_EXIT; `STUB_SLEEP` seconds first (a hung check).
STUB = """
import json, os, sys, time
argv = sys.argv[1:]
files = {flag: open(argv[i + 1]).read() for i, flag in enumerate(argv) if flag.startswith("--tls-")}
record = {"argv": argv, "cwd": os.getcwd(), "pythonpath": os.environ.get("PYTHONPATH"), "files": files}
open(os.environ["STUB_RECORD"], "w").write(json.dumps(record))
time.sleep(float(os.environ.get("STUB_SLEEP", "0")))
sys.stderr.write(os.environ.get("STUB_STDERR", ""))
print(os.environ.get("STUB_STDOUT", ""))
sys.exit(int(os.environ.get("STUB_EXIT", "0")))
"""

RESULT = {"rows": 7, "partitions": 2, "workers": 3, "workers_by_group": {"g": 3}, "elapsed_seconds": 1.5,
          "versions": {"lsdb": "1.0"}, "sample": [{"id": 1}], "stage_seconds": {"connect": 0.5}, "warnings": ["w"],
          "scheduler": "tcp://127.0.0.1:4000", "catalog_path": "/data/x"}  # fmt: skip


class Stubbed(LsdbVerificationProvider):
    def command(self, argv: Sequence[str]) -> list[str]:
        return [sys.executable, "-c", STUB, *argv]


@pytest.fixture
def stub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Run the stub as the child; `stub.record()` is what it saw."""
    record = tmp_path / "record.json"
    monkeypatch.setenv("STUB_RECORD", str(record))
    monkeypatch.setenv("STUB_STDOUT", "starting\n" + json.dumps({"ok": True, **RESULT}) + "\nbye")
    monkeypatch.delenv("PYTHONPATH", raising=False)

    class Stub:
        provider = Stubbed()

        @staticmethod
        def answer(**env: str) -> None:
            for key, value in env.items():
                monkeypatch.setenv(f"STUB_{key.upper()}", value)

        @staticmethod
        def record() -> dict[str, Any]:
            return json.loads(record.read_text())  # type: ignore[no-any-return]

    return Stub


def cluster_props(**keys: Any) -> dict[str, Any]:
    """As the engine hands them over: the query's keys, the cluster's, every number a float."""
    cluster = {"namespace": "astro", "clusterName": "lsdb-x-0a1b", "kubeContext": "kind-lsdb",
               "imageRef": "r/lsdb@sha256:abc", "clusterSpecHash": "h1"}  # fmt: skip
    inputs = {**props(), **cluster, "minRows": 5.0, "timeoutSeconds": 30.0}
    return {**inputs, **keys}


def expected_id(inputs: dict[str, Any]) -> str:
    """A digest of the cone's identity: the cluster, the catalog and the cone (not the image or the query's rest)."""
    keys = ("clusterName", "namespace", "catalogPath", "ra", "dec", "radiusArcsec")
    text = json.dumps({k: inputs.get(k) for k in keys}, sort_keys=True)
    return "lsdb-verification-" + hashlib.sha256(text.encode()).hexdigest()[:16]


def test_create_runs_the_child_and_returns_the_inputs_and_the_report_as_outputs(stub: Any) -> None:
    inputs = cluster_props()
    result = stub.provider.create({**inputs, "__provider": "serialized"})
    outputs = {"rows": 7, "partitions": 2, "workers": 3, "workersByGroup": {"g": 3}, "elapsedSeconds": 1.5,
               "versions": {"lsdb": "1.0"}, "sample": [{"id": 1}], "stageSeconds": {"connect": 0.5},
               "warnings": ["w"]}  # fmt: skip
    assert result.outs == {**inputs, **outputs}  # the inputs stay: diff compares them on the next `pulumi up`
    assert result.id == expected_id(inputs)
    seen = stub.record()
    assert seen["argv"] == child_argv(inputs) and seen["files"] == {}
    assert seen["pythonpath"] == str(PROJECT_DIR)  # this very project first, whatever the virtualenv points at
    workdir = Path(seen["cwd"])  # a fresh directory: nothing the check writes lands in the project
    assert workdir.name.startswith("lsdb-verification-") and not workdir.exists()
    assert stub.provider.update("id", {}, inputs).outs == result.outs


def test_the_id_names_the_cone_and_not_the_image(stub: Any) -> None:
    first = stub.provider.create(cluster_props()).id
    assert stub.provider.create(cluster_props(imageRef="r/lsdb@sha256:def")).id == first
    for change in ({"ra": 10.0}, {"dec": 1.0}, {"radiusArcsec": 1.0}, {"catalogPath": "/data/y"},
                   {"namespace": "n2"}, {"clusterName": "c2"}):  # fmt: skip
        assert stub.provider.create(cluster_props(**change)).id != first, change


def test_the_child_keeps_the_callers_python_path_after_the_project(stub: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", "/somewhere/else")
    stub.provider.create(cluster_props())
    assert stub.record()["pythonpath"] == f"{PROJECT_DIR}{os.pathsep}/somewhere/else"


def test_the_client_certificate_reaches_the_child_as_files_and_never_the_outputs(stub: Any) -> None:
    bundle = {"ca": "CA PEM", "cert": "CERT PEM", "key": "KEY PEM"}
    outs = stub.provider.create(cluster_props(clientTls=bundle)).outs
    seen = stub.record()
    assert seen["files"] == {"--tls-ca-file": "CA PEM", "--tls-cert-file": "CERT PEM", "--tls-key-file": "KEY PEM"}
    assert seen["argv"][:-6] == child_argv(cluster_props())
    assert all(Path(path).parent == Path(seen["cwd"]) for path in seen["argv"][-5::2])
    assert "clientTls" not in outs and "KEY PEM" not in json.dumps(outs)
    stub.provider.create(cluster_props(clientTls=None))
    assert stub.record()["files"] == {}


def test_a_failed_check_fails_with_its_stage_message(stub: Any) -> None:
    stub.answer(stdout=json.dumps({"ok": False, "message": "LSDB verification failed at stage 'rows': few"}), exit="1")
    with pytest.raises(RuntimeError) as err:
        stub.provider.create(cluster_props())
    assert str(err.value) == "LSDB verification failed at stage 'rows': few"
    stub.answer(stdout=json.dumps({"ok": False}))
    with pytest.raises(RuntimeError) as err:
        stub.provider.update("id", {}, cluster_props())
    assert str(err.value) == "LSDB verification failed"


def test_a_crashed_check_quotes_the_end_of_its_stderr(stub: Any) -> None:
    stub.answer(stdout="no report", stderr="".join(f"line {i}\n" for i in range(1, 21)), exit="3")
    with pytest.raises(RuntimeError) as err:
        stub.provider.create(cluster_props())
    lines = "\n".join(f"line {i}" for i in range(6, 21))
    assert str(err.value) == f"LSDB verification crashed (exit code 3):\n{lines}"


def test_a_hung_check_is_killed_at_its_timeout_plus_the_grace(stub: Any) -> None:
    stub.answer(sleep="20")
    stub.provider.GRACE_SECONDS = 0.75
    started = time.monotonic()
    with pytest.raises(RuntimeError) as err:
        stub.provider.create(cluster_props(timeoutSeconds=0.5))
    assert time.monotonic() - started < 10
    assert str(err.value) == (
        "LSDB verification failed: the check did not finish within 1.25 s (timeoutSeconds plus a grace period)"
        " and was killed"
    )
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_the_child_is_this_projects_command_line() -> None:
    assert new_provider().command(["--json", "--query", "{}"]) == [
        sys.executable, "-m", "components.verification", "--json", "--query", "{}",
    ]  # fmt: skip


def test_check_validates_the_query_once_every_value_is_known() -> None:
    provider = new_provider()
    inputs = cluster_props(ra=400.0, minRows=-1.0)
    result = provider.check({}, inputs)
    assert result.inputs is inputs
    assert [(f.property, f.reason) for f in result.failures] == [
        ("ra", "Input should be less than 360"),
        ("minRows", "Input should be greater than or equal to 0"),
    ]
    # A value not known yet (preview): nothing to validate until the engine knows it.
    for key in ("catalogPath", "ra", "stages"):
        assert provider.check({}, cluster_props(**{"ra": 400.0, key: UNKNOWN})).failures == []
    direct = provider.check({}, cluster_props(connect="direct", schedulerAddress=""))
    assert [(f.property, f.reason) for f in direct.failures] == [
        ("schedulerAddress", "is required with connect: direct")
    ]
    assert provider.check({}, cluster_props(connect="direct", schedulerAddress="tcp://s:8786")).failures == []


# --- LsdbVerification: what it hands Pulumi ----------------------------------------------------------------------


def test_the_resource_registers_the_stateless_provider_every_input_and_empty_outputs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registered: list[tuple[Any, ...]] = []

    def record(self: Any, provider: Any, name: str, properties: Any, opts: Any = None) -> None:
        registered.append((provider, name, properties, opts))

    monkeypatch.setattr(pulumi.dynamic.Resource, "__init__", record)
    query = VerificationQuery.model_validate({"catalogPath": "/data/x"})
    args = VerificationArgs(query=query, namespace="ns", cluster_name="c", image_ref="img", cluster_spec_hash="h",
                            client_tls={"ca": "A", "cert": "B", "key": "C"})  # fmt: skip
    mine = pulumi.ResourceOptions(protect=True)
    resource = LsdbVerification("verify", args, mine)
    ((provider, name, properties, opts),) = registered
    assert type(provider) is LsdbVerificationProvider and vars(provider) == {}
    assert name == "verify"
    assert properties == {**args.to_props(), **dict.fromkeys(OUTPUT_KEYS)}
    assert all(properties[key] is None for key in OUTPUT_KEYS)
    assert opts.additional_secret_outputs == ["clientTls"] and opts.protect is True  # the caller's options kept
    for key in OUTPUT_KEYS:
        setattr(resource, key, f"<{key}>")
    assert resource.outputs() == {key: f"<{key}>" for key in OUTPUT_KEYS}
    LsdbVerification("bare", args)
    assert registered[1][3].additional_secret_outputs == ["clientTls"]
    with pytest.raises(ValueError, match=r"^connect='direct' needs scheduler_address$"):
        LsdbVerification("v", VerificationArgs(query=query.model_copy(update={"connect": "direct"}), namespace="ns",
                                               cluster_name="c", image_ref="img", cluster_spec_hash="h"))  # fmt: skip
    assert len(registered) == 2
    LsdbVerification("d", VerificationArgs(query=query.model_copy(update={"connect": "direct"}), namespace="ns",
                                           cluster_name="c", image_ref="img", cluster_spec_hash="h",
                                           scheduler_address="tcp://s:8786"))  # fmt: skip
    assert len(registered) == 3
