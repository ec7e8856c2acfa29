"""The config model's rules in components/config.py that are plain functions (image references, where the
verification's catalog may be, the workers it may wait for, the idle timeout against the check's deadline), the
report of every problem at once, and reading the stack's config through Pulumi. Fast enough for mutation testing
(docs/mutation.md); tests/test_config.py checks the whole model on complete stack configs."""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pytest

from components.config import ConfigError, StackConfig, parse_stack_config, read_stack_config, secret_config
from tools.mock_runtime import run_program

BASE: dict[str, Any] = {"image": {"repository": "r/x"}}


def problems(**raw: Any) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse_stack_config({**BASE, **raw})
    return err.value.problems


def the_problem(key: str, **raw: Any) -> str:
    found = [p for p in problems(**raw) if p.startswith(key + " = ")]
    assert len(found) == 1, problems(**raw)
    return found[0]


def accepted(**raw: Any) -> StackConfig:
    return parse_stack_config({**BASE, **raw})


OFF = {"enabled": False}


def test_every_problem_at_once_and_nothing_deployed() -> None:
    with pytest.raises(ConfigError) as err:
        parse_stack_config({"image": {"repository": "R/x"}, "namespace": "Bad_Ns", "verify": OFF})
    assert len(err.value.problems) == 2
    assert str(err.value) == "2 problem(s) in the stack configuration (nothing was deployed):\n" + "\n".join(
        f"  - {p}" for p in err.value.problems
    )


def test_an_unknown_key_set_as_a_secret_is_reported_without_its_value() -> None:
    with pytest.raises(ConfigError) as err:
        parse_stack_config({**BASE, "verify": OFF, "passwrod": "hunter2"}, frozenset({"passwrod"}))
    (problem,) = err.value.problems
    assert problem.startswith("passwrod = '[secret]': is not a known key") and "hunter2" not in problem
    with pytest.raises(ConfigError) as err:
        parse_stack_config({**BASE, "verify": OFF, "namespac": "x"}, frozenset())
    assert err.value.problems[0].startswith("namespac = 'x': is not a known key. Fix: did you mean 'namespace'?")
    # A known key held as a secret keeps its value; keys are written as users write them (camelCase) only.
    assert (
        parse_stack_config({**BASE, "verify": OFF, "kubeContext": "ctx"}, frozenset({"kubeContext"})).kube_context
        == "ctx"
    )
    with pytest.raises(ConfigError) as err:
        parse_stack_config({**BASE, "verify": OFF, "kube_context": "ctx"})
    assert ": is not a known key. Fix: did you mean 'kubeContext'?" in err.value.problems[0]


@pytest.mark.parametrize(
    ("repository", "what", "fix"),
    [
        ("r/x:latest", "uses the floating tag 'latest'", "use a digest-pinned reference; tags are derived"),
        ("latest", "uses the floating tag 'latest'", "use a digest-pinned reference; tags are derived"),
        ("r/x:1.0", "must not carry a tag or digest", "give the repository only; the tag and digest are derived"),
        ("r/x@sha256:ab", "must not carry a tag or digest", "give the repository only; the tag and digest are derived"),
        ("R/x", "must be lowercase", "use lowercase letters"),
        ("lsdb:1.0", "must not carry a tag or digest", "give the repository only; the tag and digest are derived"),
        ("r/x@abc", "must not carry a tag or digest", "give the repository only; the tag and digest are derived"),
    ],
)
def test_the_image_repository_is_a_lowercase_repository_without_tag(repository: str, what: str, fix: str) -> None:
    problem = the_problem("image.repository", image={"repository": repository}, verify=OFF)
    assert problem == f"image.repository = {repository!r}: {what}. Fix: {fix}"


@pytest.mark.parametrize("repository", ["localhost:5001/lsdb", "r/latest-builds", "r/x-latest", "ghcr.io/a/b"])
def test_registry_ports_and_names_like_latest_are_repositories(repository: str) -> None:
    assert accepted(image={"repository": repository}, verify=OFF).image.repository == repository


def test_a_prebuilt_reference_must_not_float() -> None:
    assert the_problem("image.ref", image={"ref": "r/x:latest@sha256:" + "a" * 64}, verify=OFF).startswith(
        "image.ref = 'r/x:latest@sha256:" + "a" * 64 + "': uses the floating tag 'latest'"
    )
    assert the_problem("operator.image", operator={"image": "m/op:latest"}, verify=OFF)


