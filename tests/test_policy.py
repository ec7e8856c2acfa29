"""The policy pack (policy/): every guardrail, called as the Pulumi policy SDK calls it, plus the pack itself.

Validators get a real `pulumi_policy.ResourceValidationArgs` whose props are wrapped by the SDK's own
`unknown_checking_proxy`, exactly as `_PolicyAnalyzerServicer.Analyze` builds them. One test boots the
pack the way the Pulumi CLI does (`python -u -m pulumi.policy <engine> .` in the pack folder) and talks to
it over the analyzer gRPC protocol; another runs the real program for every committed stack under
Pulumi's mock runtime and checks that what it registers passes every guardrail.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from google.protobuf import empty_pb2, struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc
from pulumi_policy import (
    EnforcementLevel,
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, UnknownValueError, unknown_checking_proxy

# As a module of the project (policy/ is a namespace package) rather than the pack's top-level `lsdb_guardrails`:
# the same code, under the name mutation testing maps its tests to (docs/mutation.md).
from policy import lsdb_guardrails as g

ROOT = Path(__file__).resolve().parent.parent
POLICY_DIR = ROOT / "policy"

DIGEST = "sha256:" + "ab" * 32
IMAGE = f"registry.example.com/lsdb-dask@{DIGEST}"


def guide_cluster(image: str = IMAGE) -> dict[str, Any]:
    """The guide's DaskCluster manifest, with the image pinned by digest (the compliant baseline)."""
    return {
        "apiVersion": "kubernetes.dask.org/v1",
        "kind": "DaskCluster",
        "metadata": {"name": "lsdb-cluster", "namespace": "lsdb"},
        "spec": {
            "worker": {
                "replicas": 2,
                "spec": {
                    "containers": [
                        {
                            "name": "worker",
                            "image": image,
                            "args": ["dask-worker", "--name", "$(DASK_WORKER_NAME)", "--nthreads", "2"],
                            "resources": {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "4Gi"}},
                        }
                    ]
                },
            },
            "scheduler": {
                "spec": {
                    "containers": [
                        {
                            "name": "scheduler",
                            "image": image,
                            "args": ["dask-scheduler"],
                            "resources": {"requests": {"cpu": "2", "memory": "6Gi"}, "limits": {"memory": "6Gi"}},
                        }
                    ]
                },
                "service": {
                    "type": "ClusterIP",
                    "selector": {"dask.org/cluster-name": "lsdb-cluster", "dask.org/component": "scheduler"},
                    "ports": [{"name": "tcp-comm", "protocol": "TCP", "port": 8786, "targetPort": "tcp-comm"}],
                },
            },
        },
    }


def autoscaler(maximum: Any = 6, minimum: Any = 2) -> dict[str, Any]:
    spec: dict[str, Any] = {"cluster": "lsdb-cluster"}
    if maximum is not None:
        spec["maximum"] = maximum
    if minimum is not None:
        spec["minimum"] = minimum
    return {
        "apiVersion": "kubernetes.dask.org/v1",
        "kind": "DaskAutoscaler",
        "metadata": {"name": "lsdb-cluster"},
        "spec": spec,
    }


def service(service_type: str | None, component: str = "scheduler", **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "selector": {"dask.org/cluster-name": "lsdb-cluster", "dask.org/component": component},
        "ports": [{"port": 8787, "targetPort": "http-dashboard"}],
        **extra,
    }
    if service_type is not None:
        spec["type"] = service_type
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "dashboard"}, "spec": spec}


def policy(name: str) -> Any:
    found = [p for p in g.POLICIES if p.name == name]
    assert len(found) == 1, name
    return found[0]


RESOURCE_POLICIES = [p for p in g.POLICIES if isinstance(p, ResourceValidationPolicy)]
STACK_POLICIES = [p for p in g.POLICIES if isinstance(p, StackValidationPolicy)]


def stack_violations(policy_name: str, resources: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Run one stack policy the way the SDK's Remediate/Analyze-stack does: every resource with its props."""
    opts = PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [], None)
    policy_resources = [
        PolicyResource(
            typ,
            unknown_checking_proxy(copy.deepcopy(props)),
            f"urn:pulumi:test::lsdb-k8s::{typ}::{props.get('metadata', {}).get('name', 'res')}",
            props.get("metadata", {}).get("name", "res"),
            opts,
            None,
            None,
            [],
            {},
        )
        for typ, props in resources
    ]
    messages: list[str] = []
    policy(policy_name).validate(StackValidationArgs(policy_resources), lambda m, urn=None: messages.append(m))
    return messages


def violations(
    policy_name: str, resource_type: str, props: dict[str, Any], config: dict[str, Any] | None = None
) -> list[str]:
    """Run one policy the way the SDK's Analyze does and return the violation messages."""
    opts = PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [], None)
    name = props.get("metadata", {}).get("name", "res")
    args = ResourceValidationArgs(
        resource_type,
        unknown_checking_proxy(copy.deepcopy(props)),
        f"urn:pulumi:test::lsdb-k8s::{resource_type}::{name}",
        name,
        opts,
        None,
        config,
    )
    messages: list[str] = []
    result = policy(policy_name).validate(args, lambda message, urn=None: messages.append(message))
    assert result is None  # synchronous validators
    return messages


def worker(manifest: dict[str, Any]) -> dict[str, Any]:
    return manifest["spec"]["worker"]["spec"]["containers"][0]


