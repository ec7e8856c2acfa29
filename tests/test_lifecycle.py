"""The deployment's lifecycle under the mock runtime: blue/green names, the stable Service, the order of
`pulumi up` and `pulumi destroy` as the registered dependencies give it, CRDs that survive a destroy, Pod Security."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.constants import (
    POD_SECURITY_LABELS,
    derived_names,
    live_cluster_name,
    max_cluster_name_length,
    scheduler_service_name,
)
from components.dask_operator import OPERATOR_CONTAINER_SECURITY_CONTEXT, OPERATOR_POD_SECURITY_CONTEXT
from components.lock import DOCKERFILE_PATH, PROJECT_DIR, base_image
from components.operator_chart import packaged_chart_dir
from tests.program_helpers import OPERATOR_INSTALLED, live_objects, manifest, run_with, shipped_stack
from tools.mock_runtime import ProgramRun, Registered
from tools.relock import pin_base_image

DASKCLUSTER = "kubernetes:kubernetes.dask.org/v1:DaskCluster"
AUTOSCALER = "kubernetes:kubernetes.dask.org/v1:DaskAutoscaler"
CRD = "kubernetes:apiextensions.k8s.io/v1:CustomResourceDefinition"
RELEASE = "kubernetes:helm.sh/v3:Release"
SERVICE = "kubernetes:core/v1:Service"
SELECTOR = "kubernetes:core/v1:ServicePatch"
NAMESPACE = "kubernetes:core/v1:Namespace"
VERIFICATION = "pulumi-python:dynamic/lsdb:Verification"
REF = "ghcr.io/acme/lsdb-dask@sha256:"
VERIFY = {"catalogPath": "/data/x"}


def run(cluster: dict[str, Any] | None = None, image_ref: str = REF + "1" * 64, **sections: Any) -> ProgramRun:
    return run_with(
        cluster={"name": "lsdb-cluster", **(cluster or {})},
        image={"ref": image_ref},
        verify=sections.pop("verify", VERIFY),
        **sections,
    )


def live_name(r: ProgramRun) -> str:
    return str(manifest(r.one(DASKCLUSTER))["metadata"]["name"])


def stable_service(r: ProgramRun) -> dict[str, Any]:
    """The stable Service as it lives once `pulumi up` is done: the Service with its selector patch applied."""
    (service,) = [o for o in live_objects(r) if o["kind"] == "Service"]
    return service


@pytest.fixture(scope="module")
def v1() -> ProgramRun:
    return run(operator=OPERATOR_INSTALLED)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"image_ref": REF + "2" * 64}, id="new image ref"),
        pytest.param({"cluster": {"workers": {"memory": "5Gi"}}}, id="new worker memory"),
        pytest.param({"cluster": {"scheduler": {"memory": "8Gi"}}}, id="new scheduler memory"),
        pytest.param({"storage": {"kind": "pvc", "size": "10Gi", "mountPath": "/catalogs"}}, id="new volume mount"),
    ],
)
def test_a_spec_change_is_a_new_cluster_and_retargets_the_stable_service(v1: ProgramRun, change: dict) -> None:
    verify = {"catalogPath": "/catalogs/x"} if "storage" in change else VERIFY
    v2 = run(verify=verify, **change)
    old, new = live_name(v1), live_name(v2)
    assert old != new and old.startswith("lsdb-cluster-") and new.startswith("lsdb-cluster-")
    # New Pulumi resources (their logical names carry the digest): created beside the old ones, which are deleted
    # only at the end of a successful update, never replaced in place.
    assert v1.one(DASKCLUSTER).urn != v2.one(DASKCLUSTER).urn
    assert v1.one(AUTOSCALER).urn != v2.one(AUTOSCALER).urn
    assert v1.one(VERIFICATION).urn != v2.one(VERIFICATION).urn  # a new cluster is verified anew (create runs it)
    assert manifest(v2.one(AUTOSCALER))["spec"]["cluster"] == new
    # The stable Service is the same object (same logical name, same name), its selector moved to the new cluster.
    s1, s2 = stable_service(v1), stable_service(v2)
    assert v1.one(SERVICE).urn == v2.one(SERVICE).urn
    assert s1["metadata"]["name"] == s2["metadata"]["name"] == "lsdb-cluster-scheduler"
    assert s1["spec"]["selector"] == {"dask.org/cluster-name": old, "dask.org/component": "scheduler"}
    assert s2["spec"]["selector"] == {"dask.org/cluster-name": new, "dask.org/component": "scheduler"}
    assert v1.outputs["schedulerAddress"] == v2.outputs["schedulerAddress"]
    assert (v1.outputs["clusterName"], v2.outputs["clusterName"]) == (old, new)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"workers": {"replicas": 5}, "autoscaler": {"enabled": False}}, id="replicas only"),
        pytest.param({"autoscaler": {"minimum": 1, "maximum": 9}}, id="autoscaler range only"),
        pytest.param({"idleTimeoutSeconds": 1800}, id="idle timeout only"),
    ],
)
def test_what_the_operator_reconciles_updates_the_live_cluster_in_place(change: dict) -> None:
    autoscaler = change.get("autoscaler", {})
    before = run({"autoscaler": autoscaler} if autoscaler.get("enabled") is False else None)
    after = run(change)
    assert live_name(before) == live_name(after)
    assert before.one(DASKCLUSTER).urn == after.one(DASKCLUSTER).urn
    assert stable_service(before) == stable_service(after)
    # The verification of the same cluster is the same resource, re-run through its spec hash (an update).
    assert before.one(VERIFICATION).urn == after.one(VERIFICATION).urn
    assert before.one(VERIFICATION).inputs["clusterSpecHash"] != after.one(VERIFICATION).inputs["clusterSpecHash"]
    spec = manifest(after.one(DASKCLUSTER))["spec"]
    if "workers" in change:
        assert spec["worker"]["replicas"] == 5
    if "idleTimeoutSeconds" in change:
        assert spec["idleTimeout"] == 1800


def test_the_verification_follows_the_live_objects_uid(v1: ProgramRun) -> None:
    # A cluster the operator deleted (idleTimeout) and `pulumi up --refresh` recreated has the same name and spec
    # but a new uid: the uid is a re-run input of its verification (the provider's diff test shows the re-run).
    import uuid

    uid = v1.one(VERIFICATION).inputs["clusterUid"]
    assert uuid.UUID(uid), "the DaskCluster's metadata.uid, which the mock engine assigns as the API server does"
    assert run(image_ref=REF + "2" * 64).one(VERIFICATION).inputs["clusterUid"] != uid  # another object


def rendered_cluster_name(checkout: Path) -> str:
    """The DaskCluster of the dev stack as `python -m tools.render` evaluates it in `checkout`."""
    out = checkout / "render"
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(checkout), "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "tools.render", "--stack", "dev", "--out", str(out)],
        cwd=checkout, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (name,) = [m[1] for p in out.iterdir() if (m := re.fullmatch(r"\d+-daskcluster-(.+)\.yaml", p.name))]
    return name


def test_the_cluster_name_follows_the_image_content_not_the_run_or_the_checkout(tmp_path: Path) -> None:
    # With a build, the digest is known only after the push: the name derives from the content tag (the lock and
    # the Dockerfile, whose base image is pinned by digest), the spec carries the pushed digest.
    r = shipped_stack("dev")
    spec = manifest(r.one(DASKCLUSTER))["spec"]
    assert spec["scheduler"]["spec"]["containers"][0]["image"] == r.outputs["imageRef"]
    assert "@sha256:" in r.outputs["imageRef"]
    # Another evaluation (another CI run) in another checkout of the same commit: the same cluster, no blue/green.
    checkout = tmp_path / "elsewhere"
    shutil.copytree(PROJECT_DIR, checkout, ignore=shutil.ignore_patterns(".*", "venv", "__pycache__", "tests"))
    assert rendered_cluster_name(checkout) == live_name(r)
    # Upstream rebuilt the base image's tag (a security fix) and `make relock` re-pinned its digest: a new cluster
    # runs it (the operator would ignore a new image in the live cluster's spec).
    dockerfile = checkout / DOCKERFILE_PATH.relative_to(PROJECT_DIR)
    python = base_image().python_version
    dockerfile.write_text(pin_base_image(dockerfile.read_text(), python, "sha256:" + "0" * 64))
    assert rendered_cluster_name(checkout) not in (live_name(r), "")


def _requires(r: ProgramRun, a: Registered, b: Registered) -> bool:
    """True when `a` waits for `b` (directly or through other resources): `pulumi destroy` deletes `a` first."""
    seen, todo = set(), [a.urn]
    while todo:
        urn = todo.pop()
        for dep in r.by_urn(urn).dependencies:
            if dep == b.urn:
                return True
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return False


def test_order_on_up_and_destroy(v1: ProgramRun) -> None:
    cluster, scaler, verification = v1.one(DASKCLUSTER), v1.one(AUTOSCALER), v1.one(VERIFICATION)
    service, selector, release = v1.one(SERVICE), v1.one(SELECTOR), v1.one(RELEASE)
    # up: operator and stable Service (no selector) -> cluster and autoscaler -> verification of the new cluster ->
    # the selector patch points the stable Service at it.
    assert _requires(v1, cluster, release) and all(_requires(v1, cluster, crd) for crd in v1.of_type(CRD))
    assert _requires(v1, cluster, service) and _requires(v1, scaler, service)
    assert _requires(v1, scaler, cluster)
    assert {cluster.urn, scaler.urn} <= set(verification.dependencies)
    assert verification.urn in selector.dependencies and _requires(v1, selector, service)
    # destroy runs the reverse: the selector patch and the verification go first, then the autoscaler and the
    # cluster (while the operator still runs their finalizers), then the release; the CRDs stay (retainOnDelete).
    assert not _requires(v1, release, cluster) and not _requires(v1, cluster, selector)
    ns = next(r for r in v1.of_type(NAMESPACE) if r.name == "namespace")
    assert _requires(v1, service, ns) and _requires(v1, cluster, ns)


def test_the_stable_service_is_created_first_and_deleted_last(v1: ProgramRun) -> None:
    service, selector = v1.one(SERVICE), v1.one(SELECTOR)
    # Every DaskCluster and DaskAutoscaler (and so every verification) waits for the stable Service: `pulumi destroy`
    # deletes all of them before it, and nothing but the namespace and the provider outlives it.
    dependents = [r for r in v1.resources if r.urn != service.urn and _requires(v1, r, service)]
    assert {r.type for r in dependents} >= {DASKCLUSTER, AUTOSCALER, VERIFICATION, SELECTOR}
    assert not _requires(v1, service, v1.one(DASKCLUSTER)) and not _requires(v1, service, v1.one(VERIFICATION))
    assert selector.inputs["metadata"]["name"] == manifest(service)["metadata"]["name"] == "lsdb-cluster-scheduler"
    # The Service alone selects nothing (routes nothing before the first verification passes, nor after the
    # selector patch is deleted); the patch owns the whole selector (an atomic map under Server-Side Apply) under
    # a fixed field manager, forcing conflicts.
    assert "selector" not in manifest(service)["spec"]
    patch = manifest(selector)
    assert patch["spec"] == {"selector": {"dask.org/cluster-name": live_name(v1), "dask.org/component": "scheduler"}}
    annotations = patch["metadata"]["annotations"]
    assert annotations == {"pulumi.com/patchFieldManager": "lsdb-k8s-stable-endpoint", "pulumi.com/patchForce": "true"}


def test_an_upgrade_updates_the_selector_patch_in_place_and_keeps_the_service(v1: ProgramRun) -> None:
    v2 = run(image_ref=REF + "2" * 64)
    # Same logical resources (updates, never replaced): the Service keeps its ClusterIP, the patch re-applies.
    assert v1.one(SERVICE).urn == v2.one(SERVICE).urn and v1.one(SELECTOR).urn == v2.one(SELECTOR).urn
    assert manifest(v1.one(SERVICE)) == manifest(v2.one(SERVICE))
    # ... and the patch waits for the NEW cluster's verification, never for the old one's.
    assert v2.one(VERIFICATION).urn in v2.one(SELECTOR).dependencies
    assert v1.one(VERIFICATION).urn not in v2.one(SELECTOR).dependencies


def test_without_verification_the_stable_service_follows_the_cluster_through_the_gate() -> None:
    # issue 20 defect 3: not the DaskCluster alone (ready for Pulumi at once), its gate (connect and workers stages).
    r = run(verify={"enabled": False})
    gate = r.one(VERIFICATION)
    assert gate.inputs["stages"] == "gate"
    selector = r.one(SELECTOR)
    assert gate.urn in selector.dependencies
    assert _requires(r, selector, r.one(DASKCLUSTER)) and _requires(r, selector, r.one(AUTOSCALER))
    assert _requires(r, r.one(DASKCLUSTER), r.one(SERVICE))


def test_crds_survive_destroy(v1: ProgramRun) -> None:
    crds = v1.of_type(CRD)
    assert len(crds) == 4
    assert all(c.options.get("retainOnDelete") is True for c in crds)
    # Nothing else is retained: a destroy really removes the stack's own objects.
    assert [r.name for r in v1.resources if r.options.get("retainOnDelete") and r.type != CRD] == []


def test_retained_crds_are_adopted_by_the_next_stack_that_installs_the_operator() -> None:
    # After a destroy the CRDs are still in the cluster; pulumi-kubernetes refuses to create an existing object
    # unless its provider upserts. Only the CRDs use that provider: for anything not retained, an upsert followed
    # by a delete (a rename) would delete the object.
    r = run(kubeContext="kind-lsdb-dev", operator=OPERATOR_INSTALLED)
    (crd_provider,) = [p for p in r.of_type("pulumi:providers:kubernetes") if p.name.endswith("crd-provider")]
    assert crd_provider.inputs["upsertExistingObjects"] in (True, "true")
    assert crd_provider.inputs["context"] == "kind-lsdb-dev"  # the stack's cluster, like every other object
    adopted = {x.name for x in r.resources if x.provider.startswith(crd_provider.urn + "::")}
    assert adopted == {c.name for c in r.of_type(CRD)} and len(adopted) == 4


def test_namespaces_enforce_the_restricted_pod_security_standard(v1: ProgramRun) -> None:
    namespaces = [manifest(r) for r in v1.of_type(NAMESPACE)]
    assert {n["metadata"]["name"] for n in namespaces} == {"lsdb-test", "dask-operator"}
    for ns in namespaces:
        labels = ns["metadata"]["labels"]
        assert {k: labels[k] for k in POD_SECURITY_LABELS} == {
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/audit": "restricted",
            "pod-security.kubernetes.io/warn": "restricted",
        }


def test_operator_release_values_are_restricted_under_the_charts_own_keys(v1: ProgramRun) -> None:
    chart_values = yaml.safe_load((packaged_chart_dir() / "values.yaml").read_text())
    values = v1.one(RELEASE).inputs["values"]
    for key in ("podSecurityContext", "securityContext"):
        assert key in chart_values, f"the pinned chart has no {key} value"
    deployment = (packaged_chart_dir() / "templates" / "deployment.yaml").read_text()
    assert ".Values.podSecurityContext" in deployment and ".Values.securityContext" in deployment
    assert values["podSecurityContext"] == OPERATOR_POD_SECURITY_CONTEXT
    assert values["securityContext"] == OPERATOR_CONTAINER_SECURITY_CONTEXT
    pod, container = values["podSecurityContext"], values["securityContext"]
    # The restricted profile: non-root, seccomp RuntimeDefault, no privilege escalation, every capability dropped.
    assert pod["runAsNonRoot"] is True and pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["allowPrivilegeEscalation"] is False and container["capabilities"] == {"drop": ["ALL"]}
    assert container["runAsNonRoot"] is True and container["seccompProfile"] == {"type": "RuntimeDefault"}


def test_naming_functions_others_rely_on() -> None:
    live = live_cluster_name("lsdb", "0123abcd")
    assert live == "lsdb-0123abcd"
    assert scheduler_service_name("lsdb") == "lsdb-scheduler"  # the stable endpoint
    assert scheduler_service_name(live) == "lsdb-0123abcd-scheduler"  # the operator's Service of the live cluster
    longest = max(derived_names("a" * max_cluster_name_length()).values(), key=len)
    assert len(longest) == 63 and re.fullmatch(r"a+-f{8}-default-worker-f{10}", longest)


def test_names_derived_from_the_pinned_operator_fit() -> None:
    from dask_kubernetes.operator.controller.controller import build_worker_deployment_spec

    name = "a" * max_cluster_name_length()
    live = live_cluster_name(name, "f" * 8)
    worker = build_worker_deployment_spec(f"{live}-default", "ns", live, "f" * 10, {"containers": []}, {}, {})
    assert worker["metadata"]["name"] == derived_names(name)["worker Deployment"]
    assert len(worker["metadata"]["name"]) == 63
