"""DaskOperator: the Dask Kubernetes Operator Helm release, pinned to the locked dask-kubernetes. Helm never upgrades
CRDs, so they are Pulumi resources read from the pinned chart (the release skips them), `retain_on_delete` (deleting
a CRD deletes every object of its kind cluster-wide: docs/lifecycle.md); components/operator_guard.py refuses to
remove the operator while a DaskCluster or DaskAutoscaler exists."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import yaml

from components.cluster import CONTAINER_SECURITY_CONTEXT
from components.config import OperatorConfig
from components.constants import LABELS, POD_SECURITY_LABELS
from components.lock import PROJECT_DIR, locked_version, same_version
from components.operator_chart import CHART_NAME, crd_manifests, packaged_chart_dir
from components.operator_guard import OperatorGuard

CHART_REPOSITORY = "https://helm.dask.org"
RELEASE_NAME = "dask-operator"
OPERATOR_IMAGE = "ghcr.io/dask/dask-kubernetes-operator"


def operator_version() -> str:
    """Chart version and operator image tag: the dask-kubernetes version in the lock."""
    return locked_version("dask-kubernetes")


# The restricted Pod Security Standard under the chart's own values keys (its default pod context is `{}`).
OPERATOR_USER = 1000  # the chart's default runAsUser
OPERATOR_POD_SECURITY_CONTEXT: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": OPERATOR_USER,
    "runAsGroup": OPERATOR_USER,
    "seccompProfile": {"type": "RuntimeDefault"},
}
OPERATOR_CONTAINER_SECURITY_CONTEXT: dict[str, Any] = {**CONTAINER_SECURITY_CONTEXT, "runAsUser": OPERATOR_USER}


def prepare_packaged_chart(version: str, build_dir: Path | None = None) -> Path:
    """The packaged chart with its placeholder version replaced (chartSource: package); deterministic."""
    dest = (build_dir or PROJECT_DIR / ".build" / "charts") / version / CHART_NAME
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(packaged_chart_dir(), dest)
    chart = {**yaml.safe_load((dest / "Chart.yaml").read_text()), "version": version, "appVersion": version}
    (dest / "Chart.yaml").write_text(yaml.safe_dump(chart, sort_keys=False))
    values = yaml.safe_load((dest / "values.yaml").read_text())
    values["image"]["tag"] = version
    (dest / "values.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    return dest


def operator_from_stack(stack_name: str) -> pulumi.Output[str]:
    """The operator namespace that stack exports; fails when it runs another dask-kubernetes (other CRDs)."""
    if stack_name.count("/") != 2:  # `<stack>`: of this organization (a self-managed backend's is `organization`)
        stack_name = f"{pulumi.get_organization() or 'organization'}/{pulumi.get_project()}/{stack_name}"
    other = pulumi.StackReference(stack_name)

    def check(args: list[Any]) -> str:
        namespace, version = args
        if not same_version(str(version), operator_version()):
            raise ValueError(
                f"operator.fromStack {stack_name} runs dask-kubernetes {version} in namespace {namespace}, "
                f"but requirements.txt pins {operator_version()}: upgrade that stack or re-lock this one"
            )
        return str(namespace)

    return pulumi.Output.all(other.get_output("operatorNamespace"), other.get_output("operatorVersion")).apply(check)


class DaskOperator(pulumi.ComponentResource):
    """The operator release in its own namespace, plus the CRDs it serves; `values`: more chart values
    (components.monitoring.chart_monitoring_values)."""

    version: str

    def __init__(
        self,
        name: str,
        operator: OperatorConfig,
        values: dict[str, Any] | None = None,
        kube_context: str | None = None,  # the stack's, for the CRDs' own provider
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("lsdb-k8s:operator:DaskOperator", name, {}, opts)
        self.version = operator_version()
        # Retained CRDs are found by the next stack installing the operator: their own provider adopts them (safe
        # only because they are retained: an upsert followed by a delete would remove them).
        crd_provider = k8s.Provider(
            f"{name}-crd-provider",
            context=kube_context,
            upsert_existing_objects=True,
            opts=pulumi.ResourceOptions(parent=self),
        )
        crds = [
            k8s.apiextensions.v1.CustomResourceDefinition(
                f"{name}-crd-{crd['spec']['names']['singular']}",
                metadata={"name": crd["metadata"]["name"], "annotations": crd["metadata"].get("annotations", {})},
                spec=crd["spec"],
                opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True, provider=crd_provider),
            )
            for crd in crd_manifests()
        ]
        namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata={"name": operator.namespace, "labels": {**LABELS, **POD_SECURITY_LABELS}},
            opts=pulumi.ResourceOptions(parent=self),
        )
        if operator.chart_source == "package":
            chart: dict[str, Any] = {"chart": str(prepare_packaged_chart(self.version))}
        else:
            chart = {
                "chart": CHART_NAME,
                "version": self.version,
                "repository_opts": k8s.helm.v3.RepositoryOptsArgs(repo=CHART_REPOSITORY),
            }
        release = k8s.helm.v3.Release(
            f"{name}-release",
            name=RELEASE_NAME,
            namespace=namespace.metadata["name"],
            skip_crds=True,
            # The locked image (the packaged chart's tag is a placeholder; a mirror replaces the repository only).
            values={
                "image": {"name": operator.image or OPERATOR_IMAGE, "tag": self.version},
                "podSecurityContext": OPERATOR_POD_SECURITY_CONTEXT,
                "securityContext": OPERATOR_CONTAINER_SECURITY_CONTEXT,
                **(values or {}),
            },
            atomic=True,
            **chart,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*crds, namespace]),
        )
        # Depends on the release, so `pulumi destroy` runs its delete (the check) before it removes the release.
        OperatorGuard(
            f"{name}-guard",
            operator.namespace,
            kube_context,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[release]),
        )
        self.register_outputs({"namespace": operator.namespace, "version": self.version})