def scheduler(manifest: dict[str, Any]) -> dict[str, Any]:
    return manifest["spec"]["scheduler"]["spec"]["containers"][0]


# --- the pack's shape ----------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stack name comes from PULUMI_STACK (set by the CLI); tests set it where it matters."""
    monkeypatch.delenv("PULUMI_STACK", raising=False)


def test_every_policy_is_mandatory() -> None:
    assert [p.name for p in g.POLICIES] == [
        "dask-image-pinned-by-digest",
        "dask-memory-limits",
        "dask-worker-threads",
        "dask-autoscaler-ceiling",
        "dask-scheduler-not-public",
        "dask-patched-scheduler-service-not-public",
        "dask-tls-in-prod",
        "dask-cluster-network-policy",
        "lsdb-notebook-hardened",
    ]
    assert [p.name for p in STACK_POLICIES] == [
        "dask-patched-scheduler-service-not-public",
        "dask-cluster-network-policy",
    ]
    for p in g.POLICIES:
        assert isinstance(p, ResourceValidationPolicy | StackValidationPolicy)
        assert p.enforcement_level is EnforcementLevel.MANDATORY
        assert p.validate is not None


def test_each_policy_says_what_it_requires_in_one_line() -> None:
    """`pulumi preview` prints the description above each violation: the validator's docstring on one line."""
    assert {p.name: p.description for p in g.POLICIES} == {
        "dask-image-pinned-by-digest": "Dask scheduler and worker images must be pinned by digest "
        "(repository@sha256:...), never a tag.",
        "dask-memory-limits": "Every Dask scheduler and worker container must set resources.limits.memory.",
        "dask-worker-threads": "Dask workers must run with --nthreads 1 or 2 (the LSDB guide's range).",
        "dask-autoscaler-ceiling": "DaskAutoscaler maximum must not exceed the configured ceiling "
        "(default 50 workers).",
        "dask-scheduler-not-public": "The Dask scheduler/dashboard Service must be ClusterIP: no LoadBalancer, "
        "NodePort or externalIPs.",
        "dask-patched-scheduler-service-not-public": "A Service whose selector a ServicePatch points at the Dask "
        "scheduler must be ClusterIP, without externalIPs, once patched.",
        "dask-tls-in-prod": "In stacks named prod*, Dask scheduler and workers must require TLS (scheduler on tls://).",
        "dask-cluster-network-policy": "Every DaskCluster's (and DaskWorkerGroup's) pods must be selected by a "
        "NetworkPolicy (ingress).",
        "lsdb-notebook-hardened": "The notebook runs a digest-pinned image, non-root, read-only, memory-limited, "
        "without an API token, behind a ClusterIP Service.",
    }


def test_the_guide_manifest_with_a_digest_passes_every_policy() -> None:
    for p in RESOURCE_POLICIES:
        assert violations(p.name, g.DASK_CLUSTER, guide_cluster()) == []
        assert violations(p.name, g.DASK_AUTOSCALER, autoscaler()) == []
        assert violations(p.name, g.SERVICE, service("ClusterIP")) == []


def test_policies_ignore_unrelated_resources() -> None:
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "lsdb"}}
    for p in RESOURCE_POLICIES:
        assert violations(p.name, "kubernetes:core/v1:Namespace", namespace) == []
    # A LoadBalancer that does not select the Dask scheduler is none of this pack's business.
    assert violations(g.POLICY_PUBLIC, g.SERVICE, service("LoadBalancer", component="worker")) == []


# --- no floating image tags ----------------------------------------------------------------------


def test_latest_tag_is_rejected_on_scheduler_and_worker() -> None:
    messages = violations(g.POLICY_IMAGE, g.DASK_CLUSTER, guide_cluster("registry.example.com/lsdb-dask:latest"))
    assert messages == [
        f"DaskCluster lsdb-cluster: {component} container '{component}' image "
        "'registry.example.com/lsdb-dask:latest' is not pinned by digest (the floating tag 'latest' is rejected); "
        "use repository@sha256:<digest> so scheduler, workers and client run the same build"
        for component in ("scheduler", "worker")
    ]


def test_untagged_image_means_latest_and_versioned_tags_still_float() -> None:
    manifest = guide_cluster()
    scheduler(manifest)["image"] = "registry.example.com:5000/lsdb-dask"
    worker(manifest)["image"] = "registry.example.com:5000/lsdb-dask:0.5.0"
    messages = violations(g.POLICY_IMAGE, g.DASK_CLUSTER, manifest)
    untagged, versioned = messages
    assert "image 'registry.example.com:5000/lsdb-dask' is not pinned by digest (the floating tag 'latest'" in untagged
    assert "'registry.example.com:5000/lsdb-dask:0.5.0' is not pinned by digest (tag '0.5.0' can move)" in versioned


def test_tag_plus_digest_and_malformed_digests() -> None:
    manifest = guide_cluster(f"registry.example.com/lsdb-dask:0.5.0@{DIGEST}")
    assert violations(g.POLICY_IMAGE, g.DASK_CLUSTER, manifest) == []
    short = guide_cluster("registry.example.com/lsdb-dask@sha256:abc")
    assert len(violations(g.POLICY_IMAGE, g.DASK_CLUSTER, short)) == 2


