"""End to end, without a cluster: a blue/green upgrade of the dev stack, and the verification's first-deploy wait,
on real Dask processes.

v1 is the dev stack as `python -m tools.render` renders it; v2 the same stack after a config change that changes
the worker pod spec (`cluster.workers.memory` 1Gi -> 2Gi, which changes `--memory-limit` and the resources, so
the hash and the DaskCluster name). The pods run through tools/pod_emulator.py (the pinned operator's
builders); the stable Service `<cluster.name>-scheduler` is a `ServiceAlias` (tools/service_alias.py): local
ports that send each new connection to the Ready scheduler pod its selector matches, as kube-proxy does.

The upgrade follows the program's dependency order (tests/test_lifecycle.py checks the registered order): v2
starts beside v1, the verification provider's `create` checks v2 through v2's own candidate Service, only then the
stable Service takes v2's rendered selector, and v1 is stopped. Throughout, `EndpointProbe` opens a new Dask comm
to the stable endpoint every 50 ms (TCP, handshake, identity; one attempt each) and counts the failures.
The figures are reported (printed and as junit properties); bench/upgrade.py compares them with delete-and-recreate.
Run with `pytest -m e2e tests/test_upgrade_e2e.py` (about 1 minute).
"""

from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.emulated_api import EmulatedReader
from tests.test_e2e import N_ROWS, SEED, expected_rows
from tools.pod_emulator import EmulatedCluster
from tools.service_alias import ServiceAlias
from tools.upgrade_flip import (
    CATALOG_CLAIM,
    EndpointProbe,
    Rendered,
    render_stack,
    scheduler_id,
    start_cluster,
)

pytestmark = pytest.mark.e2e

STACK = "dev"
V2_CHANGE = {"workers": {"memory": "2Gi"}}
BAD_OPTION = "--no-such-option"  # `dask scheduler` rejects it; `dask worker` takes it as its scheduler address
# A connect attempt's bound in the crashed-scheduler case (PROBE_ATTEMPT_SECONDS, 10 s, pinned by
# test_verification_check_waits): the pods are read between attempts, and the crash fails the check once seen for 2 s.
SHORT_ATTEMPT_SECONDS = 1.0


# --- helpers -----------------------------------------------------------------------------------------------


def direct_props(rendered: Rendered, address: str, catalog: str, **more: Any) -> dict[str, Any]:
    """The provider's inputs from the render, with connect: direct to a local address and the local catalog path."""
    return {**rendered.props, "connect": "direct", "schedulerAddress": address, "catalogPath": catalog, **more}


def query_of(props: dict[str, Any], timeout: float) -> Any:
    """The query the provider would run for these props, with another overall timeout."""
    from components.verification.resource import query_of as provider_query

    return provider_query(props).model_copy(update={"timeout_seconds": timeout})


def with_bad_option(manifest: dict[str, Any], role: str) -> dict[str, Any]:
    """The manifest with an option `dask <role>` rejects appended to that role's container args."""
    bad = copy.deepcopy(manifest)
    (container,) = bad["spec"][role]["spec"]["containers"]
    container["args"] = [*container["args"], BAD_OPTION]
    return bad


# --- fixtures ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def renders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Rendered, Rendered]:
    root = tmp_path_factory.mktemp("render")
    return render_stack(STACK, root / "v1"), render_stack(STACK, root / "v2", cluster=V2_CHANGE)


@pytest.fixture(scope="module")
def claim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pvc-hats-catalog")


@dataclass
class FirstDeploy:
    """v1's first deploy (see `first_deploy`): what the provider's create returned or raised, and what it took."""

    cluster: EmulatedCluster
    seconds: float = 0.0
    outs: dict[str, Any] | None = None
    failure: BaseException | None = None
    operator_errors: list[BaseException] = field(default_factory=list)
    reset_no_endpoint: int = 0
    routed: int = 0


