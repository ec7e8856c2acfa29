"""Pydantic's `ValidationError` as the user's report: `<key> = <value>: <what>. Fix: <fix>`, one line per problem.

The key is written as users write it (camelCase, dotted; a discriminated union's tag is not part of it). The fix
is the error's own (`ctx["fix"]`, from the type or rule that raised it), else the field's `Fix`, else one for
pydantic's error type. Values are the ones pydantic reports: the two secret fields only ever hold a marker.
"""

from __future__ import annotations

import difflib
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from components.section import Fix, aliases

# Fixes for pydantic's own error types, by the type's first word (`int_parsing` -> `int`).
TYPE_FIXES = {
    "int": "use digits only, e.g. 4",
    "float": "use a decimal number, e.g. 180.0",
    "bool": "use true or false",
    "string": "give a non-empty string",
    "string_pattern_mismatch": "use the form docs/configuration.md gives",
    "list": 'give a list, e.g. ["ra", "dec"]',
    "greater": "use a larger value",
    "less": "use a smaller value",
    "missing": "set it",
}


@dataclass
class _Where:
    """Where an error is: its key parts, the model holding the last one, its field, the union tag passed."""

    keys: list[str] = field(default_factory=list)
    model: type[BaseModel] | None = None
    info: FieldInfo | None = None
    tags: dict[str, type[BaseModel]] = field(default_factory=dict)  # tag -> member, of the last union passed
    tag_depth: int = -1  # len(keys) when that union's tag was passed


def allowed_types(annotation: Any) -> list[Any]:
    """The types an annotation allows (a union's members, None dropped), without their `Annotated` metadata."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [t for a in typing.get_args(annotation) if a is not type(None) for t in allowed_types(a)]
    return [annotation]


def _tag(model: Any) -> str | None:
    kind = model.model_fields.get("kind") if isinstance(model, type) and issubclass(model, BaseModel) else None
    return typing.get_args(kind.annotation)[0] if kind is not None and typing.get_args(kind.annotation) else None


def _locate(root: type[BaseModel], loc: tuple[int | str, ...]) -> _Where:
    where, node = _Where(), typing.cast(Any, root)
    for part in loc:
        if isinstance(part, str) and (part.startswith("function-") or part == "[key]"):
            continue  # pydantic's markers for a validator step and for a dict's key
        options = allowed_types(node)
        tags = {t: m for m in options if (t := _tag(m)) is not None}
        if len(options) > 1 and part in tags:  # the tag pydantic puts in the location of a discriminated union
            where.tags, where.tag_depth, node = tags, len(where.keys), tags[str(part)]
            continue
        node = options[0] if options else None
        if isinstance(node, type) and issubclass(node, BaseModel):
            # A default validated (`validate_default`) is located by field name, a given value by alias.
            found = [(n, f) for n, f in node.model_fields.items() if part in (n, f.alias)]
            where.model, where.info = node, found[0][1] if found else None
            where.keys.append(found[0][1].alias or found[0][0] if found else str(part))
            node = where.info.annotation if where.info else None
        else:  # a dict's value or a list's item
            where.keys.append(str(part))
            where.model, where.info = None, None
            node = (typing.get_args(node) or (None,))[-1]
    return where


def _shown(value: Any) -> str:
    return repr(value) if isinstance(value, str) else json.dumps(value, default=str)


def _unknown_key(where: _Where, value: Any) -> list[str]:
    key, name, parent = ".".join(where.keys), where.keys[-1], ".".join(where.keys[:-1])
    kinds = [t for t, m in where.tags.items() if name in aliases(m)] if where.tag_depth == len(where.keys) - 1 else []
    if kinds:  # a key of another member of a discriminated union (`storage.nfs` under `storage.kind: pvc`)
        tag = next(t for t, m in where.tags.items() if m is where.model)
        keys = [f"{key}.{k}" for k in value] if isinstance(value, dict) and value else [key]
        fix = f"remove it, or set {parent}.kind {' or '.join(kinds)}"
        return [f"{k} = '[set]': is set but {parent}.kind is {tag}. Fix: {fix}" for k in keys]
    allowed = aliases(where.model) if where.model else []
    close = difflib.get_close_matches(name, allowed, n=1)
    hint = (
        f"did you mean '{parent + '.' if parent else ''}{close[0]}'?"
        if close
        else f"allowed keys: {', '.join(allowed)}"
    )
    return [f"{key} = {_shown(value)}: is not a known key. Fix: {hint}"]


def _lines(error: ErrorDetails, root: type[BaseModel]) -> list[str]:
    where, kind, ctx = _locate(root, error["loc"]), error["type"], error.get("ctx") or {}
    key, value, what = ".".join(where.keys), None if kind == "missing" else error["input"], error["msg"]
    if kind == "extra_forbidden":
        return _unknown_key(where, value)
    if kind == "union_tag_invalid":  # a `kind` no member has
        key, value, what = (
            f"{key}.{ctx['discriminator'].strip(chr(39))}",
            ctx["tag"],
            "is not one of the allowed values",
        )
        ctx = {"fix": f"use one of: {ctx['expected_tags']}"}
    elif kind in ("model_type", "dict_type", "model_attributes_type"):
        what, ctx = "must be an object", {"fix": f"set its fields with `pulumi config set --path {key}.<field>`"}
    elif kind == "literal_error":
        ctx = {"fix": f"use one of: {ctx.get('expected', '')}"}
    field_fix = next((m.text for m in where.info.metadata if isinstance(m, Fix)), None) if where.info else None
    fix = (
        ctx.get("fix")
        or field_fix
        or TYPE_FIXES.get(kind)
        or TYPE_FIXES.get(kind.split("_")[0], "see docs/configuration.md")
    )
    return [f"{key} = {_shown(value)}: {what}. Fix: {fix}"]


def report(error: ValidationError, root: type[BaseModel]) -> list[str]:
    """Every problem in `error` (raised validating `root`), once each, in pydantic's order."""
    lines: list[str] = []
    for details in error.errors(include_url=False):
        lines += [line for line in _lines(details, root) if line not in lines]
    return lines
