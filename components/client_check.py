"""Client/image agreement: the environment running the program must match what the image runs.

The guide's top failure is drift between the client, the scheduler and the workers (VersionMismatchWarning,
serialization errors). The image installs exactly docker/requirements.lock on Python `image.pythonVersion`;
`make venv` installs the same lock into the client. This module proves the running client still does:

- Python major.minor equals `image.pythonVersion`'s (pickles, and so Dask's task graphs, are only safe
  within one minor series). A different patch release is not an error, but Dask compares the full version
  and will warn about it (VersionMismatchWarning), so it is reported as a note.
- every package in the lock is installed in the client at exactly the locked version. Versions come from
  `importlib.metadata` (distribution metadata on disk): nothing is imported, so the check costs milliseconds.

`check_client_environment` is pure (returns the problems); `enforce_client_environment` applies
`image.clientCheck`: "error" raises `ClientEnvironmentError` before any resource is registered,
"warn" logs each problem with `pulumi.log.warn` and goes on.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from importlib import metadata
from pathlib import Path

import pulumi

from components.config import ImageConfig
from components.lock import LOCK_PATH, PROJECT_DIR, canonical, read_lock, same_version

LOCK_NAME = "docker/requirements.lock"


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
        name = dist.metadata["Name"]
        if name:
            found.setdefault(canonical(name), dist.version)
    return found


def _install_command() -> str:
    """How to reinstall the lock into the interpreter running now (relative to the project when inside it)."""
    exe = Path(sys.executable)
    try:
        shown = str(exe.relative_to(PROJECT_DIR))
    except ValueError:
        shown = str(exe)
    return f"`{shown} -m pip install -r requirements.txt` (what `make venv` installs)"


def _minor(version: str) -> tuple[int, int] | None:
    parts = version.split(".")
    if len(parts) < 2 or not (parts[0].isdigit() and parts[1].isdigit()):
        return None
    return int(parts[0]), int(parts[1])


def check_client_environment(
    python_version: str,
    lock: Mapping[str, str] | None = None,
    installed: Callable[[str], str | None] | None = None,
) -> list[str]:
    """Every difference between the running client and the image, as precise messages with a fix.

    `python_version` is `image.pythonVersion`; `lock` maps canonical names to pinned versions (default:
    docker/requirements.lock); `installed(name)` returns the client's version of a distribution or None
    (default: importlib.metadata, nothing imported). An empty list means the client matches the image.
    """
    problems: list[str] = []
    client = sys.version_info
    image_minor = _minor(python_version)
    if image_minor is not None and image_minor != (client.major, client.minor):
        problems.append(
            f"the client runs Python {client.major}.{client.minor}.{client.micro} but the image runs "
            f"Python {python_version} (image.pythonVersion); Dask pickles tasks between them, so the minor "
            f"versions must match. Fix: run the program from a Python {image_minor[0]}.{image_minor[1]} venv, "
            f"or set `pulumi config set --path image.pythonVersion {client.major}.{client.minor}.{client.micro}` "
            "(and re-lock with that Python: `python -m tools.relock`)"
        )
    pins = read_lock() if lock is None else lock
    if installed is None:
        versions = installed_versions()

        def installed(name: str) -> str | None:
            return versions.get(canonical(name))

    fix = _install_command()
    for name, pinned in sorted(pins.items()):
        have = installed(name)
        if have is None:
            problems.append(f"{name} is not installed in the client but {LOCK_NAME} pins {pinned}: run {fix}")
        elif not same_version(have, pinned):
            problems.append(f"{name} {have} is installed in the client but {LOCK_NAME} pins {pinned}: run {fix}")
    return problems


def python_patch_note(python_version: str) -> str | None:
    """A note when only the patch release differs: harmless for pickles, but Dask warns about it."""
    client = sys.version_info
    here = f"{client.major}.{client.minor}.{client.micro}"
    if _minor(python_version) == (client.major, client.minor) and python_version != here:
        return (
            f"the client runs Python {here} and the image {python_version}: same minor series, but Dask compares "
            "the full version and will emit VersionMismatchWarning; align image.pythonVersion with the client "
            f"(`pulumi config set --path image.pythonVersion {here}`) to silence it"
        )
    return None


def enforce_client_environment(image: ImageConfig, lock_path: Path = LOCK_PATH) -> list[str]:
    """Apply `image.clientCheck` to `check_client_environment`: raise ("error") or `pulumi.log.warn` ("warn").

    Call it right after the config is read, before any resource is registered. Returns the problems found.
    """
    note = python_patch_note(image.python_version)
    if note:
        pulumi.log.warn(note)
    problems = check_client_environment(image.python_version, read_lock(lock_path))
    if not problems:
        return []
    if image.client_check == "warn":
        for problem in problems:
            pulumi.log.warn(f"client/image mismatch (image.clientCheck is warn): {problem}")
        return problems
    raise ClientEnvironmentError(problems)