@pytest.mark.parametrize(
    ("storage", "path", "what", "fix"),
    [
        ({"kind": "pvc"}, "/database/x", "is not under storage.mountPath (/data)",
         "give the path as workers see it, below the mount path"),
        ({"kind": "pvc", "mountPath": "/data/"}, "/datax", "is not under storage.mountPath (/data/)",
         "give the path as workers see it, below the mount path"),
        ({"kind": "pvc"}, "/dataX", "is not under storage.mountPath (/data)",
         "give the path as workers see it, below the mount path"),
        ({"kind": "pvc", "mountPath": "/dataX"}, "/data/x", "is not under storage.mountPath (/dataX)",
         "give the path as workers see it, below the mount path"),
        ({"kind": "none"}, "s3://b/x", "is a s3:// URL but storage.kind is none",
         "set storage.kind objectStore and storage.objectStore.url to the s3:// bucket or server (its credentials, "
         "identity or anonymous access are what the workers use)"),
        ({"kind": "objectStore", "objectStore": {"url": "s3://b"}}, "gs://b/x",
         "is a gs:// URL but storage.objectStore.url is s3://",
         "give a catalog in the configured object store, or change storage.objectStore.url"),
        ({"kind": "objectStore", "objectStore": {"url": "s3://b/cats/"}}, "/data/x",
         "is a local path, but storage.kind objectStore mounts no volume", "give the catalog's URL, e.g. s3://b/cats/<catalog>"),
        ({"kind": "objectStore", "objectStore": {"url": "s3://b/X/"}}, "/data/x",
         "is a local path, but storage.kind objectStore mounts no volume", "give the catalog's URL, e.g. s3://b/X/<catalog>"),
    ],
)  # fmt: skip
def test_the_catalog_must_be_where_the_workers_read(storage: dict[str, Any], path: str, what: str, fix: str) -> None:
    problem = the_problem("verify.catalogPath", storage=storage, verify={"catalogPath": path})
    assert problem == f"verify.catalogPath = {path!r}: {what}. Fix: {fix}"


@pytest.mark.parametrize(
    ("storage", "path"),
    [({"kind": "pvc"}, "/data"), ({"kind": "pvc"}, "/data/x"), ({"kind": "pvc", "mountPath": "/data/"}, "/data/x/"),
     ({"kind": "none"}, "/anything"), ({"kind": "objectStore", "objectStore": {"url": "s3a://b"}}, "s3://b/x"),
     ({"kind": "existingClaim"}, "/data/x")],
)  # fmt: skip
def test_catalogs_the_workers_can_read_are_accepted(storage: dict[str, Any], path: str) -> None:
    assert accepted(storage=storage, verify={"catalogPath": path}).verify.catalog_path == path


def test_the_verification_waits_only_for_workers_the_cluster_keeps() -> None:
    scaled = the_problem("verify.minWorkers", verify={"catalogPath": "/data/x", "minWorkers": 3})
    assert scaled == (
        "verify.minWorkers = 3: exceeds cluster.autoscaler.minimum (2), the workers the autoscaler keeps. "
        "Fix: lower verify.minWorkers or raise cluster.autoscaler.minimum"
    )
    fixed = the_problem(
        "verify.minWorkers",
        cluster={"autoscaler": {"enabled": False}, "workers": {"replicas": 1}, "workerGroups": {"g": {"replicas": 1}}},
        verify={"catalogPath": "/data/x", "minWorkers": 3},
    )
    assert fixed == (
        "verify.minWorkers = 3: exceeds cluster.workers.replicas (1), plus 1 in cluster.workerGroups. "
        "Fix: lower verify.minWorkers or raise the worker count"
    )
    assert accepted(verify={"catalogPath": "/data/x", "minWorkers": 2}).verify.min_workers == 2
    groups = {"workerGroups": {"g": {"replicas": 2}}}
    assert accepted(cluster=groups, verify={"catalogPath": "/data/x", "minWorkers": 4}).verify.min_workers == 4


def test_the_cluster_outlives_its_post_deploy_check() -> None:
    problem = the_problem("cluster.idleTimeoutSeconds", cluster={"idleTimeoutSeconds": 600}, verify=OFF)
    assert problem == (
        "cluster.idleTimeoutSeconds = 600: is shorter than verify.timeoutSeconds (900), the time the post-deploy "
        "check may take: the operator counts a new scheduler as idle from its start and would delete the cluster "
        "while it is being checked. Fix: set cluster.idleTimeoutSeconds to at least 900 (an hour or more for "
        "interactive use), 0 (never), or lower verify.timeoutSeconds"
    )
    odd = the_problem(
        "cluster.idleTimeoutSeconds", cluster={"idleTimeoutSeconds": 60}, verify={**OFF, "timeoutSeconds": 90.5}
    )
    assert "verify.timeoutSeconds (90.5)" in odd and "at least 91 (" in odd
    assert the_problem("cluster.idleTimeoutSeconds", cluster={"idleTimeoutSeconds": 1}, verify=OFF)
    for idle in (0, 900, 3600):
        assert accepted(cluster={"idleTimeoutSeconds": idle}, verify=OFF).cluster.idle_timeout_seconds == idle


