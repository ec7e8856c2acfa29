"""Placement under the mock runtime: what each spot provider, the default spread and user placement put in the pods."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import kubernetes_validate
import pytest

from components.cluster_config import PlacementConfig
from components.lock import PROJECT_DIR
from components.placement import (
    SPOT,
    crd_dropped,
    crd_pod_spec,
    off_spot_affinity,
    pod_placement,
    spread_across_nodes,
)
from tests.program_helpers import dask_cluster, manifest, run_with
from tests.test_schemas import crd_schema

WORKER_GROUP = "kubernetes:kubernetes.dask.org/v1:DaskWorkerGroup"

# The providers' documented spot node labels and taints (see the links in components/placement.py).
EXPECTED_SPOT = {
    "aws": ({"eks.amazonaws.com/capacityType": "SPOT"}, []),
    "gcp": (
        {"cloud.google.com/gke-spot": "true"},
        [{"key": "cloud.google.com/gke-spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"}],
    ),
    "azure": (
        {"kubernetes.azure.com/scalesetpriority": "spot"},
        [
            {
                "key": "kubernetes.azure.com/scalesetpriority",
                "operator": "Equal",
                "value": "spot",
                "effect": "NoSchedule",
            }
        ],
    ),
}


def pods(cluster: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    return cluster["spec"]["scheduler"]["spec"], cluster["spec"]["worker"]["spec"]


@pytest.mark.parametrize("provider", ["aws", "gcp", "azure"])
def test_spot_workers_and_an_on_demand_scheduler(provider: str) -> None:
    scheduler, worker = pods(dask_cluster(run_with(cluster={"name": "c", "workers": {"spot": provider}})))
    labels, tolerations = EXPECTED_SPOT[provider]
    assert worker["nodeSelector"] == labels
    assert worker.get("tolerations", []) == tolerations
    (label, value), = labels.items()  # fmt: skip
    required = scheduler["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert required == {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": label, "operator": "NotIn", "values": [value]}]}]
    }
    assert "nodeSelector" not in scheduler and "tolerations" not in scheduler
    print(f"{provider}: workers nodeSelector={worker['nodeSelector']} tolerations={worker.get('tolerations', [])}")


def test_no_spot_and_no_placement_leaves_the_scheduler_unconstrained() -> None:
    scheduler, worker = pods(dask_cluster(run_with()))
    assert not {"nodeSelector", "tolerations", "affinity", "priorityClassName", "topologySpreadConstraints"} & set(
        scheduler
    )
    assert not {"nodeSelector", "tolerations", "affinity"} & set(worker)


def test_workers_spread_over_nodes_by_default_with_labels_the_operator_copies() -> None:
    cluster = dask_cluster(run_with(cluster={"name": "lsdb-x"}))
    _, worker = pods(cluster)
    (constraint,) = worker["topologySpreadConstraints"]
    assert constraint["topologyKey"] == "kubernetes.io/hostname" and constraint["whenUnsatisfiable"] == "ScheduleAnyway"
    selector = constraint["labelSelector"]["matchLabels"]
    # Every selected label is one the worker pods carry: the DaskCluster's metadata label and the group label.
    assert selector["app.kubernetes.io/name"] == cluster["metadata"]["labels"]["app.kubernetes.io/name"] == "lsdb-x"
    assert selector["lsdb-k8s/worker-group"] == cluster["spec"]["worker"]["metadata"]["labels"]["lsdb-k8s/worker-group"]
    assert selector["dask.org/component"] == "worker"


def test_user_placement_reaches_the_pods_and_can_turn_the_spread_off() -> None:
    affinity = {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 10, "podAffinityTerm": {"topologyKey": "topology.kubernetes.io/zone",
                                            "labelSelector": {"matchLabels": {"app": "other"}}}}
    ]}}  # fmt: skip
    run = run_with(
        cluster={
            "name": "c",
            "scheduler": {"placement": {"nodeSelector": {"pool": "system"}, "priorityClassName": "dask-critical"}},
            "workers": {
                "spot": "azure",
                "placement": {
                    "nodeSelector": {"pool": "workers"},
                    "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
                    "affinity": affinity,
                    "topologySpreadConstraints": [],
                },
            },
        }
    )
    scheduler, worker = pods(dask_cluster(run))
    assert scheduler["nodeSelector"] == {"pool": "system"} and scheduler["priorityClassName"] == "dask-critical"
    assert worker["nodeSelector"] == {"kubernetes.azure.com/scalesetpriority": "spot", "pool": "workers"}
    assert [t["key"] for t in worker["tolerations"]] == ["kubernetes.azure.com/scalesetpriority", "gpu"]
    assert worker["affinity"] == affinity
    assert "topologySpreadConstraints" not in worker


def test_scheduler_affinity_of_the_user_is_anded_with_the_spot_exclusion() -> None:
    user = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["a"]}]},
        {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["b"]}]},
    ]}}}  # fmt: skip
    out = pod_placement({"affinity": user}, avoid_spot=["gcp", "aws"])
    terms = out["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    exclusion = off_spot_affinity(["aws", "gcp"])["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    for term, pool in zip(terms, ["a", "b"], strict=True):  # terms are ORed: each one must exclude spot nodes
        assert term["matchExpressions"][0]["values"] == [pool]
        assert term["matchExpressions"][1:] == exclusion["nodeSelectorTerms"][0]["matchExpressions"]
    assert user["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0] == {
        "matchExpressions": [{"key": "pool", "operator": "In", "values": ["a"]}]
    }  # the config is not modified


def test_a_spot_worker_group_also_keeps_the_scheduler_off_its_nodes() -> None:
    run = run_with(cluster={"name": "c", "workerGroups": {"cheap": {"spot": "gcp", "replicas": 3}}})
    scheduler, worker = pods(dask_cluster(run))
    assert "nodeSelector" not in worker  # the default group stays where it was
    group = manifest(run.one(WORKER_GROUP))["spec"]["worker"]["spec"]
    assert group["nodeSelector"] == {"cloud.google.com/gke-spot": "true"}
    expressions = scheduler["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ][0]["matchExpressions"]
    assert expressions == [{"key": "cloud.google.com/gke-spot", "operator": "NotIn", "values": ["true"]}]


@pytest.mark.parametrize("provider", sorted(SPOT))
def test_generated_placement_is_a_valid_pod_spec(provider: str) -> None:
    fields = pod_placement({}, spot=provider, spread={"a": "b"}) | pod_placement({}, avoid_spot=[provider])
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"containers": [{"name": "c", "image": "i"}], **fields}}  # fmt: skip
    kubernetes_validate.validate(pod, "1.25.0", strict=True)
    assert spread_across_nodes({"a": "b"})[0]["labelSelector"] == {"matchLabels": {"a": "b"}}


# --- what the pinned CRDs keep (issue 20 defect 6) ----------------------------------------------------------


@pytest.mark.parametrize(("kind", "pod"), [("DaskCluster", "worker"), ("DaskCluster", "scheduler"),
                                           ("DaskWorkerGroup", "worker")])  # fmt: skip
def test_the_pod_spec_schemas_are_the_pinned_crds(kind: str, pod: str) -> None:
    spec = crd_schema(kind)["properties"]["spec"]["properties"][pod]["properties"]["spec"]
    assert crd_pod_spec(kind, pod) == spec
    # What the pinned CRDs lack today (if an upgrade adds them, the config accepts them with no change).
    spread = {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule", "minDomains": 2}
    assert crd_dropped({"topologySpreadConstraints": [spread]}, spec) == [
        (("topologySpreadConstraints", 0, "minDomains"), 2)
    ]


def test_checking_placement_against_the_crds_imports_neither_kopf_nor_kr8s() -> None:
    code = (
        "import sys; from components.config import parse_stack_config; from tests.test_config import with_changes;"
        "placement = {'topologySpreadConstraints': [{'maxSkew': 1, 'topologyKey': 'zone', "
        "'whenUnsatisfiable': 'DoNotSchedule'}]};"
        "parse_stack_config(with_changes(cluster__workers={'placement': placement}));"
        "print(sorted(m for m in ('kopf', 'kr8s', 'dask_kubernetes') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PROJECT_DIR)
    assert out.stdout.strip() == "[]"


# The topologySpreadConstraints fields of a PodSpec that the pinned CRDs lack (the docs name them).
UNKEPT = ("minDomains", "nodeAffinityPolicy", "nodeTaintsPolicy", "matchLabelKeys")


def _pod_spec_fields(schema: dict[str, Any], definitions: dict[str, Any], path: str = "") -> set[str]:
    """Every field path below a Kubernetes JSON schema (`$ref`s resolved; list items as `[]`)."""
    while "$ref" in schema:
        schema = definitions[schema["$ref"].rsplit("/", 1)[-1]]
    if "items" in schema:
        return _pod_spec_fields(schema["items"], definitions, f"{path}[]")
    found = set()
    for key, sub in (schema.get("properties") or {}).items():
        found |= {f"{path}.{key}"} | _pod_spec_fields(sub, definitions, f"{path}.{key}")
    return found


def test_the_fields_the_docs_say_the_crds_drop_are_all_of_them() -> None:
    """The PodSpec placement fields (Kubernetes 1.25) the pinned CRDs lack are the four that docs/operations.md and
    the `topologySpreadConstraints` description name (a dask-kubernetes upgrade that changes them fails here)."""
    import kubernetes_validate.utils as kv

    from components.placement import KUBERNETES_SCHEMA_VERSION, PLACEMENT_FIELDS

    directory = f"kubernetes-json-schema/v{KUBERNETES_SCHEMA_VERSION}-local-strict"
    definitions = kv.schema_contents(f"{directory}/_definitions.json", KUBERNETES_SCHEMA_VERSION)["$defs"]
    pod_spec = definitions["io.k8s.api.core.v1.PodSpec"]
    unkept = {".topologySpreadConstraints[]." + f for f in UNKEPT}
    for kind, pod in (("DaskCluster", "worker"), ("DaskCluster", "scheduler"), ("DaskWorkerGroup", "worker")):
        crd = crd_pod_spec(kind, pod)
        for field in PLACEMENT_FIELDS:
            k8s = _pod_spec_fields(pod_spec["properties"][field], definitions, f".{field}")
            kept = _pod_spec_fields(crd["properties"][field], {}, f".{field}")
            assert {f for f in k8s - kept if not any(f.startswith(u) for u in unkept)} == set(), (kind, pod, field)
        assert all(f not in _pod_spec_fields(crd, {}) for f in unkept), (kind, pod)


def test_the_docs_name_the_fields_the_crds_drop() -> None:
    docs = (PROJECT_DIR / "docs" / "operations.md").read_text()
    description = PlacementConfig.model_fields["topology_spread_constraints"].description or ""
    assert all(f"`{f}`" in docs and f"`{f}`" in description for f in UNKEPT)
