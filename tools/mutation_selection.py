"""pytest plugin for `make mutate` (loaded by `[tool.mutmut] pytest_add_cli_args`): a mutant of a module runs only
that module's fast tests (docs/mutation.md), not every selected test that happens to call it.

mutmut runs, for each mutant, the selected tests that reached the mutated function; a validator of the config
model is reached by every test that builds a config. Under a mutant (mutmut names it in MUTANT_UNDER_TEST) this
deselects the tests outside its module's files (or its function's, where `FAST_TESTS_OF_FUNCTION` names them);
when none is left pytest exits 5, which mutmut reports as "no tests": the module has no fast test of that function
yet. Outside a mutant run the plugin does nothing.
"""

from __future__ import annotations

import os
import re
from typing import Any

# Module -> the fast test files its mutants run. A module of `only_mutate` missing here has none yet; add its file
# here and in `pytest_add_cli_args_test_selection` together.
FAST_TESTS: dict[str, tuple[str, ...]] = {
    "policy.lsdb_guardrails": ("tests/test_policy.py", "tests/test_policy_edges.py"),
    "components.security": ("tests/test_network_policy_rules.py", "tests/test_cluster_security_component.py"),
    "components.tls_schedule": ("tests/test_tls_schedule.py",),
    "components.object_store_keys": ("tests/test_object_store_keys.py",),
    "components.placement": ("tests/test_placement_rules.py",),
    "components.scheduler_downscale": ("tests/test_scheduler_downscale_plugin.py",),
    "components.operator_guard": ("tests/test_operator_guard.py",),
    "components.storage": ("tests/test_storage_rules.py",),
    "components.storage_config": ("tests/test_storage_rules.py",),
    "components.monitoring": ("tests/test_monitoring_rules.py",),
    "components.cluster": ("tests/test_cluster_manifests.py",),
    "components.catalogs": ("tests/test_catalogs.py", "tests/test_catalogs_manifests.py"),
    "components.notebook": ("tests/test_notebook_manifests.py",),
    "components.verification.query": ("tests/test_verification_query_rules.py",),
    "components.config": (
        "tests/test_config.py",
        "tests/test_config_rules.py",
        "tests/test_config_sections.py",
        "tests/test_config_stack_rules.py",
    ),
    "components.section": ("tests/test_config_sections.py",),
    "components.cluster_config": ("tests/test_config_sections.py",),
    "components.catalog_config": ("tests/test_config_sections.py",),
    "components.notebook_config": ("tests/test_config_sections.py",),
    "components.verification.resource": (
        "tests/test_verification_provider.py",
        "tests/test_verification_resource_rules.py",
    ),
    "components.verification.check": (
        "tests/test_verification_check_rules.py",
        "tests/test_verification_check_waits.py",
    ),
}
# Functions whose mutants run only these files, not every fast test of their module that reaches them: the check's
# waiting loops, which the module's other tests reach on the real clock (a mutant that never ends the loop would
# wait out pytest's timeout there); these files run them on a stand-in clock.
FAST_TESTS_OF_FUNCTION: dict[str, tuple[str, ...]] = {
    "components.verification.check.x__identify": ("tests/test_verification_check_waits.py",),
    "components.verification.check.x__wait_for_workers": ("tests/test_verification_check_waits.py",),
}
MUTANT = re.compile(r"^(?P<module>[\w.]+?)\.x[_ǁ]")


def module_under_test() -> str | None:
    match = MUTANT.match(os.environ.get("MUTANT_UNDER_TEST", ""))
    return match["module"] if match else None


def files_under_test() -> tuple[str, ...] | None:
    """The test files the mutant under test runs (None outside a mutant run)."""
    module = module_under_test()
    if module is None:
        return None
    function = os.environ["MUTANT_UNDER_TEST"].rsplit("__mutmut_", 1)[0]
    return FAST_TESTS_OF_FUNCTION.get(function, FAST_TESTS.get(module, ()))


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    files = files_under_test()
    if files is None:
        return
    keep = [item for item in items if item.nodeid.split("::", 1)[0] in files]
    if len(keep) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in keep])
        items[:] = keep
