"""The verification's query and result (components/verification/query.py), called directly: what the check's
child process receives, which rows-and-workers a query needs, the outputs a result becomes, the worker groups it
counts and the `--storage-option` flags. Fast enough for mutation testing (docs/mutation.md);
tests/test_verification.py runs the same through the CLI against real Dask processes."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from pydantic import ValidationError

from components.verification.query import (
    OUTPUT_KEYS,
    UNGROUPED,
    VerificationQuery,
    VerificationResult,
    parse_storage_options,
    worker_group_of,
)


def query(**keys: Any) -> VerificationQuery:
    return VerificationQuery.model_validate({"catalogPath": "/data/sample", **keys})


def test_the_child_process_gets_the_query_as_users_write_it() -> None:
    q = query(minRows=5, columns="ra,dec", storageOptions={"anon": False}, minWorkers=2)
    sent = json.loads(q.to_json())
    assert "enabled" not in sent
    assert sent["catalogPath"] == "/data/sample" and sent["minRows"] == 5 and sent["minWorkers"] == 2
    assert sent["columns"] == ["ra", "dec"] and sent["storageOptions"] == {"anon": False}
    assert "min_rows" not in sent
    assert VerificationQuery.model_validate_json(q.to_json()) == q  # the child reads back the same query


def test_the_lsdb_query_needs_a_catalog_and_a_worker_the_gate_neither() -> None:
    with pytest.raises(ValidationError) as err:
        VerificationQuery.model_validate({"minWorkers": 0})
    problems = {".".join(map(str, e["loc"])): e["msg"] for e in err.value.errors()}
    assert problems == {
        "catalogPath": "is required for the LSDB query",
        "minWorkers": "is below 1: the query runs on a worker",
    }
    gate = VerificationQuery.model_validate({"stages": "gate", "minWorkers": 0})
    assert gate.catalog_path is None and gate.min_workers == 0


RESULT = {
    "rows": 812, "partitions": 3, "workers": 3, "workers_by_group": {"c-default": 2, "c-highmem": 1},
    "elapsed_seconds": 4.25, "versions": {"lsdb": "0.6"}, "sample": [{"ra": 1.0}],
    "stage_seconds": {"connect": 0.1}, "warnings": ["w"], "scheduler": "tcp://127.0.0.1:4444",
    "catalog_path": "/data/sample",
}  # fmt: skip


def test_a_result_becomes_the_resources_outputs_without_the_local_address() -> None:
    outputs = VerificationResult.model_validate(RESULT).to_outputs()
    assert tuple(outputs) == OUTPUT_KEYS
    assert outputs == {
        "rows": 812, "partitions": 3, "workers": 3, "workersByGroup": {"c-default": 2, "c-highmem": 1},
        "elapsedSeconds": 4.25, "versions": {"lsdb": "0.6"}, "sample": [{"ra": 1.0}],
        "stageSeconds": {"connect": 0.1}, "warnings": ["w"],
    }  # fmt: skip


@pytest.mark.parametrize(
    ("name", "group"),
    [("lsdb-x-0a1b2c3d-default-worker-0123456789", "lsdb-x-0a1b2c3d-default"),
     ("g-worker-worker-abcdef0123", "g-worker"), ("lsdb-x-default-worker-012345678", UNGROUPED),
     ("lsdb-x-default-worker-0123456789-x", UNGROUPED), ("tcp://10.0.0.1:8789", UNGROUPED), (None, UNGROUPED)],
)  # fmt: skip
def test_the_worker_group_is_the_operators_name_without_its_suffix(name: object, group: str) -> None:
    assert worker_group_of(name) == group


def test_storage_options_are_json_where_they_parse() -> None:
    assert parse_storage_options([]) == {}
    assert parse_storage_options([" anon =false", "endpoint_url=http://h:9000", "n=3", 'c={"a": 1}', "e="]) == {
        "anon": False,
        "endpoint_url": "http://h:9000",
        "n": 3,
        "c": {"a": 1},
        "e": "",
    }
    assert parse_storage_options(["token=a=b"]) == {"token": "a=b"}


@pytest.mark.parametrize("item", ["anon", "=false", " =x"])
def test_a_storage_option_without_a_key_names_the_item(item: str) -> None:
    message = f"storage option {item!r} is not KEY=VALUE (e.g. anon=false)"
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        parse_storage_options(["ok=1", item])
