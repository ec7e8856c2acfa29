"""Where the scheduler and worker pods run (`pod_placement`), and the checks of what users write: against the strict
PodSpec schema (`placement_problems`) and what the pinned CRDs would prune silently (`crd_dropped`). Spot
(dask-kubernetes #606): workers on spot nodes, the scheduler never (losing it loses every task)."""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping
from typing import Any, NamedTuple

from components.constants import APP_NAME_LABEL, COMPONENT_LABEL, GROUP_LABEL
from components.operator_chart import crd_manifests

HOSTNAME_TOPOLOGY = "kubernetes.io/hostname"
# The oldest Kubernetes the guide supports; placement written for it is valid on every newer version.
KUBERNETES_SCHEMA_VERSION = "1.25.0"
PLACEMENT_FIELDS = ("nodeSelector", "tolerations", "affinity", "priorityClassName", "topologySpreadConstraints")


class Spot(NamedTuple):  # a provider's label on spot nodes; the effect of its taint `label=value` (None: no taint)
    label: str
    value: str
    taint_effect: str | None


SPOT: dict[str, Spot] = {
    # EKS managed node groups label every node with its capacity type and add no taint:
    # https://docs.aws.amazon.com/eks/latest/userguide/managed-node-groups.html#managed-node-group-capacity-types
    "aws": Spot("eks.amazonaws.com/capacityType", "SPOT", None),
    # GKE labels Spot VM nodes cloud.google.com/gke-spot=true; node pools are tainted with the same key
    # (`--node-taints=cloud.google.com/gke-spot=true:NoSchedule`) so only tolerating pods land there:
    # https://cloud.google.com/kubernetes-engine/docs/how-to/spot-vms
    "gcp": Spot("cloud.google.com/gke-spot", "true", "NoSchedule"),
    # AKS labels and taints every Spot node pool kubernetes.azure.com/scalesetpriority=spot:NoSchedule:
    # https://learn.microsoft.com/en-us/azure/aks/spot-node-pool
    "azure": Spot("kubernetes.azure.com/scalesetpriority", "spot", "NoSchedule"),
}


def off_spot_affinity(providers: list[str]) -> dict[str, Any]:
    """A required node affinity keeping a pod off these providers' spot nodes (`NotIn` matches unlabelled nodes)."""
    expressions = [{"key": SPOT[p].label, "operator": "NotIn", "values": [SPOT[p].value]} for p in sorted(providers)]
    return {
        "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": expressions}
        ]}}
    }  # fmt: skip


def spread_across_nodes(selector: Mapping[str, str]) -> list[dict[str, Any]]:
    """Spread the pods `selector` matches over nodes, preferably (never blocks scheduling)."""
    return [
        {
            "maxSkew": 1,
            "topologyKey": HOSTNAME_TOPOLOGY,
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": dict(selector)},
        }
    ]


