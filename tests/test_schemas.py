"""Every Kubernetes object the program emits, validated against real schemas.

Core objects: kubernetes-validate in strict mode (unknown fields are errors) for Kubernetes 1.25, the
guide's minimum, and the newest version it knows. DaskCluster/DaskAutoscaler/DaskWorkerGroup: the
openAPIV3Schema of the CRDs shipped in the pinned dask-kubernetes package. ServiceMonitor/PodMonitor: the
upstream prometheus-operator CRDs in tests/fixtures/prometheus-operator-crds (see its README).
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from components.lock import PROJECT_DIR
from components.operator_chart import crd_manifests
from tests.program_helpers import OPERATOR_INSTALLED, kubernetes_objects, live_objects, run_with, shipped_stack
from tests.support import schema_check

VERSIONS = ["1.25.0", latest_version()]
PROMETHEUS_CRDS = Path(__file__).parent / "fixtures" / "prometheus-operator-crds"
DASK_API = "kubernetes.dask.org/v1"
MONITORING_API = "monitoring.coreos.com/v1"
PRODUCTION = {
    "name": "lsdb-prod",
    "workers": {"spot": "azure", "placement": {"priorityClassName": "dask-workers"}},
    "scheduler": {
        "placement": {
            "nodeSelector": {"pool": "system"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "dask", "effect": "NoSchedule"}],
        }
    },
    "workerGroups": {
        "highmem": {"replicas": 2, "memory": "32Gi", "cpuLimit": "4", "spot": "gcp"},
        "gpu": {"replicas": 1, "placement": {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]}},
    },
}


def _variants() -> dict[str, Any]:
    return {
        "dev": lambda: shipped_stack("dev"),
        "staging": lambda: shipped_stack("staging"),
        "prod": lambda: shipped_stack("prod"),
        "nfs+cpuLimit": lambda: run_with(
            storage={"kind": "nfs", "nfs": {"server": "10.0.0.5", "path": "/exports/hats"}},
            cluster={"name": "lsdb-nfs", "size": "xlarge", "workers": {"cpuLimit": "4"}},
        ),
        "objectStore+registry": lambda: run_with(
            ("storage", "image"),
            storage={
                "kind": "objectStore",
                "objectStore": {"url": "abfs://cat/x", "credentials": {"accountName": "a", "accountKey": "k"}},
            },
            image={
                "repository": "registry.example.com/lsdb-dask",
                "registry": {"server": "registry.example.com", "username": "u", "password": "pw"},
            },
        ),
        "azure-identity": lambda: run_with(
            storage={
                "kind": "objectStore",
                "objectStore": {
                    "url": "abfs://c@a.dfs.core.windows.net/x",
                    "identity": {"azure": {"clientId": "1b2c3d4e-0000-4000-8000-123456789abc"}},
                },
            },
        ),
        "gcs+package-chart": lambda: run_with(
            ("storage",),
            storage={
                "kind": "objectStore",
                "objectStore": {"url": "gs://b/c", "credentials": {"serviceAccountJson": "{}"}},
            },
            operator={"chartSource": "package"},
        ),
        "catalogs": lambda: run_with(
            ("catalogs",),
            catalogs={"gaia": {"source": "s3://b/gaia", "credentials": {"accessKeyId": "a", "secretAccessKey": "k"}}},
            verify={"enabled": True},
        ),
        "production+own-monitors": lambda: run_with(
            cluster=PRODUCTION,
            operator={"fromStack": "organization/lsdb-k8s/platform"},
            monitoring={"enabled": True, "labels": {"release": "kps"}},
        ),
        "production+chart-monitors": lambda: run_with(
            cluster={**PRODUCTION, "scheduler": {"disruptionBudget": False}},
            monitoring={"enabled": True},
            operator=OPERATOR_INSTALLED,
        ),
    }


@pytest.fixture(scope="module", params=list(_variants()))
def objects(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    run = _variants()[request.param]()
    objs = kubernetes_objects(run)
    assert objs, "the program emitted no Kubernetes objects"
    # Patches are validated as the documents the provider applies, and the objects they patch as they end up.
    patched = [o for o in live_objects(run) if o not in objs]
    assert [o["kind"] for o in patched] == ["Service"], "the stable Service's selector patch"
    return objs + patched


@functools.cache
def prometheus_crds() -> tuple[dict[str, Any], ...]:
    return tuple(yaml.safe_load(p.read_text()) for p in sorted(PROMETHEUS_CRDS.glob("*.yaml")))


@functools.cache
def crd_schema(kind: str) -> dict[str, Any]:
    """The storage version's schema of `kind`'s CRD, read once per test process: shared, so read it, never change it."""
    crd = next(c for c in [*crd_manifests(), *prometheus_crds()] if c["spec"]["names"]["kind"] == kind)
    version = next(v for v in crd["spec"]["versions"] if v["storage"])
    return version["schema"]["openAPIV3Schema"]


def strict(schema: Any) -> Any:
    """OpenAPI structural schema with unknown fields rejected, as the API server prunes/rejects them."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        closed = "additionalProperties" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields")
        if schema.get("type") == "object" and "properties" in schema and closed:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


