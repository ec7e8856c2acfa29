"""The combination matrix (issue 20): every pair of features in one stack, checked against the same invariants.

Features (FEATURES) are switched on and off in all-pairs covering: for every two features, each of on/on, on/off,
off/on and off/off occurs in at least one stack, except the pairs that EXCLUDED keeps out of any one stack.
`all_pairs` is a small deterministic greedy generator; `test_the_stacks_cover_every_pair` proves its cover.

Each stack is the real program run once under mocks (`tools.mock_runtime`, via tests.program_helpers.run_with),
cached for the module, and checked against invariants that do not depend on the pair:

* custom resources survive the API server's structural-schema pruning with nothing dropped (`pruned`, against the
  pinned dask-kubernetes CRDs and the prometheus-operator CRDs of tests/fixtures) and match those schemas; core
  objects pass kubernetes-validate in strict mode;
* names within Kubernetes' limits;
* the deployer RBAC (deploy/rbac/deployer.yaml) grants every object (the check of tests/test_schemas.py);
* the stable Service's selector patch waits for the verification, or with verification off for its gate;
* with TLS, every Dask pod mounts the one certificate Secret, named for the TLS epoch (so a rotation is a new
  cluster), and every resource of the cluster depends on it (Pulumi deletes the old cluster before its Secret);
* the NetworkPolicies allow every flow the enabled features need and deny the others, evaluated with
  tests/support/netpol.py on the pods the pinned operator builds from the rendered DaskCluster and groups;
* checkov, run once on every stack's objects and the operator-built Deployments and Services, and in the same run
  on what `make scan` scans (the shipped stacks, scripts/scan.py's variants, docker/) with scan.py's rule.

16 features give 14 stacks (about 160 test cases); the mock runs take about a minute and checkov (one run, through
scripts/checkov_each.py) about 15 s of CPU on this 2-core machine. Every check passes on every stack: a defect the
matrix finds is fixed or, while it is open, marked `xfail(strict=True)` with its reason, so the fix turns it into a
failure until the mark goes (none is open). A config change that refuses a pair (say, worker groups under the
autoscaler) goes into EXCLUDED, with its reason.
"""

from __future__ import annotations

import functools
import itertools
import re
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from components.config import ConfigError
from components.constants import (
    CLIENT_LABEL,
    DASHBOARD_PORT,
    NAME_LIMIT,
    NANNY_PORT,
    SCHEDULER_PORT,
    WORKER_DASHBOARD_PORT,
    WORKER_PORT,
    max_cluster_name_length,
    worker_deployment_name,
)
from components.lock import PROJECT_DIR
from components.notebook import NOTEBOOK_PORT
from scripts import scan
from tests.program_helpers import kubernetes_objects, live_objects, run_with
from tests.support import schema_check
from tests.support.checkov import CHECKOV, REQUIRE_CHECKOV, require_checkov
from tests.support.netpol import Cluster, External, Pod, pod_from_template
from tests.test_schemas import DEPLOYER_VERBS, PREVIEWER_VERBS, VERSIONS, crd_schema
from tests.test_schemas import test_the_rbac_grants_every_object_the_program_registers as rbac_check
from tools.operator_objects import operator_objects

# --- the features and the stacks ----------------------------------------------------------------------------

FEATURES = (
    "tls",
    "networkPolicy",
    "monitoring",
    "workerGroups",
    "autoscaler",
    "objectStoreKeys",
    "objectStoreIdentity",
    "spotWorkers",
    "verificationOff",
    "idleTimeout",
    "existingNamespace",
    "existingClaim",
    "operatorFromStack",
    "operatorInstalled",
    "catalogs",
    "notebook",
)
# Never in one stack, and why.
EXCLUDED = {
    frozenset({"objectStoreKeys", "objectStoreIdentity"}): "the config refuses static keys with an identity",
    frozenset({"objectStoreKeys", "existingClaim"}): "one storage.kind: objectStore or existingClaim",
    frozenset({"objectStoreIdentity", "existingClaim"}): "one storage.kind: objectStore or existingClaim",
    frozenset({"operatorFromStack", "operatorInstalled"}): "operator.fromStack implies install: false",
    frozenset({"catalogs", "objectStoreKeys"}): "the config refuses catalogs with storage.kind objectStore",
    frozenset({"catalogs", "objectStoreIdentity"}): "the config refuses catalogs with storage.kind objectStore",
}

NS = "lsdb-matrix"
OPERATOR_NS = "dask-operator"  # operator.namespace's default, and the platform stack's operatorNamespace
CLIENT_NS = "jupyter"  # security.clientNamespaces in every stack
# Where the scrapers run when monitoring is on: monitoring.prometheusNamespace's default (the stacks leave it unset).
SCRAPER_NS = "monitoring"
# The longest names the config accepts: every derived name is at its limit.
CLUSTER_NAME = ("lsdb-matrix-" + "x" * 63)[: max_cluster_name_length()]
GROUP = "hm" + "x" * 63
while len(worker_deployment_name(CLUSTER_NAME, GROUP)) > NAME_LIMIT:
    GROUP = GROUP[:-1]
S3_ENDPOINT = External("s3", "52.217.1.2")
GCS_ENDPOINT = External("gcs", "199.36.153.9")
GKE_METADATA = (External("metadata", "169.254.169.254"), 80), (External("gke-metadata", "169.254.169.252"), 988)
INTERNET = External("internet", "203.0.113.9")


