"""The policy pack at its edges: the command forms, label selectors, names and orderings its validators must get
right. Each test here failed against a mutant that tests/test_policy.py let through (docs/mutation.md)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pulumi_policy import (
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    StackValidationArgs,
)

from policy import lsdb_guardrails as g
from tests.test_policy import (
    autoscaler,
    guide_cluster,
    labelled_cluster,
    network_policy,
    policy,
    scheduler,
    stable_service_pair,
    stack_violations,
    tls_cluster,
    violations,
    worker,
)

OPTS = PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [], None)


def named(resource_type: str, props: dict[str, Any], name: str) -> PolicyResource:
    """A resource whose Pulumi name differs from its metadata.name (as with auto-named objects)."""
    return PolicyResource(resource_type, props, f"urn:pulumi:test::lsdb-k8s::{resource_type}::{name}", name, OPTS,
                          None, None, [], {})  # fmt: skip


# --- which containers are Dask workers ------------------------------------------------------------


def with_worker_args(args: list[str], name: str = "main") -> dict[str, Any]:
    manifest = guide_cluster()
    worker(manifest)["name"] = name
    worker(manifest)["args"] = args
    return manifest


@pytest.mark.parametrize(
    "args",
    [
        ["dask", "worker"],
        ["/opt/conda/bin/dask", "worker", "tcp://s:8786"],
        ["python", "-m", "distributed.cli.dask_worker"],
        ["/usr/local/bin/dask-worker"],
    ],
)
def test_every_worker_command_form_is_held_to_nthreads(args: list[str]) -> None:
    assert violations(g.POLICY_THREADS, g.DASK_CLUSTER, with_worker_args(args)) == [
        "DaskCluster lsdb-cluster: worker container 'main' does not pass --nthreads (Dask then starts one thread "
        "per core); pass --nthreads 1 or 2"
    ]
    assert violations(g.POLICY_THREADS, g.DASK_CLUSTER, with_worker_args([*args, "--nthreads", "2"])) == []


@pytest.mark.parametrize("args", [["dask"], ["dask", "scheduler"], ["sh", "worker", "dask", "-c"], ["DASK", "WORKER"]])
def test_commands_that_only_look_like_a_worker_are_not_one(args: list[str]) -> None:
    assert violations(g.POLICY_THREADS, g.DASK_CLUSTER, with_worker_args(args)) == [
        "DaskCluster lsdb-cluster: no Dask worker container found (a `dask worker` command or a container named "
        "'worker'), so --nthreads cannot be checked; keep --nthreads between 1 and 2"
    ]


def test_a_container_named_worker_is_a_worker_whatever_its_command() -> None:
    assert violations(g.POLICY_THREADS, g.DASK_CLUSTER, with_worker_args(["python", "start.py"], name="worker")) == [
        "DaskCluster lsdb-cluster: worker container 'worker' does not pass --nthreads (Dask then starts one thread "
        "per core); pass --nthreads 1 or 2"
    ]


# --- images ---------------------------------------------------------------------------------------


def test_a_container_without_image_does_not_hide_the_next_one() -> None:
    manifest = guide_cluster()
    unpinned = {**worker(manifest), "name": "second", "image": "registry.example.com/lsdb-dask:1.0"}
    del worker(manifest)["image"]
    manifest["spec"]["worker"]["spec"]["containers"].append(unpinned)
    messages = violations(g.POLICY_IMAGE, g.DASK_CLUSTER, manifest)
    assert [m.split("'")[1] for m in messages] == ["worker", "second"]


def test_the_tag_named_is_everything_after_the_first_colon_of_the_last_path_part() -> None:
    manifest = guide_cluster()
    worker(manifest)["image"] = "registry.example.com:5000/lsdb-dask:1.0@sha256:short"
    (message,) = violations(g.POLICY_IMAGE, g.DASK_CLUSTER, manifest)
    assert "(tag '1.0@sha256:short' can move)" in message


# --- TLS in prod ----------------------------------------------------------------------------------


@pytest.fixture
def prod(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULUMI_STACK", "prod")


@pytest.mark.usefixtures("prod")
@pytest.mark.parametrize(
    "env",
    [
        [{"name": g.TLS_ENV[0], "value": "True"}],  # no CA file
        [{"name": g.TLS_ENV[0], "value": "True"}, {"name": g.TLS_ENV[1], "valueFrom": {"configMapKeyRef": {}}}],
        [{"name": g.TLS_ENV[0], "valueFrom": {"secretKeyRef": {}}}, {"name": g.TLS_ENV[1], "value": "/ca.crt"}],
    ],
)
def test_a_worker_must_show_both_tls_variables_with_literal_values(env: list[dict[str, Any]]) -> None:
    manifest = tls_cluster()
    worker(manifest)["env"] = env
    (message,) = violations(g.POLICY_TLS, g.DASK_CLUSTER, manifest)
    assert message.startswith("DaskCluster lsdb-cluster: worker container 'worker' does not require TLS")


@pytest.mark.usefixtures("prod")
@pytest.mark.parametrize("value", ["True", "1", "yes", "YES"])
def test_require_encryption_may_be_any_true_value_dask_reads(value: str) -> None:
    manifest = tls_cluster()
    for component in (scheduler, worker):
        component(manifest)["env"] = [{"name": g.TLS_ENV[0], "value": value}, {"name": g.TLS_ENV[1], "value": "/ca"}]
    assert violations(g.POLICY_TLS, g.DASK_CLUSTER, manifest) == []
    worker(manifest)["env"][0]["value"] = "no"
    assert len(violations(g.POLICY_TLS, g.DASK_CLUSTER, manifest)) == 1


@pytest.mark.usefixtures("prod")
@pytest.mark.parametrize("args", [["dask", "scheduler", "--protocol=tls"], ["dask-scheduler", "--host", "tls://:8786"]])
def test_the_scheduler_may_ask_for_tls_in_any_form(args: list[str]) -> None:
    manifest = tls_cluster()
    scheduler(manifest)["args"] = args
    assert violations(g.POLICY_TLS, g.DASK_CLUSTER, manifest) == []
    scheduler(manifest)["args"] = [a.upper() for a in args]
    assert len(violations(g.POLICY_TLS, g.DASK_CLUSTER, manifest)) == 1


@pytest.mark.usefixtures("prod")
def test_init_containers_do_not_stop_the_tls_check() -> None:
    manifest = guide_cluster()
    for component in ("scheduler", "worker"):
        manifest["spec"][component]["spec"]["initContainers"] = [{"name": "wait", "image": "busybox"}]
    assert len(violations(g.POLICY_TLS, g.DASK_CLUSTER, manifest)) == 3


# --- names in messages ----------------------------------------------------------------------------


def image_messages(props: dict[str, Any], name: str) -> list[str]:
    args = ResourceValidationArgs(
        g.DASK_CLUSTER, props, f"urn:pulumi:test::lsdb-k8s::x::{name}", name, OPTS, None, None
    )
    messages: list[str] = []
    policy(g.POLICY_IMAGE).validate(args, lambda m, urn=None: messages.append(m))
    return messages


def test_messages_name_the_object_by_its_metadata_name_else_its_pulumi_name() -> None:
    manifest = guide_cluster()
    worker(manifest)["image"] = "lsdb-dask:latest"
    assert image_messages(manifest, "pulumi-name")[0].startswith("DaskCluster lsdb-cluster: ")
    del manifest["metadata"]["name"]
    assert image_messages(manifest, "pulumi-name")[0].startswith("DaskCluster pulumi-name: ")


def network_violations(resources: list[PolicyResource]) -> list[tuple[str, str | None]]:
    found: list[tuple[str, str | None]] = []
    policy(g.POLICY_NETWORK).validate(StackValidationArgs(resources), lambda m, urn=None: found.append((m, urn)))
    return found


def test_a_network_policy_violation_names_the_cluster_its_namespace_and_urn() -> None:
    manifest = labelled_cluster()
    del manifest["metadata"]["namespace"]
    other = named(g.NETWORK_POLICY, network_policy({}, namespace="elsewhere"), "np")  # first: must not end the scan
    cluster = named(g.DASK_CLUSTER, manifest, "pulumi-name")
    found = network_violations([other, cluster])
    assert [urn for _, urn in found] == [cluster.urn, cluster.urn]
    assert found[0][0].startswith("DaskCluster lsdb-cluster: no NetworkPolicy in namespace (default) selects its ")
    del manifest["metadata"]["name"]
    assert network_violations([cluster])[0][0].startswith("DaskCluster pulumi-name: ")


# --- label selectors (the pods a NetworkPolicy isolates) ------------------------------------------


def expression(operator: str, values: list[str] | None = None, key: str = "dask.org/cluster-name") -> dict[str, Any]:
    requirement: dict[str, Any] = {"key": key, "operator": operator}
    if values is not None:
        requirement["values"] = values
    return {"matchExpressions": [requirement]}


@pytest.mark.parametrize(
    ("selector", "isolated"),
    [
        (expression("In", ["another-cluster"]), False),
        (expression("In", ["lsdb-cluster"]), True),
        (expression("NotIn", ["lsdb-cluster"]), False),
        (expression("NotIn", ["another-cluster"]), True),
        (expression("Exists"), True),
        (expression("Exists", key="absent"), False),
        (expression("DoesNotExist"), False),
        (expression("DoesNotExist", key="absent"), True),
        (expression("Gt", ["1"]), False),  # not a label-selector operator: selects nothing
    ],
)
def test_match_expressions_select_pods_as_kubernetes_does(selector: dict[str, Any], isolated: bool) -> None:
    resources = [(g.DASK_CLUSTER, labelled_cluster()), (g.NETWORK_POLICY, network_policy(selector))]
    assert (stack_violations(g.POLICY_NETWORK, resources) == []) is isolated


def highmem_group(**spec: Any) -> dict[str, Any]:
    pod = {"metadata": {"labels": {"tier": "highmem"}}, "spec": guide_cluster()["spec"]["worker"]["spec"]}
    return {"metadata": {"name": "lsdb-cluster-highmem", "namespace": "lsdb"}, "spec": {"worker": pod, **spec}}


@pytest.mark.parametrize(
    "selector",
    [{"matchLabels": {"tier": "highmem"}}, {"matchLabels": {"dask.org/component": "worker"}},
     {"matchLabels": {"dask.org/cluster-name": "lsdb-cluster"}}],
)  # fmt: skip
def test_a_worker_groups_pods_carry_its_pod_labels_and_the_operators(selector: dict[str, Any]) -> None:
    group = (g.DASK_WORKER_GROUP, highmem_group(cluster="lsdb-cluster"))
    assert stack_violations(g.POLICY_NETWORK, [group, (g.NETWORK_POLICY, network_policy(selector))]) == []
    other = copy.deepcopy(selector)
    (key,) = other["matchLabels"]
    other["matchLabels"][key] = "something-else"
    assert len(stack_violations(g.POLICY_NETWORK, [group, (g.NETWORK_POLICY, network_policy(other))])) == 1


# --- autoscaler and patched Services --------------------------------------------------------------


def test_an_autoscaler_may_have_minimum_equal_to_maximum() -> None:
    assert violations(g.POLICY_AUTOSCALER, g.DASK_AUTOSCALER, autoscaler(maximum=4, minimum=4)) == []
    assert len(violations(g.POLICY_AUTOSCALER, g.DASK_AUTOSCALER, autoscaler(maximum=4, minimum=5))) == 1


def test_a_patch_pairs_with_its_service_in_the_default_namespace_whichever_comes_first() -> None:
    service, patch = stable_service_pair("LoadBalancer")
    service[1]["metadata"] = {"name": "lsdb-scheduler", "namespace": "default"}
    patch[1]["metadata"] = {"name": "lsdb-scheduler"}  # no namespace: the default one
    assert len(stack_violations(g.POLICY_PUBLIC_PATCHED, [service, patch])) == 1
    assert len(stack_violations(g.POLICY_PUBLIC_PATCHED, [patch, service])) == 1