@pytest.fixture(scope="module")
def first_deploy(
    renders: tuple[Rendered, Rendered], claim: Path, tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> FirstDeploy:  # fmt: skip
    """v1's first deploy, with the sample catalog on its claim: the candidate Service appears 1 s after the provider's
    create starts, the scheduler pod only after the check was reset by the Service without endpoints. The cluster it
    leaves running is `blue` (one v1 cluster for the module: the same manifest, started once)."""
    from components.verification.resource import new_provider
    from scripts.sample_catalog import write_sample_catalog

    v1, _ = renders
    cluster = EmulatedCluster(v1.daskcluster, tmp_path_factory.mktemp("v1"), claims={CATALOG_CLAIM: claim})
    request.addfinalizer(cluster.stop)
    catalog = cluster.map_path(v1.props["catalogPath"])
    write_sample_catalog(catalog, N_ROWS, seed=SEED)
    service = ServiceAlias(cluster.objects.scheduler_service, [cluster], start=False)  # the operator's, later
    deploy = FirstDeploy(cluster)

    def operator_and_kubelet() -> None:
        try:
            time.sleep(1.0)
            service.start()
            deadline = time.monotonic() + 60
            while service.reset_no_endpoint == 0:  # the check connected while no endpoint was Ready
                if time.monotonic() > deadline:
                    raise TimeoutError("the check did not retry through the Service within 60 s")
                time.sleep(0.05)
            cluster.start(timeout=180)
        except BaseException as exc:
            deploy.operator_errors.append(exc)

    try:
        address = service.map_address(v1.props["schedulerAddress"])
        later = threading.Thread(target=operator_and_kubelet, daemon=True)
        started = time.monotonic()
        later.start()
        try:
            deploy.outs = new_provider().create(direct_props(v1, address, catalog, timeoutSeconds=300)).outs
        except Exception as exc:
            deploy.failure = exc
        deploy.seconds = time.monotonic() - started
        later.join(60)
        deploy.reset_no_endpoint, deploy.routed = service.reset_no_endpoint, sum(service.routed.values())
    finally:
        service.close()
    return deploy


@pytest.fixture(scope="module")
def blue(first_deploy: FirstDeploy) -> EmulatedCluster:
    """v1, running (its first deploy's cluster), with the sample catalog on its claim."""
    if first_deploy.failure is not None or first_deploy.operator_errors:
        pytest.fail(f"v1's first deploy failed: {first_deploy.failure!r} {first_deploy.operator_errors!r}")
    first_deploy.cluster.wait_for_workers(timeout=60)
    return first_deploy.cluster


@pytest.fixture(scope="module")
def stable(renders: tuple[Rendered, Rendered], blue: EmulatedCluster) -> Any:
    """The stable Service `<cluster.name>-scheduler` as v1 renders it, selecting v1's scheduler."""
    v1, _ = renders
    with ServiceAlias(v1.stable_service, [blue]) as alias:
        yield alias


@pytest.fixture(scope="module")
def user_client(renders: tuple[Rendered, Rendered], stable: ServiceAlias) -> Any:
    """A user's Client on the stable address the stack exports, connected before the upgrade."""
    from distributed import Client

    v1, _ = renders
    with Client(stable.map_address(v1.exports["schedulerAddress"]), timeout=60, set_as_default=False) as client:
        assert client.submit(sum, [1, 2]).result(timeout=60) == 3
        yield client


# --- no processes --------------------------------------------------------------------------------------------


def test_the_config_change_renders_a_new_cluster_and_the_same_stable_service(
    renders: tuple[Rendered, Rendered],
) -> None:
    v1, v2 = renders
    assert v1.name != v2.name and v1.name.rsplit("-", 1)[0] == v2.name.rsplit("-", 1)[0] == "lsdb-dev"
    assert v1.stable_service["metadata"] == v2.stable_service["metadata"]
    assert v1.stable_service["spec"]["ports"] == v2.stable_service["spec"]["ports"]
    assert v1.stable_service["spec"]["selector"]["dask.org/cluster-name"] == v1.name
    assert v2.stable_service["spec"]["selector"]["dask.org/cluster-name"] == v2.name
    assert v1.exports["schedulerAddress"] == v2.exports["schedulerAddress"], "users keep one address"
    assert v2.props["schedulerAddress"].startswith(f"tcp://{v2.name}-scheduler."), "v2 is verified on its own"

    def memory_limit(r: Rendered) -> int:
        args = r.daskcluster["spec"]["worker"]["spec"]["containers"][0]["args"]
        return int(args[args.index("--memory-limit") + 1])

    assert (memory_limit(v1), memory_limit(v2)) == (2**30, 2 * 2**30)


# --- the upgrade ---------------------------------------------------------------------------------------------


def test_a_v2_whose_scheduler_crashes_fails_the_verification_and_the_stable_endpoint_stays_on_v1(
    renders: tuple[Rendered, Rendered], blue: EmulatedCluster, stable: ServiceAlias, user_client: Any,
    claim: Path, tmp_path: Path, record_property: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """v2's scheduler exits at once (an option `dask scheduler` rejects). The provider's create fails at
    `connect`; with API access (the pod reader over the real processes) it fails early naming the exit code and
    quoting the log. The stable Service is never pointed at v2: every probe and the user's client stay on v1.
    The pods are read between connect attempts (`PROBE_ATTEMPT_SECONDS`, 10 s): 1 s here, so the crash, seen for
    `stuck_seconds` (2 s), ends the check after about 4 s instead of two 10 s attempts."""
    from components.verification import check
    from components.verification.check import VerificationError, verify_catalog_query
    from components.verification.kube import StuckPods
    from components.verification.query import ClusterRef
    from components.verification.resource import new_provider

    v1, v2 = renders
    address = stable.map_address(v1.exports["schedulerAddress"])
    v1_id = scheduler_id(address)
    broken = EmulatedCluster(with_bad_option(v2.daskcluster, "scheduler"), tmp_path, claims={CATALOG_CLAIM: claim})
    try:
        stable.clusters.append(broken)  # its pods exist beside v1's; the selector still names v1
        with EndpointProbe(address) as probe:
            broken.scheduler_pod.start()
            candidate = broken.map_address(v2.props["schedulerAddress"])  # v2's own Service
            catalog = broken.map_path(v2.props["catalogPath"])

            with pytest.raises(RuntimeError, match="connect") as failed:  # connect: direct, no API: its budget (2 s)
                new_provider().create(direct_props(v2, candidate, catalog, timeoutSeconds=2))

            where = ClusterRef(v2.props["namespace"], v2.name, v2.props.get("kubeContext"))
            monkeypatch.setattr(check, "PROBE_ATTEMPT_SECONDS", SHORT_ATTEMPT_SECONDS)
            started = time.monotonic()
            with pytest.raises(VerificationError) as early:  # with API access: the stuck pod, named
                verify_catalog_query(
                    candidate, query_of(v2.props, timeout=300.0), where=where,
                    wait_hook=StuckPods(EmulatedReader([broken]), where, stuck_seconds=2.0),
                )  # fmt: skip
            early_seconds = time.monotonic() - started
            # Pulumi's order: the stable Service waits on the verification, which failed: no flip.
            assert user_client.submit(sum, [2, 3]).result(timeout=60) == 5
        assert early.value.stage == "connect"
        (container,) = broken.scheduler_pod.containers
        assert f"crashes (terminated, exit code {container.process.returncode}" in early.value.problem  # type: ignore[union-attr]
        assert container.logs().strip().splitlines()[-1] in early.value.problem  # the scheduler's own last log line
        assert f"logs {broken.scheduler_pod.name} -c scheduler" in early.value.fix
        assert early_seconds < 30.0
        assert probe.failed() == 0, probe.errors()
        assert probe.served_by() == [v1_id]
        assert user_client.scheduler_info()["id"] == v1_id
        assert not any(name.startswith(v2.name) for name in stable.routed)
        record_property("broken_v2_provider_error", str(failed.value)[:300])
        record_property("broken_v2_early_failure_seconds", round(early_seconds, 1))
        record_property("broken_v2_stable_probes", len(probe.probes))
        print(f"\nbroken v2: stable endpoint {len(probe.probes)} probes, {probe.failed()} failed; "
              f"early failure after {early_seconds:.1f} s: {early.value.problem.splitlines()[0]}")  # fmt: skip
    finally:
        stable.clusters.remove(broken)
        broken.stop()


def test_on_the_first_deploy_the_stable_endpoint_serves_nothing_until_the_selector_patch(
    renders: tuple[Rendered, Rendered], blue: EmulatedCluster
) -> None:
    # The Service exists before the first cluster (which depends on it) and selects nothing; the patch that
    # points it at the cluster is applied only after the verification passed.
    v1, _ = renders
    assert "selector" not in v1.unpatched_service["spec"]
    with ServiceAlias(v1.unpatched_service, [blue]) as alias:
        address = alias.map_address(v1.exports["schedulerAddress"])
        with pytest.raises(RuntimeError, match="no scheduler answered"):
            scheduler_id(address, timeout=5)
        alias.apply(v1.stable_service)
        assert scheduler_id(address) == scheduler_id(blue.map_address(v1.props["schedulerAddress"]))


def test_upgrade_flips_the_stable_endpoint_to_a_verified_v2_without_failed_connections(
    renders: tuple[Rendered, Rendered], blue: EmulatedCluster, stable: ServiceAlias, user_client: Any,
    claim: Path, tmp_path: Path, record_property: Any,
) -> None:  # fmt: skip
    from components.verification.resource import new_provider

    v1, v2 = renders
    address = stable.map_address(v1.exports["schedulerAddress"])
    v1_id = scheduler_id(address)
    want = expected_rows(float(v2.props["ra"]), float(v2.props["dec"]), float(v2.props["radiusArcsec"]))
    green: EmulatedCluster | None = None
    try:
        with EndpointProbe(address) as probe:
            green = start_cluster(v2.daskcluster, tmp_path, claim, timeout=180)  # beside v1
            stable.clusters.append(green)
            candidate = green.map_address(v2.props["schedulerAddress"])
            outs = new_provider().create(direct_props(v2, candidate, green.map_path(v2.props["catalogPath"]))).outs
            assert outs["rows"] == want and outs["workers"] == 2

            flipped_at = time.monotonic()
            stable.apply(v2.stable_service)  # the stable Service's update, after the verification
            v2_id = scheduler_id(address)
            blue.stop()  # Pulumi deletes the old DaskCluster last
            stopped_at = time.monotonic()
            deadline = time.monotonic() + 10
            while len(probe.window(start=stopped_at)) < 20 and time.monotonic() < deadline:
                time.sleep(0.05)  # keep probing the stable endpoint after v1 is gone (20 probes)
        flip_failed = probe.failed(start=flipped_at)
        record_property("upgrade_stable_probes", len(probe.probes))
        record_property("upgrade_stable_failed", probe.failed())
        record_property("upgrade_stable_failed_after_flip", flip_failed)
        record_property("upgrade_stable_unavailable_seconds", round(probe.unavailable_seconds(), 3))
        print(f"\nblue/green: stable endpoint {len(probe.probes)} probes, {probe.failed()} failed "
              f"({flip_failed} after the flip), unavailable {probe.unavailable_seconds():.3f} s")  # fmt: skip
        assert probe.failed() == 0, probe.errors()
        assert probe.served_by() == [v1_id, v2_id], "v1 until the flip, v2 from then on"
        assert probe.served_by(start=stopped_at) == [v2_id]

        # The user's client lost v1's scheduler with its pod and reconnects through the same stable address: it
        # now runs on v2, whose workers have the new memory limit (the new spec is live, not stored and ignored).
        assert user_client.submit(sum, [3, 4]).result(timeout=90) == 7
        info = user_client.scheduler_info(n_workers=-1)
        assert info["id"] == v2_id
        assert {w["memory_limit"] for w in info["workers"].values()} == {2 * 2**30}
    finally:
        user_client.close()  # before its scheduler goes: no reconnect loop at teardown
        if green is not None:
            stable.clusters.remove(green)
            green.stop()


# --- the first deploy --------------------------------------------------------------------------------------


def test_the_verification_waits_for_a_late_service_and_a_late_scheduler(
    renders: tuple[Rendered, Rendered], first_deploy: FirstDeploy, record_property: Any
) -> None:
    """The candidate Service appears 1 s after the provider's create starts, the scheduler pod only after the check
    was reset by the Service without endpoints: the check (connect: direct, retried with backoff) waits through
    refused and reset connections and passes (v1's first deploy, `first_deploy`)."""
    v1, _ = renders
    deploy = first_deploy
    assert deploy.failure is None, deploy.failure
    assert not deploy.operator_errors, deploy.operator_errors
    assert deploy.outs is not None
    assert deploy.outs["rows"] == expected_rows(float(v1.props["ra"]), float(v1.props["dec"]),
                                                float(v1.props["radiusArcsec"]))  # fmt: skip
    assert deploy.reset_no_endpoint >= 1, "it connected while the Service had no Ready endpoint, and retried"
    assert deploy.routed >= 1
    record_property("late_scheduler_create_seconds", round(deploy.seconds, 1))
    print(f"\nlate Service (1 s) and scheduler: create passed after {deploy.seconds:.1f} s, "
          f"{deploy.reset_no_endpoint} connection(s) reset while no endpoint was Ready")  # fmt: skip


def test_a_crashing_worker_pod_fails_the_workers_stage_early_with_its_log(
    renders: tuple[Rendered, Rendered], claim: Path, tmp_path: Path
) -> None:
    """The scheduler runs, the worker pods exit at once (an option `dask worker` rejects): with the pod reader over
    the real processes the workers stage fails well before its 180 s budget, quoting the worker's log. The reader
    runs between the stage's steps (`WORKER_WAIT_STEP_SECONDS`, 5 s); with `stuck_seconds=0` the first read that
    finds the crash ends the stage, after one step instead of two (how long a pod must stay stuck is
    test_verification_wait's subject, on a fake clock)."""
    from components.verification.check import VerificationError, verify_catalog_query
    from components.verification.kube import StuckPods
    from components.verification.query import ClusterRef

    v1, _ = renders
    with EmulatedCluster(with_bad_option(v1.daskcluster, "worker"), tmp_path, claims={CATALOG_CLAIM: claim}) as c:
        c.scheduler_pod.start()
        c.scheduler_pod.wait_ready(120)
        for pod in c.worker_pods:
            pod.start()
        where = ClusterRef(v1.props["namespace"], v1.name, v1.props.get("kubeContext"))
        started = time.monotonic()
        with pytest.raises(VerificationError) as info:
            verify_catalog_query(
                c.scheduler_address, query_of(v1.props, timeout=600.0), where=where,
                wait_hook=StuckPods(EmulatedReader([c]), where, stuck_seconds=0.0),
            )  # fmt: skip
        seconds = time.monotonic() - started
    assert info.value.stage == "workers"
    crashed = [p for p in c.worker_pods if p.name in info.value.problem]
    assert len(crashed) == 1, info.value.problem
    (container,) = crashed[0].containers
    assert f"crashes (terminated, exit code {container.process.returncode}" in info.value.problem  # type: ignore[union-attr]
    assert container.logs().strip().splitlines()[-1] in info.value.problem  # the worker's own last log line
    assert seconds < 30.0
    assert c.leftover_pids() == []