def test_no_egress_rule_opens_every_address_or_port() -> None:
    # Kubernetes reads an empty `to` or `ports` as every address or port: refused where such a rule is rendered.
    store = {"kind": "objectStore", "objectStore": {"url": "s3://b/c"}}
    empty = {"egressCidrs": [], "egressPorts": []}
    assert problems(storage=store, security=empty, verify=OFF) == [
        "security.egressCidrs = []: is empty, and a NetworkPolicy egress rule without address blocks lets the pods "
        "reach every address. Fix: list the address blocks of the object store and the catalog sources (0.0.0.0/0 "
        "allows any)",
        "security.egressPorts = []: is empty, and a NetworkPolicy egress rule without ports lets the pods reach "
        "every port. Fix: list the TCP ports of the object store and the catalog sources (e.g. 443)",
    ]
    s3, https = {"source": "s3://survey/gaia"}, {"source": "https://data.example/hats/ztf"}
    pvc = {"kind": "pvc"}
    keys = lambda **raw: [p.split(" = ")[0] for p in problems(storage=pvc, **raw)]  # noqa: E731
    assert keys(catalogs={"gaia": s3}, security=empty) == ["security.egressCidrs", "security.egressPorts"]
    # An https source is reached on its URL's port: the ports may be empty.
    assert keys(catalogs={"ztf": https}, security=empty) == ["security.egressCidrs"]
    # Without NetworkPolicies, or with storage the node mounts and nothing to copy, the lists are not read.
    for raw in ({"storage": store, "security": {**empty, "networkPolicy": False}}, {"security": empty}):
        assert accepted(**raw, verify=OFF).security.egress_cidrs == []
    assert accepted(storage=pvc, catalogs={"ztf": https}, security={"egressPorts": []}).security.egress_ports == []


def test_the_program_reads_its_config_and_secrets_through_pulumi() -> None:
    read: dict[str, Any] = {}

    def program() -> None:
        read["config"] = read_stack_config()
        pulumi.export("key", secret_config("storage", ("objectStore", "credentials", "accessKeyId")))

    storage = '{"kind": "objectStore", "objectStore": {"url": "s3://b", "credentials": {"accessKeyId": "akia"}}}'
    run = run_program(
        {"lsdb-k8s:image": '{"repository": "r/x"}', "lsdb-k8s:namespace": "astro", "lsdb-k8s:storage": storage,
         "lsdb-k8s:verify": '{"enabled": false}'},
        secret_keys=["lsdb-k8s:storage"],
        program=program,
    )  # fmt: skip
    config = read["config"]
    assert config.namespace == "astro" and config.image.repository == "r/x"
    assert config.storage.credential_keys == ("accessKeyId",)  # a secret top-level key: its values may be plain
    assert run.outputs["key"] == "akia"
    assert "key" in run.secret_outputs


def test_a_plaintext_credential_outside_a_secret_key_is_refused() -> None:
    def program() -> None:
        read_stack_config()

    storage = '{"kind": "objectStore", "objectStore": {"url": "s3://b", "credentials": {"accessKeyId": "akia"}}}'
    with pytest.raises(ConfigError) as err:
        run_program({"lsdb-k8s:image": '{"repository": "r/x"}', "lsdb-k8s:storage": storage,
                     "lsdb-k8s:verify": '{"enabled": false}'}, program=program)  # fmt: skip
    (problem,) = err.value.problems
    assert problem.startswith("storage.objectStore.credentials.accessKeyId = '[plaintext]': is stored in plaintext")


def test_keys_the_cli_passes_are_checked_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """`pulumi up` hands the program every key set (PULUMI_CONFIG, PULUMI_CONFIG_SECRET_KEYS): a misspelt one is
    reported, a secret one without its value."""
    config = {"lsdb-k8s:image": '{"repository": "r/x"}', "lsdb-k8s:verify": '{"enabled": false}',
              "lsdb-k8s:namespac": "astro", "lsdb-k8s:passwrod": "hunter2", "other:namespace": "x"}  # fmt: skip
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps(config))
    monkeypatch.setenv("PULUMI_CONFIG_SECRET_KEYS", json.dumps(["lsdb-k8s:passwrod", "other:secret"]))

    def program() -> None:
        read_stack_config()

    with pytest.raises(ConfigError) as err:
        run_program(config, program=program)
    assert [p.split(":", 1)[0] for p in err.value.problems] == ["namespac = 'astro'", "passwrod = '[secret]'"]
