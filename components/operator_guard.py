"""OperatorGuard: `pulumi destroy` refuses to remove the operator while any DaskCluster or DaskAutoscaler exists
(their kopf finalizers need it). A dynamic resource depending on the Helm release, so its delete (the check) runs
first; docs/lifecycle.md says why not a `before_delete` hook. kr8s is imported only when a real delete reads."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import pulumi
import pulumi.dynamic
from pulumi.dynamic import CreateResult, DiffResult, ResourceProvider, UpdateResult

from components.constants import API_VERSION, APP_NAME_LABEL, PART_OF, PART_OF_LABEL, kubectl

API_GROUP = API_VERSION.split("/")[0]  # kubernetes.dask.org


def list_dask_objects(plural: str, kube_context: str | None = None) -> list[Mapping[str, Any]]:
    """Every object of the kind (e.g. `daskclusters`) in all namespaces, as dicts: kr8s with the stack's kube context
    (the access the Helm release's provider has)."""
    import kr8s

    api = kr8s.api(context=kube_context)  # None: the current context
    kind = f"{plural}.{API_GROUP}"
    try:
        api.lookup_kind(kind)
    except ValueError:  # the CRD is not installed: no object of the kind can exist
        return []
    return [dict(obj) for obj in api.get(kind, namespace=kr8s.ALL, raw=True)]


def describe_object(kind: str, obj: Mapping[str, Any]) -> str:
    """`<namespace>/<name> (<kind>)`, plus which lsdb-k8s cluster it belongs to when its labels say."""
    metadata = obj.get("metadata") or {}
    labels = metadata.get("labels") or {}
    text = f"{metadata.get('namespace')}/{metadata.get('name')} ({kind})"
    if labels.get(PART_OF_LABEL) == PART_OF:
        cluster = f" {labels[APP_NAME_LABEL]}" if labels.get(APP_NAME_LABEL) else ""
        text += (
            f": lsdb-k8s cluster{cluster}; destroy the lsdb-k8s stack whose `namespace` output is"
            f" {metadata.get('namespace')} first"
        )
    return text


class OperatorGuardProvider(ResourceProvider):
    """Stores its inputs (the kube context); its delete refuses while DaskClusters or DaskAutoscalers exist.
    `reader`: `list_dask_objects`' stand-in (tests); the program's has none, so it pickles as this class plus
    `{"reader": None}`."""

    def __init__(self, reader: Callable[[str], list[Mapping[str, Any]]] | None = None) -> None:
        self.reader = reader

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult("dask-operator-guard", _inputs(props))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        """Never a replacement: replacing would delete the old guard, which runs the check on a mere change."""
        return DiffResult(changes=_inputs(olds) != _inputs(news), replaces=[], delete_before_replace=False)

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(_inputs(news))

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        kube_context = props.get("kubeContext") or None
        reader = self.reader or functools.partial(list_dask_objects, kube_context=kube_context)
        try:
            kinds = (("DaskCluster", "daskclusters"), ("DaskAutoscaler", "daskautoscalers"))
            objects = [describe_object(kind, obj) for kind, plural in kinds for obj in reader(plural)]
        except Exception as exc:
            where = f"kube context {kube_context}" if kube_context else "the current kube context"
            raise RuntimeError(
                f"refusing to remove the Dask operator: could not list the DaskClusters and DaskAutoscalers through"
                f" {where} ({type(exc).__name__}: {exc}). Fix the access (the deployer needs list on"
                f" daskclusters and daskautoscalers.{API_GROUP} in all namespaces), or, if the Kubernetes cluster"
                " itself is gone, remove the guard from the state: `pulumi state delete <its URN>`"
                " (`pulumi stack --show-urns` lists it)."
            ) from exc
        if objects:
            raise RuntimeError(
                f"refusing to remove the Dask operator: {len(objects)} object(s) it finalizes still exist, and without"
                " the operator their deletion would hang in Terminating for good:\n"
                + "\n".join(f"  - {o}" for o in objects)
                + f"\nDestroy the stacks that own them first (or delete them: `{kubectl(kube_context)} delete"
                " daskclusters,daskautoscalers --all -n <namespace>`), then run this destroy again."
            )


def _inputs(props: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in props.items() if k != "__provider"}


class OperatorGuard(pulumi.dynamic.Resource, module="lsdb", name="OperatorGuard"):
    """Type `pulumi-python:dynamic/lsdb:OperatorGuard`. Register it with `depends_on=[<the operator's release>]`."""

    def __init__(
        self,
        name: str,
        operator_namespace: pulumi.Input[str],
        kube_context: str | None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = {"operatorNamespace": operator_namespace, "kubeContext": kube_context}
        super().__init__(OperatorGuardProvider(), name, props, opts)