def all_pairs(features: tuple[str, ...], excluded: Iterable[frozenset[str]]) -> list[frozenset[str]]:
    """A few stacks (sets of features on) covering every (feature, on/off) pair but the excluded on/on ones.

    Greedy: each stack starts from the first uncovered pair, then each other feature takes the value that covers
    the most uncovered pairs with the features already set (off when on would break an exclusion)."""
    banned = set(excluded)
    index = {f: i for i, f in enumerate(features)}

    def pairs_of(row: dict[str, bool]) -> set[tuple[str, bool, str, bool]]:
        set_ = sorted(row, key=index.__getitem__)
        return {(a, row[a], b, row[b]) for a, b in itertools.combinations(set_, 2)}

    needed = {
        (a, x, b, y)
        for a, b in itertools.combinations(features, 2)
        for x, y in itertools.product((True, False), repeat=2)
        if not (x and y and frozenset({a, b}) in banned)
    }
    stacks: list[frozenset[str]] = []
    while needed:
        a, x, b, y = min(needed, key=lambda p: (index[p[0]], index[p[2]], not p[1], not p[3]))
        row = {a: x, b: y}
        for f in features:
            if f in row:
                continue
            options = [v for v in (True, False) if not (v and any(frozenset({f, g}) in banned for g in row if row[g]))]
            row[f] = max(options, key=lambda v: len(pairs_of({**row, f: v}) & needed))
        needed -= pairs_of(row)
        stacks.append(frozenset(f for f, on in row.items() if on))
    return stacks


STACKS = all_pairs(FEATURES, EXCLUDED)


def stack_id(features: frozenset[str]) -> str:
    return "+".join(f for f in FEATURES if f in features) or "none"


def stack_sections(features: frozenset[str]) -> tuple[tuple[str, ...], dict[str, Any]]:
    """(secret top-level keys, config sections) of the stack with these features on."""
    on = features.__contains__
    workers: dict[str, Any] = {"replicas": 2}
    if on("spotWorkers"):
        workers["spot"] = "aws"
    cluster: dict[str, Any] = {
        "name": CLUSTER_NAME,
        "workers": workers,
        "autoscaler": {"enabled": on("autoscaler"), "minimum": 1, "maximum": 3},
        "idleTimeoutSeconds": 3600 if on("idleTimeout") else 0,
    }
    if on("workerGroups"):
        cluster["workerGroups"] = {
            GROUP: {"replicas": 2, "memory": "8Gi", **({"spot": "aws"} if on("spotWorkers") else {})}
        }
    storage: dict[str, Any] = {"kind": "pvc", "size": "10Gi"}
    catalog = "/data/catalogs/gaia"
    if on("objectStoreKeys"):
        credentials = {"accessKeyId": "AKIAEXAMPLE", "secretAccessKey": "example-secret"}
        storage = {"kind": "objectStore", "objectStore": {"url": "s3://bucket/catalogs", "credentials": credentials}}
        catalog = "s3://bucket/catalogs/gaia"
    if on("objectStoreIdentity"):
        identity = {"gcp": {"serviceAccount": "reader@project.iam.gserviceaccount.com"}}
        storage = {"kind": "objectStore", "objectStore": {"url": "gs://bucket/catalogs", "identity": identity}}
        catalog = "gs://bucket/catalogs/gaia"
    if on("existingClaim"):
        storage = {"kind": "existingClaim", "claimName": "catalogs-ro"}
    operator: dict[str, Any] = {"install": on("operatorInstalled")}
    if on("operatorFromStack"):
        operator = {"fromStack": "platform"}
    sections: dict[str, Any] = {
        "namespace": NS,
        "createNamespace": not on("existingNamespace"),
        "operator": operator,
        "storage": storage,
        "cluster": cluster,
        "image": {"repository": "ghcr.io/acme/lsdb-dask"},
        "verify": {"enabled": False} if on("verificationOff") else {"catalogPath": catalog, "minWorkers": 1},
        "security": {"tls": on("tls"), "networkPolicy": on("networkPolicy"), "clientNamespaces": [CLIENT_NS]},
        "monitoring": {"enabled": on("monitoring")},
    }
    if on("catalogs"):  # copied from a public bucket by a Job to /data/catalogs/gaia, what verify reads
        sections["catalogs"] = {"gaia": {"source": "s3://public-bucket/gaia", "anonymous": True}}
    if on("notebook"):  # JupyterLab beside the cluster, without the dashboard opt-in (tests/test_notebook.py has it)
        sections["notebook"] = {"enabled": True}
    return ("storage",) if on("objectStoreKeys") else (), sections


@functools.cache
def stack_run(features: frozenset[str]) -> Any:
    secret_keys, sections = stack_sections(features)
    return run_with(secret_keys, **sections)


@functools.cache
def stack_objects(features: frozenset[str]) -> list[dict[str, Any]]:
    """Every object the stack registers, with the stable Service as its selector patch leaves it."""
    run = stack_run(features)
    objects = kubernetes_objects(run)
    return objects + [o for o in live_objects(run) if o not in objects]


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


