"""The notebook's manifests as the cluster would act on them (components/notebook.py), built from a parsed stack
config without a program run: the flows its NetworkPolicy allows, the environment, mounts, probes and security
context its pod gets, its Service and claim. `make mutate`'s fast tests of components/notebook.py; the program's
view (objects registered, Pod Security, flows with the cluster's own policies): tests/test_notebook.py."""

from __future__ import annotations

import hashlib
import json
from typing import Any, cast

import pytest

from components.cluster import CONTAINER_SECURITY_CONTEXT, POD_SECURITY_CONTEXT
from components.config import StackConfig, parse_stack_config
from components.constants import (
    CLIENT_LABEL,
    DASHBOARD_LABEL,
    DASHBOARD_PORT,
    DASHBOARD_PORT_NAME,
    PART_OF,
    SCHEDULER_PORT,
    SCHEDULER_PORT_NAME,
    WORKER_PORT,
)
from components.notebook import (
    deployment_manifest,
    home_claim_manifest,
    network_policy_manifest,
    notebook_env,
    notebook_urls,
    service_manifest,
    token_from_key,
)
from components.object_store_keys import PodStorage
from components.security import cluster_pods
from components.storage import VOLUME_NAME, pod_storage
from tests import program_helpers
from tests.support.netpol import Cluster, External, Pod, pod_from_template

IMAGE = "registry.example/lsdb-notebook@sha256:" + "c" * 64
BASE: dict[str, Any] = {**program_helpers.BASE, "namespace": "astro", "cluster": {"name": "sky"}}
SELECTOR = {"app.kubernetes.io/part-of": PART_OF, "app.kubernetes.io/name": "sky-notebook",
            "app.kubernetes.io/component": "notebook"}  # fmt: skip
STORE = {"kind": "objectStore", "objectStore": {"url": "s3://bucket/c", "anonymous": True}}
GCP = {"kind": "objectStore", "objectStore": {"url": "gs://bucket/c",
       "identity": {"gcp": {"serviceAccount": "reader@p.iam.gserviceaccount.com"}}}}  # fmt: skip
S3_BLOCK, S3 = "52.216.0.0/15", External("s3", "52.217.1.2")
INTERNET, METADATA = External("internet", "203.0.113.9"), External("gke-metadata", "169.254.169.254")


def config(**sections: Any) -> StackConfig:
    notebook = {"enabled": True, **sections.pop("notebook", {})}
    return parse_stack_config({**BASE, "notebook": notebook, **sections})


def storage_of(stack: StackConfig) -> PodStorage:
    return pod_storage(stack.storage, stack.cluster.name)


def deployment(stack: StackConfig, pull_secret: str | None = None, catalog: str | None = "/data/c") -> dict[str, Any]:
    return deployment_manifest(stack, storage_of(stack), pull_secret, catalog, IMAGE)


def pod_of(stack: StackConfig, **kwargs: Any) -> dict[str, Any]:
    spec: dict[str, Any] = deployment(stack, **kwargs)["spec"]["template"]["spec"]
    return spec


def env_of(stack: StackConfig, catalog: str | None = "/data/c") -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in notebook_env(stack, storage_of(stack), catalog)}


def mounts_of(stack: StackConfig) -> dict[str, dict[str, Any]]:
    [container] = pod_of(stack)["containers"]
    return {m["mountPath"]: m for m in container["volumeMounts"]}


def volumes_of(stack: StackConfig) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in pod_of(stack)["volumes"]}


# --- the NetworkPolicy's flows ----------------------------------------------------------------------------------


def flows(stack: StackConfig) -> tuple[Cluster, Pod, Pod, Pod]:
    """The notebook's policy alone (the others' pods unrestricted): what the notebook's own egress and ingress allow."""
    policy = network_policy_manifest(stack)
    assert policy is not None
    notebook = pod_from_template("notebook", "astro", deployment(stack)["spec"]["template"], "10.0.4.1")
    ports = ((SCHEDULER_PORT_NAME, SCHEDULER_PORT, "TCP"), (DASHBOARD_PORT_NAME, DASHBOARD_PORT, "TCP"))
    scheduler = Pod("scheduler", "astro", cluster_pods("sky", "scheduler")["matchLabels"], "10.0.1.1", ports)
    worker = Pod("worker", "astro", cluster_pods("sky", "worker")["matchLabels"], "10.0.2.1", ports)
    return Cluster([policy]), notebook, scheduler, worker


