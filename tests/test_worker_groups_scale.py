"""A scale-down of one worker group never removes another group's workers (issue 20, defect 1).

The pinned operator's OWN `retire_workers` (dask_kubernetes.operator.controller), which every scale-down of a
DaskWorkerGroup calls, runs against real `dask scheduler` / `dask worker` processes on 127.0.0.1 started from the
stack's pod specs as the operator builds them (its `build_scheduler_deployment_spec` and
`build_worker_deployment_spec`: the worker names, the injected env). Only the Service lookup
`get_scheduler_address` is patched, to answer what it answers in the cluster (`tcp://<host>:<port>` of the named
port), with the loopback scheduler's ports. With and without TLS (the stack's default is on: the operator still
reaches the HTTP route in plain HTTP, its RPC fallback has no client certificate). Then: what the operator's
extra-group scale-down would be instead is a new cluster (the groups' `replicas` are in `<h>`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from components.cluster import TLS_DIR, TLS_FILES
from components.constants import DEFAULT_GROUP
from tests.program_helpers import dask_cluster, manifest, run_with
from tests.support.certs import Authority

WORKER_GROUP = "kubernetes:kubernetes.dask.org/v1:DaskWorkerGroup"
DASK = str(Path(sys.executable).with_name("dask"))
NAMESPACE = "lsdb-test"
CLUSTER = {"name": "lsdb-wg", "workers": {"replicas": 2}, "workerGroups": {"highmem": {"replicas": 2, "memory": "2Gi"}}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' expansion of args and env values: `$(VAR)` -> its value, `$$` -> `$`."""
    return re.sub(r"\$\$|\$\((\w+)\)", lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), text)


def set_flags(args: list[str], values: dict[str, str]) -> list[str]:
    """`args` with the value after each flag of `values` replaced (every flag must be there)."""
    out = list(args)
    for flag, value in values.items():
        out[out.index(flag) + 1] = value
    return out