@functools.cache
def operator_built(features: frozenset[str]) -> Any:
    """The scheduler and worker Deployments (every group's) and the scheduler Service the operator creates."""
    objects = stack_objects(features)
    (cluster,) = of_kind(objects, "DaskCluster")
    groups = of_kind(objects, "DaskWorkerGroup")
    return operator_objects(cluster, uuids=[f"{i:010x}" for i in range(100)], worker_groups=groups)


stacks = pytest.mark.parametrize("features", STACKS, ids=[stack_id(s) for s in STACKS])


def test_the_stacks_cover_every_pair() -> None:
    """Every pair of features, on or off, is in some stack; no stack holds an excluded pair."""
    for a, b in itertools.combinations(FEATURES, 2):
        for x, y in itertools.product((True, False), repeat=2):
            if x and y and frozenset({a, b}) in EXCLUDED:
                assert not any({a, b} <= s for s in STACKS), (a, b)
                continue
            assert any((a in s) is x and (b in s) is y for s in STACKS), (a, x, b, y)
    assert len(STACKS) <= 14, f"{len(STACKS)} stacks: the generator is no longer small"


# --- custom resources after pruning, core objects in strict mode ---------------------------------------------


def pruned(value: Any, schema: Mapping[str, Any] | None) -> Any:
    """`value` as the API server stores it after pruning by a structural schema (k8s.io/apiextensions-apiserver
    pkg/apiserver/schema/pruning): fields of an object that neither its `properties` nor `additionalProperties`
    describe are dropped, unless `x-kubernetes-preserve-unknown-fields`; lists prune each item by `items`.
    A field without any schema loses everything inside it."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            properties = (schema or {}).get("properties", {})
            additional = (schema or {}).get("additionalProperties")
            if key in properties:
                out[key] = pruned(item, properties[key])
            elif isinstance(additional, dict):
                out[key] = pruned(item, additional)
            elif schema is not None and (schema.get("x-kubernetes-preserve-unknown-fields") or additional is True):
                out[key] = item
        return out
    if isinstance(value, list):
        return [pruned(item, (schema or {}).get("items")) for item in value]
    return value


def custom_resource_problems(obj: dict[str, Any]) -> list[str]:
    """What pruning would drop from a custom resource, and where it breaks its CRD's schema."""
    schema = crd_schema(obj["kind"])
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}  # kept at the root
    kept = pruned(body, schema)
    problems = [f"{obj['kind']} {obj['metadata']['name']}: {d}" for d in dropped(body, kept)]
    try:
        schema_check.validate(body, {k: v for k, v in schema.items() if k != "required"})
    except jsonschema.ValidationError as e:
        problems.append(f"{obj['kind']} {obj['metadata']['name']}: {e.message} at {e.json_path}")
    return problems


def dropped(before: Any, after: Any, path: str = "") -> list[str]:
    """The paths of `before` that pruning left out of `after`."""
    if isinstance(before, dict):
        found = []
        for key, value in before.items():
            found += [f"{path}.{key} pruned"] if key not in after else dropped(value, after[key], f"{path}.{key}")
        return found
    if isinstance(before, list):
        return [d for i, (b, a) in enumerate(zip(before, after, strict=True)) for d in dropped(b, a, f"{path}[{i}]")]
    return []


def test_the_pruning_check_can_fail() -> None:
    """Controls: an unknown field, a field under an object without properties, a value of the wrong type."""
    schema = {"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {"type": "integer"}}},
              "m": {"type": "object", "additionalProperties": {"type": "string"}}, "x": {"type": "object"},
              "k": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}  # fmt: skip
    value = {"a": {"b": 1, "c": 2}, "m": {"any": "kept"}, "x": {"y": 1}, "k": {"z": 1}, "extra": [1]}
    assert pruned(value, schema) == {"a": {"b": 1}, "m": {"any": "kept"}, "x": {}, "k": {"z": 1}}
    assert dropped(value, pruned(value, schema)) == [".a.c pruned", ".x.y pruned", ".extra pruned"]
    cluster = next(o for o in stack_objects(STACKS[0]) if o["kind"] == "DaskCluster")
    assert custom_resource_problems(cluster) == []
    typo = {**cluster, "spec": {**cluster["spec"], "idleTimeoutt": 5}}
    assert custom_resource_problems(typo) == [f"DaskCluster {cluster['metadata']['name']}: .spec.idleTimeoutt pruned"]
    wrong = {**cluster, "spec": {**cluster["spec"], "idleTimeout": "5"}}
    assert "'5' is not of type 'integer'" in custom_resource_problems(wrong)[0]


CUSTOM_APIS = ("kubernetes.dask.org/v1", "monitoring.coreos.com/v1")


@stacks
def test_custom_resources_keep_every_field(features: frozenset[str]) -> None:
    custom = [o for o in stack_objects(features) if o["apiVersion"] in CUSTOM_APIS]
    assert "DaskCluster" in {o["kind"] for o in custom}
    assert [p for o in custom for p in custom_resource_problems(o)] == []


@stacks
def test_core_objects_are_valid_in_strict_mode(features: frozenset[str]) -> None:
    core = [o for o in stack_objects(features) if o["apiVersion"] not in CUSTOM_APIS]
    problems = []
    for obj, version in itertools.product(core, VERSIONS):
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            problems.append(f"{obj['kind']} {obj['metadata']['name']} ({version}): {e}")
    assert problems == []


