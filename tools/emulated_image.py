"""The container image as the pod emulator runs it (tools/pod_emulator.py): its ENV, its directories, its PATH.

The image is docker/Dockerfile on the locked distributions: a target's PATH is this virtualenv restricted to the
console scripts of its locks' distributions (plus the base image's few programs), so a command the image does not
have fails as the container runtime fails; its ENV and directories are read from the Dockerfile's `ENV k=v`
(values without spaces), `WORKDIR` and `install -d`/`mkdir -p` lines.
"""

from __future__ import annotations

import errno
import functools
import importlib.metadata
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

from components.lock import DOCKERFILE_PATH, LOCK_PATH, PROJECT_DIR, canonical, read_lock

VENV_BIN = Path(sys.executable).parent
# Each Dockerfile target: the locks it installs, and the files it COPYs (image path -> build-context directory).
TARGETS: dict[str, tuple[tuple[Path, ...], dict[str, Path]]] = {
    "lsdb": ((LOCK_PATH,), {}),
    "notebook": (
        (LOCK_PATH, PROJECT_DIR / "docker" / "notebook-requirements.lock"),
        {"/opt/lsdb-notebook": PROJECT_DIR / "docker" / "notebook"},
    ),
}
BASE_IMAGE_ENV = {"LANG": "C.UTF-8"}  # what python:<version>-slim sets (PATH is the venv's)
BASE_IMAGE_PROGRAMS = ("sh", "bash", "env", "cat", "echo", "sleep", "true", "false", "ls")  # Debian slim's


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes variable expansion: `$(VAR)` -> value when VAR is defined, else left as `$(VAR)`;
    `$$` -> `$` (so `$$(VAR)` stays literal `$(VAR)`); any other `$` and an unclosed `$(` are kept."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("$(", i) and (close := text.find(")", i + 2)) != -1:
            name = text[i + 2 : close]
            out.append(env.get(name, f"$({name})"))
            i = close + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _dockerfile_instructions(dockerfile: Path) -> list[tuple[str, list[str]]]:
    """(INSTRUCTION, words) per instruction, continuation lines joined, comments dropped."""
    text = "\n".join(line for line in dockerfile.read_text().splitlines() if not line.lstrip().startswith("#"))
    out = []
    for line in text.replace("\\\n", " ").splitlines():
        words = line.split()
        if words:
            out.append((words[0].upper(), words[1:]))
    return out


@functools.cache
def image_env(dockerfile: Path = DOCKERFILE_PATH) -> dict[str, str]:
    """The image's environment: the base image's and every `ENV k=v ...` of the Dockerfile (no spaces in values)."""
    env = dict(BASE_IMAGE_ENV)
    for instruction, words in _dockerfile_instructions(dockerfile):
        if instruction == "ENV":
            env.update((k, v.strip('"')) for k, _, v in (w.partition("=") for w in words))
    return env


@functools.cache
def image_dirs(dockerfile: Path = DOCKERFILE_PATH) -> tuple[str, tuple[str, ...]]:
    """The image's WORKDIR and the directories its RUN steps make (`install -d ... /dir`, `mkdir -p /dir`)."""
    workdir, made = "/", []
    for instruction, words in _dockerfile_instructions(dockerfile):
        if instruction == "WORKDIR":
            workdir = words[-1].rstrip("/")
        for command in " ".join(words).split("&&") if instruction == "RUN" else ():
            argv = command.split()
            if argv[:1] in (["install"], ["mkdir"]) and ("-d" in argv or "-p" in argv):
                made += [w.rstrip("/") for w in argv[1:] if w.startswith("/")]
    return workdir, tuple(made)


@functools.cache
def image_executables(target: str = "lsdb") -> dict[str, Path]:
    """Programs on the target's PATH: the console scripts of its locked distributions, as installed in this venv."""
    locked = {name for lock in TARGETS[target][0] for name in read_lock(lock)}
    names = {"python", "python3", f"python{sys.version_info.major}.{sys.version_info.minor}", "pip", "pip3"}
    for dist in importlib.metadata.distributions():
        if canonical(dist.metadata["Name"] or "") not in locked:
            continue
        names.update(ep.name for ep in dist.entry_points if ep.group == "console_scripts")
        for f in dist.files or ():  # scripts installed as data files (../../bin/<name>)
            parts = Path(str(f)).parts
            if len(parts) >= 2 and parts[-2] == "bin" and ".." in parts:
                names.add(parts[-1])
    found = {n: VENV_BIN / n for n in names if (VENV_BIN / n).is_file()}
    for prog in BASE_IMAGE_PROGRAMS:
        if path := shutil.which(prog, path="/usr/bin:/bin"):
            found.setdefault(prog, Path(path))
    return found


def resolve_executable(name: str, target: str = "lsdb") -> Path:
    """Where the target's image would find `name`; FileNotFoundError like the container runtime when it has none."""
    key = name.rsplit("/", 1)[-1] if name.startswith(("/usr/local/bin/", "/usr/bin/", "/bin/")) else name
    path = image_executables(target).get(key) if "/" not in key else None
    if path is None:
        raise FileNotFoundError(errno.ENOENT, f'exec: "{name}": executable file not found in $PATH', name)
    return path
