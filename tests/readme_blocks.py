"""Code blocks of README.md and docs/*.md that tests run or validate, found by the HTML comment just above them."""

from __future__ import annotations

import re

from components.lock import PROJECT_DIR

DOCUMENTS = [PROJECT_DIR / "README.md", *sorted((PROJECT_DIR / "docs").glob("*.md"))]


def readme_block(marker: str) -> str:
    """The fenced block right after `<!-- <marker>: ... -->`, in whichever document holds it (exactly one)."""
    pattern = re.compile(rf"<!-- {re.escape(marker)}:[^>]*-->\n```[a-z]*\n(.*?)\n```", re.S)
    found = [(path, m.group(1)) for path in DOCUMENTS for m in pattern.finditer(path.read_text())]
    if len(found) != 1:
        where = ", ".join(str(path.relative_to(PROJECT_DIR)) for path, _ in found) or "no document"
        raise AssertionError(f"expected one block marked <!-- {marker}: ... --> in README.md or docs/, found: {where}")
    return found[0][1]