PLACEMENT = {
    "nodeSelector": {"pool": "dask"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "dask", "effect": "NoSchedule"}],
    "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
        "weight": 50,
        "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"a": "b"}}},
    }]}},
    "priorityClassName": "dask",
    "topologySpreadConstraints": [{
        "maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
        "labelSelector": {"matchLabels": {"dask.org/component": "worker"}}, "minDomains": 2,
        "nodeAffinityPolicy": "Honor", "nodeTaintsPolicy": "Honor", "matchLabelKeys": ["pod-template-hash"],
    }],
}  # fmt: skip


def test_a_placement_heavy_stack_keeps_every_field_or_is_refused() -> None:
    """Every PodSpec placement field the config accepts, on workers, a group and the scheduler: each survives the
    DaskCluster and DaskWorkerGroup schemas, or the config refuses it naming the key."""
    cluster = {
        "name": "lsdb-placed",
        "workers": {"placement": PLACEMENT},
        "scheduler": {"placement": PLACEMENT},
        "workerGroups": {"highmem": {"replicas": 1, "placement": PLACEMENT}},
    }
    try:
        run = run_with(namespace=NS, operator={"install": False}, cluster=cluster)
    except ConfigError as e:
        assert "topologySpreadConstraints" in str(e)
        return
    custom = [o for o in kubernetes_objects(run) if o["apiVersion"] in CUSTOM_APIS]
    assert {"DaskCluster", "DaskWorkerGroup"} <= {o["kind"] for o in custom}
    assert [p for o in custom for p in custom_resource_problems(o)] == []


# --- the switch waits for a verification, or its gate ----------------------------------------------------------


@stacks
def test_the_switch_waits_for_a_verification_or_its_gate(features: frozenset[str]) -> None:
    """issue 20 defect 3: the stable Service's selector patch never depends on the DaskCluster alone (ready for
    Pulumi as soon as the API server took it); with verificationOff it waits for the gate (connect and workers)."""
    run = stack_run(features)
    (check,) = run.of_type("pulumi-python:dynamic/lsdb:Verification")
    assert check.inputs["stages"] == ("gate" if "verificationOff" in features else "all")
    assert check.urn in run.one("kubernetes:core/v1:ServicePatch").dependencies


# --- TLS: the epoch's certificate Secret -------------------------------------------------------------------------


@stacks
def test_tls_pods_mount_the_epochs_secret_and_the_cluster_depends_on_it(features: frozenset[str]) -> None:
    """issue 20 defect 2: the certificate Secret's name carries the TLS epoch (components/tls_schedule.py), so it is
    in `<h>`: a rotation starts a new cluster; every cluster resource depends on the Secret, so the old cluster,
    deleted at the end of the `pulumi up`, goes before its Secret."""
    run = stack_run(features)
    secrets = [r for r in run.of_type("kubernetes:core/v1:Secret") if r.inputs.get("type") == "kubernetes.io/tls"]
    if "tls" not in features:
        assert secrets == []
        return
    (secret,) = secrets
    name = secret.inputs["metadata"]["name"]
    assert re.fullmatch(rf"{CLUSTER_NAME}-tls-g0-ca\d+-c\d+", name), name
    objects = stack_objects(features)
    (cluster,) = of_kind(objects, "DaskCluster")
    pods = [cluster["spec"]["scheduler"]["spec"], cluster["spec"]["worker"]["spec"]]
    pods += [group["spec"]["worker"]["spec"] for group in of_kind(objects, "DaskWorkerGroup")]
    for pod in pods:
        mounted = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v and v["name"] == "dask-tls"}
        assert mounted == {name}
    cluster_types = ("kubernetes.dask.org/v1:DaskCluster", "kubernetes.dask.org/v1:DaskWorkerGroup")
    dependents = [r for r in run.resources if r.type.endswith(cluster_types)]
    assert dependents and all(secret.urn in r.dependencies for r in dependents)


# --- names ----------------------------------------------------------------------------------------------------

# Objects whose name must be a DNS label (63): Namespace and Service names (RFC 1123/1035 labels); Deployments
# name their pods' hostnames and `pod-template-hash`-suffixed ReplicaSets, so the operator's stay within 63 too.
LABEL_NAMED = {"Namespace", "Service", "Deployment"}


def name_problems(objects: Iterable[Mapping[str, Any]]) -> list[str]:
    problems = []
    for obj in objects:
        meta = obj["metadata"]
        name, kind = meta["name"], obj["kind"]
        limit = NAME_LIMIT if kind in LABEL_NAMED else 253
        if len(name) > limit:
            problems.append(f"{kind} {name}: {len(name)} characters, over {limit}")
        templates = [meta, obj.get("spec", {}).get("template", {}).get("metadata", {})]
        for key, value in [item for m in templates for item in (m.get("labels") or {}).items()]:
            if len(key.rpartition("/")[2]) > NAME_LIMIT or len(value) > NAME_LIMIT:
                problems.append(f"{kind} {name}: label {key}={value} over {NAME_LIMIT}")
    return problems


@stacks
def test_names_within_limits(features: frozenset[str]) -> None:
    built = operator_built(features)
    objects = [*stack_objects(features), *built.deployments, built.scheduler_service, *built.extra_worker_groups]
    assert len(CLUSTER_NAME) == max_cluster_name_length()
    assert name_problems(objects) == []