@pytest.mark.parametrize("dashboard", [False, True])
def test_the_notebook_reaches_dns_and_the_scheduler_only(dashboard: bool) -> None:
    cluster, nb, scheduler, worker = flows(config(notebook={"dashboard": dashboard}))
    dns = Pod("kube-dns", "kube-system", {"k8s-app": "kube-dns"}, "10.0.9.3")
    assert cluster.allowed(nb, scheduler, SCHEDULER_PORT) and not cluster.allowed(nb, scheduler, SCHEDULER_PORT, "UDP")
    assert cluster.allowed(nb, dns, 53, "UDP") and cluster.allowed(nb, dns, 53, "TCP")
    assert cluster.allowed(nb, scheduler, DASHBOARD_PORT) is dashboard
    assert not cluster.allowed(nb, worker, WORKER_PORT) and not cluster.allowed(nb, worker, SCHEDULER_PORT)
    assert not cluster.allowed(nb, INTERNET, 443) and not cluster.allowed(nb, METADATA, 80)


def test_pods_of_the_namespace_reach_the_notebook_s_port_only() -> None:
    cluster, nb, scheduler, _ = flows(config())
    neighbour = Pod("neighbour", "astro", {"app": "x"}, "10.0.9.1")
    assert cluster.allowed(neighbour, nb, 8888) and cluster.allowed(scheduler, nb, 8888)
    assert not cluster.allowed(neighbour, nb, 8888, "UDP") and not cluster.allowed(neighbour, nb, 22)
    assert not cluster.allowed(Pod("other", "team", dict(CLIENT_LABEL), "10.0.9.2"), nb, 8888)
    bystander = Pod("app", "astro", {"app.kubernetes.io/part-of": PART_OF}, "10.0.9.4")
    assert cluster.allowed(bystander, INTERNET, 443)  # the policy selects the notebook only


def test_with_an_object_store_the_notebook_reaches_the_egress_blocks_on_the_egress_ports() -> None:
    security = {"tls": False, "egressCidrs": [S3_BLOCK], "egressPorts": [443, 9000]}
    cluster, nb, _, _ = flows(config(storage=STORE, security=security))
    assert cluster.allowed(nb, S3, 443) and cluster.allowed(nb, S3, 9000) and not cluster.allowed(nb, S3, 22)
    assert not cluster.allowed(nb, INTERNET, 443) and not cluster.allowed(nb, METADATA, 80)
    cluster, nb, _, _ = flows(config(security=security))  # a claim: the egress blocks are not the notebook's
    assert not cluster.allowed(nb, S3, 443)


def test_a_gcp_identity_reaches_the_metadata_server() -> None:
    cluster, nb, _, _ = flows(config(storage=GCP))
    assert cluster.allowed(nb, METADATA, 80) and not cluster.allowed(nb, INTERNET, 80)
    aws = {"kind": "objectStore", "objectStore": {"url": "s3://bucket/c",
           "identity": {"aws": {"roleArn": "arn:aws:iam::123456789012:role/reader"}}}}  # fmt: skip
    cluster, nb, _, _ = flows(config(storage=aws))
    assert not cluster.allowed(nb, METADATA, 80)


def test_no_policy_without_security_network_policy() -> None:
    assert network_policy_manifest(config(security={"networkPolicy": False})) is None
    policy = network_policy_manifest(config())
    assert policy is not None and (policy["apiVersion"], policy["kind"]) == ("networking.k8s.io/v1", "NetworkPolicy")
    assert policy["metadata"] == {"name": "sky-notebook", "namespace": "astro", "labels": SELECTOR}


# --- what the pod gets ------------------------------------------------------------------------------------------


