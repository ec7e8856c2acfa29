"""Run a DaskCluster's pods as local processes, built exactly as the pinned Dask operator builds them.

No cluster here (tests, bench/upgrade.py), so this stands in for three things:
* the operator: tools/operator_objects.py derives the Deployments and the Service with its own builders;
* the kubelet: each container of a pod template is one process, `command` + `args` with the `$(VAR)` expansion,
  looked up in the image's PATH (tools/emulated_image.py: a command the image lacks fails as in the container);
* the network and volumes, with KNOWN local ports chosen up front: every `containerPort` gets a free 127.0.0.1 port,
  passed as the value of the CLI flag that names it (LISTEN_FLAGS). A Service address (`<svc>.<ns>.svc.cluster.local:
  <port>` or a short form) becomes 127.0.0.1 and the port its `targetPort` names in a pod its selector selects, so the
  operator's `DASK_SCHEDULER_ADDRESS` works only if the Service really exposes and selects the scheduler. A
  `volumeMount` is a local directory (a PVC: the one given in `claims`; an `emptyDir`: a fresh one; a `secret`: its
  keys as files); a value that is a path at or below a mount path is mapped.
Processes run in their own session with a clean environment (the image's ENV, PATH, HOME, then the container's);
`stop()` SIGTERMs every process group, then SIGKILLs, then kills by PID any descendant that left its group, as an
`atexit` hook does for an interrupted run. Not emulated: Service environment variables, restarts on crash (call
`EmulatedPod.restart()`), resource limits, securityContext, scheduling.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools.emulated_image import TARGETS, VENV_BIN, expand, image_dirs, image_env, resolve_executable
from tools.local_dask import free_port, spawn, stop_process_groups
from tools.operator_objects import OperatorError, operator_objects

CLUSTER_DOMAIN = "svc.cluster.local"
LOOPBACK = "127.0.0.1"
# The Dask CLI's (and Jupyter's) flags that choose a listening port: their value is a port or [host]:port.
LISTEN_FLAGS = frozenset({"--port", "--dashboard-address", "--worker-port", "--nanny-port", "--ServerApp.port"})
STOP_GRACE_SECONDS = 5.0


class EmulationError(Exception):
    """The manifest cannot run as it stands (missing volume source, crash on start, probe never ready...)."""


# --- mappings (plain string operations on whole values) ----------------------------------------------------


def _listen_value(value: str, ports: Mapping[int, int]) -> str:
    """`8786` / `:8787` / `host:8787` naming a declared containerPort -> the same with its local port."""
    head, colon, port = value.rpartition(":")
    if port.isdigit() and int(port) in ports:
        return f"{head}{colon}{ports[int(port)]}"
    return value


def _with_listen_ports(argv: list[str], ports: Mapping[int, int]) -> list[str]:
    out: list[str] = []
    for i, arg in enumerate(argv):
        flag, eq, value = arg.partition("=")
        if eq and flag in LISTEN_FLAGS:
            out.append(f"{flag}={_listen_value(value, ports)}")
        elif i and argv[i - 1] in LISTEN_FLAGS:
            out.append(_listen_value(arg, ports))
        else:
            out.append(arg)
    return out


def replace_names(text: str, table: Mapping[str, str]) -> str:
    """Replace each key of `table` found in `text` as a whole name (not inside a longer host name)."""
    for needle in sorted(table, key=len, reverse=True):
        start = 0
        while (at := text.find(needle, start)) != -1:
            end = at + len(needle)
            before = text[at - 1] if at else " "
            after = text[end : end + 2] or " "
            # Not part of a longer name, and not a host whose `:port` is not mapped (that stays unresolved).
            if before.isalnum() or before in ".-_" or after[0].isalnum() or after[0] in ".-_" or after[1:].isdigit():
                start = end
                continue
            text = text[:at] + table[needle] + text[end:]
            start = at + len(table[needle])
    return text


def service_address_table(name: str, namespace: str, ports: Mapping[int, int | None], short: bool) -> dict[str, str]:
    """`<svc>.<ns>.svc.cluster.local` -> 127.0.0.1, and with a port (also `<svc>.<ns>[.svc]:port`, and `<svc>:port`
    when `short`: a client in the same namespace) -> 127.0.0.1:<local>. A port without a local one is not mapped."""
    fqdn = f"{name}.{namespace}.{CLUSTER_DOMAIN}"
    hosts = [fqdn, f"{name}.{namespace}.svc", f"{name}.{namespace}"] + ([name] if short else [])
    table = {f"{h}:{port}": f"{LOOPBACK}:{local}" for h in hosts for port, local in ports.items() if local is not None}
    return {fqdn: LOOPBACK, **table}


def map_path(value: str, mounts: Mapping[str, Path]) -> str:
    """A path at or below a mount path (the longest that matches) -> the local directory; else unchanged.
    `--flag=/path` maps its value."""
    flag, eq, path = value.rpartition("=") if value.startswith("-") else ("", "", value)
    for mount in sorted(mounts, key=len, reverse=True):
        base = mount.rstrip("/")
        if path == base or path.startswith(base + "/"):
            return f"{flag}{eq}{mounts[mount]}{path[len(base) :]}"
    return value


# --- pods ----------------------------------------------------------------------------------------------------


def _running(pid: int, started: float) -> bool:
    import psutil  # type: ignore[import-untyped]

    try:
        p = psutil.Process(pid)
        return bool(p.create_time() == started and p.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class EmulatedContainer:
    name: str
    spec: dict[str, Any]
    ports: dict[int, int]  # containerPort -> local port
    log_path: Path
    argv: list[str] = field(default_factory=list)  # after expansion and mapping; argv[0] as the manifest names it
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path = Path()
    process: subprocess.Popen[bytes] | None = None

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


class EmulatedPod:
    """One pod of a Deployment as local processes: its init containers run to completion, then its containers.
    `cluster`, if any, tracks its processes; `target` is its image's Dockerfile target (emulated_image.TARGETS)."""

    def __init__(
        self,
        deployment: Mapping[str, Any],
        workdir: Path,
        cluster: EmulatedCluster | None = None,
        claims: Mapping[str, Path] | None = None,
        secrets: Mapping[str, Mapping[str, str]] | None = None,
        target: str = "lsdb",
    ) -> None:
        self.deployment = copy.deepcopy(dict(deployment))
        template = self.deployment["spec"]["template"]
        self.name = f"{self.deployment['metadata']['name']}-{uuid.uuid4().hex[:10]}-{uuid.uuid4().hex[:5]}"
        self.namespace: str = self.deployment["metadata"]["namespace"]
        self.labels: dict[str, str] = dict(template["metadata"].get("labels") or {})
        self.root = Path(workdir) / "pods" / self.name
        self.cluster = cluster
        self.target = target
        self.claims = {k: Path(v) for k, v in (claims or {}).items()}
        self.secrets = {k: dict(v) for k, v in (secrets or {}).items()}
        self.phase = "Pending"
        self.restarts = 0
        self.error: BaseException | None = None
        self.init_containers = [self._container(spec) for spec in template["spec"].get("initContainers", [])]
        self.containers = [self._container(spec) for spec in template["spec"]["containers"]]

    def _container(self, spec: Mapping[str, Any]) -> EmulatedContainer:
        ports = {int(p["containerPort"]): free_port() for p in spec.get("ports", [])}
        return EmulatedContainer(spec["name"], copy.deepcopy(dict(spec)), ports, self.root / f"{spec['name']}.log")

    # -- the kubelet's view: mounts, env, argv --

    def mounts(self, container: EmulatedContainer) -> dict[str, Path]:
        """Mount path -> local directory of each of the container's volumeMounts."""
        volumes = {v["name"]: v for v in self.deployment["spec"]["template"]["spec"].get("volumes", [])}
        mounts: dict[str, Path] = {}
        for m in container.spec.get("volumeMounts", []):
            volume = volumes.get(m["name"])
            if volume is None:
                raise EmulationError(f"pod {self.name}: volumeMount {m['name']!r} has no volume")
            local = self._volume(volume, self.root / "volumes" / m["name"])
            mounts[m["mountPath"]] = local / m["subPath"] if m.get("subPath") else local
        return mounts

    def _volume(self, volume: Mapping[str, Any], local: Path) -> Path:
        """The local directory a pod volume stands for: a claim's directory, a Secret's files written, an emptyDir."""
        if "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]["claimName"]
            if claim not in self.claims:
                raise EmulationError(f"pod {self.name}: no local directory for PVC {claim!r} (pass claims=)")
            return self.claims[claim]
        if "secret" in volume:
            secret = volume["secret"]["secretName"]
            if secret not in self.secrets:
                raise EmulationError(f"pod {self.name}: no data for Secret {secret!r} (pass secrets=)")
            local.mkdir(parents=True, exist_ok=True)
            for key, value in self.secrets[secret].items():
                (local / key).write_text(value)
            return local
        if "emptyDir" in volume:
            local.mkdir(parents=True, exist_ok=True)
            return local
        raise EmulationError(f"pod {self.name}: volume {volume.get('name')!r} of this kind is not emulated: {volume}")

    def _env_value(self, item: Mapping[str, Any], env: Mapping[str, str]) -> str:
        if "value" in item:
            return expand(str(item["value"]), env)  # earlier entries only, as the kubelet does
        source = item.get("valueFrom") or {}
        fields = {"metadata.name": self.name, "metadata.namespace": self.namespace, "status.podIP": LOOPBACK}
        if "fieldRef" in source and source["fieldRef"]["fieldPath"] in fields:
            return fields[source["fieldRef"]["fieldPath"]]
        ref = source.get("secretKeyRef") or source.get("configMapKeyRef") or {}
        if ref and ref.get("key") in self.secrets.get(str(ref.get("name")), {}):
            return self.secrets[ref["name"]][ref["key"]]
        if not source:
            return ""
        raise EmulationError(f"pod {self.name}: env {item['name']} from {source} is not available to the emulator")

    def build(self, table: Mapping[str, str]) -> None:
        """Each container's argv, env and working directory as the kubelet would run it, with local ports, Service
        addresses (`table`: `EmulatedCluster.address_table`) and paths mapped in each whole value."""
        for c in [*self.init_containers, *self.containers]:
            # The container's filesystem: its mounts over the image's own directories (a private copy per pod) and
            # the files its target COPYs (read from the build context).
            mounts = self.mounts(c)
            workdir, made = image_dirs()
            for directory in (workdir, *made):
                if directory not in mounts:
                    mounts[directory] = self.root / "image" / directory.lstrip("/")
                    mounts[directory].mkdir(parents=True, exist_ok=True)
            self._build(c, TARGETS[self.target][1] | mounts, mounts[workdir], table)

    def _build(self, c: EmulatedContainer, mounts: dict[str, Path], home: Path, table: Mapping[str, str]) -> None:
        tmp = mounts.get("/tmp", self.root / "tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        emulator = {"PATH": f"{VENV_BIN}:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(home), "HOSTNAME": self.name,
                    "TMPDIR": str(tmp)}  # fmt: skip
        # The image's packages are compiled when it is built (hence its PYTHONDONTWRITEBYTECODE=1), this virtualenv's
        # on a first import that may write: the pods write theirs, or each pod process compiles again what no test
        # process imports (the Dask CLI, the dashboards, s3fs).
        env = {k: v for k, v in image_env().items() if k != "PYTHONDONTWRITEBYTECODE"} | emulator
        for item in c.spec.get("env", []):
            env[item["name"]] = self._env_value(item, env)
        argv = [expand(str(a), env) for a in [*c.spec.get("command", []), *c.spec.get("args", [])]]
        if not argv:
            raise EmulationError(f"pod {self.name} container {c.name}: no command or args (the image has no CMD)")
        c.env = {k: v if k in emulator else map_path(replace_names(v, table), mounts) for k, v in env.items()}
        c.argv = _with_listen_ports([map_path(replace_names(a, table), mounts) for a in argv], c.ports)
        c.cwd = Path(map_path(c.spec["workingDir"], mounts)) if c.spec.get("workingDir") else home

    # -- lifecycle --

    @property
    def pids(self) -> list[int]:
        return [c.process.pid for c in self.containers if c.process is not None]

    def alive(self) -> bool:
        return any(c.process is not None and c.process.poll() is None for c in self.containers)

    def _spawn(self, c: EmulatedContainer) -> subprocess.Popen[bytes]:
        executable = resolve_executable(c.argv[0], self.target)
        c.process = spawn(c.argv, c.log_path, c.env, c.cwd, executable)
        if self.cluster is not None:
            self.cluster._track(c.process.pid)
        return c.process

    def _track_descendants(self) -> None:
        if self.cluster is not None:
            self.cluster._track_descendants()

    def start(self, timeout: float = 60.0) -> None:
        """Run the init containers to completion (each within `timeout`), then start every container. An executable
        not in the image (FileNotFoundError) or a failed init container leaves the pod Failed."""
        try:
            for c in self.init_containers:
                if (code := self._spawn(c).wait(timeout)) != 0:
                    raise EmulationError(f"pod {self.name} init container {c.name} exited {code}:\n{_tail(c.logs())}")
            for c in self.containers:
                self._spawn(c)
        except (FileNotFoundError, EmulationError) as exc:
            self.phase, self.error = "Failed", exc
            raise
        self.phase = "Running"

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until every container's readinessProbe passes (no probe: ready once started); raise if one exits."""
        deadline = time.monotonic() + timeout
        for c in self.containers:
            while True:
                self._track_descendants()
                if c.process is None or c.process.poll() is not None:
                    code = None if c.process is None else c.process.returncode
                    self.phase = "Failed"
                    raise EmulationError(
                        f"pod {self.name} container {c.name} exited with code {code} before it was ready "
                        f"(argv {c.argv}); last log lines:\n{_tail(c.logs())}"
                    )
                if self.probe(c):
                    break
                if time.monotonic() > deadline:
                    raise EmulationError(
                        f"pod {self.name} container {c.name} not ready after {timeout}s "
                        f"(probe {c.spec.get('readinessProbe')}); last log lines:\n{_tail(c.logs())}"
                    )
                time.sleep(0.1)

    def probe(self, c: EmulatedContainer) -> bool:
        """The container's readinessProbe, once (httpGet and tcpSocket; none, exec or grpc: passing)."""
        probe = c.spec.get("readinessProbe") or {}
        try:
            if "httpGet" in probe:
                get = probe["httpGet"]
                url = f"http://{LOOPBACK}:{self.local_port(get['port'], c)}{get.get('path', '/')}"
                with urllib.request.urlopen(url, timeout=2) as resp:
                    return bool(200 <= resp.status < 400)
            if "tcpSocket" in probe:
                with socket.create_connection((LOOPBACK, self.local_port(probe["tcpSocket"]["port"], c)), timeout=2):
                    return True
        except (urllib.error.URLError, OSError):
            return False
        return True

    def ready(self) -> bool:
        """Running, every container alive and its readinessProbe passing (what makes a Service endpoint)."""
        return self.phase == "Running" and all(
            c.process is not None and c.process.poll() is None and self.probe(c) for c in self.containers
        )

    def local_port(self, port: int | str, container: EmulatedContainer | None = None) -> int:
        """The local port for a container port given by number or by name (as probes and targetPorts do)."""
        for c in [container] if container else self.containers:
            for p in c.spec.get("ports", []):
                if port in (p.get("name"), p.get("containerPort")):
                    return c.ports[int(p["containerPort"])]
        raise EmulationError(f"pod {self.name} declares no container port {port!r}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal every container's process group (the pod dies as with a node loss when sig is SIGKILL)."""
        self._track_descendants()
        for c in self.containers:
            if c.process is not None and c.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(c.process.pid, sig)
        self.phase = "Failed" if sig == signal.SIGKILL else self.phase

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        stop_pods([self], grace)

    def restart(self) -> None:
        """What the Deployment does for a dead pod: the same containers again (new processes, same ports)."""
        self.stop(grace=1.0)
        for c in self.containers:
            c.process = None
        self.restarts += 1
        self.start()

    def logs(self) -> str:
        return "\n".join(f"--- {self.name}/{c.name} ---\n{c.logs()}" for c in self.containers)


def stop_pods(pods: Iterable[EmulatedPod], grace: float = STOP_GRACE_SECONDS) -> None:
    """Stop pods together, as the API server deletes a Deployment's pods: SIGTERM to every container's process group,
    one grace period for all, then SIGKILL what is left."""
    group = list(pods)
    for pod in group:
        pod._track_descendants()
    stop_process_groups([c.process for pod in group for c in pod.containers if c.process is not None], grace)
    for pod in group:
        if pod.phase == "Running":
            pod.phase = "Succeeded"


_LIVE: list[EmulatedCluster] = []
_LIVE_LOCK = threading.Lock()


@atexit.register
def _stop_all() -> None:
    """Last resort for an interrupted run: no emulated pod outlives the process."""
    with _LIVE_LOCK:
        clusters = list(_LIVE)
    for cluster in clusters:
        cluster.stop(grace=1.0)


def service_endpoints(
    spec: Mapping[str, Any], port: int, pods: Iterable[EmulatedPod], namespace: str
) -> Iterator[tuple[EmulatedPod, int]]:
    """(pod, local port) of each pod a Service's `spec.selector` (equality only) selects in its namespace, the port
    the Service port's `targetPort` (number or name) names there. No selector: none."""
    entry = next((p for p in spec.get("ports", []) if int(p["port"]) == port), None)
    selector = spec.get("selector") or {}
    if entry is None or not selector:
        return
    target = entry.get("targetPort", entry["port"])
    for pod in pods:
        if pod.namespace == namespace and all(pod.labels.get(k) == v for k, v in selector.items()):
            try:
                yield pod, pod.local_port(int(target) if str(target).isdigit() else target)
            except EmulationError:
                continue


class EmulatedCluster:
    """A DaskCluster's pods as local processes. Use as a context manager (or call stop() in a finalizer)."""

    def __init__(
        self,
        daskcluster: Mapping[str, Any],
        workdir: Path,
        claims: Mapping[str, Path] | None = None,
        secrets: Mapping[str, Mapping[str, str]] | None = None,
        worker_env: Mapping[str, str] | None = None,
        services: Iterable[Mapping[str, Any]] = (),
        worker_groups: Iterable[Mapping[str, Any]] = (),
    ) -> None:
        """`claims`: PVC name -> local directory; `secrets`: Secret name -> data (for env and volumes);
        `services`: more Services to map (the program's stable `<cluster.name>-scheduler`, by its selector);
        `worker_env`: test instrumentation appended to every worker container's env (as an admission webhook
        would add it, never mapped), e.g. a `DASK_DISTRIBUTED__WORKER__PRELOAD` fault injector;
        `worker_groups`: extra DaskWorkerGroup manifests of this cluster; their workers start with the others."""
        try:
            self.objects = operator_objects(daskcluster, worker_groups=worker_groups)
        except OperatorError as exc:
            raise EmulationError(str(exc)) from exc
        self.namespace: str = self.objects.cluster["metadata"]["namespace"]
        self.workdir = Path(workdir)
        self.claims = {k: Path(v) for k, v in (claims or {}).items()}
        self.secrets = {k: dict(v) for k, v in (secrets or {}).items()}
        self.worker_env = dict(worker_env or {})
        self.services = [self.objects.scheduler_service, *(copy.deepcopy(dict(s)) for s in services)]
        self._started: dict[int, float] = {}  # pid -> start time, for every process seen
        self._lock = threading.Lock()
        # Pods and their ports first (a Service address needs its endpoints), then each container's argv and env.
        self.pods = [EmulatedPod(d, self.workdir, self, self.claims, self.secrets) for d in self.objects.deployments]
        for pod in self.pods:
            pod.build(self.address_table(pod.namespace))
        for c in (c for pod in self.worker_pods for c in pod.containers):
            c.env |= self.worker_env
        with _LIVE_LOCK:
            _LIVE.append(self)

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

    def address_table(self, from_namespace: str | None = None) -> dict[str, str]:
        """Every Service's names with their ports -> the local address (see `service_address_table`)."""
        table: dict[str, str] = {}
        for service in self.services:
            ns = service["metadata"].get("namespace", self.namespace)
            # Each Service port -> the local port its targetPort names in a pod it selects (none: not mapped).
            numbers = [int(p["port"]) for p in service["spec"]["ports"]]
            ports = {
                n: next((p for _, p in service_endpoints(service["spec"], n, self.pods, ns)), None) for n in numbers
            }
            table |= service_address_table(service["metadata"]["name"], ns, ports, short=from_namespace in (None, ns))
        return table

    def map_address(self, text: str, from_namespace: str | None = None) -> str:
        """Replace Service DNS names (with their port) by 127.0.0.1 and the mapped local port."""
        return replace_names(text, self.address_table(from_namespace))

    def map_path(self, path: str, pod: EmulatedPod | None = None) -> str:
        """A path as the pods see it -> the local path (the first pod mounting it by default)."""
        for candidate in [pod] if pod else self.pods:
            for c in candidate.containers:
                if (mapped := map_path(path, candidate.mounts(c))) != path:
                    return mapped
        return path

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
        tls = {"security": security} if security is not None else {}
        with Client(self.scheduler_address, timeout=timeout, set_as_default=False, **tls) as client:  # type: ignore[no-untyped-call]
            while True:
                workers: dict[str, Any] = client.scheduler_info(n_workers=-1)["workers"]
                registered = {w["name"] for w in workers.values()}
                if wanted <= registered:
                    return workers
                for pod in self.worker_pods:
                    if pod.phase == "Running" and not pod.alive():
                        raise EmulationError(f"worker pod {pod.name} exited:\n{_tail(pod.logs())}")
                if time.monotonic() > deadline:
                    raise EmulationError(f"workers {sorted(wanted - registered)} did not register within {timeout}s")
                self._track_descendants()
                time.sleep(0.1)

    @property
    def scheduler_address(self) -> str:
        """The operator's DASK_SCHEDULER_ADDRESS for this cluster (its first worker's), mapped to the local port."""
        name = self.objects.cluster["metadata"]["name"]
        address = f"tcp://{name}-scheduler.{self.namespace}.{CLUSTER_DOMAIN}:8786"
        for deployment in self.objects.worker_deployments[:1]:
            env = deployment["spec"]["template"]["spec"]["containers"][0].get("env", [])
            address = next((e["value"] for e in env if e["name"] == "DASK_SCHEDULER_ADDRESS"), address)
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
        import psutil

        with self._lock, contextlib.suppress(psutil.Error):
            self._started.setdefault(pid, float(psutil.Process(pid).create_time()))

    def _track_descendants(self) -> None:
        import psutil

        for pod in self.pods:
            for pid in pod.pids:
                with contextlib.suppress(psutil.Error):
                    for child in psutil.Process(pid).children(recursive=True):
                        with self._lock:
                            self._started.setdefault(child.pid, child.create_time())

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Stop every pod (the workers together first, then the scheduler), then kill by PID any tracked process that
        is still running."""
        stop_pods(self.worker_pods, grace)
        self.scheduler_pod.stop(grace)
        for pid in self.leftover_pids():
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
