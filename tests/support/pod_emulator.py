"""Run a DaskCluster's pods as local processes, built exactly as the pinned Dask operator builds them.

Test support, not product code. There is no cluster here, so this stands in for three things:

* the operator: `operator_objects` turns a DaskCluster manifest into the scheduler Deployment and Service,
  the default DaskWorkerGroup (and any extra DaskWorkerGroups given) and their worker Deployments by calling
  the builder functions of the pinned `dask_kubernetes.operator.controller` the way
  `daskcluster_create_components`, `daskworkergroup_create` and `daskworkergroup_replica_update` call them
  (same metadata merging, `kopf.adopt`, `kopf.label`), so the injected environment (`DASK_SCHEDULER_ADDRESS`,
  `DASK_WORKER_NAME`) is the operator's own;
* the kubelet: each container of a Deployment's pod template becomes one process. `command` + `args`
  (or the image entrypoint, which is empty for our image, + `args`) get the Kubernetes `$(VAR)`
  expansion from the container's env; the executable is looked up in the image's PATH, emulated by the
  test venv restricted to what docker/requirements.lock installs (same lock as the image), so a command
  the image does not have fails like the container runtime does: `exec: "x": executable file not found
  in $PATH` (a FileNotFoundError naming it);
* the cluster network and volumes: all pods share this machine's loopback, so every declared
  containerPort gets a free local port, and Service DNS names are answered by 127.0.0.1.

Mappings (applied to the expanded args and env values, never to the manifests themselves):

* ports: each declared `containerPort` of a pod -> a free 127.0.0.1 port of its own. In args, an integer
  value of a flag whose name contains "port" (`--port 8786`, `--port=8786`) and the port of a
  `[host]:PORT` value of a flag whose name contains "address" or "host" (`--dashboard-address :8787`) are
  rewritten when PORT is declared by that container. Probes resolve their (named) port the same way.
* services: `<svc>.<ns>.svc.cluster.local[:port]` (and `<svc>[.<ns>[.svc]]:port`) -> `127.0.0.1:<local>`,
  where `port` is looked up in the Service's ports, its `targetPort` (number or name) in the containers
  of the pods its selector selects, and that containerPort in the port table above. The operator's
  injected `tcp://<cluster>-scheduler.<ns>.svc.cluster.local:8786` therefore lands exactly on the local
  port the scheduler's rewritten `--port` listens on, and only if the Service really exposes 8786 and
  selects the scheduler pod.
* volumes: a `volumeMount`'s `mountPath` -> a local directory: a `persistentVolumeClaim` volume -> the
  directory given for that claim (`claims={"hats-catalog-pvc": dir}`), an `emptyDir` -> a fresh directory
  of that pod, a `secret` volume -> a directory with the given secret's keys as files. Paths equal to or
  below a mount path in args and env values are rewritten; `map_path` does the same for a client.

Processes: each container runs in its own session (its own process group), with a clean environment
(the image's ENV from docker/Dockerfile, PATH, HOME, then the container env); nothing of the test
process's environment (PYTHONPATH, DASK_*) leaks in. `EmulatedCluster` is a context manager; `stop()`
sends SIGTERM to every process group it started, then SIGKILL, then kills by PID any descendant that
left its group; an `atexit` hook does the same if a test run is interrupted. `leftover_pids()` lists
any started PID (checked with its start time, so a reused PID does not count) that is still running.

Not emulated: Service environment variables (enableServiceLinks), restarts on crash (call
`EmulatedPod.restart()`), resource limits, securityContext, image pull, scheduling.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import dataclasses
import errno
import functools
import importlib.metadata
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.lock import PROJECT_DIR, canonical, read_lock
from tests.support.processes import stop_process_groups

VENV_BIN = Path(sys.executable).parent
DOCKERFILE = PROJECT_DIR / "docker" / "Dockerfile"
CLUSTER_DOMAIN = "svc.cluster.local"
LOOPBACK = "127.0.0.1"
# The python:<version>-slim base image sets these; PATH is replaced by the venv (see resolve_executable).
BASE_IMAGE_ENV = {"LANG": "C.UTF-8"}
# Debian slim programs a command may name besides the lock's console scripts.
BASE_IMAGE_PROGRAMS = ("sh", "bash", "env", "cat", "echo", "sleep", "true", "false", "ls")
STOP_GRACE_SECONDS = 5.0


class EmulationError(Exception):
    """The manifest cannot run as it stands (missing volume source, crash on start, probe never ready...)."""


# --- Kubernetes $(VAR) expansion (k8s.io/kubernetes third_party/forked/golang/expansion) --------------------


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes variable expansion: `$(VAR)` -> value when VAR is defined, else left as `$(VAR)`;
    `$$` -> `$` (so `$$(VAR)` stays literal `$(VAR)`); any other `$` and an unclosed `$(` are kept."""
    out: list[str] = []
    checkpoint = 0
    cursor = 0
    n = len(text)
    while cursor < n:
        if text[cursor] == "$" and cursor + 1 < n:
            out.append(text[checkpoint:cursor])
            nxt = text[cursor + 1]
            if nxt == "$":  # escaped operator
                out.append("$")
                advance = 1
            elif nxt == "(":
                close = text.find(")", cursor + 2)
                if close == -1:  # incomplete reference: keep "$(" and go on after it
                    out.append("$(")
                    advance = 1
                else:
                    name = text[cursor + 2 : close]
                    out.append(env.get(name, f"$({name})"))
                    advance = close - cursor
            else:  # "$x": not an expression
                out.append("$" + nxt)
                advance = 1
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    out.append(text[checkpoint:])
    return "".join(out)