def _merge_affinity(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`extra`'s required node-selector expressions ANDed into every term of `base` (other parts: base wins)."""
    merged = copy.deepcopy(base)
    extra_terms = extra["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    node = merged.setdefault("nodeAffinity", {})
    required = node.setdefault("requiredDuringSchedulingIgnoredDuringExecution", {"nodeSelectorTerms": []})
    terms = required.setdefault("nodeSelectorTerms", [])
    if not terms:
        terms.append({"matchExpressions": []})
    for term in terms:  # node-selector terms are ORed: each must exclude spot nodes
        term.setdefault("matchExpressions", []).extend(copy.deepcopy(extra_terms[0]["matchExpressions"]))
    return merged


def pod_placement(
    user: Mapping[str, Any],
    *,
    spot: str | None = None,
    avoid_spot: list[str] | None = None,
    spread: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """`user`'s PLACEMENT_FIELDS, on this provider's `spot` nodes (the user's node selector wins for a key), off the
    `avoid_spot` providers' spot nodes, spread over nodes by the labels `spread` unless the user gave constraints."""
    on_spot = SPOT[spot] if spot else None
    taint = []
    if on_spot and on_spot.taint_effect:
        taint = [{"key": on_spot.label, "operator": "Equal", "value": on_spot.value, "effect": on_spot.taint_effect}]
    affinity = dict(user.get("affinity") or {})
    constraints = user.get("topologySpreadConstraints")
    fields = {
        "nodeSelector": ({on_spot.label: on_spot.value} if on_spot else {}) | dict(user.get("nodeSelector") or {}),
        "tolerations": [*taint, *user.get("tolerations", [])],
        "affinity": _merge_affinity(affinity, off_spot_affinity(avoid_spot)) if avoid_spot else affinity,
        "priorityClassName": user.get("priorityClassName"),
        "topologySpreadConstraints": spread_across_nodes(spread) if constraints is None and spread else constraints,
    }
    return copy.deepcopy({key: value for key, value in fields.items() if value})


def worker_spread_selector(app_name: str, group: str) -> dict[str, str]:
    """Labels of one worker group's pods that survive the DaskCluster's rename (the operator copies them)."""
    return {APP_NAME_LABEL: app_name, COMPONENT_LABEL: "worker", GROUP_LABEL: group}


# --- checking what users write -----------------------------------------------------------------------------


@functools.cache
def _pod_validator() -> Any:
    """A strict Draft 2020-12 validator for v1 Pod at KUBERNETES_SCHEMA_VERSION (loaded once, lazily:
    kubernetes-validate costs ~0.3 s to import, paid only by stacks that set a placement)."""
    import jsonschema
    import kubernetes_validate.utils as kv
    from referencing import Registry, Resource

    directory = f"kubernetes-json-schema/v{KUBERNETES_SCHEMA_VERSION}-local-strict"
    schema = kv.schema_contents(f"{directory}/pod-v1.json", KUBERNETES_SCHEMA_VERSION)
    definitions = kv.schema_contents(f"{directory}/_definitions.json", KUBERNETES_SCHEMA_VERSION)
    registry: Registry[Any] = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.validators.Draft202012Validator(schema, registry=registry)


def placement_problems(fields: Mapping[str, Any]) -> list[tuple[str, Any, str]]:
    """(key below the placement, offending value, what is wrong) for each schema error; [] when valid."""
    if not any(fields.get(k) not in (None, {}, []) for k in PLACEMENT_FIELDS):
        return []
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "placement-check"},
        "spec": {"containers": [{"name": "c", "image": "i"}], **{k: v for k, v in fields.items() if v is not None}},
    }
    problems = []
    for error in sorted(_pod_validator().iter_errors(pod), key=lambda e: list(map(str, e.absolute_path))):
        path = [str(p) for p in error.absolute_path][1:]  # below "spec"
        key = ".".join(path) if path else "placement"
        message = error.message if len(error.message) < 200 else error.message[:200] + "..."
        problems.append((key, error.instance, message))
    return problems


@functools.cache
def crd_pod_spec(kind: str, pod: str) -> dict[str, Any]:
    """The structural schema of `spec.<pod>.spec` (`worker`, `scheduler`) in the pinned CRD of `kind` (read lazily:
    only stacks that set a placement pay ~0.2 s)."""
    crd = next(c for c in crd_manifests() if c["spec"]["names"]["kind"] == kind)
    version = next(v for v in crd["spec"]["versions"] if v["storage"])
    return dict(version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][pod]["properties"]["spec"])


FieldPath = tuple[str | int, ...]


def crd_dropped(value: Any, schema: Mapping[str, Any], at: FieldPath = ()) -> list[tuple[FieldPath, Any]]:
    """(path, value) of each field of `value` that the API server's structural pruning drops under `schema`
    (k8s.io/apiextensions-apiserver pkg/apiserver/schema/pruning): an object keeps the fields its `properties`
    declare and, under `additionalProperties` or `x-kubernetes-preserve-unknown-fields`, any other; list items
    are pruned by `items`."""
    if isinstance(value, list):
        return [d for i, item in enumerate(value) for d in crd_dropped(item, schema.get("items") or {}, (*at, i))]
    if not isinstance(value, dict):
        return []
    properties, additional = schema.get("properties") or {}, schema.get("additionalProperties")
    found: list[tuple[FieldPath, Any]] = []
    for key, item in value.items():
        if key in properties:
            found += crd_dropped(item, properties[key], (*at, key))
        elif isinstance(additional, dict):
            found += crd_dropped(item, additional, (*at, key))
        elif not (additional is True or schema.get("x-kubernetes-preserve-unknown-fields")):
            found.append(((*at, key), item))
    return found
