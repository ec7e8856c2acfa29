"""Make the project importable as in `pulumi up` (the program runs from the project directory); let Python write
bytecode; run the slowest files first."""

import functools
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# uv installs the virtualenvs without compiling them (a module is compiled on its first import, and its .pyc kept), but
# with PYTHONDONTWRITEBYTECODE set (this machine's environment sets it) no .pyc is ever written: each of the suite's
# hundreds of Python processes (the emulated pods' Dask processes, the verification's children, CLI runs, checkov)
# compiled every module it imported again, about three times the import's CPU (lsdb and distributed: 7 s instead of
# 2.5 s). The suite writes them (the virtualenvs and the project's __pycache__, git-ignored); so do the emulated pods,
# without the image's PYTHONDONTWRITEBYTECODE (tools/pod_emulator.py). Set before xdist starts its workers.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False

# The files that take longest, longest first (measured on the 2-core machine, whole file on one worker). With
# `--dist loadfile` a file runs on one worker, and xdist hands files out in collection order (pyproject's
# addopts turn off its reordering by test count, which put these few-test files last): started first, they run
# beside each other and the many short files fill the end, instead of one worker finishing a long e2e file
# alone. A file missing here only loses its place in the queue.
SLOWEST_FIRST = (
    "test_e2e_object_store.py",
    "test_upgrade_e2e.py",
    "test_verification.py",
    "test_e2e.py",
    "test_provision.py",
    "test_matrix.py",
    "test_schemas.py",
    "test_e2e_tls.py",
    "test_render.py",
    "test_program.py",
    "test_lifecycle.py",
    "test_verification_provider.py",
    "test_worker_groups_scale.py",
    "test_notebook_server.py",
    "test_dev_script.py",
    "test_catalogs.py",
    "test_bench.py",
    "test_verification_wait.py",
    "test_storage_access.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOWEST_FIRST)))  # stable: a file's order is kept


@pytest.fixture(scope="session", autouse=True)
def read_once_per_process() -> Iterator[None]:
    """What the tests read again and again from files that do not change during the run, read once per test process:

    * the program's client check (components/client_check.py) reads every installed distribution's metadata, 0.1 s
      of CPU, two thirds of a mock run without the operator, in each of the suite's hundreds of mock runs. The check
      itself (the lock against these versions, each difference with its fix) still runs in full every time;
    * kubernetes-validate loads its JSON schema of the kind and its 1 MB of definitions on every `validate` (20 ms),
      for each object of each stack and Kubernetes version; the validation itself is unchanged.

    Processes the tests start (CLI renders, `pulumi`, checkov) read their own."""
    import kubernetes_validate.utils

    from components import client_check

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(client_check, "installed_versions", functools.cache(client_check.installed_versions))
        patch.setattr(
            kubernetes_validate.utils, "schema_contents", functools.cache(kubernetes_validate.utils.schema_contents)
        )
        yield
