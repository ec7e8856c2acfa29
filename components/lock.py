"""The one lock (docker/requirements.lock): exact versions shared by client, scheduler and workers."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
LOCK_PATH = PROJECT_DIR / "docker" / "requirements.lock"
# The program's own pins (Pulumi SDKs, dask-kubernetes), resolved together with the image lock.
PROGRAM_LOCK_PATH = PROJECT_DIR / "requirements.txt"


def canonical(name: str) -> str:
    """PEP 503 name: `Nested_Pandas` and `nested-pandas` are the same package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def same_version(a: str, b: str) -> bool:
    """Whether two version strings name the same release (PEP 440: `2.0` is `2.0.0`); unparsable ones compare as text.
    The one version comparison: the client check, the verification's version stage, the operator's stack."""
    from packaging.version import InvalidVersion, Version

    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a == b


@functools.cache
def read_lock(path: Path = LOCK_PATH) -> dict[str, str]:
    """Map canonical package name to its exact pinned version."""
    pins: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        name, sep, version = line.partition("==")
        if not sep:
            raise ValueError(f"{path}: '{line}' is not pinned with '=='; run `python -m tools.relock`")
        pins[canonical(name.split("[", 1)[0])] = version.strip()
    return pins


def locked_version(name: str) -> str:
    """The pinned version of one package, from the image lock or the program's pins (one resolution)."""
    pins = {**read_lock(PROGRAM_LOCK_PATH), **read_lock()}
    try:
        return pins[canonical(name)]
    except KeyError:
        raise KeyError(f"{name} is pinned in neither {LOCK_PATH.name} nor {PROGRAM_LOCK_PATH.name}") from None


def requirement_closure(requires: Mapping[str, Sequence[str]], roots: Iterable[str]) -> dict[str, set[str]]:
    """Every distribution `roots` pull in (canonical name -> extras asked of it), following extras and
    evaluating markers for this interpreter. `requires` maps canonical name -> its Requires-Dist lines.

    The one walk behind `tools/relock.py` (which splits the lock), the lock tests and the image benchmark.
    """
    from packaging.requirements import Requirement

    extras: dict[str, set[str]] = {}
    todo = [Requirement(r) for r in roots]
    while todo:
        req = todo.pop()
        name = canonical(req.name)
        first = name not in extras
        known = extras.setdefault(name, set())
        new = set(req.extras) - known
        if not (first or new) or name not in requires:
            continue
        known |= new
        for raw in requires[name]:
            sub = Requirement(raw)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in known or {""}):
                todo.append(sub)
    return extras