def test_missing_image_and_init_containers_are_checked() -> None:
    manifest = guide_cluster()
    del scheduler(manifest)["image"]
    manifest["spec"]["worker"]["spec"]["initContainers"] = [{"name": "fetch", "image": "busybox:1.36"}]
    messages = violations(g.POLICY_IMAGE, g.DASK_CLUSTER, manifest)
    assert messages == [
        "DaskCluster lsdb-cluster: scheduler container 'scheduler' has no image; pin it as repository@sha256:<digest>",
        "DaskCluster lsdb-cluster: worker initContainer 'fetch' image 'busybox:1.36' is not pinned by digest "
        "(tag '1.36' can move); use repository@sha256:<digest> so scheduler, workers and client run the same build",
    ]


def test_worker_groups_are_checked_too() -> None:
    group = {
        "apiVersion": "kubernetes.dask.org/v1",
        "kind": "DaskWorkerGroup",
        "metadata": {"name": "lsdb-cluster-highmem"},
        "spec": {"cluster": "lsdb-cluster", "worker": copy.deepcopy(guide_cluster()["spec"]["worker"])},
    }
    assert all(violations(p.name, g.DASK_WORKER_GROUP, group) == [] for p in RESOURCE_POLICIES)
    worker(group)["image"] = "lsdb-dask:latest"
    worker(group)["args"] = ["dask", "worker", "--nthreads", "8"]
    assert violations(g.POLICY_IMAGE, g.DASK_WORKER_GROUP, group)[0].startswith(
        "DaskWorkerGroup lsdb-cluster-highmem: worker container 'worker' image 'lsdb-dask:latest'"
    )
    assert violations(g.POLICY_THREADS, g.DASK_WORKER_GROUP, group) == [
        "DaskWorkerGroup lsdb-cluster-highmem: worker container 'worker' runs --nthreads 8; "
        "LSDB workers must use 1 to 2 threads (add workers, not threads)"
    ]


def test_an_image_unknown_during_preview_defers_to_the_sdk() -> None:
    # The SDK turns UnknownValueError into an advisory "can't run policy during preview" and re-runs at `up`.
    with pytest.raises(UnknownValueError):
        violations(g.POLICY_IMAGE, g.DASK_CLUSTER, guide_cluster(UNKNOWN_STRING_VALUE))


# --- memory limits -------------------------------------------------------------------------------


def test_memory_limit_missing_on_worker_and_scheduler() -> None:
    manifest = guide_cluster()
    del worker(manifest)["resources"]["limits"]
    scheduler(manifest)["resources"] = {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "1"}}
    assert violations(g.POLICY_MEMORY, g.DASK_CLUSTER, manifest) == [
        f"DaskCluster lsdb-cluster: {component} container '{component}' has no resources.limits.memory; "
        "set one (the guide's manifest sets limits.memory equal to requests.memory)"
        for component in ("scheduler", "worker")
    ]


def test_memory_limit_missing_on_a_sidecar_and_no_resources_at_all() -> None:
    manifest = guide_cluster()
    manifest["spec"]["worker"]["spec"]["containers"].append({"name": "log-shipper", "image": IMAGE})
    del scheduler(manifest)["resources"]
    messages = violations(g.POLICY_MEMORY, g.DASK_CLUSTER, manifest)
    assert [m.split(" has no")[0] for m in messages] == [
        "DaskCluster lsdb-cluster: scheduler container 'scheduler'",
        "DaskCluster lsdb-cluster: worker container 'log-shipper'",
    ]


def test_a_pod_without_containers_has_no_memory_limit() -> None:
    manifest = guide_cluster()
    manifest["spec"]["scheduler"]["spec"]["containers"] = []
    assert violations(g.POLICY_MEMORY, g.DASK_CLUSTER, manifest) == [
        "DaskCluster lsdb-cluster: the scheduler pod spec has no containers, so no memory limit"
    ]


# --- worker threads ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["dask-worker", "--nthreads", "1"],
        ["dask", "worker", "--nthreads", "2"],
        ["dask", "worker", "--nthreads=1"],
        ["python", "-m", "distributed.cli.dask_worker", "--nthreads", "2"],
    ],
)
def test_one_or_two_threads_pass(argv: list[str]) -> None:
    manifest = guide_cluster()
    worker(manifest)["args"] = argv
    assert violations(g.POLICY_THREADS, g.DASK_CLUSTER, manifest) == []


@pytest.mark.parametrize("value", ["0", "3", "16", "$(NTHREADS)", "-1", "1.5"])
def test_threads_outside_one_to_two_are_rejected(value: str) -> None:
    manifest = guide_cluster()
    worker(manifest)["args"] = ["dask-worker", "--name", "$(DASK_WORKER_NAME)", "--nthreads", value]
    assert violations(g.POLICY_THREADS, g.DASK_CLUSTER, manifest) == [
        f"DaskCluster lsdb-cluster: worker container 'worker' runs --nthreads {value}; "
        "LSDB workers must use 1 to 2 threads (add workers, not threads)"
    ]


def test_missing_nthreads_is_rejected_because_dask_defaults_to_one_thread_per_core() -> None:
    manifest = guide_cluster()
    worker(manifest)["args"] = ["dask-worker", "--name", "$(DASK_WORKER_NAME)"]
    assert violations(g.POLICY_THREADS, g.DASK_CLUSTER, manifest) == [
        "DaskCluster lsdb-cluster: worker container 'worker' does not pass --nthreads (Dask then starts one thread "
        "per core); pass --nthreads 1 or 2"
    ]
    worker(manifest)["args"] = ["dask-worker", "--nthreads"]
    assert "runs --nthreads (missing value)" in violations(g.POLICY_THREADS, g.DASK_CLUSTER, manifest)[0]