class Pod:
    """The one container of an operator-built Deployment, run as a local process in its own session."""

    def __init__(
        self, deployment: dict[str, Any], log: Path, flags: dict[str, str], env: dict[str, str], tls_dir: Path
    ) -> None:
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        self.name = deployment["metadata"]["name"]
        self.spec_env = {e["name"]: e["value"] for e in container.get("env", [])}  # literal values only here
        base = {k: v for k, v in os.environ.items() if not k.startswith("DASK_") and k != "PYTHONPATH"}
        full = dict(base)
        for key, value in self.spec_env.items():
            full[key] = expand(value, full).replace(TLS_DIR, str(tls_dir))  # the mounted certificate Secret
        full |= env  # what the cluster network resolves differently here (the scheduler Service's address)
        argv = [expand(a, full) for a in set_flags(container["args"], flags)]
        assert argv[0] == "dask", argv
        self.argv = [DASK, *argv[1:], "--host", "127.0.0.1"]
        self.log = log
        with open(log, "wb") as out:
            self.popen = subprocess.Popen(
                self.argv, env=full, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip

    def stop(self) -> None:
        """What deleting its Deployment does: SIGTERM the pod, SIGKILL after a grace period."""
        for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(wait)
                return


def get_workers(dashboard: int) -> list[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{dashboard}/api/v1/get_workers", timeout=5) as resp:
        return sorted(w["name"] for w in json.load(resp)["workers"])


def wait_for_workers(dashboard: int, names: list[str], scheduler: Pod, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        assert scheduler.popen.poll() is None, scheduler.log.read_text()[-3000:]
        with contextlib.suppress(OSError):
            seen = get_workers(dashboard)
            if seen == sorted(names):
                return
        time.sleep(0.3)
    raise TimeoutError(f"workers {seen}, expected {sorted(names)}")


@pytest.fixture(params=[True, False], ids=["tls", "no-tls"])
def stack_manifests(request: pytest.FixtureRequest) -> dict[str, Any]:
    run = run_with(cluster=CLUSTER, security={"tls": request.param})
    return {
        "tls": request.param,
        "cluster": dask_cluster(run),
        "groups": [manifest(r) for r in run.of_type(WORKER_GROUP)],
    }


def write_certificates(directory: Path) -> None:
    """The certificate Secret's files (components/security.py makes them with pulumi-tls), as mounted."""
    directory.mkdir()
    ca = Authority.create()
    server = ca.issue("scheduler", ["localhost"])
    for key, text in (("ca", ca.pem.cert), ("cert", server.cert), ("key", server.key)):
        (directory / TLS_FILES[key]).write_text(text)


@pytest.fixture
def running(stack_manifests: dict[str, Any], tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The scheduler, then the default group's 2 workers, then the `highmem` group's 2 (the program creates the
    DaskWorkerGroup after the DaskCluster, so its workers register last)."""
    from dask_kubernetes.operator.controller.controller import (
        build_scheduler_deployment_spec,
        build_worker_deployment_spec,
    )

    cluster = stack_manifests["cluster"]
    live = cluster["metadata"]["name"]
    (group,) = stack_manifests["groups"]
    tls_dir = tmp_path / "dask-tls"
    write_certificates(tls_dir)
    protocol = "tls" if stack_manifests["tls"] else "tcp"
    ports = {"tcp-comm": free_port(), "http-dashboard": free_port()}
    pods: list[Pod] = []
    try:
        scheduler_deployment = build_scheduler_deployment_spec(live, cluster["spec"]["scheduler"]["spec"], {}, {})
        flags = {"--port": str(ports["tcp-comm"]), "--dashboard-address": f"127.0.0.1:{ports['http-dashboard']}"}
        scheduler = Pod(scheduler_deployment, tmp_path / "scheduler.log", flags, {}, tls_dir)
        pods.append(scheduler)
        workers: dict[str, list[str]] = {}
        groups = ((DEFAULT_GROUP, f"{live}-default", cluster["spec"]["worker"]), ("highmem", group["metadata"]["name"],
                  group["spec"]["worker"]))  # fmt: skip
        for configured, group_name, worker in groups:
            for _ in range(worker["replicas"]):
                deployment = build_worker_deployment_spec(
                    group_name, NAMESPACE, live, uuid4().hex[:10], worker["spec"], {}, {}
                )
                flags = {
                    "--dashboard-address": f"127.0.0.1:{free_port()}",
                    "--worker-port": str(free_port()),
                    "--nanny-port": str(free_port()),
                    "--local-directory": str(tmp_path / deployment["metadata"]["name"]),
                }
                address = {"DASK_SCHEDULER_ADDRESS": f"{protocol}://127.0.0.1:{ports['tcp-comm']}"}
                pod = Pod(deployment, tmp_path / f"{deployment['metadata']['name']}.log", flags, address, tls_dir)
                # The address the pod is given (the operator's, or ours with TLS): the scheduler Service's DNS name.
                service = f"{protocol}://{live}-scheduler.{NAMESPACE}.svc.cluster.local:8786"
                assert pod.spec_env["DASK_SCHEDULER_ADDRESS"] == service
                pods.append(pod)
                workers.setdefault(configured, []).append(pod.name)
            wait_for_workers(ports["http-dashboard"], [n for names in workers.values() for n in names], scheduler)
        tls = tls_dir if stack_manifests["tls"] else None
        yield {"live": live, "ports": ports, "workers": workers, "pods": {p.name: p for p in pods}, "tls": tls}
    finally:
        for pod in reversed(pods):
            pod.stop()


def operator_retire(live: str, ports: dict[str, int], group: str, n: int) -> list[str]:
    """The operator's `retire_workers` for a scale-down of `group` by `n`, as `daskworkergroup_replica_update`
    calls it, with the scheduler Service lookup answering the loopback scheduler's ports."""
    from dask_kubernetes.operator.controller import controller

    async def get_scheduler_address(service_name: str, namespace: str, port_name: str = "tcp-comm", **_: Any) -> str:
        assert (service_name, namespace) == (f"{live}-scheduler", NAMESPACE)
        return f"tcp://127.0.0.1:{ports[port_name]}"  # the real lookup's form, for either port

    original = controller.get_scheduler_address
    controller.get_scheduler_address = get_scheduler_address  # type: ignore[assignment]
    try:
        return asyncio.run(
            controller.retire_workers(
                n_workers=n,
                scheduler_service_name=f"{live}-scheduler",
                worker_group_name=group,
                namespace=NAMESPACE,
                logger=logging.getLogger("dask-operator"),  # type: ignore[arg-type]
            )
        )
    finally:
        controller.get_scheduler_address = original  # type: ignore[assignment]


def client_security(tls_dir: Path | None) -> Any:
    """A client's security: with TLS the cluster certificate (the operator has none; its RPC fallback then fails)."""
    from distributed.security import Security

    if tls_dir is None:
        return Security()
    ca, cert, key = (str(tls_dir / TLS_FILES[k]) for k in ("ca", "cert", "key"))
    return Security(tls_ca_file=ca, tls_client_cert=cert, tls_client_key=key, require_encryption=True)


def rpc_workers_to_close(address: str, n: int, security: Any) -> list[str]:
    """The operator's RPC fallback question (`workers_to_close(n=..., attribute="name")`)."""
    from distributed.core import rpc

    async def ask() -> list[str]:
        async with rpc(address, connection_args=security.get_connection_args("client")) as scheduler:
            return list(await scheduler.workers_to_close(n=n, attribute="name"))

    return asyncio.run(ask())


@pytest.mark.timeout(300)
def test_scaling_down_the_default_group_retires_only_its_workers(
    running: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    from distributed import Client

    live, ports, workers, pods = running["live"], running["ports"], running["workers"], running["pods"]
    default, highmem = sorted(workers[DEFAULT_GROUP]), sorted(workers["highmem"])
    security = client_security(running["tls"])
    address = f"{'tls' if running['tls'] else 'tcp'}://127.0.0.1:{ports['tcp-comm']}"
    with Client(address, security=security, set_as_default=False, timeout=30) as client:
        by_name = {w["name"]: a for a, w in client.scheduler_info(n_workers=-1)["workers"].items()}
        # Results held by the default workers, as after a computation: retiring one of them costs more than
        # retiring an empty highmem worker, so a cluster-wide choice takes the highmem workers first.
        held = [client.scatter(bytes(2**20 * (i + 1)), workers=[by_name[n]]) for i, n in enumerate(default)]

        caplog.set_level(logging.INFO, logger="dask-operator")
        first = operator_retire(live, ports, f"{live}-default", n=1)  # the autoscaler: default 2 -> 1
        assert len(first) == 1 and first[0] in default, f"retired {first}; default {default}, highmem {highmem}"
        assert "Retired workers" in caplog.text  # answered by the HTTP route, not by the fallbacks
        pods[first[0]].stop()  # the operator deletes the Deployment named after the retired worker
        left = [n for n in default if n not in first]

        # The RPC fallback's question is answered from the default group only, even when asked for every worker.
        assert rpc_workers_to_close(address, n=3, security=security) == left

        rest = operator_retire(live, ports, f"{live}-default", n=3)  # more than the default group has left
        assert rest == left, f"retired {rest}; highmem {highmem}"
        pods[rest[0]].stop()
        wait_for_workers(ports["http-dashboard"], highmem, pods[f"{live}-scheduler"])
        # Retired gracefully: the results moved to the workers that stay.
        assert [len(b) for b in client.gather(held)] == [2**20 * (i + 1) for i in range(len(default))]


def live_name(**changes: Any) -> str:
    return str(dask_cluster(run_with(cluster={**CLUSTER, **changes}))["metadata"]["name"])


def test_an_extra_group_count_is_a_new_cluster_the_default_group_scales_in_place() -> None:
    base = live_name()
    highmem = CLUSTER["workerGroups"]["highmem"]  # type: ignore[index]
    assert live_name(workerGroups={"highmem": {**highmem, "replicas": 3}}) != base
    assert live_name(workerGroups={"highmem": {**highmem, "replicas": 1}}) != base
    assert live_name(workers={"replicas": 5}) == base
    assert live_name(autoscaler={"enabled": True, "minimum": 1, "maximum": 9}) == base


def test_the_scheduler_runs_the_preload_text_as_written() -> None:
    """The env value, after Kubernetes' expansion and dask's parsing, is the module's text (a `$(VAR)` in it would
    otherwise be expanded by the kubelet), and the prefix names the live cluster's default group."""
    import dask.config

    from components import scheduler_downscale

    cluster = dask_cluster(run_with(cluster=CLUSTER))
    variables = cluster["spec"]["scheduler"]["spec"]["containers"][0]["env"]
    env = {e["name"]: expand(e["value"], {"X": "expanded"}) for e in variables if "value" in e}
    parsed = dask.config.collect_env(
        {"DASK_DISTRIBUTED__SCHEDULER__PRELOAD": env["DASK_DISTRIBUTED__SCHEDULER__PRELOAD"]}
    )
    assert parsed["distributed"]["scheduler"]["preload"] == [Path(scheduler_downscale.__file__).read_text()]
    assert env[scheduler_downscale.PREFIX_ENV] == f"{cluster['metadata']['name']}-default-worker-"