def test_the_name_check_can_fail() -> None:
    service = {"kind": "Service", "metadata": {"name": "s" * 64}}
    labelled = {"kind": "ConfigMap", "metadata": {"name": "c", "labels": {"a": "v" * 64}}}
    assert len(name_problems([service, labelled, {"kind": "ConfigMap", "metadata": {"name": "c" * 64}}])) == 2


# --- the deployer's RBAC -------------------------------------------------------------------------------------


@stacks
@pytest.mark.parametrize(("who", "needed"), [("deployer", DEPLOYER_VERBS), ("previewer", PREVIEWER_VERBS)])
def test_the_rbac_grants_every_object(features: frozenset[str], who: str, needed: set[str]) -> None:
    rbac_check(stack_objects(features), who, needed)


# --- network flows -------------------------------------------------------------------------------------------


def world(features: frozenset[str]) -> tuple[Cluster, dict[str, Pod | External]]:
    """The stack's NetworkPolicies, its operator-built pods and the pods and addresses around them."""
    built = operator_built(features)
    endpoints: dict[str, Pod | External] = {
        "scheduler": pod_from_template("scheduler", NS, built.scheduler_deployment["spec"]["template"], "10.0.1.1")
    }
    for i, deployment in enumerate(built.worker_deployments):
        template = deployment["spec"]["template"]
        group = template["metadata"]["labels"]["dask.org/workergroup-name"]
        name = f"{'default' if group.endswith('-default') else 'group'}-worker-{i}"
        endpoints[name] = pod_from_template(name, NS, template, f"10.0.2.{i + 1}")
    endpoints |= {
        "operator": Pod("operator", OPERATOR_NS, {"app.kubernetes.io/name": "dask-kubernetes-operator"}, "10.0.9.1"),
        "client": Pod("client", NS, dict(CLIENT_LABEL), "10.0.9.2"),
        "unlabelled": Pod("unlabelled", NS, {"app": "notebook"}, "10.0.9.3"),
        "other-namespace": Pod("other-namespace", "other-team", dict(CLIENT_LABEL), "10.0.9.4"),
        "jupyter": Pod("jupyter", CLIENT_NS, {"app": "jupyterhub"}, "10.0.9.5"),
        "prometheus": Pod("prometheus", SCRAPER_NS, {"app.kubernetes.io/name": "prometheus"}, "10.0.9.6"),
        "kube-dns": Pod("kube-dns", "kube-system", {"k8s-app": "kube-dns"}, "10.0.9.7"),
    }
    for deployment in of_kind(stack_objects(features), "Deployment"):  # the notebook
        endpoints["notebook"] = pod_from_template("notebook", NS, deployment["spec"]["template"], "10.0.4.1")
    for i, job in enumerate(of_kind(stack_objects(features), "Job")):
        endpoints[f"provision-job-{i}"] = pod_from_template(
            f"provision-job-{i}", NS, job["spec"]["template"], f"10.0.3.{i + 1}"
        )
    return Cluster(of_kind(stack_objects(features), "NetworkPolicy")), endpoints


Flow = tuple[Pod | External, Pod | External, int, str]


def dask_pods(endpoints: Mapping[str, Pod | External]) -> tuple[Pod, list[Pod]]:
    workers = [p for n, p in endpoints.items() if "-worker-" in n and isinstance(p, Pod)]
    scheduler = endpoints["scheduler"]
    assert isinstance(scheduler, Pod)
    return scheduler, workers


def needed_flows(features: frozenset[str], endpoints: Mapping[str, Pod | External]) -> list[Flow]:
    """What the enabled features need (scrapers apart: see `scraper_flows`)."""
    scheduler, workers = dask_pods(endpoints)
    flows: list[Flow] = [(w, scheduler, SCHEDULER_PORT, "TCP") for w in workers]
    flows += [(scheduler, w, port, "TCP") for w in workers for port in (WORKER_PORT, NANNY_PORT)]
    flows += [(a, b, WORKER_PORT, "TCP") for a, b in itertools.permutations(workers, 2)]
    flows += [(endpoints["operator"], scheduler, DASHBOARD_PORT, "TCP")]  # autoscaler, idle check, retirement
    flows += [(endpoints[c], scheduler, SCHEDULER_PORT, "TCP") for c in ("client", "jupyter")]
    flows += [(p, endpoints["kube-dns"], 53, proto) for p in (scheduler, *workers) for proto in ("UDP", "TCP")]
    if "objectStoreKeys" in features:
        flows += [(p, S3_ENDPOINT, 443, "TCP") for p in (scheduler, *workers)]
    if "objectStoreIdentity" in features:
        flows += [(p, GCS_ENDPOINT, 443, "TCP") for p in (scheduler, *workers)]
        flows += [(p, address, port, "TCP") for p in (scheduler, *workers) for address, port in GKE_METADATA]
    for job in provision_jobs(endpoints):  # its source (security.egressCidrs on egressPorts) and DNS
        flows += [
            (job, S3_ENDPOINT, 443, "TCP"),
            *[(job, endpoints["kube-dns"], 53, proto) for proto in ("UDP", "TCP")],
        ]
    if (notebook := endpoints.get("notebook")) is not None:  # a client of the scheduler, reached from its namespace
        flows += [(notebook, scheduler, SCHEDULER_PORT, "TCP")]
        flows += [(notebook, endpoints["kube-dns"], 53, proto) for proto in ("UDP", "TCP")]
        flows += [(endpoints[n], notebook, NOTEBOOK_PORT, "TCP") for n in ("client", "unlabelled")]
        if "objectStoreKeys" in features:
            flows += [(notebook, S3_ENDPOINT, 443, "TCP")]
        if "objectStoreIdentity" in features:
            flows += [(notebook, GCS_ENDPOINT, 443, "TCP"), *[(notebook, a, port, "TCP") for a, port in GKE_METADATA]]
    return flows