def test_the_client_environment_with_tls() -> None:
    cone = {"ra": 10.5, "dec": -3.0, "radiusArcsec": 20.0}
    env = env_of(config(verify={"enabled": False, "cone": cone, "columns": ["ra", "dec"]}))
    assert env.pop("DASK_SCHEDULER_ADDRESS") == f"tls://sky-scheduler.astro.svc.cluster.local:{SCHEDULER_PORT}"
    assert env.pop("LSDB_CATALOG") == "/data/c"
    assert json.loads(env.pop("LSDB_STORAGE_OPTIONS")) == {}
    assert json.loads(env.pop("LSDB_CONE")) == {"ra": 10.5, "dec": -3.0, "radiusArcsec": 20.0}
    assert json.loads(env.pop("LSDB_COLUMNS")) == ["ra", "dec"]
    assert env.pop("JUPYTER_TOKEN_FILE") == "/var/run/secrets/lsdb-notebook/token"
    assert env == {  # the client role's TLS only: never a server's certificate
        "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True",
        "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": "/etc/dask-tls/ca.crt",
        "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT": "/etc/dask-tls/tls.crt",
        "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY": "/etc/dask-tls/tls.key",
    }


def test_without_tls_plain_tcp_and_no_catalog_is_an_empty_value() -> None:
    env = env_of(config(security={"tls": False}), catalog=None)
    assert env["DASK_SCHEDULER_ADDRESS"].startswith("tcp://") and env["LSDB_CATALOG"] == ""
    assert not [k for k in env if k.startswith("DASK_DISTRIBUTED__")]
    volumes, mounts = volumes_of(config(security={"tls": False})), mounts_of(config(security={"tls": False}))
    assert "dask-tls" not in volumes and "/etc/dask-tls" not in mounts


def test_object_store_keys_and_options_as_the_workers_get_them() -> None:
    keys = {"accessKeyId": {"secure": "v1:x"}, "secretAccessKey": {"secure": "v1:y"}}
    stack = config(storage={"kind": "objectStore", "objectStore": {"url": "s3://b/c", "credentials": keys}})
    storage = storage_of(stack)
    env = notebook_env(stack, storage, None)
    assert env[-len(storage.env) :] == storage.env and json.loads(env_of(stack)["LSDB_STORAGE_OPTIONS"]) == {
        "anon": False
    }
    env[-1]["value"] = "changed"
    assert storage.env[-1]["value"] != "changed"  # a copy: the workers' env is not the notebook's to change
    [key_volume] = storage.volumes
    volumes = {v["name"]: v for v in deployment_manifest(stack, storage, None, None, IMAGE)["spec"]["template"]["spec"][
        "volumes"]}  # fmt: skip
    assert volumes[key_volume["name"]] == key_volume
    volumes[key_volume["name"]]["secret"]["secretName"] = "changed"
    assert storage.volumes[0]["secret"]["secretName"] != "changed"  # a copy, as the env
    [key_mount] = storage.mounts
    assert mounts_of(stack)[key_mount["mountPath"]] == {**key_mount, "readOnly": True}


def test_the_mounts_home_token_tls_and_the_catalog_read_only() -> None:
    stack = config()
    mounts, volumes = mounts_of(stack), volumes_of(stack)
    assert mounts["/data"] == {"name": VOLUME_NAME, "mountPath": "/data", "readOnly": True}
    assert volumes[VOLUME_NAME] == storage_of(stack).volumes[0]
    assert mounts["/var/run/secrets/lsdb-notebook"] == {"name": "token", "mountPath": "/var/run/secrets/lsdb-notebook",
                                                       "readOnly": True}  # fmt: skip
    assert volumes["token"] == {"name": "token", "secret": {"secretName": "sky-notebook-token", "defaultMode": 0o440}}
    assert volumes["dask-tls"]["secret"]["secretName"] == "sky-notebook-tls"
    assert mounts["/etc/dask-tls"]["readOnly"] is True
    assert volumes["home"] == {"name": "home", "emptyDir": {}} and mounts["/home/dask"]["name"] == "home"
    assert volumes["tmp"] == {"name": "tmp", "emptyDir": {}} and "/tmp" in mounts
    names = [v["name"] for v in pod_of(stack)["volumes"]]
    assert len(names) == len(set(names)) and set(names) == {m["name"] for m in mounts.values()}


