"""What README.md and docs/ claim is checked: config keys exist, links resolve, commands name real things.

Also the claim the stack files make by their shape: each holds only what differs from the model's defaults.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from components.config import ConfigError, StackConfig, parse_stack_config
from components.lock import PROJECT_DIR
from tools.render import stack_config

PROJECT = "lsdb-k8s"
STACKS = sorted(p.name.split(".")[1] for p in PROJECT_DIR.glob("Pulumi.*.yaml"))


# --- stack files hold only what differs from the defaults ---------------------------------------------


def _stack_raw(stack: str) -> tuple[dict[str, Any], frozenset[str]]:
    config, secret = stack_config(stack)
    prefix = f"{PROJECT}:"
    raw = {k.removeprefix(prefix): v for k, v in config.items() if k.startswith(prefix)}
    return raw, frozenset(k.removeprefix(prefix) for k in secret)


def _as_value(text: Any) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def _leaf_paths(value: Any, path: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    if isinstance(value, dict) and value:
        for key, inner in value.items():
            yield from _leaf_paths(inner, (*path, key))
    else:
        yield path  # a scalar or a list: one value as a user sets it


def _without(raw: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    out = dict(raw)
    top, rest = path[0], path[1:]
    if not rest:
        del out[top]
        return out
    section = json.loads(json.dumps(_as_value(out[top])))
    node = section
    for key in rest[:-1]:
        node = node[key]
    del node[rest[-1]]
    out[top] = json.dumps(section)
    return out


def _parsed(raw: dict[str, Any], secret: frozenset[str]) -> StackConfig | str:
    try:
        return parse_stack_config(raw, secret)
    except ConfigError as error:  # without the key the config is invalid: the key matters
        return str(error)


@pytest.mark.parametrize("stack", STACKS)
def test_stack_files_hold_only_what_differs_from_the_defaults(stack: str) -> None:
    # A key whose default follows another key (cluster.size presets) counts as restating it only when
    # leaving it out gives the same model, which is what comparing the parsed models decides.
    raw, secret = _stack_raw(stack)
    whole = _parsed(raw, secret)
    assert isinstance(whole, StackConfig), whole
    restated = [
        ".".join(path)
        for top, value in raw.items()
        for path in _leaf_paths(_as_value(value), (top,))
        if _parsed(_without(raw, path), secret) == whole
    ]
    assert restated == [], f"Pulumi.{stack}.yaml restates defaults: remove {restated}"
