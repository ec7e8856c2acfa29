"""Resource options shared by the components."""

from __future__ import annotations

from collections.abc import Sequence

import pulumi


def inherited_depends_on(opts: pulumi.ResourceOptions | None) -> list[pulumi.Resource]:
    """What a component was told to wait for, for its children.

    Depending ON a component waits for all its children, but a component's own `depends_on` does not reach
    its children (tests/test_program.py shows both), so each child must list it again.
    """
    deps = opts.depends_on if opts is not None else None
    if deps is None:
        return []
    if isinstance(deps, Sequence):
        return [d for d in deps if isinstance(d, pulumi.Resource)]
    return [deps] if isinstance(deps, pulumi.Resource) else []


def child_options(
    parent: pulumi.Resource, opts: pulumi.ResourceOptions | None, *more: pulumi.Resource | None
) -> pulumi.ResourceOptions:
    """`parent=parent`, waiting for what the component waits for plus `more`."""
    return pulumi.ResourceOptions(
        parent=parent, depends_on=[*inherited_depends_on(opts), *(r for r in more if r is not None)]
    )
