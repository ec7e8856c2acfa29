"""The notebook (`notebook.*`, components/notebook.py): its config and refusals, what the program registers, Pod
Security, its NetworkPolicy's flows, and the images' identities (the cluster's `<h>` ignores the
notebook's lock). The notebook running for real: tests/test_notebook_server.py; its guardrail in the policy pack:
tests/test_policy.py."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from components import image as image_module
from components.config import ConfigError, parse_stack_config
from components.constants import CLIENT_LABEL, DASHBOARD_LABEL, DASHBOARD_PORT, SCHEDULER_PORT, WORKER_PORT
from components.notebook import NOTEBOOK_PORT, TOKEN_DIR, TOKEN_FILE, notebook_name
from components.storage import KEY_VOLUME
from tests.program_helpers import BASE, dask_cluster, live_objects, run_with
from tests.support.netpol import Cluster, External, Pod, pod_from_template
from tests.test_schemas import VERSIONS
from tools.mock_runtime import SECRET_SIG
from tools.operator_objects import operator_objects

NS = BASE["namespace"]
NAME = "lsdb-cluster"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"


def stack(**sections: Any) -> dict[str, Any]:
    return {**BASE, **sections}


def problems(**sections: Any) -> str:
    with pytest.raises(ConfigError) as err:
        parse_stack_config(stack(**sections))
    return str(err.value)


def notebook_objects(run: Any) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in live_objects(run) if "notebook" in o["metadata"]["name"]}


def deployment(objects: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    return objects[("Deployment", notebook_name(NAME))]


def pod_of(objects: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = deployment(objects)["spec"]["template"]["spec"]
    return spec


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


# --- config --------------------------------------------------------------------------------------------------


def test_off_by_default_and_nothing_registered() -> None:
    assert parse_stack_config(stack()).notebook.enabled is False
    run = run_with()
    assert notebook_objects(run) == {}
    assert not {"notebookUrl", "portForwardNotebook", "notebookToken"} & set(run.outputs)
    assert len(run.of_type("docker:index/image:Image")) == 1


@pytest.mark.parametrize(
    ("sections", "key", "fix"),
    [
        ({"notebook": {"enabled": True, "storage": {"size": "5Gi", "existingClaim": "mine"}}},
         "notebook.storage.existingClaim = 'mine'", "not both"),
        ({"notebook": {"enabled": True, "storage": {"storageClassName": "fast"}}},
         "notebook.storage.storageClassName = 'fast'", "set notebook.storage.size too"),
        ({"notebook": {"enabled": True}, "image": {"ref": "ghcr.io/acme/lsdb@sha256:" + "0" * 64}},
         "notebook.imageRef = null", "docker build --target notebook"),
        ({"notebook": {"enabled": True}, "storage": {"kind": "pvc", "accessMode": "ReadWriteOncePod"},
          "cluster": {"name": NAME, "workers": {"replicas": 1}, "autoscaler": {"enabled": False}}},
         "notebook.enabled = true", "storage.accessMode is ReadWriteOncePod"),
        ({"notebook": {"enabled": True}, "storage": {"kind": "pvc", "accessMode": "ReadWriteOnce"},
          "cluster": {"name": NAME, "workers": {"replicas": 1}, "autoscaler": {"enabled": False}}},
         "notebook.enabled = true", "another node, but storage.accessMode is ReadWriteOnce"),
        ({"notebook": {"enabled": True, "imageRef": "ghcr.io/acme/nb:latest"}}, "notebook.imageRef", "sha256"),
        ({"notebook": {"enabled": True, "memory": "lots"}}, "notebook.memory = 'lots'", ""),
        ({"role": "platform", "operator": {"install": True}, "notebook": {"enabled": True}, "namespace": "lsdb",
          "storage": {"kind": "none"}, "cluster": {}, "image": {}, "verify": {}},
         "notebook = '[set]'", "role platform installs only the operator"),
    ],
)  # fmt: skip
def test_refusals_name_the_key_the_value_and_the_fix(sections: dict[str, Any], key: str, fix: str) -> None:
    message = problems(**sections)
    assert key in message and fix in message, message


def test_every_problem_is_reported_at_once() -> None:
    message = problems(
        notebook={"enabled": True, "storage": {"size": "5Gi", "existingClaim": "x"}, "cpu": "-1"},
        cluster={"name": "BAD NAME"},
    )
    assert "notebook.storage.existingClaim" in message and "notebook.cpu" in message and "cluster.name" in message


# --- what the program registers -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_run() -> Any:
    return run_with(
        notebook={"enabled": True},
        security={"tls": True},
        catalogs={"gaia": {"source": "https://example.org/gaia"}},
        verify={"enabled": False, "cone": {"ra": 10.0, "dec": -5.0, "radiusArcsec": 30.0}, "columns": ["ra"]},
    )


def test_objects_and_exports(tls_run: Any) -> None:
    objects = notebook_objects(tls_run)
    assert set(objects) == {
        ("Deployment", notebook_name(NAME)),
        ("Service", notebook_name(NAME)),
        ("NetworkPolicy", notebook_name(NAME)),
        ("Secret", notebook_name(NAME, "token")),
        ("Secret", notebook_name(NAME, "tls")),
    }
    spec = deployment(objects)["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    service = objects[("Service", notebook_name(NAME))]["spec"]
    assert service["type"] == "ClusterIP" and service["ports"][0]["port"] == NOTEBOOK_PORT
    assert service["selector"].items() <= spec["template"]["metadata"]["labels"].items()
    out = tls_run.outputs
    assert out["notebookUrl"] == f"http://{notebook_name(NAME)}.{NS}.svc.cluster.local:{NOTEBOOK_PORT}/lab"
    assert "token" not in out["notebookUrl"]
    assert out["portForwardNotebook"] == f"kubectl --namespace {NS} port-forward svc/{notebook_name(NAME)} 8888:8888"
    assert "notebookToken" in tls_run.secret_outputs and len(out["notebookToken"]) == 48


def test_the_token_and_the_client_bundle_travel_as_pulumi_secrets(tls_run: Any) -> None:
    secrets = {r.inputs["metadata"]["name"]: r for r in tls_run.of_type("kubernetes:core/v1:Secret")}
    token = secrets[notebook_name(NAME, "token")]
    assert set(token.inputs["stringData"]) == {TOKEN_FILE}
    assert SECRET_SIG in json.dumps(token.raw_inputs["stringData"])
    bundle = secrets[notebook_name(NAME, "tls")]
    assert set(bundle.inputs["stringData"]) == {"ca.crt", "tls.crt", "tls.key"}
    assert SECRET_SIG in json.dumps(bundle.raw_inputs["stringData"])
    # The token stays the same across runs: it derives from a key in the state, not from this evaluation.
    assert tls_run.outputs["notebookToken"] == run_with(notebook={"enabled": True}).outputs["notebookToken"]


def test_the_pod_is_a_client_of_the_stable_service_with_the_client_bundle(tls_run: Any) -> None:
    pod = pod_of(notebook_objects(tls_run))
    labels = deployment(notebook_objects(tls_run))["spec"]["template"]["metadata"]["labels"]
    assert CLIENT_LABEL.items() <= labels.items() and not DASHBOARD_LABEL.items() <= labels.items()
    assert labels["app.kubernetes.io/name"] != NAME  # the cluster's NetworkPolicies select pods by cluster.name
    (container,) = pod["containers"]
    env = env_of(container)
    assert env["DASK_SCHEDULER_ADDRESS"] == f"tls://{NAME}-scheduler.{NS}.svc.cluster.local:{SCHEDULER_PORT}"
    assert env["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] == "True"
    assert env["DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT"] == "/etc/dask-tls/tls.crt"
    assert not [k for k in env if "__SCHEDULER__" in k or "__WORKER__" in k]  # the client role only
    assert env["LSDB_CATALOG"] == "/data/catalogs/gaia"  # the first provisioned catalog
    assert json.loads(env["LSDB_CONE"]) == {"ra": 10.0, "dec": -5.0, "radiusArcsec": 30.0}
    assert json.loads(env["LSDB_COLUMNS"]) == ["ra"]
    assert env["JUPYTER_TOKEN_FILE"] == f"{TOKEN_DIR}/{TOKEN_FILE}" and "JUPYTER_TOKEN" not in env
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mounts["/etc/dask-tls"]["readOnly"] is True
    assert volumes[mounts["/etc/dask-tls"]["name"]]["secret"]["secretName"] == notebook_name(NAME, "tls")
    assert mounts["/data"]["readOnly"] is True  # the catalogs, where the workers see them
    assert volumes[mounts["/data"]["name"]] == {"name": "catalog-data",
                                                "persistentVolumeClaim": {"claimName": "hats-catalog-pvc"}}  # fmt: skip
    assert volumes[mounts["/home/dask"]["name"]] == {"name": "home", "emptyDir": {}}  # nothing persists
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"port": "http", "path": "/api"}
    (init,) = pod["initContainers"]
    assert init["image"] == container["image"] and [m["mountPath"] for m in init["volumeMounts"]] == ["/home/dask"]


def test_the_cluster_does_not_depend_on_the_notebook(tls_run: Any) -> None:
    """The notebook follows the stable Service: no cluster object waits for it. Its objects come after the switch
    (the client bundle it mounts changes at a certificate rotation only once the new cluster serves)."""
    cluster = tls_run.one("kubernetes:kubernetes.dask.org/v1:DaskCluster")
    notebook = next(r for r in tls_run.of_type(DEPLOYMENT) if r.inputs["metadata"]["name"] == notebook_name(NAME))
    assert notebook.urn not in cluster.dependencies
    selector = tls_run.one("lsdb-k8s:cluster:StableEndpointSelector")
    switch = {selector.urn, *(r.urn for r in tls_run.resources if r.parent == selector.urn)}
    bundle = next(
        r
        for r in tls_run.of_type("kubernetes:core/v1:Secret")
        if r.inputs["metadata"]["name"].endswith("-notebook-tls")
    )
    for waiting in (notebook, bundle):
        assert switch & set(waiting.dependencies), waiting.name


def test_a_cluster_upgrade_leaves_the_notebook_as_it_is() -> None:
    """A new `<h>` (here: the workers' memory) is a new DaskCluster; the notebook's objects are the same, so Pulumi
    does not touch them and the pod keeps running (it follows the stable Service)."""
    before = run_with(notebook={"enabled": True}, cluster={"name": NAME, "workers": {"memory": "8Gi"}})
    after = run_with(notebook={"enabled": True}, cluster={"name": NAME, "workers": {"memory": "12Gi"}})
    assert dask_cluster(before)["metadata"]["name"] != dask_cluster(after)["metadata"]["name"]
    assert notebook_objects(before) == notebook_objects(after)


def test_tls_off_and_a_home_claim() -> None:
    run = run_with(notebook={"enabled": True, "storage": {"size": "5Gi", "storageClassName": "fast"}},
                   security={"tls": False})  # fmt: skip
    objects = notebook_objects(run)
    claim = objects[("PersistentVolumeClaim", notebook_name(NAME, "home"))]["spec"]
    assert claim == {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "5Gi"}},
                     "storageClassName": "fast"}  # fmt: skip
    pod = pod_of(objects)
    (container,) = pod["containers"]
    env = env_of(container)
    assert env["DASK_SCHEDULER_ADDRESS"].startswith("tcp://") and "DASK_DISTRIBUTED__COMM__TLS__CA_FILE" not in env
    assert "/etc/dask-tls" not in {m["mountPath"] for m in container["volumeMounts"]}
    home = next(v for v in pod["volumes"] if v["name"] == "home")
    assert home["persistentVolumeClaim"] == {"claimName": notebook_name(NAME, "home")}
    existing = pod_of(notebook_objects(run_with(notebook={"enabled": True, "storage": {"existingClaim": "mine"}})))
    assert next(v for v in existing["volumes"] if v["name"] == "home")["persistentVolumeClaim"] == {"claimName": "mine"}


def test_object_store_credentials_and_identity_as_the_workers_have_them() -> None:
    keys = {"accessKeyId": "AKIA", "secretAccessKey": "s3cr3t"}
    store = {"kind": "objectStore", "objectStore": {"url": "s3://bucket/catalogs", "credentials": keys}}
    run = run_with(("storage",), storage=store, notebook={"enabled": True})
    worker = dask_cluster(run)["spec"]["worker"]["spec"]["containers"][0]
    (container,) = pod_of(notebook_objects(run))["containers"]
    # The key files the workers read (no secret as a variable): the same variables, mounts and Secret volume.
    worker_keys = {e["name"]: e["value"] for e in worker["env"] if e["name"].startswith("AWS_")}
    assert set(worker_keys) == {"AWS_SHARED_CREDENTIALS_FILE"}  # no region or endpoint: no config file
    assert worker_keys.items() <= env_of(container).items()
    assert not [e for e in container["env"] if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]]
    key_mounts = [m for m in worker["volumeMounts"] if m["name"] == KEY_VOLUME]
    assert key_mounts and all(m in container["volumeMounts"] for m in key_mounts)
    worker_volumes = dask_cluster(run)["spec"]["worker"]["spec"]["volumes"]
    assert [v for v in worker_volumes if v["name"] == KEY_VOLUME] == [
        v for v in pod_of(notebook_objects(run))["volumes"] if v["name"] == KEY_VOLUME
    ]
    assert json.loads(env_of(container)["LSDB_STORAGE_OPTIONS"]) == {"anon": False}
    identity = {"kind": "objectStore", "objectStore": {"url": "gs://bucket/catalogs",
                "identity": {"gcp": {"serviceAccount": "reader@p.iam.gserviceaccount.com"}}}}  # fmt: skip
    run = run_with(storage=identity, notebook={"enabled": True})
    pod = pod_of(notebook_objects(run))
    assert pod["serviceAccountName"] == dask_cluster(run)["spec"]["worker"]["spec"]["serviceAccountName"]
    assert pod["automountServiceAccountToken"] is False


# --- Pod Security (restricted), strict schemas, the policy pack ------------------------------------------------

RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}  # fmt: skip


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """The restricted Pod Security Standard's checks (https://kubernetes.io/docs/concepts/security/pod-security-
    standards/#restricted) on a pod spec: volume types, host namespaces, non-root, no escalation, seccomp, caps."""
    found = []
    for v in pod.get("volumes", []):
        if not set(v) - {"name"} <= RESTRICTED_VOLUMES:
            found.append(f"volume {v['name']}: {sorted(set(v) - {'name'})}")
    found += [f"{k} set" for k in ("hostNetwork", "hostPID", "hostIPC") if pod.get(k)]
    pod_context = pod.get("securityContext", {})
    for c in [*pod.get("initContainers", []), *pod["containers"]]:
        ctx = c.get("securityContext", {})
        if ctx.get("runAsNonRoot", pod_context.get("runAsNonRoot")) is not True:
            found.append(f"{c['name']}: runAsNonRoot")
        if ctx.get("runAsUser", pod_context.get("runAsUser")) == 0:
            found.append(f"{c['name']}: runAsUser 0")
        if ctx.get("allowPrivilegeEscalation") is not False or ctx.get("privileged"):
            found.append(f"{c['name']}: privilege escalation")
        seccomp = ctx.get("seccompProfile", pod_context.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f"{c['name']}: seccomp {seccomp}")
        caps = ctx.get("capabilities", {})
        if "ALL" not in caps.get("drop", []) or set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            found.append(f"{c['name']}: capabilities {caps}")
        found += [f"{c['name']}: hostPort" for p in c.get("ports", []) if p.get("hostPort")]
    return found


def test_the_pod_meets_the_restricted_pod_security_standard(tls_run: Any) -> None:
    pod = pod_of(notebook_objects(tls_run))
    assert restricted_violations(pod) == []
    assert pod["securityContext"]["runAsUser"] == 10001 and pod["automountServiceAccountToken"] is False
    for c in [*pod["initContainers"], *pod["containers"]]:
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
    # Controls: the check catches a root container and a hostPath volume.
    bad = json.loads(json.dumps(pod))
    bad["containers"][0]["securityContext"] = {"runAsUser": 0}
    bad["volumes"].append({"name": "h", "hostPath": {"path": "/"}})
    assert len(restricted_violations(bad)) >= 4


def test_the_objects_are_valid_in_strict_mode(tls_run: Any) -> None:
    found = []
    for obj, version in itertools.product(notebook_objects(tls_run).values(), VERSIONS):
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            found.append(f"{obj['kind']} {obj['metadata']['name']} ({version}): {e}")
    assert found == []


# --- network flows (tests/support/netpol.py evaluates the stack's NetworkPolicies) -------------------------------


def flows(run: Any) -> tuple[Cluster, dict[str, Pod | External]]:
    objects = live_objects(run)
    built = operator_objects(dask_cluster(run), uuids=[f"{i:010x}" for i in range(10)])
    pods: dict[str, Pod | External] = {
        "notebook": pod_from_template(
            "notebook", NS, deployment(notebook_objects(run))["spec"]["template"], "10.0.4.1"
        ),
        "scheduler": pod_from_template("scheduler", NS, built.scheduler_deployment["spec"]["template"], "10.0.1.1"),
        "worker": pod_from_template("worker", NS, built.worker_deployments[0]["spec"]["template"], "10.0.2.1"),
        "neighbour": Pod("neighbour", NS, {"app": "x"}, "10.0.9.1"),
        "other": Pod("other", "other-team", dict(CLIENT_LABEL), "10.0.9.2"),
        "dns": Pod("kube-dns", "kube-system", {"k8s-app": "kube-dns"}, "10.0.9.3"),
        "internet": External("internet", "203.0.113.9"),
    }
    return Cluster([o for o in objects if o["kind"] == "NetworkPolicy"]), pods


@pytest.mark.parametrize("dashboard", [False, True])
def test_the_notebook_reaches_the_scheduler_and_nothing_else(dashboard: bool) -> None:
    cluster, p = flows(run_with(notebook={"enabled": True, "dashboard": dashboard}, security={"tls": False}))
    nb, scheduler = p["notebook"], p["scheduler"]
    assert cluster.allowed(nb, scheduler, SCHEDULER_PORT, "TCP")
    assert cluster.allowed(nb, p["dns"], 53, "UDP")
    assert cluster.allowed(nb, scheduler, DASHBOARD_PORT, "TCP") is dashboard  # only with notebook.dashboard
    # ... and closed on both sides: the notebook's own egress too, not only the scheduler's ingress.
    assert cluster._direction(nb, scheduler, DASHBOARD_PORT, "TCP", "Egress") is dashboard
    assert not cluster.allowed(nb, p["worker"], WORKER_PORT, "TCP")
    assert not cluster.allowed(nb, p["internet"], 443, "TCP")  # no object store here: no egress
    assert cluster.allowed(p["neighbour"], nb, NOTEBOOK_PORT, "TCP")  # pods of the namespace (a proxy, a client)
    assert not cluster.allowed(p["other"], nb, NOTEBOOK_PORT, "TCP")
    assert not cluster.allowed(scheduler, nb, NOTEBOOK_PORT, "TCP")  # the cluster's own egress stays closed


def test_with_an_object_store_the_notebook_reaches_it_on_the_egress_ports() -> None:
    store = {"kind": "objectStore", "objectStore": {"url": "s3://bucket/c", "anonymous": True}}
    security = {"tls": False, "egressCidrs": ["52.216.0.0/15"], "egressPorts": [443]}
    cluster, p = flows(run_with(storage=store, security=security, notebook={"enabled": True}))
    s3 = External("s3", "52.217.1.2")
    assert cluster.allowed(p["notebook"], s3, 443, "TCP")
    assert not cluster.allowed(p["notebook"], s3, 22, "TCP")
    assert not cluster.allowed(p["notebook"], p["internet"], 443, "TCP")


# --- image identity --------------------------------------------------------------------------------------------


def test_the_notebook_lock_and_starter_change_the_notebook_image_but_not_the_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`<h>` (the live cluster's name) digests the cluster image's identity, which the notebook's files are not
    part of: a new JupyterLab pin or starter notebook rolls the notebook only."""
    before = run_with(notebook={"enabled": True})
    docker = tmp_path / "docker"
    shutil.copytree(image_module.DOCKER_DIR, docker)
    lock = docker / "notebook-requirements.lock"
    lock.write_text(lock.read_text().replace("jupyterlab==", "jupyterlab==0.0.0+"))
    monkeypatch.setattr(image_module, "DOCKER_DIR", docker)
    after = run_with(notebook={"enabled": True})

    def names(run: Any) -> dict[str, str]:
        images = {r.name: r.inputs["imageName"] for r in run.of_type("docker:index/image:Image")}
        return {"cluster": dask_cluster(run)["metadata"]["name"], **images}

    old, new = names(before), names(after)
    assert old["cluster"] == new["cluster"] and old["lsdb-image-build"] == new["lsdb-image-build"]
    assert old["lsdb-image-notebook-build"] != new["lsdb-image-notebook-build"]
    assert new["lsdb-image-notebook-build"].startswith("ghcr.io/acme/lsdb-dask:notebook-py")
    (docker / "requirements.lock").write_text((docker / "requirements.lock").read_text() + "# changed\n")
    relocked = names(run_with(notebook={"enabled": True}))
    assert relocked["cluster"] != new["cluster"]  # control: the cluster's own lock does change it
    assert relocked["lsdb-image-notebook-build"] != new["lsdb-image-notebook-build"]  # and the notebook's


# --- the notebook lock ----------------------------------------------------------------------------------------


def test_the_notebook_lock_is_jupyterlabs_closure_beyond_the_lock_and_consistent_with_it() -> None:
    """docker/notebook-requirements.lock is what `tools.relock` writes: the closure of
    docker/notebook-requirements.in minus what docker/requirements.lock already pins, at the versions installed here
    (one resolution with the lock); every requirement of the notebook image is met inside lock + notebook lock (the
    build's `pip check`), and no cluster pin is restated or moved."""
    from importlib import metadata

    from components.lock import canonical, read_lock, requirement_closure
    from tests.test_image import roots, unmet_requirements

    lock = read_lock()
    notebook = read_lock(image_module.DOCKER_DIR / "notebook-requirements.lock")
    dists = {canonical(d.metadata["Name"]): d for d in metadata.distributions()}
    closure = requirement_closure(
        {n: d.requires or [] for n, d in dists.items()}, roots(image_module.DOCKER_DIR / "notebook-requirements.in")
    )
    assert set(notebook) == set(closure) - set(lock) and not set(notebook) & set(lock)
    assert {n: v for n, v in notebook.items() if dists[n].version != v} == {}
    assert unmet_requirements(closure, dists, {**lock, **notebook}) == []
    assert "jupyterlab" in notebook and "lsdb" not in notebook and "dask" not in notebook