def validate_custom(obj: dict[str, Any]) -> None:
    # apiVersion, kind and metadata are checked by the API server itself; the CRD schema governs spec.
    schema = crd_schema(obj["kind"])
    assert "spec" in schema.get("required", ["spec"])
    schema_check.validate(obj["spec"], strict(schema["properties"]["spec"]))


@pytest.mark.parametrize("version", VERSIONS)
def test_core_objects_are_valid_in_strict_mode(objects: list[dict[str, Any]], version: str) -> None:
    core = [o for o in objects if o["apiVersion"] not in (DASK_API, MONITORING_API)]
    assert {o["kind"] for o in core} >= {"Namespace"}
    for obj in core:
        kubernetes_validate.validate(obj, version, strict=True)


def test_dask_resources_match_the_pinned_crds(objects: list[dict[str, Any]]) -> None:
    dask = [o for o in objects if o["apiVersion"] == DASK_API]
    assert "DaskCluster" in {o["kind"] for o in dask}
    for obj in dask:
        validate_custom(obj)


def test_monitors_match_the_prometheus_operator_crds(objects: list[dict[str, Any]]) -> None:
    for obj in [o for o in objects if o["apiVersion"] == MONITORING_API]:
        assert obj["kind"] in ("ServiceMonitor", "PodMonitor")
        validate_custom(obj)


def test_production_variants_emit_every_new_kind() -> None:
    kinds = {o["kind"] for o in kubernetes_objects(_variants()["production+own-monitors"]())}
    assert kinds >= {"DaskWorkerGroup", "PodDisruptionBudget", "ServiceMonitor", "PodMonitor", "ConfigMap"}
    chart = {o["kind"] for o in kubernetes_objects(_variants()["production+chart-monitors"]())}
    assert "PodDisruptionBudget" not in chart and "ServiceMonitor" not in chart and "ConfigMap" in chart


def test_monitor_schema_checks_can_fail() -> None:
    run = _variants()["production+own-monitors"]()
    monitor = next(o for o in kubernetes_objects(run) if o["kind"] == "PodMonitor")
    broken = copy.deepcopy(monitor)
    broken["spec"]["podMetricsEndpoints"][0]["interval"] = "15 seconds"  # not a Prometheus duration
    with pytest.raises(jsonschema.ValidationError):
        validate_custom(broken)
    typo = copy.deepcopy(monitor)
    typo["spec"]["podMetricEndpoints"] = typo["spec"].pop("podMetricsEndpoints")
    with pytest.raises(jsonschema.ValidationError):
        validate_custom(typo)


def test_schema_checks_can_fail() -> None:
    cluster = next(o for o in kubernetes_objects(run_with()) if o["kind"] == "DaskCluster")
    broken = copy.deepcopy(cluster)
    broken["spec"]["worker"]["replicas"] = "two"
    with pytest.raises(jsonschema.ValidationError):
        validate_custom(broken)
    typo = copy.deepcopy(cluster)
    typo["spec"]["worker"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(jsonschema.ValidationError):
        validate_custom(typo)
    pvc = next(o for o in kubernetes_objects(run_with()) if o["kind"] == "PersistentVolumeClaim")
    pvc["spec"]["accessMode"] = "ReadWriteMany"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pvc, VERSIONS[-1], strict=True)


RBAC_DIR = PROJECT_DIR / "deploy" / "rbac"
RBAC_FILES = ("deployer.yaml", "previewer.yaml", "namespace-bindings.yaml")


