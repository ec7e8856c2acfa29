"""The scheduling fields a placement section becomes (components/placement.py), called directly: fast enough for
mutation testing (docs/mutation.md). tests/test_placement.py checks the same rules on the program's DaskCluster."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from components.placement import crd_dropped, placement_problems, pod_placement, worker_spread_selector

SPOT_NODES = {
    "aws": ("eks.amazonaws.com/capacityType", "SPOT", None),
    "gcp": ("cloud.google.com/gke-spot", "true", "NoSchedule"),
    "azure": ("kubernetes.azure.com/scalesetpriority", "spot", "NoSchedule"),
}


def required_terms(placement: dict[str, Any]) -> list[list[dict[str, Any]]]:
    node = placement["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    return [term["matchExpressions"] for term in node["nodeSelectorTerms"]]


def test_no_placement_and_no_rules_set_no_field() -> None:
    assert pod_placement({}) == {}


@pytest.mark.parametrize("provider", sorted(SPOT_NODES))
def test_spot_workers_select_the_providers_spot_label_and_tolerate_its_taint(provider: str) -> None:
    label, value, effect = SPOT_NODES[provider]
    placement = pod_placement({}, spot=provider)
    assert placement["nodeSelector"] == {label: value}
    tolerations = [{"key": label, "operator": "Equal", "value": value, "effect": effect}] if effect else None
    assert placement.get("tolerations") == tolerations
    assert set(placement) == {"nodeSelector"} | ({"tolerations"} if effect else set())


def test_the_users_node_selector_and_tolerations_add_to_the_spot_ones_and_win_on_the_same_key() -> None:
    mine = {"key": "team", "operator": "Exists", "effect": "NoSchedule"}
    user = {"nodeSelector": {"cloud.google.com/gke-spot": "false", "disk": "ssd"}, "tolerations": [mine]}
    placement = pod_placement(user, spot="gcp")
    assert placement["nodeSelector"] == {"cloud.google.com/gke-spot": "false", "disk": "ssd"}
    assert placement["tolerations"][1:] == [mine]
    assert placement["tolerations"][0]["key"] == "cloud.google.com/gke-spot"
    placement["tolerations"][1]["key"] = "changed"
    assert mine["key"] == "team"  # the output is a copy: the config is not changed through it


@pytest.mark.parametrize("providers", [["gcp"], ["gcp", "aws"]])
def test_the_scheduler_is_kept_off_every_spot_provider_in_use(providers: list[str]) -> None:
    expressions = [
        {"key": SPOT_NODES[p][0], "operator": "NotIn", "values": [SPOT_NODES[p][1]]} for p in sorted(providers)
    ]
    assert pod_placement({}, avoid_spot=providers) == {
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": expressions}]
                }
            }
        }
    }


def test_the_spot_exclusion_is_anded_into_each_of_the_users_node_affinity_terms() -> None:
    zone = {"key": "zone", "operator": "In", "values": ["a"]}
    preferred = [{"weight": 1, "preference": {"matchExpressions": [zone]}}]
    user = {
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [zone]}, {"matchFields": [{"key": "metadata.name"}]}]
                },
                "preferredDuringSchedulingIgnoredDuringExecution": preferred,
            },
            "podAntiAffinity": {"x": 1},
        }
    }
    before = copy.deepcopy(user)
    placement = pod_placement(user, avoid_spot=["azure"])
    off = {"key": "kubernetes.azure.com/scalesetpriority", "operator": "NotIn", "values": ["spot"]}
    assert required_terms(placement) == [[zone, off], [off]]
    assert placement["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"] == preferred
    assert placement["affinity"]["podAntiAffinity"] == {"x": 1}
    assert user == before  # the user's section is not modified


def test_the_users_affinity_and_priority_pass_through_without_spot() -> None:
    affinity = {"podAntiAffinity": {"x": 1}}
    placement = pod_placement({"affinity": affinity, "priorityClassName": "high"})
    assert placement == {"affinity": affinity, "priorityClassName": "high"}
    assert "priorityClassName" not in pod_placement({"priorityClassName": ""})


def test_pods_spread_over_nodes_by_default_unless_the_user_says_otherwise() -> None:
    selector = worker_spread_selector("lsdb", "default")
    assert selector == {
        "app.kubernetes.io/name": "lsdb",
        "dask.org/component": "worker",
        "lsdb-k8s/worker-group": "default",
    }
    assert pod_placement({}, spread=selector)["topologySpreadConstraints"] == [
        {
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": selector},
        }
    ]
    assert "topologySpreadConstraints" not in pod_placement({"topologySpreadConstraints": []}, spread=selector)
    own = [{"maxSkew": 2, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"}]
    assert pod_placement({"topologySpreadConstraints": own}, spread=selector)["topologySpreadConstraints"] == own
    assert "topologySpreadConstraints" not in pod_placement({})


def test_valid_or_empty_placement_has_no_problem() -> None:
    assert placement_problems({}) == []
    assert placement_problems({"nodeSelector": {}, "tolerations": [], "affinity": None}) == []
    assert placement_problems({"nodeSelector": {"disk": "ssd"}, "priorityClassName": "high"}) == []


def test_each_misspelt_or_mistyped_field_is_named_below_the_placement() -> None:
    problems = placement_problems({"tolerations": [{"key": "a", "efect": "NoSchedule"}], "nodeSelector": {"a": 1}})
    assert [(key, value) for key, value, _ in problems] == [
        ("nodeSelector.a", 1),
        ("tolerations.0", {"key": "a", "efect": "NoSchedule"}),
    ]
    assert "efect" in problems[1][2] and not problems[1][2].endswith("...")
    ((key, value, _),) = placement_problems({"nodeSelector": {"a": "b"}, "nodeSelectr": {"a": "b"}})
    assert (key, value["nodeSelectr"]) == ("placement", {"a": "b"})  # a field the pod spec has not


def test_a_complete_placement_is_checked_too() -> None:
    complete = {
        "nodeSelector": {"disk": "ssd"},
        "tolerations": [{"key": "a", "operator": "Exists"}],
        "affinity": {"podAntiAffinity": {}},
        "priorityClassName": "high",
        "topologySpreadConstraints": [{"maxSkew": "one"}],
    }
    assert [key for key, _, _ in placement_problems(complete)] == [
        "topologySpreadConstraints.0",  # topologyKey missing
        "topologySpreadConstraints.0",  # whenUnsatisfiable missing
        "topologySpreadConstraints.0.maxSkew",
    ]


def test_a_long_schema_message_is_cut_at_200_characters() -> None:
    ((key, _, message),) = placement_problems({"affinity": {"nodeAffinity": {"x" * 300: 1}}})
    assert key == "affinity.nodeAffinity"
    assert len(message) == 203 and message.endswith("...")


def test_crd_dropped_follows_the_structural_pruning_rules() -> None:
    """Controls: declared fields are walked, maps keep any key (each entry pruned), `additionalProperties: true` and
    preserve-unknown keep everything, list items are pruned one by one, an object without properties keeps nothing."""
    schema = {"type": "object", "properties": {
        "a": {"type": "object", "properties": {"b": {"type": "integer"}}},
        "m": {"type": "object", "additionalProperties": {"type": "object", "properties": {"v": {"type": "string"}}}},
        "k": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        "l": {"type": "array", "items": {"type": "object", "properties": {"c": {"type": "string"}}}},
        "x": {"type": "object"},
        "t": {"type": "object", "additionalProperties": True},
    }}  # fmt: skip
    value = {"a": {"b": 1, "c": 2}, "m": {"any": {"v": "kept", "w": 3}, "more": {"u": 7}}, "k": {"z": {"deep": 1}},
             "l": [{"c": "kept"}, {"c": "kept", "d": 4}], "x": {"y": 5}, "t": {"free": 8}, "extra": [6]}  # fmt: skip
    assert crd_dropped(value, schema) == [
        (("a", "c"), 2),
        (("m", "any", "w"), 3),
        (("m", "more", "u"), 7),
        (("l", 1, "d"), 4),
        (("x", "y"), 5),
        (("extra",), [6]),
    ]
    assert crd_dropped({"a": {"b": 1}, "l": []}, schema) == []
