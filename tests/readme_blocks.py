"""Code blocks of README.md that tests run or validate, found by the HTML comment just above them."""

from __future__ import annotations

import re

from components.lock import PROJECT_DIR


def readme_block(marker: str) -> str:
    """The fenced block right after `<!-- <marker>: ... -->` in README.md."""
    text = (PROJECT_DIR / "README.md").read_text()
    match = re.search(rf"<!-- {re.escape(marker)}:[^>]*-->\n```[a-z]*\n(.*?)\n```", text, re.S)
    if match is None:
        raise AssertionError(f"README.md has no block marked <!-- {marker}: ... -->")
    return match.group(1)