def rbac_docs() -> list[dict[str, Any]]:
    return [d for name in RBAC_FILES for d in yaml.safe_load_all((RBAC_DIR / name).read_text()) if d]


def role_rules(prefix: str) -> dict[str, list[dict[str, Any]]]:
    return {d["metadata"]["name"]: d["rules"] for d in rbac_docs() if d["kind"] == "ClusterRole" and
            d["metadata"]["name"].startswith(prefix)}  # fmt: skip


@pytest.mark.parametrize("version", VERSIONS)
def test_rbac_manifests_are_valid(version: str) -> None:
    docs = rbac_docs()
    for obj in docs:
        kubernetes_validate.validate(obj, version, strict=True)
    roles = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ClusterRole"}
    bound = {d["roleRef"]["name"] for d in docs if d["kind"] in ("RoleBinding", "ClusterRoleBinding")}
    assert bound == set(roles), "every role is bound"
    # A RoleBinding needs its namespace to exist, and the program creates the namespaces: the files applied
    # once per cluster hold none, so `kubectl apply` of them never fails on a missing namespace.
    for name in ("deployer.yaml", "previewer.yaml"):
        kinds = {d["kind"] for d in yaml.safe_load_all((RBAC_DIR / name).read_text()) if d}
        assert "RoleBinding" not in kinds, name

    def verbs(role: str, resource: str) -> set[str]:
        return {v for r in roles[role]["rules"] if resource in r["resources"] for v in r["verbs"]}

    # What the permission table says the verification needs, in the cluster namespace.
    ns = "lsdb-k8s-deployer-namespace"
    assert {"get", "list"} <= verbs(ns, "services") and {"get", "list"} <= verbs(ns, "pods")
    assert verbs(ns, "pods/log") == {"get"} and verbs(ns, "pods/portforward") == {"get", "create"}
    assert "delete" in verbs(ns, "daskclusters") and "delete" in verbs(ns, "daskautoscalers")
    assert "create" in verbs("lsdb-k8s-deployer-cluster", "customresourcedefinitions")
    # The previewer writes nothing for real: a preview's writes are dry runs, so no verb beyond the dry run's.
    for name, rules in role_rules("lsdb-k8s-previewer-").items():
        for rule in rules:
            assert set(rule["verbs"]) <= PREVIEWER_VERBS, (name, rule)
            assert not {"pods/log", "pods/portforward"} & set(rule["resources"]), (name, rule)


CLUSTER_SCOPED = {"Namespace", "PersistentVolume", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}
DEPLOYER_VERBS = {"get", "list", "watch", "create", "update", "patch", "delete"}
# Refresh reads; a server-side dry-run apply is a patch, and a create when the object does not exist yet.
PREVIEWER_VERBS = {"get", "list", "watch", "create", "patch"}


def _plural(kind: str) -> str:
    lower = kind.lower()
    return lower[:-1] + "ies" if lower.endswith("y") else lower + "s"


@pytest.mark.parametrize(("who", "needed"), [("deployer", DEPLOYER_VERBS), ("previewer", PREVIEWER_VERBS)])
def test_the_rbac_grants_every_object_the_program_registers(
    objects: list[dict[str, Any]], who: str, needed: set[str]
) -> None:
    """Each object of each variant (the committed stacks, monitoring, worker groups, identities, registries) is
    granted to the deployer (up, destroy) and the previewer (preview, drift) in the role that covers where it
    lives: cluster-scoped, the operator's namespace, or the namespace the stack deploys into (bind that role in
    `monitoring.dashboardNamespace` too, if set)."""
    roles = role_rules(f"lsdb-k8s-{who}-")
    missing = set()
    for obj in objects:
        group = obj["apiVersion"].rpartition("/")[0]
        namespace = obj["metadata"].get("namespace")
        role = (
            f"lsdb-k8s-{who}-cluster"
            if obj["kind"] in CLUSTER_SCOPED
            else f"lsdb-k8s-{who}-operator"
            if namespace == "dask-operator"
            else f"lsdb-k8s-{who}-namespace"
        )
        granted = {
            verb
            for rule in roles[role]
            if group in rule["apiGroups"] and _plural(obj["kind"]) in rule["resources"]
            for verb in rule["verbs"]
        }
        if not granted >= needed:
            missing.add((role, group, _plural(obj["kind"])))
    assert sorted(missing) == []