def test_threads_in_command_and_renamed_worker_containers_are_found() -> None:
    manifest = guide_cluster()
    container = worker(manifest)
    container["name"] = "lsdb"
    container["command"] = ["/usr/local/bin/dask-worker", "--nthreads", "4"]
    container["args"] = []
    assert violations(g.POLICY_THREADS, g.DASK_CLUSTER, manifest) == [
        "DaskCluster lsdb-cluster: worker container 'lsdb' runs --nthreads 4; "
        "LSDB workers must use 1 to 2 threads (add workers, not threads)"
    ]


def test_a_worker_pod_without_a_recognisable_worker_is_rejected() -> None:
    manifest = guide_cluster()
    worker(manifest)["name"] = "custom"
    worker(manifest)["args"] = ["python", "run.py"]
    assert violations(g.POLICY_THREADS, g.DASK_CLUSTER, manifest) == [
        "DaskCluster lsdb-cluster: no Dask worker container found (a `dask worker` command or a container named "
        "'worker'), so --nthreads cannot be checked; keep --nthreads between 1 and 2"
    ]


def test_sidecars_and_the_scheduler_are_not_held_to_nthreads() -> None:
    manifest = guide_cluster()
    manifest["spec"]["worker"]["spec"]["containers"].append({"name": "sidecar", "args": ["sleep", "infinity"]})
    assert violations(g.POLICY_THREADS, g.DASK_CLUSTER, manifest) == []


# --- autoscaler ceiling --------------------------------------------------------------------------


def test_autoscaler_default_ceiling_is_50() -> None:
    assert violations(g.POLICY_AUTOSCALER, g.DASK_AUTOSCALER, autoscaler(maximum=50)) == []
    # Numbers arrive from the engine as floats.
    assert violations(g.POLICY_AUTOSCALER, g.DASK_AUTOSCALER, autoscaler(maximum=50.0)) == []
    assert violations(g.POLICY_AUTOSCALER, g.DASK_AUTOSCALER, autoscaler(maximum=51)) == [
        "DaskAutoscaler lsdb-cluster: spec.maximum 51 exceeds the ceiling of 50 workers "
        "(policy config dask-autoscaler-ceiling.maximum)"
    ]


def test_autoscaler_ceiling_comes_from_policy_config() -> None:
    config = {"maximum": 12.0}  # Configure() hands JSON numbers over as floats
    assert violations(g.POLICY_AUTOSCALER, g.DASK_AUTOSCALER, autoscaler(maximum=12), config) == []
    assert violations(g.POLICY_AUTOSCALER, g.DASK_AUTOSCALER, autoscaler(maximum=24), config) == [
        "DaskAutoscaler lsdb-cluster: spec.maximum 24 exceeds the ceiling of 12 workers "
        "(policy config dask-autoscaler-ceiling.maximum)"
    ]


def test_autoscaler_without_maximum_or_with_minimum_above_maximum() -> None:
    assert violations(g.POLICY_AUTOSCALER, g.DASK_AUTOSCALER, autoscaler(maximum=None)) == [
        "DaskAutoscaler lsdb-cluster: spec.maximum is not set to a number; set it to at most 50"
    ]
    assert violations(g.POLICY_AUTOSCALER, g.DASK_AUTOSCALER, autoscaler(maximum=4, minimum=6)) == [
        "DaskAutoscaler lsdb-cluster: spec.minimum 6 is above spec.maximum 4"
    ]


def test_autoscaler_config_schema_documents_the_default() -> None:
    schema = policy(g.POLICY_AUTOSCALER).config_schema
    assert schema is not None
    assert schema.properties["maximum"]["default"] == 50
    assert schema.properties["maximum"]["type"] == "integer"


# --- no public dashboard -------------------------------------------------------------------------


@pytest.mark.parametrize("service_type", ["LoadBalancer", "NodePort"])
def test_daskcluster_scheduler_service_must_be_cluster_ip(service_type: str) -> None:
    manifest = guide_cluster()
    manifest["spec"]["scheduler"]["service"]["type"] = service_type
    assert violations(g.POLICY_PUBLIC, g.DASK_CLUSTER, manifest) == [
        f"DaskCluster lsdb-cluster: spec.scheduler.service.type is {service_type}, which exposes the scheduler and "
        "dashboard outside the cluster; keep it ClusterIP and use `kubectl port-forward` (or an authenticated "
        "Ingress) to reach it"
    ]


def test_daskcluster_without_service_type_defaults_to_cluster_ip() -> None:
    manifest = guide_cluster()
    del manifest["spec"]["scheduler"]["service"]["type"]
    assert violations(g.POLICY_PUBLIC, g.DASK_CLUSTER, manifest) == []
    manifest["spec"]["scheduler"]["service"]["externalIPs"] = ["203.0.113.10"]
    assert violations(g.POLICY_PUBLIC, g.DASK_CLUSTER, manifest) == [
        "DaskCluster lsdb-cluster: spec.scheduler.service sets externalIPs; keep it ClusterIP and use "
        "`kubectl port-forward` (or an authenticated Ingress) to reach it"
    ]


@pytest.mark.parametrize("service_type", ["LoadBalancer", "NodePort"])
def test_extra_services_selecting_the_scheduler_must_not_be_public(service_type: str) -> None:
    assert violations(g.POLICY_PUBLIC, g.SERVICE, service(service_type)) == [
        f"Service dashboard: type {service_type} exposes the Dask scheduler (selector dask.org/component: "
        "scheduler) and its dashboard outside the cluster; keep it ClusterIP and use `kubectl port-forward` "
        "(or an authenticated Ingress) to reach it"
    ]