# --- the operator ------------------------------------------------------------------------------------------


@dataclass
class OperatorObjects:
    """What the operator creates for one DaskCluster (plain dicts, as it would send them to the API server)."""

    cluster: dict[str, Any]  # the DaskCluster as the API server holds it (namespace and uid set)
    scheduler_deployment: dict[str, Any]
    scheduler_service: dict[str, Any]
    worker_group: dict[str, Any]
    worker_deployments: list[dict[str, Any]]  # every group's, the default group's first
    extra_worker_groups: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    @property
    def deployments(self) -> list[dict[str, Any]]:
        return [self.scheduler_deployment, *self.worker_deployments]


def _merge_metadata(meta: Any, section: Mapping[str, Any], get_annotations: Callable, get_labels: Callable) -> tuple:
    annotations = get_annotations(meta)
    labels = get_labels(meta)
    if "metadata" in section:
        if "annotations" in section["metadata"]:
            annotations.update(**section["metadata"]["annotations"])
        if "labels" in section["metadata"]:
            labels.update(**section["metadata"]["labels"])
    return annotations, labels


def operator_objects(
    daskcluster: Mapping[str, Any],
    namespace: str = "default",
    uuids: Iterable[str] | None = None,
    worker_groups: Iterable[Mapping[str, Any]] = (),
) -> OperatorObjects:
    """Derive the operator's objects from a DaskCluster manifest with the pinned controller's builders.

    `namespace` applies when the manifest has none (as `kubectl apply` without -n). `uuids` fixes the
    worker Deployment suffixes (the operator uses `uuid4().hex[:10]`). `worker_groups`: extra DaskWorkerGroup
    manifests of this cluster, handled as `daskworkergroup_create` does (adopted by the cluster, then scaled).
    """
    import kopf
    from dask_kubernetes.operator.controller import controller as op

    raw = copy.deepcopy(dict(daskcluster))
    meta_raw = raw.setdefault("metadata", {})
    meta_raw.setdefault("namespace", namespace)
    meta_raw.setdefault("uid", str(uuid.uuid4()))  # the API server assigns one; owner references need it
    cluster_body = kopf.Body(raw)
    name, ns = cluster_body.meta.name, cluster_body.meta.namespace
    assert name and ns
    spec, meta = cluster_body.spec, cluster_body.meta

    # daskcluster_create_components
    scheduler_spec = spec.get("scheduler", {})
    annotations, labels = _merge_metadata(meta, scheduler_spec, op._get_annotations, op._get_labels)
    scheduler_deployment = op.build_scheduler_deployment_spec(name, scheduler_spec.get("spec"), annotations, labels)
    kopf.adopt(scheduler_deployment, owner=cluster_body)
    scheduler_service = op.build_scheduler_service_spec(name, scheduler_spec.get("service"), annotations, labels)
    kopf.adopt(scheduler_service, owner=cluster_body)
    worker_spec = spec.get("worker", {})
    annotations, labels = _merge_metadata(meta, worker_spec, op._get_annotations, op._get_labels)
    worker_group = op.build_default_worker_group_spec(name, worker_spec, annotations, labels)
    suffixes = iter(uuids or ())
    groups = [_adopted_group(worker_group, cluster_body, ns)]
    for extra in worker_groups:
        if extra["spec"]["cluster"] != name:
            group_name, other = extra["metadata"]["name"], extra["spec"]["cluster"]
            raise EmulationError(f"DaskWorkerGroup {group_name} belongs to cluster {other}, not {name}")
        groups.append(_adopted_group(extra, cluster_body, ns))
    worker_deployments = [d for g in groups for d in _scale_group(g, cluster_body, ns, suffixes)]

    plain = copy.deepcopy  # detach from kopf's views and from each other
    return OperatorObjects(
        cluster=plain(raw),
        scheduler_deployment=plain(scheduler_deployment),
        scheduler_service=plain(scheduler_service),
        worker_group=plain(groups[0]),
        worker_deployments=[plain(d) for d in worker_deployments],
        extra_worker_groups=[plain(g) for g in groups[1:]],
    )


