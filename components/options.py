"""Resource options shared by the components."""

from __future__ import annotations

from collections.abc import Sequence

import pulumi


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
