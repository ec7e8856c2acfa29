"""The operator guard: `pulumi destroy` of the stack that installs the operator refuses while DaskClusters or
DaskAutoscalers exist (issue 20, defect 8). The provider runs against a fake reader; the program under mocks."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import pytest
import yaml

from components.lock import PROJECT_DIR
from components.operator_guard import OperatorGuardProvider, list_dask_objects
from tests.program_helpers import shipped_stack

GUARD = "pulumi-python:dynamic/lsdb:OperatorGuard"
RELEASE = "kubernetes:helm.sh/v3:Release"
OPERATOR = "lsdb-k8s:operator:DaskOperator"


class FakeObjects:
    """Holds objects by plural; `list` is the guard's reader and records what was listed."""

    def __init__(self, objects: Mapping[str, list[dict[str, Any]]] | None = None) -> None:
        self.objects = objects or {}
        self.listed: list[str] = []

    def list(self, plural: str) -> list[Mapping[str, Any]]:
        self.listed.append(plural)
        return list(self.objects.get(plural, []))


class Unreachable:
    def list(self, plural: str) -> list[Mapping[str, Any]]:
        raise ConnectionError("connection refused")


def obj(namespace: str, name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"namespace": namespace, "name": name, "labels": labels or {}}}


def test_delete_passes_when_no_dask_object_exists() -> None:
    reader = FakeObjects()
    OperatorGuardProvider(reader.list).delete("dask-operator-guard", {"kubeContext": "shared-cluster"})
    assert reader.listed == ["daskclusters", "daskautoscalers"]


def test_delete_refuses_listing_every_cluster_and_autoscaler() -> None:
    lsdb = {"app.kubernetes.io/part-of": "lsdb-k8s", "app.kubernetes.io/name": "lsdb-prod"}
    reader = FakeObjects(
        {
            "daskclusters": [obj("lsdb-prod", "lsdb-prod-1a2b3c4d", lsdb)],
            "daskautoscalers": [obj("team-x", "their-scaler")],
        }
    )
    with pytest.raises(RuntimeError) as err:
        OperatorGuardProvider(reader.list).delete("dask-operator-guard", {"kubeContext": "shared-cluster"})
    message = str(err.value)
    assert "refusing to remove the Dask operator: 2 object(s)" in message
    assert "lsdb-prod/lsdb-prod-1a2b3c4d (DaskCluster): lsdb-k8s cluster lsdb-prod" in message
    assert "whose `namespace` output is lsdb-prod" in message  # the stack to destroy first
    assert "team-x/their-scaler (DaskAutoscaler)" in message
    assert "team-x/their-scaler (DaskAutoscaler):" not in message  # not ours: no lsdb-k8s stack named
    assert "kubectl --context shared-cluster delete daskclusters,daskautoscalers" in message


def test_delete_refuses_when_the_cluster_cannot_be_read() -> None:
    with pytest.raises(RuntimeError, match=r"could not list .* through kube context shared-cluster .*ConnectionError"):
        OperatorGuardProvider(Unreachable().list).delete("dask-operator-guard", {"kubeContext": "shared-cluster"})


def test_deploys_and_changes_never_run_the_check_nor_replace() -> None:
    provider = OperatorGuardProvider(Unreachable().list)  # any read would raise
    created = provider.create({"__provider": "x", "operatorNamespace": "dask-operator", "kubeContext": None})
    assert created.outs == {"operatorNamespace": "dask-operator", "kubeContext": None}
    olds = {"__provider": "x", **created.outs}
    assert not provider.diff(created.id, olds, {**olds, "__provider": "y"}).changes
    moved = provider.diff(created.id, olds, {**olds, "kubeContext": "other"})
    assert moved.changes and moved.replaces == [] and not moved.delete_before_replace
    assert provider.update(created.id, olds, {**olds, "kubeContext": "other"}).outs["kubeContext"] == "other"


@pytest.mark.parametrize("stack", ["platform", "dev"])
def test_a_stack_installing_the_operator_registers_the_guard_depending_on_its_release(stack: str) -> None:
    run = shipped_stack(stack)
    guard, release, operator = run.one(GUARD), run.one(RELEASE), run.one(OPERATOR)
    # Pulumi deletes a dependent before what it depends on: the guard's delete runs before the release's.
    assert release.urn in guard.dependencies
    assert guard.urn not in release.dependencies
    assert guard.parent == operator.urn
    assert guard.inputs["kubeContext"] == {"platform": "shared-cluster", "dev": "kind-lsdb-dev"}[stack]
    assert guard.inputs["operatorNamespace"] == "dask-operator"


def test_the_stack_own_dask_objects_are_deleted_before_the_guard_runs() -> None:
    run = shipped_stack("dev")
    guard = run.one(GUARD)
    dask = [r for r in run.resources if r.type.startswith("kubernetes:kubernetes.dask.org/")]
    assert {r.type.rsplit(":", 1)[1] for r in dask} >= {"DaskCluster", "DaskAutoscaler"}
    for r in dask:  # so a stack's own cluster never blocks its own destroy
        assert guard.urn in r.dependencies, r.name


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_a_stack_taking_the_operator_from_the_platform_stack_has_no_guard(stack: str) -> None:
    assert shipped_stack(stack).of_type(GUARD) == []