def test_a_home_claim_its_own_or_an_existing_one() -> None:
    sized = config(notebook={"storage": {"size": "5Gi", "storageClassName": "fast"}})
    assert volumes_of(sized)["home"] == {"name": "home", "persistentVolumeClaim": {"claimName": "sky-notebook-home"}}
    assert home_claim_manifest(sized) == {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "sky-notebook-home", "namespace": "astro", "labels": SELECTOR},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "5Gi"}},
                 "storageClassName": "fast"},
    }  # fmt: skip
    claim = home_claim_manifest(config(notebook={"storage": {"size": "5Gi"}}))
    assert claim is not None and "storageClassName" not in claim["spec"]
    mine = config(notebook={"storage": {"existingClaim": "mine"}})
    assert volumes_of(mine)["home"]["persistentVolumeClaim"] == {"claimName": "mine"}
    assert home_claim_manifest(mine) is None and home_claim_manifest(config()) is None


def test_the_jupyterlab_container() -> None:
    stack = config(notebook={"cpu": "2", "memory": "6Gi"})
    [container] = pod_of(stack)["containers"]
    assert container["name"] == "jupyterlab" and container["image"] == IMAGE
    assert container["env"] == notebook_env(stack, storage_of(stack), "/data/c")
    assert {"name": "LSDB_CATALOG", "value": "/data/c"} in container["env"]
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["command"][0] == "jupyter-lab" and "--ServerApp.port=8888" in container["command"]
    assert "--ServerApp.root_dir=/home/dask" in container["command"]
    assert container["ports"] == [{"name": "http", "containerPort": 8888, "protocol": "TCP"}]
    assert container["resources"] == {"requests": {"cpu": "2", "memory": "6Gi"}, "limits": {"memory": "6Gi"}}
    assert container["securityContext"] == CONTAINER_SECURITY_CONTEXT
    assert container["readinessProbe"]["httpGet"] == {"port": "http", "path": "/api"}
    assert container["livenessProbe"]["initialDelaySeconds"] == 30


def test_the_starter_is_copied_into_the_home_by_an_init_container() -> None:
    pod = pod_of(config())
    [init] = pod["initContainers"]
    assert init["name"] == "starter" and init["image"] == IMAGE and init["imagePullPolicy"] == "IfNotPresent"
    python, flag, code, source, dest = init["command"]
    assert (python, flag, source, dest) == (
        "python", "-c", "/opt/lsdb-notebook/starter.ipynb", "/home/dask/starter.ipynb"
    )  # fmt: skip
    assert "os.path.exists(sys.argv[2]) or shutil.copyfile(sys.argv[1], sys.argv[2])" in code
    assert init["volumeMounts"] == [{"name": "home", "mountPath": "/home/dask"}]
    assert init["resources"] == {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}}
    assert init["securityContext"] == CONTAINER_SECURITY_CONTEXT
    before = json.dumps(CONTAINER_SECURITY_CONTEXT, sort_keys=True)
    init["securityContext"]["capabilities"]["drop"].append("changed")
    pod["containers"][0]["securityContext"]["seccompProfile"]["type"] = "changed"
    assert json.dumps(CONTAINER_SECURITY_CONTEXT, sort_keys=True) == before  # one per container, nothing shared
    assert "changed" not in pod["containers"][0]["securityContext"]["capabilities"]["drop"]
    assert init["securityContext"]["seccompProfile"]["type"] != "changed"