def provision_jobs(endpoints: Mapping[str, Pod | External]) -> list[Pod]:
    jobs = [p for n, p in endpoints.items() if n.startswith("provision-job-") and isinstance(p, Pod)]
    return jobs


def scraper_flows(endpoints: Mapping[str, Pod | External]) -> list[Flow]:
    scheduler, workers = dask_pods(endpoints)
    scraper = endpoints["prometheus"]
    return [(scraper, scheduler, DASHBOARD_PORT, "TCP"), *[(scraper, w, WORKER_DASHBOARD_PORT, "TCP") for w in workers]]


def denied_flows(features: frozenset[str], endpoints: Mapping[str, Pod | External]) -> list[Flow]:
    """Flows no feature needs (the dashboard port for clients apart: see `dashboard_client_flows`)."""
    scheduler, workers = dask_pods(endpoints)
    outsiders = [endpoints[n] for n in ("other-namespace", "unlabelled")]
    flows: list[Flow] = [(o, scheduler, port, "TCP") for o in outsiders for port in (SCHEDULER_PORT, DASHBOARD_PORT)]
    flows += [(o, w, port, "TCP") for o in outsiders for w in workers for port in (WORKER_PORT, WORKER_DASHBOARD_PORT)]
    flows += [(endpoints[c], w, WORKER_PORT, "TCP") for c in ("client", "jupyter") for w in workers]
    flows += [(endpoints["operator"], scheduler, SCHEDULER_PORT, "TCP")]
    flows += [(endpoints["operator"], w, port, "TCP") for w in workers for port in (WORKER_PORT, NANNY_PORT)]
    flows += [(w, scheduler, DASHBOARD_PORT, "TCP") for w in workers]
    flows += [(a, b, WORKER_DASHBOARD_PORT, "TCP") for a, b in itertools.permutations(workers, 2)]
    flows += [(p, endpoints["jupyter"], 8888, "TCP") for p in (scheduler, *workers)]  # no egress to other pods
    flows += [(p, INTERNET, 22, "TCP") for p in (scheduler, *workers)]
    if "monitoring" not in features:
        flows += scraper_flows(endpoints)
    else:
        flows += [(endpoints["prometheus"], scheduler, SCHEDULER_PORT, "TCP")]
    if not features & {"objectStoreKeys", "objectStoreIdentity"}:
        flows += [(p, INTERNET, 443, "TCP") for p in (scheduler, *workers)]  # no object store: no egress
    if "objectStoreIdentity" not in features:
        flows += [(p, address, port, "TCP") for p in (scheduler, *workers) for address, port in GKE_METADATA]
    for job in provision_jobs(endpoints):  # nothing but its source and DNS, and nothing reaches it
        flows += [
            (job, INTERNET, 22, "TCP"),
            (job, scheduler, SCHEDULER_PORT, "TCP"),
            (job, workers[0], WORKER_PORT, "TCP"),
        ]
        flows += [
            (job, endpoints["jupyter"], 8888, "TCP"),
            (scheduler, job, 8080, "TCP"),
            (workers[0], job, 8080, "TCP"),
        ]
        flows += [(endpoints[c], job, 8080, "TCP") for c in ("client", "other-namespace")]
    if (notebook := endpoints.get("notebook")) is not None:  # 8786 only (no dashboard opt-in), from the namespace
        flows += [(notebook, scheduler, DASHBOARD_PORT, "TCP"), (notebook, workers[0], WORKER_PORT, "TCP")]
        flows += [(notebook, INTERNET, 22, "TCP"), (notebook, endpoints["jupyter"], 8888, "TCP")]
        flows += [(endpoints[n], notebook, NOTEBOOK_PORT, "TCP") for n in ("other-namespace", "jupyter", "prometheus")]
        flows += [(p, notebook, NOTEBOOK_PORT, "TCP") for p in (scheduler, *workers)]
        if not features & {"objectStoreKeys", "objectStoreIdentity"}:
            flows += [(notebook, INTERNET, 443, "TCP")]
    return flows


def dashboard_client_flows(endpoints: Mapping[str, Pod | External]) -> list[Flow]:
    """Clients get 8786; 8787 (dashboard, metrics and the unauthenticated HTTP API) is not theirs by default."""
    scheduler, _ = dask_pods(endpoints)
    return [(endpoints[c], scheduler, DASHBOARD_PORT, "TCP") for c in ("client", "jupyter")]


def verdicts(cluster: Cluster, flows: Iterable[Flow], expected: bool) -> list[str]:
    return [f"{s.name} -> {d.name}:{port}/{proto}" for s, d, port, proto in flows
            if cluster.allowed(s, d, port, proto) is not expected]  # fmt: skip


