"""Resource options shared by the components, the one shape of a manifest, and the one way a manifest dict becomes
its pulumi-kubernetes resource."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import pulumi
from pydantic.alias_generators import to_snake

R = TypeVar("R")


def child_options(
    parent: pulumi.Resource, opts: pulumi.ResourceOptions | None, *more: pulumi.Resource | None
) -> pulumi.ResourceOptions:
    """`parent=parent`, waiting for what the component waits for plus `more`. Depending ON a component waits for
    all its children, but its own `depends_on` does not reach them (tests/test_program.py shows both)."""
    deps = opts.depends_on if opts is not None else None
    inherited = deps if isinstance(deps, Sequence) else [deps]
    return pulumi.ResourceOptions(
        parent=parent, depends_on=[d for d in (*inherited, *more) if isinstance(d, pulumi.Resource)]
    )


def register(
    resource: Callable[..., R], name: str, manifest: Mapping[str, Any], opts: pulumi.ResourceOptions, **fields: Any
) -> R:
    """`resource(name, ...)` with the manifest's top-level fields as its arguments (`stringData` -> `string_data`),
    `fields` (Outputs: a secret, a spec with the pushed image) in place of the manifest's. A typed resource sets its
    own `apiVersion` and `kind`; a CustomResource takes them."""
    args = {to_snake(key): value for key, value in manifest.items()}
    return resource(name, **args | fields, opts=opts)


def manifest(
    api_version: str,
    kind: str,
    name: str,
    namespace: str | None,
    labels: Mapping[str, str],
    annotations: Mapping[str, str] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """An object of the stack: `namespace` None for a cluster-scoped one, `annotations` only when there are some."""
    metadata: dict[str, Any] = {"name": name, **({"namespace": namespace} if namespace else {}), "labels": dict(labels)}
    if annotations:
        metadata["annotations"] = dict(annotations)
    return {"apiVersion": api_version, "kind": kind, "metadata": metadata, **fields}