def _adopted_group(group: Mapping[str, Any], cluster_body: Any, namespace: str) -> dict[str, Any]:
    """daskworkergroup_create: the cluster adopts the group (kr8s adopt sets the owner reference and namespace)."""
    import kopf

    adopted = copy.deepcopy(dict(group))
    adopted["metadata"]["namespace"] = namespace
    adopted["metadata"]["uid"] = str(uuid.uuid4())
    kopf.append_owner_reference(adopted, owner=cluster_body)
    return adopted


def _scale_group(group: dict[str, Any], cluster_body: Any, namespace: str, suffixes: Any) -> list[dict[str, Any]]:
    """daskworkergroup_replica_update, scaling a group from 0 to its spec.worker.replicas."""
    import kopf
    from dask_kubernetes.operator.controller import controller as op

    group_body = kopf.Body(group)
    group_spec = group_body.spec
    w_annotations, w_labels = _merge_metadata(
        group_body.meta, group_spec["worker"], op._get_annotations, op._get_labels
    )
    deployments = []
    for _ in range(int(group_spec["worker"].get("replicas", 1))):
        data = op.build_worker_deployment_spec(
            worker_group_name=group_body.meta.name,
            namespace=namespace,
            cluster_name=group_spec["cluster"],
            uuid=next(suffixes, None) or uuid.uuid4().hex[:10],
            pod_spec=group_spec["worker"]["spec"],
            annotations=w_annotations,
            labels=w_labels,
        )
        kopf.adopt(data, owner=group_body)
        kopf.label(data, labels=dict(cluster_body.meta.labels))
        deployments.append(data)
    return deployments


# --- the image -------------------------------------------------------------------------------------------


@functools.cache
def image_env(dockerfile: Path = DOCKERFILE) -> dict[str, str]:
    """The `ENV` of the image's Dockerfile (`ENV A=1 B=2`, with line continuations)."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    env = dict(BASE_IMAGE_ENV)
    for line in text.splitlines():
        m = re.match(r"^\s*ENV\s+(.*)$", line)
        if not m:
            continue
        for key, value in re.findall(r'([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|\S*)', m.group(1)):
            env[key] = value.strip('"')
    return env


@functools.cache
def image_dirs(dockerfile: Path = DOCKERFILE) -> tuple[str, ...]:
    """Directories the image provides for its user: WORKDIR and those made by `install -d` / `mkdir -p`."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    found: list[str] = []
    for line in text.splitlines():
        m = re.match(r"^\s*WORKDIR\s+(/\S+)", line)
        if m:
            found.append(m.group(1))
        for cmd in re.findall(r"(?:install\s+-d|mkdir\s+-p)((?:\s+-\S+(?:\s+[^-/\s]\S*)?)*(?:\s+/\S+)+)", line):
            found.extend(w for w in cmd.split() if w.startswith("/"))
    return tuple(dict.fromkeys(d.rstrip("/") for d in found))


@functools.cache
def image_executables() -> dict[str, Path]:
    """Programs on the image's PATH: the console scripts of the locked distributions, as installed in this venv."""
    locked = read_lock()
    names = {"python", "python3", f"python{sys.version_info.major}.{sys.version_info.minor}", "pip", "pip3"}
    for dist in importlib.metadata.distributions():
        if canonical(dist.metadata["Name"] or "") not in locked:
            continue
        names.update(ep.name for ep in dist.entry_points if ep.group == "console_scripts")
        for f in dist.files or ():
            parts = Path(str(f)).parts
            if len(parts) >= 2 and parts[-2] == "bin" and ".." in parts:
                names.add(parts[-1])
    found = {n: VENV_BIN / n for n in names if (VENV_BIN / n).is_file()}
    for prog in BASE_IMAGE_PROGRAMS:
        path = shutil.which(prog, path="/usr/bin:/bin")
        if path:
            found.setdefault(prog, Path(path))
    return found