@stacks
def test_every_needed_flow_is_allowed(features: frozenset[str]) -> None:
    cluster, endpoints = world(features)
    _, workers = dask_pods(endpoints)
    assert len(workers) == 2 + 2 * ("workerGroups" in features)
    assert len(provision_jobs(endpoints)) == ("catalogs" in features)
    assert ("notebook" in endpoints) is ("notebook" in features)
    assert verdicts(cluster, needed_flows(features, endpoints), True) == []


MONITORED = [s for s in STACKS if "monitoring" in s]
POLICED = [s for s in STACKS if "networkPolicy" in s]


@pytest.mark.parametrize("features", MONITORED, ids=[stack_id(s) for s in MONITORED])
def test_the_scrapers_reach_the_metrics(features: frozenset[str]) -> None:
    cluster, endpoints = world(features)
    assert verdicts(cluster, scraper_flows(endpoints), True) == []


@pytest.mark.parametrize("features", POLICED, ids=[stack_id(s) for s in POLICED])
def test_every_other_flow_is_denied(features: frozenset[str]) -> None:
    cluster, endpoints = world(features)
    assert verdicts(cluster, denied_flows(features, endpoints), False) == []


@pytest.mark.parametrize("features", POLICED, ids=[stack_id(s) for s in POLICED])
def test_clients_do_not_reach_the_dashboard_port(features: frozenset[str]) -> None:
    cluster, endpoints = world(features)
    assert verdicts(cluster, dashboard_client_flows(endpoints), False) == []


# --- the notebook's mounts -----------------------------------------------------------------------------------


NOTEBOOKS = [s for s in STACKS if "notebook" in s]


@pytest.mark.parametrize("features", NOTEBOOKS, ids=[stack_id(s) for s in NOTEBOOKS])
def test_the_notebook_sees_what_the_workers_see(features: frozenset[str]) -> None:
    """The stable Service's address (`tls://` and the client bundle mounted read-only with TLS), the catalog
    storage read-only where the workers mount it, the workers' object-store credentials or identity."""
    objects = stack_objects(features)
    (notebook,) = of_kind(objects, "Deployment")
    pod = notebook["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    tls = "tls" in features
    assert env["DASK_SCHEDULER_ADDRESS"]["value"].startswith(
        ("tls://" if tls else "tcp://") + CLUSTER_NAME + "-scheduler."
    )
    assert ("/etc/dask-tls" in mounts) is tls and ("DASK_DISTRIBUTED__COMM__TLS__CA_FILE" in env) is tls
    if tls:
        assert mounts["/etc/dask-tls"]["readOnly"] is True
        secret = volumes[mounts["/etc/dask-tls"]["name"]]["secret"]["secretName"]
        assert secret in {o["metadata"]["name"] for o in of_kind(objects, "Secret")}
    (cluster,) = of_kind(objects, "DaskCluster")
    worker = cluster["spec"]["worker"]["spec"]
    for mount in worker["containers"][0]["volumeMounts"]:
        if mount["name"] in {v["name"] for v in worker.get("volumes", []) if "persistentVolumeClaim" in v}:
            assert mounts[mount["mountPath"]]["readOnly"] is True
            assert volumes[mount["name"]] == next(v for v in worker["volumes"] if v["name"] == mount["name"])
    worker_env = [e for e in worker["containers"][0].get("env", []) if "valueFrom" in e]
    assert all(e in container["env"] for e in worker_env)  # the object-store credentials
    assert pod.get("serviceAccountName") == worker.get("serviceAccountName")  # the workload identity


# --- checkov ----------------------------------------------------------------------------------------------------

# What `make scan` checks (scripts/scan.py: the shipped stacks, its variants and docker/), scanned in the matrix's
# checkov run: `make test` runs checkov once, not a second time after the suite.
SCANNED = [*scan.default_stacks(PROJECT_DIR), "dockerfile"]


def test_a_missing_checkov_fails_where_make_test_requires_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(REQUIRE_CHECKOV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="missing"):
        require_checkov(tmp_path / "checkov")
    monkeypatch.setenv(REQUIRE_CHECKOV, "1")
    with pytest.raises(pytest.fail.Exception, match="LSDB_REQUIRE_CHECKOV is set"):
        require_checkov(tmp_path / "checkov")
    require_checkov(CHECKOV if CHECKOV.is_file() else Path(__file__))  # present: neither


# Two directories in the run, after the stacks: a pod a NetworkPolicy selects, then the same pod without it. The second
# fails CKV2_K8S_6 only if checkov's graph checks see each directory alone, as the stacks need (the policy of an
# earlier directory, or of another stack in the same namespace, must not count).
_PLANTED_POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "planted", "namespace": "planted", "labels": {"app": "planted"}},
    "spec": {"containers": [{"name": "main", "image": "busybox@sha256:" + "0" * 64}]},
}
PLANTED = {
    "selected": [
        _PLANTED_POD,
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "planted", "namespace": "planted"},
            "spec": {"podSelector": {"matchLabels": {"app": "planted"}}, "policyTypes": ["Ingress", "Egress"]},
        },
    ],
    "alone": [_PLANTED_POD],
}


def write_objects(directory: Path, objects: list[dict[str, Any]]) -> None:
    """Each object in its file, as yaml.safe_dump writes it but by libyaml's emitter (a third of the CPU; long strings
    wrap elsewhere: the same objects, and checkov's counts and failed checks per stack were compared alike)."""
    directory.mkdir()
    for i, obj in enumerate(objects):
        (directory / f"{i:02d}-{obj['kind'].lower()}.yaml").write_text(yaml.dump(obj, Dumper=yaml.CSafeDumper))