def test_the_deployer_may_list_dask_objects_in_every_namespace() -> None:
    """The guard lists cluster-wide: the deployer's ClusterRole bound by a ClusterRoleBinding grants it."""
    docs = [d for d in yaml.safe_load_all((PROJECT_DIR / "deploy" / "rbac" / "deployer.yaml").read_text()) if d]
    cluster_wide = {d["roleRef"]["name"] for d in docs if d["kind"] == "ClusterRoleBinding"}
    for plural in ("daskclusters", "daskautoscalers"):
        granted = {
            verb
            for d in docs
            if d["kind"] == "ClusterRole" and d["metadata"]["name"] in cluster_wide
            for rule in d["rules"]
            if "kubernetes.dask.org" in rule["apiGroups"] and plural in rule["resources"]
            for verb in rule["verbs"]
        }
        assert "list" in granted, plural


class FakeKr8s:
    """Stands in for the `kr8s` module: one API per context, a CRD lookup, and the objects of each kind."""

    ALL = "<all namespaces>"

    def __init__(self, installed: dict[str, list[dict[str, Any]]]) -> None:
        self.installed = installed
        self.contexts: list[str | None] = []
        self.gets: list[tuple[str, Any, bool]] = []

    def api(self, context: str | None = None) -> FakeKr8s:
        self.contexts.append(context)
        return self

    def lookup_kind(self, kind: str) -> None:
        if kind not in self.installed:
            raise ValueError(f"Kind {kind} not found.")

    def get(self, kind: str, namespace: Any, raw: bool) -> list[dict[str, Any]]:
        self.gets.append((kind, namespace, raw))
        return self.installed[kind]


def test_the_kr8s_reader_lists_every_namespace_through_the_stacks_context(monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = obj("lsdb", "c")
    fake = FakeKr8s({"daskclusters.kubernetes.dask.org": [cluster]})
    monkeypatch.setitem(sys.modules, "kr8s", fake)
    assert list_dask_objects("daskclusters", "kind-lsdb-dev") == [cluster]
    assert fake.contexts == ["kind-lsdb-dev"]
    assert fake.gets == [("daskclusters.kubernetes.dask.org", FakeKr8s.ALL, True)]
    # Without the CRD no object of the kind can exist; without a context kr8s takes the current one.
    assert list_dask_objects("daskautoscalers") == []
    assert fake.contexts == ["kind-lsdb-dev", None]


def test_the_guard_has_an_id_and_a_changed_context_or_namespace_is_an_update_in_place() -> None:
    provider = OperatorGuardProvider(Unreachable().list)
    created = provider.create({"operatorNamespace": "dask-operator", "kubeContext": None})
    assert isinstance(created.id, str) and created.id  # Pulumi refuses a create without an id
    moved = provider.diff(created.id, created.outs, {**created.outs, "operatorNamespace": "elsewhere"})
    assert moved.changes and not moved.replaces


def test_the_guard_registers_the_namespace_and_context_its_delete_reads() -> None:
    from components.operator_guard import OperatorGuard
    from tools.mock_runtime import run_program

    run = run_program({}, program=lambda: OperatorGuard("guard", "dask-operator", "kind-lsdb-dev") and None)
    guard = run.one(GUARD)
    assert guard.name == "guard"
    assert guard.inputs.get("__provider")  # the serialized provider whose delete runs the check
    assert {k: v for k, v in guard.inputs.items() if k != "__provider"} == {
        "operatorNamespace": "dask-operator",
        "kubeContext": "kind-lsdb-dev",
    }


def test_the_refusal_is_one_message_a_user_can_act_on() -> None:
    ours = {"app.kubernetes.io/part-of": "lsdb-k8s"}  # ours, but without the app name label
    reader = FakeObjects({"daskclusters": [obj("a", "c1", ours), obj("b", "c2")]})
    with pytest.raises(RuntimeError) as err:
        OperatorGuardProvider(reader.list).delete("dask-operator-guard", {"kubeContext": None})
    assert str(err.value) == (
        "refusing to remove the Dask operator: 2 object(s) it finalizes still exist, and without the operator their "
        "deletion would hang in Terminating for good:\n"
        "  - a/c1 (DaskCluster): lsdb-k8s cluster; destroy the lsdb-k8s stack whose `namespace` output is a first\n"
        "  - b/c2 (DaskCluster)\n"
        "Destroy the stacks that own them first (or delete them: `kubectl delete daskclusters,daskautoscalers --all "
        "-n <namespace>`), then run this destroy again."
    )


def test_an_unreadable_cluster_names_the_current_context_and_how_to_get_out(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(RuntimeError) as err:
        OperatorGuardProvider(Unreachable().list).delete("dask-operator-guard", {"kubeContext": ""})
    assert "through the current kube context (ConnectionError: connection refused)" in str(err.value)
    assert str(err.value).endswith(
        " itself is gone, remove the guard from the state: `pulumi state delete <its URN>` (`pulumi stack "
        "--show-urns` lists it)."
    )
    # Without a test reader the delete reads through kr8s with the stack's context.
    fake = FakeKr8s({})
    monkeypatch.setitem(sys.modules, "kr8s", fake)
    OperatorGuardProvider().delete("dask-operator-guard", {"kubeContext": "shared-cluster"})
    assert fake.contexts == ["shared-cluster", "shared-cluster"]


def test_the_guard_keeps_the_options_it_is_given() -> None:
    import pulumi

    from components.operator_guard import OperatorGuard
    from tools.mock_runtime import run_program

    def program() -> None:
        OperatorGuard("guard", "dask-operator", None, pulumi.ResourceOptions(protect=True))

    assert run_program({}, program=program).one(GUARD).options.get("protect") is True