@functools.cache
def image_workdir(dockerfile: Path = DOCKERFILE) -> str | None:
    found = re.findall(r"^\s*WORKDIR\s+(/\S+)", dockerfile.read_text(), flags=re.M)
    return found[-1].rstrip("/") if found else None


def resolve_executable(name: str) -> Path:
    """Where the image would find `name`; FileNotFoundError like the container runtime when it has none."""
    key = name.rsplit("/", 1)[-1] if name.startswith(("/usr/local/bin/", "/usr/bin/", "/bin/")) else name
    path = image_executables().get(key) if "/" not in key else None
    if path is None:
        raise FileNotFoundError(errno.ENOENT, f'exec: "{name}": executable file not found in $PATH', name)
    return path


# --- processes ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _start_time(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _running(pid: int, started: float) -> bool:
    import psutil

    try:
        p = psutil.Process(pid)
        return p.create_time() == started and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@dataclass
class EmulatedContainer:
    name: str
    argv: list[str]  # after expansion and mapping; argv[0] as the manifest names it
    executable: Path | None
    env: dict[str, str]
    cwd: Path
    log_path: Path
    ports: dict[int, int]  # containerPort -> local port
    spec: dict[str, Any]
    process: subprocess.Popen | None = None

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


@dataclass
class EmulatedPod:
    name: str
    namespace: str
    deployment: dict[str, Any]
    labels: dict[str, str]
    containers: list[EmulatedContainer]
    root: Path
    cluster: EmulatedCluster
    phase: str = "Pending"
    restarts: int = 0
    error: BaseException | None = None

    @property
    def pids(self) -> list[int]:
        return [c.process.pid for c in self.containers if c.process is not None]

    def alive(self) -> bool:
        return any(c.process is not None and c.process.poll() is None for c in self.containers)

    def start(self) -> None:
        """Start every container; FileNotFoundError (executable not in the image) leaves the pod Failed."""
        for c in self.containers:
            try:
                if c.executable is None:
                    c.executable = resolve_executable(c.argv[0])
            except FileNotFoundError as exc:
                self.phase, self.error = "Failed", exc
                raise
            c.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(c.log_path, "ab") as log:
                c.process = subprocess.Popen(
                    c.argv,
                    executable=str(c.executable),
                    env=c.env,
                    cwd=c.cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # own process group: stop() signals the whole group
                    close_fds=True,
                )
            self.cluster._track(c.process.pid)
        self.phase = "Running"

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until every container's readinessProbe passes (no probe: ready once started); raise if one exits."""
        deadline = time.monotonic() + timeout
        for c in self.containers:
            probe = c.spec.get("readinessProbe")
            while True:
                self.cluster._track_descendants()
                if c.process is None or c.process.poll() is not None:
                    code = None if c.process is None else c.process.returncode
                    self.phase = "Failed"
                    raise EmulationError(
                        f"pod {self.name} container {c.name} exited with code {code} before it was ready "
                        f"(argv {c.argv}); last log lines:\n{_tail(c.logs())}"
                    )
                if probe is None or self._probe(c, probe):
                    break
                if time.monotonic() > deadline:
                    raise EmulationError(
                        f"pod {self.name} container {c.name} not ready after {timeout}s (probe {probe}); "
                        f"last log lines:\n{_tail(c.logs())}"
                    )
                time.sleep(0.2)

    def _probe(self, c: EmulatedContainer, probe: Mapping[str, Any]) -> bool:
        if "httpGet" in probe:
            get = probe["httpGet"]
            port = self.local_port(get["port"], c)
            url = f"http://{LOOPBACK}:{port}{get.get('path', '/')}"
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    return 200 <= resp.status < 400
            except (urllib.error.URLError, OSError):
                return False
        if "tcpSocket" in probe:
            try:
                with socket.create_connection((LOOPBACK, self.local_port(probe["tcpSocket"]["port"], c)), timeout=2):
                    return True
            except OSError:
                return False
        return True  # exec/grpc probes: not emulated, treated as passing

    def local_port(self, port: int | str, container: EmulatedContainer | None = None) -> int:
        """The local port for a container port given by number or by name (as probes and targetPorts do)."""
        for c in [container] if container else self.containers:
            for p in c.spec.get("ports", []):
                if port in (p.get("name"), p.get("containerPort")):
                    return c.ports[int(p["containerPort"])]
        raise EmulationError(f"pod {self.name} declares no container port {port!r}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal every container's process group (the pod dies as with a node loss when sig is SIGKILL)."""
        self.cluster._track_descendants()
        for c in self.containers:
            if c.process is not None and c.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(c.process.pid, sig)
        self.phase = "Failed" if sig == signal.SIGKILL else self.phase

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        self.cluster._stop_processes([c.process for c in self.containers if c.process is not None], grace)
        if self.phase == "Running":
            self.phase = "Succeeded"

    def restart(self) -> None:
        """What the Deployment does for a dead pod: the same containers again (new processes, same ports)."""
        self.stop(grace=1.0)
        for c in self.containers:
            c.process = None
        self.restarts += 1
        self.start()

    def logs(self) -> str:
        return "\n".join(f"--- {self.name}/{c.name} ---\n{c.logs()}" for c in self.containers)


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.splitlines()[-lines:])