@pytest.fixture(scope="module")
def checkov_targets() -> Iterator[dict[str, Path]]:
    """The directories the checkov run scans: every matrix stack's objects and the operator-built Deployments and
    Service, what `make scan` scans (scripts/scan.py's `scan_targets`, "shipped:<target>"), and PLANTED, each in its
    own directory; by stack id and target."""
    require_checkov(CHECKOV)
    with tempfile.TemporaryDirectory(prefix="lsdb-matrix-") as tmp:
        targets = {stack_id(features): Path(tmp) / f"s{n:02d}" for n, features in enumerate(STACKS)}
        for features in STACKS:
            built = operator_built(features)
            operator_made = [*built.deployments, built.scheduler_service]
            for obj in operator_made:
                obj["metadata"]["namespace"] = NS
                obj["metadata"].pop("ownerReferences", None)  # uids of objects that exist only in the API server
            write_objects(targets[stack_id(features)], [*stack_objects(features), *operator_made])
        shipped = scan.scan_targets(PROJECT_DIR, tuple(SCANNED[:-1]), Path(tmp) / "shipped")
        assert list(shipped) == SCANNED
        targets |= {f"shipped:{target}": directory for target, directory in shipped.items()}
        for name, objects in PLANTED.items():
            targets[f"planted:{name}"] = Path(tmp) / f"planted-{name}"
            write_objects(targets[f"planted:{name}"], objects)
        yield targets


@pytest.fixture(scope="module")
def checkov_results(checkov_targets: dict[str, Path]) -> dict[str, Any]:
    """checkov run ONCE (scripts/scan.py's `checkov`) over every directory of `checkov_targets`; its counts and
    failed checks by stack id and target."""
    result: dict[str, Any] = scan.checkov(CHECKOV, checkov_targets)
    matrix_passed = sum(result[stack_id(s)]["passed"] for s in STACKS)
    assert matrix_passed > 100 * len(STACKS), "checkov checked (almost) nothing"
    return result


def test_checkov_reads_the_files_as_its_own_loader_does(checkov_targets: dict[str, Path]) -> None:
    """scripts/checkov_each.py gives checkov's Kubernetes YAML loader libyaml's parser: it reads the files as
    checkov's own loader does, each mapping's lines included. The files: the matrix stack with the most objects, as
    write_objects writes them (its CRDs left out: 2 MB, 1.5 s of CPU on checkov's parser), and the shipped dev stack,
    the operator's CRDs among them, as tools/render writes them."""
    largest = max((d for t, d in checkov_targets.items() if ":" not in t), key=lambda d: len(list(d.iterdir())))
    files = [f for f in largest.glob("*.yaml") if "customresourcedefinition" not in f.name]
    files = sorted(str(f) for f in [*files, *checkov_targets["shipped:dev"].rglob("*.yaml")])
    interpreter = CHECKOV.parent / "python"
    proc = subprocess.run(
        [interpreter, scan.EACH_DIRECTORY, "--same-reading", *files], capture_output=True, text=True, timeout=120
    )
    assert (proc.returncode, proc.stdout.strip()) == (0, f"{len(files)} files read alike"), proc.stderr


def failed(found: dict[str, Any]) -> list[str]:
    return [f"{c['check_id']} {c['check_name']}: {c['resource']}" for c in found["failed_checks"]]


@pytest.mark.parametrize("features", [pytest.param(s, id=stack_id(s)) for s in STACKS])
def test_checkov_finds_nothing(checkov_results: dict[str, Any], features: frozenset[str]) -> None:
    found = failed(checkov_results[stack_id(features)])
    if "networkPolicy" not in features:
        # security.networkPolicy false is the user's explicit choice: its pods have no NetworkPolicy (checkov's
        # graph check sees each stack's directory alone, as scripts/scan.py runs it).
        found = [f for f in found if not f.startswith("CKV2_K8S_6 ")]
    assert found == []


@pytest.mark.parametrize("target", SCANNED)
def test_make_scan_finds_nothing(checkov_results: dict[str, Any], target: str) -> None:
    """scripts/scan.py's rule for what it scans (any failed check fails it), in this file's checkov run. The platform
    stack renders nothing checkov scans (the operator's Deployment comes from its Helm chart); the rest are checked."""
    found = checkov_results[f"shipped:{target}"]
    assert failed(found) == []
    assert found["passed"] > 0 or target == "platform", f"checkov checked nothing of {target}"


def test_checkov_sees_each_directory_alone(checkov_results: dict[str, Any]) -> None:
    """The pod a NetworkPolicy selects passes CKV2_K8S_6; the same pod in the next directory, without it, fails."""
    selected, alone = checkov_results["planted:selected"], checkov_results["planted:alone"]
    assert not [c for c in failed(selected) if c.startswith("CKV2_K8S_6 ")]
    assert selected["passed"] == alone["passed"] + 1  # CKV2_K8S_6 passed there: the same checks otherwise
    assert [c for c in failed(alone) if c.startswith("CKV2_K8S_6 ")] == [
        "CKV2_K8S_6 Minimize the admission of pods which lack an associated NetworkPolicy: Pod.planted.planted"
    ]
