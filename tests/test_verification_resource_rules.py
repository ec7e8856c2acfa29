"""What the verification's dynamic provider hands its child process (components/verification/resource.py), called
directly: the command line naming the query and the cluster, the client certificate written to owner-only files,
and the report read back from the child's output. Fast enough for mutation testing (docs/mutation.md);
tests/test_verification_provider.py runs the child against Dask processes."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from components.verification.query import VerificationQuery
from components.verification.resource import _last_json_line, child_argv, query_props, tls_argv


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
