"""Shared helpers for running the program under mocks with small config changes."""

from __future__ import annotations

import copy
import functools
import json
from typing import Any

from components.dask_operator import operator_version
from tools.mock_runtime import ProgramRun, Registered, integral, run_program
from tools.render import apply_patches, is_patch, stack_config

PLATFORM_STACK_OUTPUTS = {
    "organization/lsdb-k8s/platform": {"operatorNamespace": "dask-operator", "operatorVersion": operator_version()}
}
# The operator is not installed by default: its four CRDs' schemas make a mock run ~5x slower (1.2 s vs 0.25 s).
# A test about the operator opts in with `run_with(operator={...})` (the section is replaced whole: install is true).
BASE: dict[str, Any] = {
    "namespace": "lsdb-test",
    "operator": {"install": False},
    "storage": {"kind": "pvc", "size": "10Gi"},
    "cluster": {"name": "lsdb-cluster"},
    "image": {"repository": "ghcr.io/acme/lsdb-dask"},
    "verify": {"enabled": False},
}
OPERATOR_INSTALLED = {"install": True}  # `run_with(operator=OPERATOR_INSTALLED)`: this stack installs the operator


def run_stack(stack: str) -> ProgramRun:
    config, secret_keys = stack_config(stack)
    return run_program(config, secret_keys, stack=stack, stack_outputs=PLATFORM_STACK_OUTPUTS)


@functools.cache
def _shipped_run(stack: str) -> ProgramRun:
    return run_stack(stack)


def shipped_stack(stack: str) -> ProgramRun:
    """`run_stack(stack)` evaluated once per test process (the program is a function of the stack's files), a deep
    copy each call: for tests that only read the run. A mock run of the dev stack takes 2 s (it installs the
    operator); the suite read it ~10 times. A test that patches what the program calls uses `run_stack`."""
    return copy.deepcopy(_shipped_run(stack))


def run_with(secret_keys: tuple[str, ...] = (), **sections: Any) -> ProgramRun:
    """BASE with whole top-level sections replaced."""
    raw = {**BASE, **sections}
    config = {f"lsdb-k8s:{k}": json.dumps(v) if isinstance(v, dict | list) else v for k, v in raw.items()}
    return run_program(
        config, [f"lsdb-k8s:{k}" for k in secret_keys], stack="test", stack_outputs=PLATFORM_STACK_OUTPUTS
    )


def manifest(r: Registered) -> dict[str, Any]:
    """The Kubernetes object a registration describes (what the provider would send to the API server)."""
    fields = ("apiVersion", "kind", "metadata", "spec", "type", "data", "stringData")
    obj = {k: v for k, v in r.inputs.items() if k in fields}
    return integral(json.loads(json.dumps(obj)))


def kubernetes_objects(run: ProgramRun) -> list[dict[str, Any]]:
    return [manifest(r) for r in run.resources if r.type.startswith("kubernetes:") and "kind" in r.inputs]


def live_objects(run: ProgramRun) -> list[dict[str, Any]]:
    """The objects as the API server holds them after `pulumi up`: Patch resources applied to their objects."""
    k8s = [r for r in run.resources if r.type.startswith("kubernetes:") and "kind" in r.inputs]
    return apply_patches(
        [manifest(r) for r in k8s if not is_patch(r.type)], [manifest(r) for r in k8s if is_patch(r.type)]
    )


def dask_cluster(run: ProgramRun) -> dict[str, Any]:
    return manifest(run.one("kubernetes:kubernetes.dask.org/v1:DaskCluster"))
