"""Product code (the program, its tools, scripts, benches and policy pack) imports nothing from tests/."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("components", "tools", "scripts", "bench", "policy")


def imports_from_tests(source: str) -> set[str]:
    """The `tests` modules a Python source imports, at any depth (relative imports stay in their own package)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return {m for m in found if m == "tests" or m.startswith("tests.")}


def product_files() -> list[Path]:
    files = [ROOT / "__main__.py"]
    for top in PRODUCT:
        files += [p for p in (ROOT / top).rglob("*.py") if "venv" not in p.relative_to(ROOT).parts[1:2]]
    return sorted(files)


def test_product_code_imports_nothing_from_tests() -> None:
    files = product_files()
    assert {p.relative_to(ROOT).parts[0] for p in files} >= {*PRODUCT, "__main__.py"}
    offenders = [
        f"{path.relative_to(ROOT)}: import {module}"
        for path in files
        for module in sorted(imports_from_tests(path.read_text()))
    ]
    assert offenders == []


def test_the_import_check_sees_nested_and_from_imports() -> None:
    source = "def f():\n    from tests.support.x import y\nimport tests\nfrom testsuite import z\nfrom . import tests\n"
    assert imports_from_tests(source) == {"tests.support.x", "tests"}
