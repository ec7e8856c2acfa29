"""Run a rendered Job's container command locally, as the kubelet would, with its mounts mapped to local folders.

The command and args are taken as rendered; only `python` becomes this interpreter (the project's environment
holds the lock's packages, as the image does) and every path under a volume mount becomes the local folder given
for that volume, in the args and in env values alike. The environment is the container's own (`value`, or
`valueFrom.secretKeyRef` resolved from the rendered Secret's `stringData`) plus PATH and HOME: nothing of this
process leaks in (no PYTHONPATH), so the engine must run from its ConfigMap file alone. ConfigMap and Secret volumes
are written from the rendered ConfigMap and Secret (each key a file, as the kubelet projects them).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def container_env(
    container: Mapping[str, Any], secrets: Sequence[Mapping[str, Any]], mounts: Mapping[str, Path]
) -> dict[str, str]:
    by_name = {s["metadata"]["name"]: s.get("stringData", {}) for s in secrets}
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = map_path(item["value"], mounts)
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = by_name[ref["name"]][ref["key"]]
    return env


def local_mounts(
    job: Mapping[str, Any],
    config_maps: Sequence[Mapping[str, Any]],
    volumes: Mapping[str, Path],
    scratch: Path,
    secrets: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Path]:
    """Container mount path -> local folder: `volumes` by volume name; ConfigMaps and Secrets written out; the rest
    scratch."""
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    by_volume = {v["name"]: v for v in pod["volumes"]}
    maps = {c["metadata"]["name"]: c for c in config_maps}
    secret_data = {s["metadata"]["name"]: s.get("stringData", {}) for s in secrets}
    mounts: dict[str, Path] = {}
    for mount in container["volumeMounts"]:
        name, volume = mount["name"], by_volume[mount["name"]]
        if name in volumes:
            local = volumes[name]
        elif "configMap" in volume:
            local = scratch / "configmaps" / name
            local.mkdir(parents=True, exist_ok=True)
            for key, text in maps[volume["configMap"]["name"]]["data"].items():
                (local / key).write_text(text)
        elif "secret" in volume:
            local = scratch / "secrets" / name
            local.mkdir(parents=True, exist_ok=True)
            for key, text in secret_data[volume["secret"]["secretName"]].items():
                (local / key).write_text(text)
        else:
            local = scratch / "volumes" / name
            local.mkdir(parents=True, exist_ok=True)
        mounts[mount["mountPath"]] = local
    return mounts


def map_path(arg: str, mounts: Mapping[str, Path]) -> str:
    for mount_path in sorted(mounts, key=len, reverse=True):
        if arg == mount_path or arg.startswith(mount_path.rstrip("/") + "/"):
            return str(mounts[mount_path]) + arg[len(mount_path.rstrip("/")) :]
    return arg


def job_command(job: Mapping[str, Any], mounts: Mapping[str, Path]) -> list[str]:
    container = job["spec"]["template"]["spec"]["containers"][0]
    argv = [*container.get("command", []), *container.get("args", [])]
    assert argv[0] == "python", f"the Job runs {argv[0]!r}, not the image's python"
    return [sys.executable, *(map_path(a, mounts) for a in argv[1:])]


def start_job(
    job: Mapping[str, Any],
    config_maps: Sequence[Mapping[str, Any]],
    secrets: Sequence[Mapping[str, Any]],
    volumes: Mapping[str, Path],
    scratch: Path,
) -> subprocess.Popen[str]:
    """Start the Job's container command (its own session, so a test can kill it)."""
    container = job["spec"]["template"]["spec"]["containers"][0]
    mounts = local_mounts(job, config_maps, volumes, scratch, secrets)
    home = next((p for m, p in mounts.items() if m.startswith("/home")), scratch)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), **container_env(container, secrets, mounts)}
    return subprocess.Popen(
        job_command(job, mounts),
        env=env,
        cwd=str(scratch),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def run_job(
    job: Mapping[str, Any],
    config_maps: Sequence[Mapping[str, Any]],
    secrets: Sequence[Mapping[str, Any]],
    volumes: Mapping[str, Path],
    scratch: Path,
    timeout: float = 300.0,
) -> subprocess.CompletedProcess[str]:
    proc = start_job(job, config_maps, secrets, volumes, scratch)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"the Job's command ran over {timeout:g} s:\n{err[-3000:]}") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