def test_the_deployment_one_pod_recreated_a_client_of_the_scheduler() -> None:
    manifest = deployment(config(), pull_secret="regcred")
    assert (manifest["apiVersion"], manifest["kind"]) == ("apps/v1", "Deployment")
    spec = manifest["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    assert spec["selector"] == {"matchLabels": SELECTOR}
    assert spec["template"]["metadata"] == {"labels": {**SELECTOR, **CLIENT_LABEL}}
    assert manifest["metadata"]["name"] == "sky-notebook" and manifest["metadata"]["namespace"] == "astro"
    assert manifest["metadata"]["labels"] == SELECTOR
    annotations = manifest["metadata"]["annotations"]
    assert list(annotations) == ["checkov.io/skip1"] and annotations["checkov.io/skip1"].startswith("CKV_K8S_11=")
    assert "(notebook.cpu)" in annotations["checkov.io/skip1"]  # the key that reserves the CPU instead
    pod = spec["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}] and pod["securityContext"] == POD_SECURITY_CONTEXT
    assert pod["automountServiceAccountToken"] is False and "serviceAccountName" not in pod
    dashboard = deployment(config(notebook={"dashboard": True}))["spec"]["template"]["metadata"]["labels"]
    assert dashboard == {**SELECTOR, **CLIENT_LABEL, **DASHBOARD_LABEL}


def test_an_identity_runs_the_pod_as_the_workers_service_account_with_their_labels() -> None:
    stack = config(storage=GCP)
    storage = storage_of(stack)
    manifest = deployment(stack)
    template = manifest["spec"]["template"]
    assert template["spec"]["serviceAccountName"] == storage.service_account == "sky-catalog-reader"
    assert template["metadata"]["annotations"] == storage.pod_annotations
    assert storage.pod_labels.items() <= template["metadata"]["labels"].items()
    abfs = {"kind": "objectStore", "objectStore": {"url": "abfs://c/p", "credentials": {
        "accountName": {"secure": "v1:x"}, "accountKey": {"secure": "v1:y"}}}}  # fmt: skip
    annotations = deployment(config(storage=abfs))["metadata"]["annotations"]
    assert list(annotations) == ["checkov.io/skip1", "checkov.io/skip2"]
    assert annotations["checkov.io/skip2"] == storage_of(config(storage=abfs)).scanner_skips[0]


def test_the_service_and_the_urls() -> None:
    stack = config()
    assert service_manifest(stack) == {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "sky-notebook", "namespace": "astro", "labels": SELECTOR},
        "spec": {
            "type": "ClusterIP",
            "selector": SELECTOR,
            "ports": [{"name": "http", "protocol": "TCP", "port": 8888, "targetPort": "http"}],
        },
    }
    assert notebook_urls(stack) == {
        "notebookUrl": "http://sky-notebook.astro.svc.cluster.local:8888/lab",
        "portForwardNotebook": "kubectl --namespace astro port-forward svc/sky-notebook 8888:8888",
    }
    ctx = notebook_urls(config(kubeContext="kind-lsdb"))["portForwardNotebook"]
    assert ctx.startswith("kubectl --context kind-lsdb --namespace astro ")


def test_the_token_is_a_stable_digest_of_the_seed() -> None:
    token = token_from_key("-----BEGIN PRIVATE KEY-----\nx\n")
    assert token == hashlib.sha256(b"-----BEGIN PRIVATE KEY-----\nx\n").hexdigest()[:48] and len(token) == 48
    assert token_from_key("other") != token


# --- the component ----------------------------------------------------------------------------------------------


def test_the_component_registers_its_objects_the_deployment_after_its_secrets_claim_and_policy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import pulumi
    import pulumi_kubernetes as k8s

    from components.notebook import LsdbNotebook
    from tools.mock_runtime import has_plaintext, run_program

    stack = config(notebook={"storage": {"size": "5Gi"}})

    class Image:
        notebook_ref = IMAGE
        pull_secret_name = "regcred"

    given = config(notebook={"imageRef": "registry.example/mine@sha256:" + "d" * 64}, security={"networkPolicy": False})

    registered: dict[str, Any] = {}
    monkeypatch.setattr(LsdbNotebook, "register_outputs", lambda self, outputs: registered.setdefault(self, outputs))

    def program() -> None:
        bundle = pulumi.Output.secret({"ca": "CA", "cert": "CERT", "key": "very-secret-key", "other": "x"})
        gate = k8s.core.v1.Namespace("gate", metadata={"name": "astro"})
        opts = pulumi.ResourceOptions(depends_on=[gate])
        notebook = LsdbNotebook("nb", stack, storage_of(stack), cast(Any, Image()), "/data/c", bundle, opts)
        pulumi.export("token", notebook.token)
        pulumi.export("registered", registered[notebook])
        LsdbNotebook("own", given, storage_of(given), cast(Any, Image()), None, None)

    run = run_program({}, program=program)
    component = run.named("nb")
    assert component.type == "lsdb-k8s:notebook:LsdbNotebook" and run.named("gate").urn in component.dependencies
    assert run.outputs["registered"] == {"deployment": "sky-notebook"}
    children = {r.type.split(":")[-1] + "/" + r.name: r for r in run.resources if r.parent == component.urn}
    assert set(children) == {"PrivateKey/nb-token-seed", "Secret/nb-token", "Secret/nb-tls",
                             "PersistentVolumeClaim/nb-home", "NetworkPolicy/nb-netpol", "Deployment/nb-deployment",
                             "Service/nb-service"}  # fmt: skip
    tls = children["Secret/nb-tls"]
    assert tls.inputs["stringData"] == {"ca.crt": "CA", "tls.crt": "CERT", "tls.key": "very-secret-key"}
    assert tls.inputs["metadata"]["name"] == "sky-notebook-tls" and tls.inputs["type"] == "Opaque"
    assert not has_plaintext(tls.raw_inputs, "very-secret-key")
    token = children["Secret/nb-token"]
    seed = "-----BEGIN MOCK privateKeyPem-----\nnb-token-seed\n-----END MOCK privateKeyPem-----\n"  # the mocks' PEM
    assert token.inputs["stringData"] == {"token": token_from_key(seed)} == {"token": run.outputs["token"]}
    assert token.inputs["metadata"] == {"name": "sky-notebook-token", "namespace": "astro", "labels": SELECTOR}
    assert token.inputs["type"] == "Opaque" and not has_plaintext(token.raw_inputs, token_from_key(seed))
    assert "token" in run.secret_outputs and children["PrivateKey/nb-token-seed"].inputs["algorithm"] == "ED25519"
    deployment_ = children["Deployment/nb-deployment"]
    needs = {children[k].urn for k in ("Secret/nb-token", "Secret/nb-tls", "PersistentVolumeClaim/nb-home",
                                       "NetworkPolicy/nb-netpol")}  # fmt: skip
    assert needs <= set(deployment_.dependencies)
    assert deployment_.inputs["spec"] == deployment(stack, pull_secret="regcred")["spec"]
    assert deployment_.inputs["metadata"]["name"] == "sky-notebook"
    assert children["Service/nb-service"].inputs["spec"] == service_manifest(stack)["spec"]
    assert children["PersistentVolumeClaim/nb-home"].inputs["spec"]["resources"] == {"requests": {"storage": "5Gi"}}
    assert children["NetworkPolicy/nb-netpol"].inputs["spec"] == cast(dict, network_policy_manifest(stack))["spec"]
    for child in children.values():  # each waits for what the component was told to wait for
        assert run.named("gate").urn in child.dependencies, child.name
    assert children["Service/nb-service"].inputs == service_manifest(stack)
    assert children["PersistentVolumeClaim/nb-home"].inputs == home_claim_manifest(stack)
    assert children["NetworkPolicy/nb-netpol"].inputs == network_policy_manifest(stack)
    own = run.named("own")
    mine = {r.type.split(":")[-1] + "/" + r.name: r for r in run.resources if r.parent == own.urn}
    assert set(mine) == {"PrivateKey/own-token-seed", "Secret/own-token", "Deployment/own-deployment",
                         "Service/own-service"}  # fmt: skip
    [container] = mine["Deployment/own-deployment"].inputs["spec"]["template"]["spec"]["containers"]
    assert container["image"] == given.notebook.image_ref  # notebook.imageRef before the one built
    assert (
        mine["Deployment/own-deployment"].inputs["spec"]
        == deployment_manifest(given, storage_of(given), "regcred", None, cast(str, given.notebook.image_ref))["spec"]
    )


@pytest.mark.parametrize("dashboard", [False, True])
def test_the_manifests_are_valid_kubernetes_objects(dashboard: bool) -> None:
    import kubernetes_validate

    stack = config(storage=GCP, notebook={"dashboard": dashboard, "storage": {"size": "5Gi"}})
    for manifest in (deployment(stack), service_manifest(stack), home_claim_manifest(stack),
                     network_policy_manifest(stack)):  # fmt: skip
        kubernetes_validate.validate(manifest, "1.25.0", strict=True)
