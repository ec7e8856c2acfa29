"""`jsonschema.validate`, with each schema checked against its metaschema once per test process.

`jsonschema.validate(instance, schema)` checks `schema` itself (`check_schema`) on every call, then validates: on
the pinned dask-kubernetes CRDs the check is ~0.5 s of CPU and the validation a few milliseconds, and the suite
validates hundreds of custom resources against the same few schemas. Here the schema is checked and its validator
built on first use (keyed by the schema's content, so a changed schema is a new entry); the validation and the
error raised (`best_match` of all errors, as `jsonschema.validate` raises it) are the same.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonschema

_VALIDATORS: dict[str, Any] = {}


def checked_validator(schema: dict[str, Any]) -> Any:
    """The validator `jsonschema.validate` would build for `schema`, after the same `check_schema`."""
    key = json.dumps(schema, sort_keys=True)
    if key not in _VALIDATORS:
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
        _VALIDATORS[key] = cls(copy.deepcopy(schema))  # its own copy: a caller changing its dict changes nothing here
    return _VALIDATORS[key]


def validate(instance: Any, schema: dict[str, Any]) -> None:
    """Raise the best-matching `jsonschema.ValidationError` of `instance` against `schema`, as jsonschema does."""
    error = jsonschema.exceptions.best_match(checked_validator(schema).iter_errors(instance))
    if error is not None:
        raise error