def test_scheduler_services_with_default_type_or_external_ips() -> None:
    assert violations(g.POLICY_PUBLIC, g.SERVICE, service(None)) == []
    assert violations(g.POLICY_PUBLIC, g.SERVICE, service("ClusterIP", externalIPs=["203.0.113.10"])) == [
        "Service dashboard: externalIPs expose the Dask scheduler outside the cluster; keep it ClusterIP and use "
        "`kubectl port-forward` (or an authenticated Ingress) to reach it"
    ]


def stable_service_pair(service_type: str | None = None, **patched: Any) -> list[tuple[str, dict[str, Any]]]:
    """The program's stable Service (no selector) and the ServicePatch that points it at the scheduler."""
    own: dict[str, Any] = {"ports": [{"port": 8786, "targetPort": "tcp-comm"}]}
    if service_type is not None:
        own["type"] = service_type
    meta = {"name": "lsdb-scheduler", "namespace": "lsdb"}
    selector = {"dask.org/cluster-name": "lsdb-0123abcd", "dask.org/component": "scheduler"}
    return [
        (g.SERVICE, {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": own}),
        (g.SERVICE_PATCH, {"apiVersion": "v1", "kind": "Service", "metadata": meta,
                           "spec": {"selector": selector, **patched}}),
    ]  # fmt: skip


def test_a_service_made_public_then_patched_to_the_scheduler_is_rejected_as_a_pair() -> None:
    pair = stable_service_pair("LoadBalancer")
    # Each part alone passes: the Service selects nothing, the patch sets no type.
    assert [m for typ, props in pair for m in violations(g.POLICY_PUBLIC, typ, props)] == []
    assert stack_violations(g.POLICY_PUBLIC_PATCHED, pair) == [
        "Service lsdb-scheduler (with its ServicePatch): type LoadBalancer exposes the Dask scheduler (selector "
        "dask.org/component: scheduler) and its dashboard outside the cluster; keep it ClusterIP and use "
        "`kubectl port-forward` (or an authenticated Ingress) to reach it"
    ]
    assert stack_violations(g.POLICY_PUBLIC_PATCHED, stable_service_pair("ClusterIP")) == []
    assert stack_violations(g.POLICY_PUBLIC_PATCHED, stable_service_pair()) == []
    # A Service patched in another namespace is another object.
    other = stable_service_pair("NodePort")
    other[1][1]["metadata"] = {"name": "lsdb-scheduler", "namespace": "elsewhere"}
    assert stack_violations(g.POLICY_PUBLIC_PATCHED, other) == []


def test_a_patch_that_exposes_the_scheduler_is_reported_once_by_the_resource_policy() -> None:
    pair = stable_service_pair(None, type="NodePort", externalIPs=["203.0.113.10"])
    assert violations(g.POLICY_PUBLIC, *pair[1]) == [
        "ServicePatch lsdb-scheduler: type NodePort exposes the Dask scheduler (selector dask.org/component: "
        "scheduler) and its dashboard outside the cluster; keep it ClusterIP and use `kubectl port-forward` "
        "(or an authenticated Ingress) to reach it",
        "ServicePatch lsdb-scheduler: externalIPs expose the Dask scheduler outside the cluster; keep it ClusterIP "
        "and use `kubectl port-forward` (or an authenticated Ingress) to reach it",
    ]
    assert stack_violations(g.POLICY_PUBLIC_PATCHED, pair) == []


# --- the committed stacks comply -----------------------------------------------------------------


def stack_config(stack: str) -> dict[str, str]:
    raw = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in raw.items()}


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_every_committed_stack_passes_the_pack(stack: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real program, run for each Pulumi.<stack>.yaml under Pulumi's mock runtime, violates nothing."""
    from components.dask_operator import operator_version
    from tools.mock_runtime import run_program

    operator_stack = {"operatorNamespace": "dask-operator", "operatorVersion": operator_version()}
    # staging and prod take the operator from the platform stack (same organization and project).
    run = run_program(
        stack_config(stack), stack=stack, stack_outputs={"organization/lsdb-k8s/platform": operator_stack}
    )
    checked = {r.type for r in run.resources} & {g.DASK_CLUSTER, g.DASK_AUTOSCALER, g.SERVICE, g.SERVICE_PATCH}
    assert {g.DASK_CLUSTER, g.SERVICE, g.SERVICE_PATCH} <= checked
    monkeypatch.setenv("PULUMI_STACK", stack)  # as the CLI runs the pack; restored after the test
    found = {
        (p.name, r.name): messages
        for r in run.resources
        for p in RESOURCE_POLICIES
        if (messages := violations(p.name, r.type, r.inputs))
    }
    assert found == {}
    everything = [(r.type, r.inputs) for r in run.resources]
    assert all(stack_violations(p.name, everything) == [] for p in STACK_POLICIES)


# --- NetworkPolicy and TLS ------------------------------------------------------------------------


def network_policy(pod_selector: dict[str, Any], namespace: str = "lsdb", types: list[str] | None = None) -> dict:
    spec: dict[str, Any] = {"podSelector": pod_selector}
    if types is not None:
        spec["policyTypes"] = types
    return {"metadata": {"name": "p", "namespace": namespace}, "spec": spec}


def labelled_cluster() -> dict[str, Any]:
    manifest = guide_cluster()
    manifest["metadata"]["labels"] = {"app.kubernetes.io/name": "lsdb-cluster", "app.kubernetes.io/part-of": "lsdb-k8s"}
    return manifest


def test_a_daskcluster_without_a_network_policy_is_rejected() -> None:
    messages = stack_violations(g.POLICY_NETWORK, [(g.DASK_CLUSTER, labelled_cluster())])
    assert messages == [
        f"DaskCluster lsdb-cluster: no NetworkPolicy in namespace lsdb selects its {c} pods for ingress, so any pod "
        "of the cluster can reach them (a Dask client runs arbitrary code on the workers); keep "
        "security.networkPolicy true"
        for c in ("scheduler", "worker")
    ]


@pytest.mark.parametrize(
    ("policies", "failing"),
    [
        ([network_policy({"matchLabels": {"app.kubernetes.io/name": "lsdb-cluster"}})], []),  # both components
        ([network_policy({})], []),  # a namespace-wide default deny
        ([network_policy({"matchLabels": {"dask.org/component": "scheduler"}})], ["worker"]),
        ([network_policy({"matchLabels": {"app.kubernetes.io/name": "lsdb-cluster"}}, namespace="other")],
         ["scheduler", "worker"]),  # another namespace's policy protects nothing here
        ([network_policy({}, types=["Egress"])], ["scheduler", "worker"]),  # egress only: ingress stays open
        ([network_policy({"matchExpressions": [{"key": "dask.org/cluster-name", "operator": "In",
                                                "values": ["lsdb-cluster"]}]})], []),
        ([network_policy({"matchLabels": {"app.kubernetes.io/name": "another-cluster"}})], ["scheduler", "worker"]),
    ],
)  # fmt: skip
def test_network_policy_must_select_the_operators_pods(policies: list[dict[str, Any]], failing: list[str]) -> None:
    resources = [(g.DASK_CLUSTER, labelled_cluster()), *[(g.NETWORK_POLICY, p) for p in policies]]
    messages = stack_violations(g.POLICY_NETWORK, resources)
    assert [m.split(" selects its ")[1].split(" ")[0] for m in messages] == failing


def test_worker_group_pods_need_a_network_policy_too() -> None:
    worker = {"replicas": 1, "spec": guide_cluster()["spec"]["worker"]["spec"]}
    labels = {"lsdb-k8s/worker-group": "highmem"}
    group = {
        "metadata": {"name": "lsdb-cluster-highmem", "namespace": "lsdb", "labels": labels},
        "spec": {"cluster": "lsdb-cluster", "worker": worker},
    }
    # A policy for the DaskCluster's pods by its own label covers the cluster, not the group (other labels).
    by_name = network_policy({"matchLabels": {"app.kubernetes.io/name": "lsdb-cluster"}})
    resources = [(g.DASK_CLUSTER, labelled_cluster()), (g.DASK_WORKER_GROUP, group), (g.NETWORK_POLICY, by_name)]
    assert stack_violations(g.POLICY_NETWORK, resources) == [
        "DaskWorkerGroup lsdb-cluster-highmem: no NetworkPolicy in namespace lsdb selects its worker pods for "
        "ingress, so any pod of the cluster can reach them (a Dask client runs arbitrary code on the workers); keep "
        "security.networkPolicy true"
    ]
    # The operator labels a group's pods with the cluster they join: a policy on dask.org/cluster-name covers it.
    by_cluster = network_policy({"matchLabels": {"dask.org/cluster-name": "lsdb-cluster"}})
    assert stack_violations(g.POLICY_NETWORK, [*resources[:2], (g.NETWORK_POLICY, by_cluster)]) == []


def test_the_programs_network_policies_cover_its_worker_groups() -> None:
    from tests.program_helpers import run_with

    groups = {"highmem": {"replicas": 2, "memory": "8Gi"}}
    run = run_with(cluster={"name": "lsdb-cluster", "workerGroups": groups})
    assert len(run.of_type(g.DASK_WORKER_GROUP)) == 1
    assert stack_violations(g.POLICY_NETWORK, [(r.type, r.inputs) for r in run.resources]) == []


def tls_cluster() -> dict[str, Any]:
    manifest = guide_cluster()
    env = [
        {"name": "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION", "value": "True"},
        {"name": "DASK_DISTRIBUTED__COMM__TLS__CA_FILE", "value": "/etc/dask-tls/ca.crt"},
    ]
    scheduler(manifest)["args"] = ["dask", "scheduler", "--protocol", "tls"]
    scheduler(manifest)["env"] = env
    worker(manifest)["env"] = copy.deepcopy(env)
    return manifest


@pytest.mark.parametrize("stack", ["prod", "prod-eu", "production"])
def test_prod_stacks_require_tls(monkeypatch: pytest.MonkeyPatch, stack: str) -> None:
    monkeypatch.setenv("PULUMI_STACK", stack)
    assert violations(g.POLICY_TLS, g.DASK_CLUSTER, tls_cluster()) == []
    messages = violations(g.POLICY_TLS, g.DASK_CLUSTER, guide_cluster())
    assert messages == [
        f"DaskCluster lsdb-cluster: scheduler container 'scheduler' does not require TLS in stack {stack} "
        "(DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION=True and DASK_DISTRIBUTED__COMM__TLS__CA_FILE needed); "
        "set security.tls true (the default)",
        f"DaskCluster lsdb-cluster: the scheduler does not listen on tls:// in stack {stack}; "
        "set security.tls true (the default)",
        f"DaskCluster lsdb-cluster: worker container 'worker' does not require TLS in stack {stack} "
        "(DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION=True and DASK_DISTRIBUTED__COMM__TLS__CA_FILE needed); "
        "set security.tls true (the default)",
    ]
    plain_worker = tls_cluster()
    worker(plain_worker)["env"][0]["value"] = "False"
    assert len(violations(g.POLICY_TLS, g.DASK_CLUSTER, plain_worker)) == 1


@pytest.mark.parametrize("stack", ["dev", "staging", "preprod", ""])
def test_other_stacks_may_run_without_tls(monkeypatch: pytest.MonkeyPatch, stack: str) -> None:
    monkeypatch.setenv("PULUMI_STACK", stack)
    assert violations(g.POLICY_TLS, g.DASK_CLUSTER, guide_cluster()) == []


def test_the_program_with_tls_off_in_prod_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real program, prod stack file with security.tls false and networkPolicy false: both policies fire."""
    from components.dask_operator import operator_version
    from tools.mock_runtime import run_program

    config = stack_config("prod")
    config["lsdb-k8s:security"] = json.dumps({"tls": False, "networkPolicy": False})
    operator_stack = {"operatorNamespace": "dask-operator", "operatorVersion": operator_version()}
    run = run_program(config, stack="prod", stack_outputs={"organization/lsdb-k8s/platform": operator_stack})
    monkeypatch.setenv("PULUMI_STACK", "prod")
    (cluster,) = [r for r in run.resources if r.type == g.DASK_CLUSTER]
    assert len(violations(g.POLICY_TLS, cluster.type, cluster.inputs)) == 3
    assert len(stack_violations(g.POLICY_NETWORK, [(r.type, r.inputs) for r in run.resources])) == 2


# --- the pack as the Pulumi CLI runs it ----------------------------------------------------------


def test_pulumi_policy_yaml_and_requirements() -> None:
    project = yaml.safe_load((POLICY_DIR / "PulumiPolicy.yaml").read_text())
    assert project["runtime"] == {"name": "python", "options": {"toolchain": "pip", "virtualenv": "venv"}}
    assert project["version"]
    check = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "dev_policy_lock.py"), "--check"], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr
    pins = (POLICY_DIR / "requirements.txt").read_text()
    assert "pulumi-policy==" in pins and "\npulumi==" in pins


@pytest.fixture(scope="module")
def analyzer() -> Iterator[analyzer_pb2_grpc.AnalyzerStub]:
    """The pack started like pulumi-analyzer-policy-python does: `python -u -m pulumi.policy <engine> .`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_")}
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "pulumi.policy", "127.0.0.1:1", "."],
        cwd=POLICY_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = proc.stdout.readline().strip()
        if not port.isdigit():
            proc.kill()
            pytest.fail(f"policy pack did not print its port: {port!r}\n{proc.communicate()[1]}")
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(channel).result(timeout=30)
        yield analyzer_pb2_grpc.AnalyzerStub(channel)
        channel.close()
    finally:
        proc.kill()
        proc.wait(timeout=30)


def analyze(stub: analyzer_pb2_grpc.AnalyzerStub, resource_type: str, props: dict[str, Any]) -> list[Any]:
    properties = struct_pb2.Struct()
    properties.update(props)
    request = analyzer_pb2.AnalyzeRequest(
        type=resource_type,
        properties=properties,
        urn=f"urn:pulumi:ci::lsdb-k8s::{resource_type}::{props['metadata']['name']}",
        name=props["metadata"]["name"],
    )
    return list(stub.Analyze(request).diagnostics)


def test_pack_serves_its_policies_over_grpc(analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    info = analyzer.GetAnalyzerInfo(empty_pb2.Empty())
    assert info.name == "lsdb-k8s-guardrails"
    assert [p.name for p in info.policies] == [p.name for p in g.POLICIES]
    mandatory = analyzer_pb2.EnforcementLevel.Value("MANDATORY")
    assert {p.enforcementLevel for p in info.policies} == {mandatory}
    ceiling = next(p for p in info.policies if p.name == g.POLICY_AUTOSCALER)
    assert ceiling.configSchema.properties["maximum"]["default"] == 50


def test_pack_rejects_the_guides_latest_tag_and_public_service_over_grpc(
    analyzer: analyzer_pb2_grpc.AnalyzerStub,
) -> None:
    manifest = guide_cluster("registry.example.com/lsdb-dask:latest")
    manifest["spec"]["scheduler"]["service"]["type"] = "LoadBalancer"
    worker(manifest)["args"][-1] = "8"
    diagnostics = analyze(analyzer, g.DASK_CLUSTER, manifest)
    by_policy: dict[str, list[str]] = {}
    for d in diagnostics:
        by_policy.setdefault(d.policyName, []).append(d.message)
        assert d.enforcementLevel == analyzer_pb2.EnforcementLevel.Value("MANDATORY")
        assert d.policyPackName == "lsdb-k8s-guardrails"
    assert sorted(by_policy) == [g.POLICY_IMAGE, g.POLICY_PUBLIC, g.POLICY_THREADS]
    assert len(by_policy[g.POLICY_IMAGE]) == 2
    assert "runs --nthreads 8" in by_policy[g.POLICY_THREADS][0]
    assert analyze(analyzer, g.DASK_CLUSTER, guide_cluster()) == []


def test_pack_applies_policy_config_over_grpc(analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    assert analyze(analyzer, g.DASK_AUTOSCALER, autoscaler(maximum=24)) == []
    config = analyzer_pb2.PolicyConfig(enforcementLevel=analyzer_pb2.EnforcementLevel.Value("MANDATORY"))
    config.properties.update({"maximum": 12})
    analyzer.Configure(analyzer_pb2.ConfigureAnalyzerRequest(policyConfig={g.POLICY_AUTOSCALER: config}))
    try:
        # The SDK prefixes each message with the policy's description and a newline.
        messages = [d.message.split("\n", 1)[1] for d in analyze(analyzer, g.DASK_AUTOSCALER, autoscaler(maximum=24))]
        assert messages == [
            "DaskAutoscaler lsdb-cluster: spec.maximum 24 exceeds the ceiling of 12 workers "
            "(policy config dask-autoscaler-ceiling.maximum)"
        ]
    finally:
        analyzer.Configure(analyzer_pb2.ConfigureAnalyzerRequest())


# --- lsdb-notebook-hardened ----------------------------------------------------------------------------------


def notebook_objects() -> tuple[dict[str, Any], dict[str, Any]]:
    """The notebook's Deployment and Service as components/notebook.py builds them (image pinned by digest)."""
    from components.config import parse_stack_config
    from components.notebook import deployment_manifest, service_manifest
    from components.object_store_keys import PodStorage

    config = parse_stack_config({
        "namespace": "lsdb", "cluster": {"name": "lsdb-cluster"}, "image": {"repository": "ghcr.io/acme/lsdb-dask"},
        "verify": {"enabled": False}, "security": {"tls": False}, "notebook": {"enabled": True},
    })  # fmt: skip
    deployment = deployment_manifest(config, PodStorage(), None, None, IMAGE)
    return copy.deepcopy(deployment), copy.deepcopy(service_manifest(config))


def _pod(d: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = d["spec"]["template"]["spec"]
    return pod


NOTEBOOK_REGRESSIONS = {
    "image tag": lambda d: _pod(d)["containers"][0].update(image="registry.example.com/lsdb-dask:notebook"),
    "init image tag": lambda d: _pod(d)["initContainers"][0].update(image="registry.example.com/lsdb-dask"),
    "no memory limit": lambda d: _pod(d)["containers"][0]["resources"].pop("limits"),
    "writable root": lambda d: _pod(d)["containers"][0]["securityContext"].update(readOnlyRootFilesystem=False),
    "escalation": lambda d: _pod(d)["initContainers"][0]["securityContext"].pop("allowPrivilegeEscalation"),
    "root": lambda d: _pod(d)["securityContext"].pop("runAsNonRoot"),
    "API token": lambda d: _pod(d).pop("automountServiceAccountToken"),
}
HARDENING = "must set readOnlyRootFilesystem true and allowPrivilegeEscalation false"
NOTEBOOK_MESSAGES = {  # each regression's report, word for word (after `Deployment lsdb-cluster-notebook: `)
    "image tag": "container 'jupyterlab' image is not pinned as repository@sha256:<digest>",
    "init image tag": "container 'starter' image is not pinned as repository@sha256:<digest>",
    "no memory limit": "container 'jupyterlab' sets no resources.limits.memory",
    "writable root": f"container 'jupyterlab' {HARDENING}",
    "escalation": f"container 'starter' {HARDENING}",
    "root": "the pod does not set securityContext.runAsNonRoot true",
    "API token": "the pod mounts a Kubernetes API token (set automountServiceAccountToken false)",
}


def test_the_notebook_passes_its_guardrail_and_the_cluster_ones() -> None:
    deployment, service = notebook_objects()
    assert violations(g.POLICY_NOTEBOOK, g.DEPLOYMENT, deployment) == []
    assert violations(g.POLICY_NOTEBOOK, g.SERVICE, {**service, "spec": {**service["spec"], "type": None}}) == []
    for p in RESOURCE_POLICIES:
        assert violations(p.name, g.SERVICE, service) == []


@pytest.mark.parametrize("regression", list(NOTEBOOK_REGRESSIONS))
def test_each_notebook_regression_is_reported(regression: str) -> None:
    deployment, _ = notebook_objects()
    NOTEBOOK_REGRESSIONS[regression](deployment)
    (message,) = violations(g.POLICY_NOTEBOOK, g.DEPLOYMENT, deployment)
    assert message == f"Deployment lsdb-cluster-notebook: {NOTEBOOK_MESSAGES[regression]}"
    # The same pod under another component's labels is not the notebook: not this guardrail's business.
    deployment["metadata"]["labels"]["app.kubernetes.io/component"] = "something-else"
    assert violations(g.POLICY_NOTEBOOK, g.DEPLOYMENT, deployment) == []


@pytest.mark.parametrize(
    "change", [{"type": "LoadBalancer"}, {"type": "NodePort"}, {"externalIPs": ["203.0.113.7"]}], ids=str
)
def test_a_notebook_service_reachable_from_outside_is_reported(change: dict[str, Any]) -> None:
    _, service = notebook_objects()
    service["spec"] |= change
    (message,) = violations(g.POLICY_NOTEBOOK, g.SERVICE, service)
    assert message == (
        "Service lsdb-cluster-notebook: exposes the notebook (a token away from running code in the cluster) outside "
        "the cluster; keep it ClusterIP and use `kubectl port-forward`"
    )
    service["spec"]["selector"] = {"app": "other"}
    assert violations(g.POLICY_NOTEBOOK, g.SERVICE, service) == []
