"""The client running the program must match the image (docs/image.md): Python major.minor equal to
`image.pythonVersion`'s (Dask pickles tasks between them; a patch difference is only a note, Dask warns about it),
and every package of docker/requirements.lock at its locked version (from importlib.metadata: nothing imported)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

import pulumi

from components.config import ImageConfig
from components.lock import LOCK_PATH, PROJECT_DIR, canonical, read_lock, same_version

LOCK_NAME = LOCK_PATH.relative_to(PROJECT_DIR).as_posix()  # docker/requirements.lock
CLIENT_PYTHON = ".".join(map(str, sys.version_info[:3]))  # X.Y.Z of the interpreter running the program


class ClientEnvironmentError(pulumi.RunError):  # RunError: Pulumi prints the message, no traceback
    """The client environment differs from the image (Python minor or a locked package)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(
            f"{len(problems)} difference(s) between this client environment and the image (nothing was deployed):\n"
            f"{lines}\n"
            "To deploy anyway and only warn: pulumi config set --path image.clientCheck warn"
        )


def installed_versions() -> dict[str, str]:
    """Canonical distribution name -> version, as `import` would find it (the first on sys.path wins)."""
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        if name := dist.metadata["Name"]:
            found.setdefault(canonical(name), dist.version)
    return found


def _minor(version: str) -> tuple[int, int]:
    """(X, Y) of image.pythonVersion's `X.Y.Z` (the config's pattern)."""
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def check_client_environment(
    python_version: str, lock: Mapping[str, str] | None = None, installed: Mapping[str, str] | None = None
) -> list[str]:
    """Every difference between the running client and the image (`python_version`: image.pythonVersion), each with
    its fix. `lock`, `installed`: canonical name -> version (defaults: the lock, `installed_versions()`)."""
    problems: list[str] = []
    image_minor = _minor(python_version)
    if image_minor != _minor(CLIENT_PYTHON):
        problems.append(
            f"the client runs Python {CLIENT_PYTHON} but the image runs "
            f"Python {python_version} (image.pythonVersion); Dask pickles tasks between them, so the minor "
            f"versions must match. Fix: run the program from a Python {image_minor[0]}.{image_minor[1]} venv, "
            f"or set `pulumi config set --path image.pythonVersion {CLIENT_PYTHON}` "
            "(and re-lock with that Python: `python -m tools.relock`)"
        )
    versions = installed_versions() if installed is None else installed
    exe = Path(sys.executable)  # the interpreter running now, relative to the project when inside it
    shown = exe.relative_to(PROJECT_DIR) if exe.is_relative_to(PROJECT_DIR) else exe
    fix = f"`{shown} -m pip install -r requirements.txt` (what `make venv` installs)"
    for name, pinned in sorted((read_lock() if lock is None else lock).items()):
        have = versions.get(canonical(name))
        if have is None:
            problems.append(f"{name} is not installed in the client but {LOCK_NAME} pins {pinned}: run {fix}")
        elif not same_version(have, pinned):
            problems.append(f"{name} {have} is installed in the client but {LOCK_NAME} pins {pinned}: run {fix}")
    return problems


def python_patch_note(python_version: str) -> str | None:
    """A note when only the patch release differs: harmless for pickles, but Dask warns about it."""
    if _minor(python_version) == _minor(CLIENT_PYTHON) and python_version != CLIENT_PYTHON:
        return (
            f"the client runs Python {CLIENT_PYTHON} and the image {python_version}: same minor series, but Dask "
            "compares the full version and will emit VersionMismatchWarning; align image.pythonVersion with the "
            f"client (`pulumi config set --path image.pythonVersion {CLIENT_PYTHON}`) to silence it"
        )
    return None


def enforce_client_environment(image: ImageConfig, lock_path: Path = LOCK_PATH) -> list[str]:
    """`image.clientCheck`: raise ("error") or warn ("warn"), before any resource is registered; the problems."""
    if note := python_patch_note(image.python_version):
        pulumi.log.warn(note)
    problems = check_client_environment(image.python_version, read_lock(lock_path))
    if problems and image.client_check != "warn":
        raise ClientEnvironmentError(problems)
    for problem in problems:
        pulumi.log.warn(f"client/image mismatch (image.clientCheck is warn): {problem}")
    return problems
