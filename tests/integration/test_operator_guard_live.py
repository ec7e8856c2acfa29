"""The operator guard's delete against a real cluster: it lists a DaskAutoscaler made here, then lets go once the
object is gone. Needs kubectl and the dev kind cluster's context with the dask CRDs (`make up`); skips otherwise.
Runs the provider's delete directly (what `pulumi destroy` calls), with the real kr8s reader."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from components.operator_guard import OperatorGuardProvider

CONTEXT = "kind-lsdb-dev"


def kubectl(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", "--context", CONTEXT, *args], input=stdin, capture_output=True, text=True, timeout=60, check=check
    )


def missing() -> str | None:
    if shutil.which("kubectl") is None:
        return "kubectl not found"
    probe = kubectl("get", "crd", "daskautoscalers.kubernetes.dask.org", check=False)
    if probe.returncode != 0:
        return f"no kube context {CONTEXT} with the dask CRDs (make up): {probe.stderr.strip()[:200]}"
    return None


REASON = missing()
pytestmark = [pytest.mark.integration, pytest.mark.skipif(REASON is not None, reason=str(REASON))]


@pytest.fixture
def namespace() -> Iterator[str]:
    name = f"guard-it-{secrets.token_hex(3)}"
    kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        kubectl("delete", "namespace", name, "--ignore-not-found", "--wait=false", check=False)


def test_delete_lists_a_live_autoscaler_and_passes_once_it_is_gone(namespace: str) -> None:
    scaler = {
        "apiVersion": "kubernetes.dask.org/v1",
        "kind": "DaskAutoscaler",
        "metadata": {"name": "blocker", "namespace": namespace},
        "spec": {"cluster": "none", "minimum": 1, "maximum": 2},
    }
    kubectl("apply", "-f", "-", stdin=json.dumps(scaler))
    provider = OperatorGuardProvider()
    with pytest.raises(RuntimeError, match=rf"{namespace}/blocker \(DaskAutoscaler\)"):
        provider.delete("dask-operator-guard", {"kubeContext": CONTEXT})

    kubectl("delete", "daskautoscaler", "blocker", "-n", namespace, "--wait=true", "--timeout=60s")
    try:
        provider.delete("dask-operator-guard", {"kubeContext": CONTEXT})
    except RuntimeError as err:  # other stacks' objects may exist on a shared dev cluster: ours must not be listed
        assert f"{namespace}/blocker" not in str(err)