_LIVE: list[EmulatedCluster] = []
_LIVE_LOCK = threading.Lock()


@atexit.register
def _stop_all() -> None:
    """Last resort for an interrupted run: no emulated pod outlives the test process."""
    with _LIVE_LOCK:
        clusters = list(_LIVE)
    for cluster in clusters:
        cluster.stop(grace=1.0)


class EmulatedCluster:
    """A DaskCluster's pods as local processes. Use as a context manager (or call stop() in a finalizer)."""

    def __init__(
        self,
        daskcluster: Mapping[str, Any],
        workdir: Path,
        claims: Mapping[str, Path] | None = None,
        secrets: Mapping[str, Mapping[str, str]] | None = None,
        namespace: str = "default",
        uuids: Iterable[str] | None = None,
        worker_env: Mapping[str, str] | None = None,
        services: Iterable[Mapping[str, Any]] = (),
        worker_groups: Iterable[Mapping[str, Any]] = (),
    ) -> None:
        """`claims`: PVC name -> local directory; `secrets`: Secret name -> data (for env and volumes);
        `services`: more Services to map (the program's stable `<cluster.name>-scheduler`, by its selector);
        `worker_env`: test instrumentation appended to every worker container's env (as an admission webhook
        would add it), e.g. a `DASK_DISTRIBUTED__WORKER__PRELOAD` fault injector. It is not part of the manifest.
        `worker_groups`: extra DaskWorkerGroup manifests of this cluster; their workers start with the others."""
        self.objects = operator_objects(daskcluster, namespace, uuids, worker_groups)
        # Instrumentation names this machine's paths (a preload under pytest's /tmp): never mapped into the pod's
        # volumes, which would otherwise claim any path below a mount such as the pods' /tmp emptyDir.
        self.instrumentation_keys = frozenset(worker_env or {})
        for deployment in self.objects.worker_deployments:
            for container in deployment["spec"]["template"]["spec"]["containers"]:
                container.setdefault("env", []).extend({"name": k, "value": v} for k, v in (worker_env or {}).items())
        self.namespace = self.objects.cluster["metadata"]["namespace"]
        self.workdir = Path(workdir)
        self.claims = {k: Path(v) for k, v in (claims or {}).items()}
        self.secrets = {k: dict(v) for k, v in (secrets or {}).items()}
        self._started: dict[int, float] = {}  # pid -> start time, for every process seen
        self._lock = threading.Lock()
        self.pods: list[EmulatedPod] = []
        self.services = [self.objects.scheduler_service, *(copy.deepcopy(dict(s)) for s in services)]
        # Pods and their ports first (the Service needs its endpoints), then argv/env (they need the Service).
        pending = [(d, self._new_pod(d)) for d in self.objects.deployments]
        for deployment, pod in pending:
            self._build_containers(deployment, pod)
        with _LIVE_LOCK:
            _LIVE.append(self)

    # -- objects --

    @property
    def scheduler_pod(self) -> EmulatedPod:
        return self.pods[0]

    @property
    def worker_pods(self) -> list[EmulatedPod]:
        return self.pods[1:]

    @property
    def worker_names(self) -> list[str]:
        """The DASK_WORKER_NAME of each worker pod (the operator's worker Deployment names)."""
        return [d["metadata"]["name"] for d in self.objects.worker_deployments]

    def _new_pod(self, deployment: Mapping[str, Any]) -> EmulatedPod:
        template = deployment["spec"]["template"]
        name = f"{deployment['metadata']['name']}-{uuid.uuid4().hex[:10]}-{uuid.uuid4().hex[:5]}"
        pod = EmulatedPod(
            name=name,
            namespace=self.namespace,
            deployment=copy.deepcopy(dict(deployment)),
            labels=dict(template["metadata"].get("labels") or {}),
            containers=[],
            root=self.workdir / "pods" / name,
            cluster=self,
        )
        for c in template["spec"]["containers"]:
            ports = {int(p["containerPort"]): free_port() for p in c.get("ports", [])}
            log = pod.root / f"{c['name']}.log"
            container = EmulatedContainer(
                name=c["name"], argv=[], executable=None, env={}, cwd=pod.root, log_path=log, ports=ports,
                spec=copy.deepcopy(c),
            )  # fmt: skip
            pod.containers.append(container)
        self.pods.append(pod)
        return pod

    # -- mapping --

    def _service_local_port(self, service: Mapping[str, Any], port: int) -> int | None:
        """Service port -> local port of the container port its targetPort names, in a pod it selects."""
        spec = service.get("spec") or {}
        entry = next((p for p in spec.get("ports", []) if int(p["port"]) == port), None)
        if entry is None:
            return None
        target = entry.get("targetPort", entry["port"])
        selector = spec.get("selector") or {}
        for pod in self.pods:
            if pod.namespace != service["metadata"].get("namespace", self.namespace):
                continue
            if not selector or any(pod.labels.get(k) != v for k, v in selector.items()):
                continue
            with contextlib.suppress(EmulationError):
                return pod.local_port(int(target) if str(target).isdigit() else target)
        return None

    def map_address(self, text: str, from_namespace: str | None = None) -> str:
        """Replace Service DNS names (with their port) by 127.0.0.1 and the mapped local port."""
        for service in self.services:
            svc = re.escape(service["metadata"]["name"])
            ns = service["metadata"].get("namespace", self.namespace)
            fqdn = rf"{svc}\.{re.escape(ns)}\.{re.escape(CLUSTER_DOMAIN)}"
            short = rf"{svc}(?:\.{re.escape(ns)}(?:\.svc)?)?"
            if from_namespace not in (None, ns):
                short = rf"{svc}\.{re.escape(ns)}(?:\.svc)?"
            pattern = re.compile(rf"(?<![\w.-])(?:(?P<fqdn>{fqdn})(?::(?P<p1>\d+))?|{short}:(?P<p2>\d+))(?![\w.-])")

            def repl(m: re.Match[str], service: Mapping[str, Any] = service) -> str:
                port = m.group("p1") or m.group("p2")
                if port is None:
                    return LOOPBACK
                local = self._service_local_port(service, int(port))
                return m.group(0) if local is None else f"{LOOPBACK}:{local}"

            text = pattern.sub(repl, text)
        return text

    def map_path(self, path: str, pod: EmulatedPod | None = None) -> str:
        """A path as the pods see it -> the local path (the catalog volume of the first pod mounting it by default)."""
        for candidate in [pod] if pod else self.pods:
            for c in candidate.containers:
                mapped = _map_paths(path, self._mounts(candidate, c))
                if mapped != path:
                    return mapped
        return path

    def _mounts(self, pod: EmulatedPod, container: EmulatedContainer) -> dict[str, Path]:
        volumes = {v["name"]: v for v in pod.deployment["spec"]["template"]["spec"].get("volumes", [])}
        mounts: dict[str, Path] = {}
        for m in container.spec.get("volumeMounts", []):
            volume = volumes.get(m["name"])
            if volume is None:
                raise EmulationError(f"pod {pod.name}: volumeMount {m['name']!r} has no volume")
            if "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                if claim not in self.claims:
                    raise EmulationError(f"pod {pod.name}: no local directory for PVC {claim!r} (pass claims=)")
                local = self.claims[claim]
            elif "emptyDir" in volume:
                local = pod.root / "volumes" / m["name"]
                local.mkdir(parents=True, exist_ok=True)
            elif "secret" in volume:
                secret = volume["secret"]["secretName"]
                if secret not in self.secrets:
                    raise EmulationError(f"pod {pod.name}: no data for Secret {secret!r} (pass secrets=)")
                local = pod.root / "volumes" / m["name"]
                local.mkdir(parents=True, exist_ok=True)
                for key, value in self.secrets[secret].items():
                    (local / key).write_text(value)
            else:
                raise EmulationError(f"pod {pod.name}: volume {m['name']!r} of this kind is not emulated: {volume}")
            mounts[m["mountPath"]] = local / m["subPath"] if m.get("subPath") else local
        return mounts

    def _env_value(self, pod: EmulatedPod, item: Mapping[str, Any], env: Mapping[str, str]) -> str:
        if "value" in item:
            return expand(str(item["value"]), env)  # earlier entries only, as the kubelet does
        source = item.get("valueFrom") or {}
        if "fieldRef" in source:
            path = source["fieldRef"]["fieldPath"]
            fields = {"metadata.name": pod.name, "metadata.namespace": pod.namespace, "status.podIP": LOOPBACK}
            if path in fields:
                return fields[path]
        for kind, store in (("secretKeyRef", self.secrets), ("configMapKeyRef", self.secrets)):
            if kind in source:
                ref = source[kind]
                if ref["name"] in store and ref["key"] in store[ref["name"]]:
                    return store[ref["name"]][ref["key"]]
        if "value" not in item and not source:
            return ""
        raise EmulationError(f"pod {pod.name}: env {item['name']} from {source} is not available to the emulator")

    def _build_containers(self, deployment: Mapping[str, Any], pod: EmulatedPod) -> None:
        for c in pod.containers:
            spec = c.spec
            home = pod.root / "home"
            tmp = pod.root / "tmp"
            for d in (home, tmp):
                d.mkdir(parents=True, exist_ok=True)
            base = image_env() | {
                "PATH": f"{VENV_BIN}:/usr/sbin:/usr/bin:/sbin:/bin",
                "HOME": str(home),
                "HOSTNAME": pod.name,
                "TMPDIR": str(tmp),
            }
            env: dict[str, str] = dict(base)
            for item in spec.get("env", []):
                env[item["name"]] = self._env_value(pod, item, env)
            argv = [expand(str(a), env) for a in [*spec.get("command", []), *spec.get("args", [])]]
            if not argv:
                raise EmulationError(f"pod {pod.name} container {c.name}: no command or args (the image has no CMD)")
            # The container's filesystem: its mounts, over the image's own directories (a private copy per pod).
            mounts = self._mounts(pod, c)
            for d in image_dirs():
                if d not in mounts:
                    mounts[d] = home if d == image_workdir() else pod.root / "image" / d.lstrip("/")
                    mounts[d].mkdir(parents=True, exist_ok=True)
            emulator_keys = (set(base) - set(image_env())) | self.instrumentation_keys
            c.env = {
                k: v if k in emulator_keys else _map_paths(self.map_address(v, pod.namespace), mounts)
                for k, v in env.items()
            }
            argv = [_map_paths(self.map_address(a, pod.namespace), mounts) for a in argv]
            c.argv = _map_port_flags(argv, c.ports)
            c.cwd = _map_paths(spec["workingDir"], mounts) if spec.get("workingDir") else home  # type: ignore[assignment]
            c.cwd = Path(c.cwd)

    # -- lifecycle --

    def start(self, timeout: float = 90.0) -> EmulatedCluster:
        """Start the scheduler pod, wait for its readinessProbe, then start the worker pods."""
        self.scheduler_pod.start()
        self.scheduler_pod.wait_ready(timeout)
        for pod in self.worker_pods:
            pod.start()
        for pod in self.worker_pods:
            pod.wait_ready(timeout)
        return self

    def wait_for_workers(
        self, names: Iterable[str] | None = None, timeout: float = 90.0, security: Any = None
    ) -> dict[str, Any]:
        """Wait until the scheduler lists workers with these names (default: every worker pod's DASK_WORKER_NAME).
        `security`: a `distributed.security.Security` for a TLS scheduler."""
        from distributed import Client

        wanted = set(self.worker_names if names is None else names)
        deadline = time.monotonic() + timeout
        address = self.scheduler_address
        tls = {"security": security} if security is not None else {}
        with Client(address, timeout=timeout, set_as_default=False, **tls) as client:
            while True:
                workers = client.scheduler_info(n_workers=-1)["workers"]
                registered = {w["name"] for w in workers.values()}
                if wanted <= registered:
                    return workers
                for pod in self.worker_pods:
                    if pod.phase == "Running" and not pod.alive():
                        raise EmulationError(f"worker pod {pod.name} exited:\n{_tail(pod.logs())}")
                if time.monotonic() > deadline:
                    raise EmulationError(f"workers {sorted(wanted - registered)} did not register within {timeout}s")
                self._track_descendants()
                time.sleep(0.2)

    @property
    def scheduler_address(self) -> str:
        """The operator's DASK_SCHEDULER_ADDRESS for this cluster, mapped to the local port."""
        injected = self.objects.worker_deployments[0] if self.objects.worker_deployments else None
        env = {}
        if injected:
            env = {e["name"]: e.get("value") for e in injected["spec"]["template"]["spec"]["containers"][0]["env"]}
        name = self.objects.cluster["metadata"]["name"]
        address = env.get("DASK_SCHEDULER_ADDRESS") or f"tcp://{name}-scheduler.{self.namespace}.{CLUSTER_DOMAIN}:8786"
        return self.map_address(address)

    def pod_of(self, pid: int) -> EmulatedPod:
        """The pod whose container process is `pid` or one of its ancestors (e.g. a worker under its nanny)."""
        import psutil

        leaders = {p: pod for pod in self.pods for p in pod.pids}
        try:
            chain = [pid] + [a.pid for a in psutil.Process(pid).parents()]
        except psutil.NoSuchProcess:
            chain = [pid]
        for candidate in chain:
            if candidate in leaders:
                return leaders[candidate]
        raise LookupError(f"PID {pid} belongs to no emulated pod")

    def _track(self, pid: int) -> None:
        started = _start_time(pid)
        if started is not None:
            with self._lock:
                self._started.setdefault(pid, started)

    def _track_descendants(self) -> None:
        import psutil

        for pod in self.pods:
            for pid in pod.pids:
                with contextlib.suppress(psutil.Error):
                    for child in psutil.Process(pid).children(recursive=True):
                        with self._lock:
                            self._started.setdefault(child.pid, child.create_time())

    def _stop_processes(self, processes: list[subprocess.Popen], grace: float) -> None:
        self._track_descendants()
        stop_process_groups(processes, grace)

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Stop every pod (workers first), then kill by PID any tracked process that is still running."""
        for pod in [*self.worker_pods, self.scheduler_pod]:
            pod.stop(grace)
        with self._lock:
            started = dict(self._started)
        for pid, t in started.items():
            if _running(pid, t):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while self.leftover_pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        with _LIVE_LOCK, contextlib.suppress(ValueError):
            _LIVE.remove(self)

    def all_pids(self) -> list[int]:
        with self._lock:
            return sorted(self._started)

    def leftover_pids(self) -> list[int]:
        """PIDs this emulator started (or saw as their descendants) that still run."""
        with self._lock:
            started = dict(self._started)
        return sorted(pid for pid, t in started.items() if _running(pid, t))

    def logs(self) -> str:
        return "\n".join(pod.logs() for pod in self.pods)

    def __enter__(self) -> EmulatedCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _map_paths(text: str, mounts: Mapping[str, Path]) -> str:
    """Rewrite paths equal to or below a mount path (longest mount first) to the local directory, in one pass:
    a local directory that itself lies below a mount path (/tmp/pytest-... under a /tmp mount) is not rewritten
    again."""
    if not mounts:
        return text
    ordered = sorted(mounts, key=len, reverse=True)
    alternatives = "|".join(re.escape(m.rstrip("/")) for m in ordered)
    pattern = re.compile(rf"(?<![\w./-])({alternatives})(?=/|$|[\s:,;\"'=])")
    by_path = {m.rstrip("/"): mounts[m] for m in ordered}
    return pattern.sub(lambda m: str(by_path[m.group(1)]), text)


def _map_port_flags(argv: list[str], ports: Mapping[int, int]) -> list[str]:
    """Rewrite declared container ports in port/address flag values to their local ports."""

    def port_value(value: str) -> str:
        return str(ports[int(value)]) if value.isdigit() and int(value) in ports else value

    def address_value(value: str) -> str:
        m = re.fullmatch(r"(?P<head>(?:[a-z]+://)?[^\s/]*):(?P<port>\d+)", value)
        if m and int(m.group("port")) in ports:
            return f"{m.group('head')}:{ports[int(m.group('port'))]}"
        return value

    def rewrite(flag: str, value: str) -> str:
        name = flag.lstrip("-").lower()
        if "port" in name:
            return port_value(value)
        if "address" in name or "host" in name:
            return address_value(value)
        return value

    out: list[str] = []
    for i, arg in enumerate(argv):
        if arg.startswith("--") and "=" in arg:
            flag, value = arg.split("=", 1)
            out.append(f"{flag}={rewrite(flag, value)}")
        elif i > 0 and argv[i - 1].startswith("-") and "=" not in argv[i - 1]:
            out.append(rewrite(argv[i - 1], arg))
        else:
            out.append(arg)
    return out
