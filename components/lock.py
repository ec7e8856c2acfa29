"""The one lock (docker/requirements.lock): exact versions shared by client, scheduler and workers, and the
image's pinned base (docker/Dockerfile's FROM)."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

PROJECT_DIR = Path(__file__).resolve().parent.parent
LOCK_PATH = PROJECT_DIR / "docker" / "requirements.lock"
# The program's own pins (Pulumi SDKs, dask-kubernetes), resolved together with the image lock.
PROGRAM_LOCK_PATH = PROJECT_DIR / "requirements.txt"
DOCKERFILE_PATH = PROJECT_DIR / "docker" / "Dockerfile"
# The one FROM python of docker/Dockerfile: a patch-release slim Python, pinned by digest (`make relock` re-pins it),
# naming its stage (the cluster's target; the notebook's builds FROM it).
BASE_IMAGE_FROM = re.compile(
    r"^FROM (?P<ref>python:(?P<python>[0-9]+\.[0-9]+\.[0-9]+)-slim@sha256:[0-9a-f]{64})"
    r"(?P<stage> AS [a-z][a-z0-9_-]*)?$",
    re.MULTILINE,
)


class BaseImage(NamedTuple):
    ref: str  # python:X.Y.Z-slim@sha256:<index digest>
    python_version: str  # X.Y.Z, what image.pythonVersion must equal


def base_image(dockerfile: Path = DOCKERFILE_PATH) -> BaseImage:
    """The image's base as docker/Dockerfile pins it: the one place that says which Python the image runs."""
    matches = list(BASE_IMAGE_FROM.finditer(dockerfile.read_text()))
    if len(matches) != 1:
        raise ValueError(
            f"{dockerfile}: expected one `FROM python:X.Y.Z-slim@sha256:<digest>` line, found {len(matches)};"
            " run `make relock` to pin the base image"
        )
    return BaseImage(matches[0]["ref"], matches[0]["python"])


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
    """Every distribution `roots` pull in (canonical name -> extras asked of it), following extras and evaluating
    markers for this interpreter; `requires`: canonical name -> its Requires-Dist lines. tools/relock.py's walk."""
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
