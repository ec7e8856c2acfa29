"""The config sections' own rules, word for word, on each section validated alone: the field types and secrets of
components/section.py, cluster_config.py, catalog_config.py and notebook_config.py. Fast enough for mutation testing
(docs/mutation.md); tests/test_config.py checks the same rules in whole stack configs."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError

from components.catalog_config import MAX_NAME, CatalogConfig, catalog_path, job_node_selector, provisioning_problems
from components.cluster_config import (
    MAX_CLUSTER_NAME,
    ClusterConfig,
    PlacementConfig,
    WorkerGroupConfig,
    label_problems,
)
from components.config import ImageConfig, SecurityConfig
from components.config_report import report
from components.notebook_config import NotebookConfig, NotebookStorageConfig, notebook_problems
from components.section import (
    SECRET,
    Section,
    aliases,
    comma_list,
    empty_section,
    json_object,
    masked_object,
    problem,
    quantity_bytes,
    raise_problems,
)
from components.storage_config import StorageConfig

LABEL_FIX = "use lowercase letters, digits and '-', starting and ending with a letter or digit"
QUANTITY_FIX = 'use e.g. "2", "500m" (CPU) or "4Gi" (memory)'
DIGEST = "r/x@sha256:" + "0" * 64


def problems(model: type[BaseModel], raw: Any, **context: Any) -> list[str]:
    """The report lines of `raw` validated as `model` (keys relative to it)."""
    with pytest.raises(ValidationError) as err:
        model.model_validate(raw, context=context or None)
    return report(err.value, model)


def storage(raw: dict[str, Any]) -> Any:
    return TypeAdapter(StorageConfig).validate_python(raw)


# components/section.py


def test_a_problem_is_located_by_its_dotted_key_and_carries_its_fix() -> None:
    found = problem("a.b", 1, "is wrong", "fix it")
    assert found["loc"] == ("a", "b") and found["input"] == 1
    assert found["type"].message() == "is wrong" and found["type"].context == {"fix": "fix it"}
    assert problem(("a.b", 0), None, "w", "f")["loc"] == ("a.b", 0)


def test_problems_are_raised_together_and_none_is_no_error() -> None:
    raise_problems("m", [])
    with pytest.raises(ValidationError) as err:
        raise_problems("m", [problem("a", 1, "w", "f"), problem("b", 2, "v", "g")])
    assert [e["loc"] for e in err.value.errors()] == [("a",), ("b",)]


def test_json_objects_as_pulumi_stores_them() -> None:
    assert json_object('{"a": 1}') == {"a": 1} and json_object("[1]") == [1]
    assert json_object("{not json") == "{not json" and json_object("a{") == "a{" and json_object("") == ""
    assert json_object({"a": 1}) == {"a": 1}
    assert SecurityConfig.model_validate('{"tls": false}').tls is False
    assert problems(SecurityConfig, "tls") == [
        " = 'tls': must be an object. Fix: set its fields with `pulumi config set --path .<field>`"
    ]


def test_comma_lists_and_the_sections_helpers() -> None:
    assert comma_list("a, b,,c ,") == ["a", "b", "c"] and comma_list(["a b"]) == ["a b"]
    assert empty_section() == {} and aliases(SecurityConfig)[:2] == ["networkPolicy", "clientNamespaces"]
    assert masked_object('{"k": 1}') == {"k": 1} and masked_object("hunter2") == SECRET == "[secret]"

    class Plain(Section):
        some_key: int = 1

    assert Plain.prepare({"x": 1}) == {"x": 1} and Plain().problems() == []
    assert Plain.model_validate({"someKey": 2}).some_key == 2 == Plain.model_validate({"some_key": 2}).some_key


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [
        ("1", 1), ("1k", 1000), ("2M", 2 * 10**6), ("1G", 10**9), ("1T", 10**12), ("1P", 10**15), ("1E", 10**18),
        ("1Ki", 1024), ("1Ti", 2**40), ("1Pi", 2**50), ("1Ei", 2**60), ("2e3", 2000), ("2E3", 2000), (".5M", 500000),
        ("1500m", 1), ("2000m", 2), ("999m", 0), ("3.", 3),
    ],
)  # fmt: skip
def test_quantity_bytes_of_every_suffix(quantity: str, expected: int) -> None:
    assert quantity_bytes(quantity) == expected


def test_quantity_bytes_refuses_what_is_no_quantity() -> None:
    with pytest.raises(ValueError, match=r"^'4 GB' is not a Kubernetes quantity$"):
        quantity_bytes("4 GB")


def test_quantities_are_positive_and_numbers_become_their_text() -> None:
    cluster = ClusterConfig.model_validate({"workers": {"cpu": 2, "cpuLimit": 0.5}, "scheduler": {"memory": 2.0}})
    assert (cluster.workers.cpu, cluster.workers.cpu_limit, cluster.scheduler.memory) == ("2", "0.5", "2")
    assert ClusterConfig.model_validate({"workers": {"cpu": "500m", "cpuLimit": ".5"}}).workers.cpu == "500m"
    assert problems(ClusterConfig, {"workers": {"cpu": 0, "cpuLimit": "-1"}, "scheduler": {"cpu": "two"}}) == [
        f"workers.cpu = 0: is not a positive Kubernetes quantity. Fix: {QUANTITY_FIX}",
        f"workers.cpuLimit = '-1': is not a positive Kubernetes quantity. Fix: {QUANTITY_FIX}",
        f"scheduler.cpu = 'two': is not a positive Kubernetes quantity. Fix: {QUANTITY_FIX}",
    ]
    assert problems(ClusterConfig, {"workers": {"cpuLimit": True}}) == [
        "workers.cpuLimit = true: Input should be a valid string. Fix: give a non-empty string"
    ]


def test_dns_labels_and_object_names_state_their_length() -> None:
    assert SecurityConfig.model_validate({"clientNamespaces": ["a" * 63, "a-1"]}).client_namespaces[1] == "a-1"
    assert problems(SecurityConfig, {"clientNamespaces": ["a" * 64, "B", "-a", "a-"]}) == [
        f"clientNamespaces.{i} = {v!r}: is not a lowercase RFC 1123 label of at most 63 characters. Fix: {LABEL_FIX}"
        for i, v in enumerate(["a" * 64, "B", "-a", "a-"])
    ]
    assert storage({"kind": "pvc", "claimName": "c" * 253}).claim_name == "c" * 253
    assert TypeAdapter(StorageConfig).validate_python({"kind": "existingClaim", "claimName": "c"}).claim_name == "c"
    with pytest.raises(ValidationError) as err:
        storage({"kind": "pvc", "claimName": "c" * 254})
    assert err.value.errors()[0]["msg"] == "is not a lowercase RFC 1123 label of at most 253 characters"


def test_paths_are_absolute_below_the_root() -> None:
    assert storage({"kind": "pvc", "mountPath": "/d"}).mount_path == "/d"
    for path in ("data", "/", ""):
        with pytest.raises(ValidationError) as err:
            storage({"kind": "pvc", "mountPath": path})
        (error,) = err.value.errors()
        assert (error["msg"], error["ctx"]) == ("must be an absolute path below /", {"fix": "use e.g. /data"})


def test_address_blocks_and_ports() -> None:
    security = SecurityConfig.model_validate({"egressCidrs": "10.1.2.3/8, ::1/0", "egressPorts": "1,65535"})
    assert security.egress_cidrs == ["10.0.0.0/8", "::/0"] and security.egress_ports == [1, 65535]
    assert problems(SecurityConfig, {"egressCidrs": ["nope"], "egressPorts": [0, 65536]}) == [
        "egressCidrs.0 = 'nope': is not an IP address block. Fix: use CIDR notation, e.g. 0.0.0.0/0 or 10.0.0.0/8",
        "egressPorts.0 = 0: is not a TCP port. Fix: use a port between 1 and 65535",
        "egressPorts.1 = 65536: is not a TCP port. Fix: use a port between 1 and 65535",
    ]


def test_secrets_are_pulumi_secrets_under_their_own_top_level_key() -> None:
    registry = {"registry": {"server": "s", "username": "u", "password": "hunter2"}}
    assert ImageConfig.model_validate(registry, context={"secret_keys": {"image"}}).registry.password == SECRET
    secure = {"registry": {"server": "s", "username": "u", "password": {"secure": "v1:x"}}}
    assert ImageConfig.model_validate(secure).registry.password == SECRET
    fix = "re-set it as a secret: pulumi config set --path --secret"
    assert problems(ImageConfig, registry, secret_keys={"storage"}) == [
        f"registry.password = '[plaintext]': is stored in plaintext in the stack file. Fix: {fix} "
        "image.registry.password <value>"
    ]
    assert problems(ImageConfig, registry) == problems(ImageConfig, registry, secret_keys=set())
    for plaintext in ("my-secure-password", {"value": "x"}):  # only a `{secure: ...}` object is a secret
        registry["registry"]["password"] = plaintext
        assert problems(ImageConfig, registry)[0].startswith("registry.password = '[plaintext]': is stored in plain")
    store = {"kind": "objectStore", "objectStore": {"url": "s3://b", "credentials": {"region": "eu"}}}
    with pytest.raises(ValidationError) as err:
        TypeAdapter(StorageConfig).validate_python(store, context={"secret_keys": {"image"}})
    assert err.value.errors()[0]["ctx"] == {"fix": f"{fix} storage.objectStore.credentials.<key> <value>"}
    assert problems(CatalogConfig, {"source": "s3://b", "credentials": {"region": "eu"}}) == [
        f"credentials.region = '[plaintext]': is stored in plaintext in the stack file. Fix: {fix} "
        "catalogs.<name>.credentials.<key> <value>"
    ]
    given = {"source": "s3://b", "credentials": {"region": "eu"}}
    assert CatalogConfig.model_validate(given, context={"secret_keys": ("catalogs",)}).credentials == {"region": SECRET}


# components/cluster_config.py


def test_cluster_names_name_the_rule_and_the_longest_derived_name() -> None:
    fix = (
        f"use at most {MAX_CLUSTER_NAME} lowercase letters, digits and '-', starting with a letter and ending with a "
        "letter or digit"
    )
    assert ClusterConfig.model_validate({"name": "a" * MAX_CLUSTER_NAME}).name == "a" * MAX_CLUSTER_NAME
    longest = "a" * (MAX_CLUSTER_NAME + 1) + "-ffffffff-default-worker-ffffffffff"
    assert problems(ClusterConfig, {"name": "a" * (MAX_CLUSTER_NAME + 1)}) == [
        f"name = '{'a' * (MAX_CLUSTER_NAME + 1)}': is {MAX_CLUSTER_NAME + 1} characters, more than the maximum of "
        f"{MAX_CLUSTER_NAME}: the worker Deployment '{longest}' would be {len(longest)} characters, over the "
        f"Kubernetes limit of 63. Fix: {fix}"
    ]
    what = "is not a DNS-1035 label (lowercase letters, digits and '-', starting with a letter): Services need one"
    assert problems(ClusterConfig, {"name": "1abc"}) == [f"name = '1abc': {what}. Fix: {fix}"]


def test_size_presets_fill_what_is_left_out() -> None:
    cluster = ClusterConfig.model_validate({"size": "large", "workers": '{"cpu": "3"}', "autoscaler": {"maximum": 20}})
    assert (cluster.workers.replicas, cluster.workers.cpu, cluster.workers.memory) == (6, "3", "8Gi")
    assert (cluster.autoscaler.minimum, cluster.autoscaler.maximum) == (6, 20)
    small = ClusterConfig.model_validate({})
    assert (small.workers.replicas, small.workers.memory, small.autoscaler.minimum, small.autoscaler.maximum) == (
        2, "4Gi", 2, 4,
    )  # fmt: skip
    assert ClusterConfig.prepare({"size": "huge", "workers": "x"}) == {
        "size": "huge", "workers": "x", "autoscaler": {"minimum": 2, "maximum": 4},
    }  # fmt: skip
    assert problems(ClusterConfig, {"workers": "x"}) == [
        "workers = 'x': must be an object. Fix: set its fields with `pulumi config set --path workers.<field>`"
    ]


def test_worker_memory_is_at_least_one_gibibyte() -> None:
    assert ClusterConfig.model_validate({"workers": {"memory": "1Gi"}}).workers.memory_bytes == 2**30
    assert problems(ClusterConfig, {"workers": {"memory": "1023Mi"}}) == [
        "workers.memory = '1023Mi': is below 1Gi, too little for an LSDB partition. Fix: use at least 1Gi; the guide "
        "recommends 4Gi"
    ]


def test_worker_group_names() -> None:
    fix = "name the group with lowercase letters, digits and '-', e.g. highmem"
    name = "x" * 64
    assert problems(ClusterConfig, {"name": "c", "workerGroups": {"default": {}, "Bad": {}, name: {}}}) == [
        "workerGroups.default = 'default': is the operator's own default worker group. Fix: configure the default "
        "group under cluster.workers, or pick another name",
        f"workerGroups.Bad = 'Bad': is not a lowercase RFC 1123 label. Fix: {fix}",
        f"workerGroups.{name} = '{name}': is not a lowercase RFC 1123 label. Fix: {fix}",
    ]
    assert list(ClusterConfig.model_validate({"name": "c", "workerGroups": {"x" * 30: {}}}).worker_groups) == ["x" * 30]
    # A 63-character name is a label: what refuses it is the length of its worker Deployments' names.
    assert (
        "makes the operator's worker Deployment names" in problems(ClusterConfig, {"workerGroups": {"x" * 63: {}}})[0]
    )


def test_a_group_name_must_leave_its_worker_deployments_a_label() -> None:
    name = "a" * MAX_CLUSTER_NAME
    longest = f"{name}-ffffffff-abcdefghijklmnopqrst-worker-ffffffffff"
    assert problems(ClusterConfig, {"name": name, "workerGroups": {"abcdefghijklmnopqrst": {}, "abcdefg": {}}}) == [
        f"workerGroups.abcdefghijklmnopqrst = '{{...}}': makes the operator's worker Deployment names "
        f"({len(longest)} characters, e.g. '{longest}') longer than 63. Fix: shorten the group name to at most 7 "
        "characters, or cluster.name"
    ]


def test_the_autoscaler_range() -> None:
    fix = "lower minimum or raise maximum"
    assert problems(ClusterConfig, {"autoscaler": {"minimum": 5, "maximum": 4}}) == [
        f"autoscaler.minimum = 5: is greater than cluster.autoscaler.maximum (4). Fix: {fix}"
    ]
    assert ClusterConfig.model_validate({"autoscaler": {"minimum": 4, "maximum": 4}}).autoscaler.minimum == 4
    assert ClusterConfig.model_validate({"autoscaler": {"enabled": False, "minimum": 5, "maximum": 4}})


def test_worker_counts_and_spot_providers() -> None:
    groups = {"a": {"replicas": 2, "spot": "gcp"}, "b": {"replicas": 1, "spot": "aws"}, "c": {"spot": "gcp"}}
    cluster = ClusterConfig.model_validate({"workers": {"replicas": 3, "spot": "gcp"}, "workerGroups": groups})
    assert (cluster.min_workers, cluster.max_workers) == (2 + 4, 4 + 4)
    assert cluster.spot_providers == ["aws", "gcp"]
    fixed = ClusterConfig.model_validate({"workers": {"replicas": 3}, "autoscaler": {"enabled": False}})
    assert (fixed.min_workers, fixed.max_workers, fixed.spot_providers) == (3, 3, [])


LABEL_KEY = "is not a valid Kubernetes label key"


@pytest.mark.parametrize(
    ("key", "value", "what"),
    [
        ("a/b/c", "v", LABEL_KEY),
        ("x" * 64, "v", LABEL_KEY),
        ("p/", "v", LABEL_KEY),
        ("-a", "v", LABEL_KEY),
        ("p" * 254 + "/n", "v", LABEL_KEY),
        ("Up.Per/x", "v", LABEL_KEY),
        ("a.-b/x", "v", LABEL_KEY),
        ("ok", "bad value!", "is not a valid Kubernetes label value (≤ 63 characters: letters, digits, -_.)"),
        ("ok", "v" * 64, "is not a valid Kubernetes label value (≤ 63 characters: letters, digits, -_.)"),
        ("ok", "-v", "is not a valid Kubernetes label value (≤ 63 characters: letters, digits, -_.)"),
    ],
)
def test_label_problems(key: str, value: str, what: str) -> None:
    (found,) = label_problems("labels", {key: value}, "the fix")
    assert (found["loc"], found["input"], found["type"].message(), found["type"].context) == (
        ("labels", key), value, what, {"fix": "the fix"},
    )  # fmt: skip


def test_valid_labels() -> None:
    labels = {"a": "", "x" * 63: "v" * 63, "p" * 253 + "/n": "A.b_c-1", "example.com/a_b.c": "v", "k.io/x": "1"}
    assert list(label_problems("labels", labels, "fix")) == []


def test_a_node_selector_is_made_of_node_labels() -> None:
    assert problems(PlacementConfig, {"nodeSelector": {"ok": "bad value!"}}) == [
        "nodeSelector.ok = 'bad value!': is not a valid Kubernetes label value (≤ 63 characters: letters, digits, "
        "-_.). Fix: use a node label as `kubectl get nodes --show-labels` shows it"
    ]


def test_a_placement_the_pod_schema_refuses_names_the_field_and_the_reference() -> None:
    assert problems(PlacementConfig, {"tolerations": [{"keyy": "x"}]}) == [
        'tolerations.0 = {"keyy": "x"}: is not valid in a Kubernetes PodSpec (Additional properties are not allowed '
        "('keyy' was unexpected)). Fix: see "
        "https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/pod-v1/#scheduling"
    ]


def test_a_placement_the_crds_prune_names_each_field_and_the_crd() -> None:
    spread = [{"maxSkew": 1, "topologyKey": "k", "whenUnsatisfiable": "ScheduleAnyway", "minDomains": 2}]
    placement = PlacementConfig.model_validate({"topologySpreadConstraints": spread})
    (found,) = placement.crd_problems("DaskWorkerGroup", "worker")
    assert (found["loc"], found["input"], found["type"].message(), found["type"].context) == (
        ("placement", "topologySpreadConstraints", 0, "minDomains"), 2,
        "is not kept by the pinned DaskWorkerGroup CRD (the API server drops it)",
        {"fix": "remove it (`kubectl explain daskworkergroup.spec.worker.spec.topologySpreadConstraints` lists the "
         "fields the CRD keeps)"},
    )  # fmt: skip
    assert list(PlacementConfig.model_validate({}).crd_problems("DaskCluster", "worker")) == []
    group = problems(WorkerGroupConfig, {"placement": {"topologySpreadConstraints": spread}})
    assert [p.split(" = ")[0] for p in group] == ["placement.topologySpreadConstraints.0.minDomains"]
    assert [
        p.split(":")[1]
        for p in problems(ClusterConfig, {"workers": {"placement": {"topologySpreadConstraints": spread}},
                                          "scheduler": {"placement": {"topologySpreadConstraints": spread}}})
    ] == [" is not kept by the pinned DaskCluster CRD (the API server drops it). Fix"] * 2  # fmt: skip


# components/catalog_config.py


def details(found: Any) -> tuple[Any, ...]:
    """A problem's location, value, what and fix."""
    return found["loc"], found["input"], found["type"].message(), found["type"].context["fix"]


def catalog(raw: dict[str, Any]) -> CatalogConfig:
    return CatalogConfig.model_validate(raw, context={"secret_keys": {"catalogs"}})


def test_a_source_s_scheme_credentials_and_storage_options() -> None:
    s3 = catalog({"source": "S3A://bucket/c", "credentials": {"accessKeyId": "k", "region": "r"}})
    assert (s3.scheme, s3.credential_env, s3.storage_options) == (
        "s3", {"accessKeyId": "AWS_ACCESS_KEY_ID", "region": "AWS_DEFAULT_REGION"}, {"anon": False},
    )  # fmt: skip
    assert catalog({"source": "az://c/x", "anonymous": True}).storage_options == {"anon": True}
    assert catalog({"source": "gcs://b/c"}).storage_options == {"token": "google_default"}
    assert catalog({"source": "gs://b/c", "anonymous": True}).storage_options == {"token": "anon"}
    assert catalog({"source": "http://host/c"}).storage_options == {}
    assert (catalog({"source": "https://h/c"}).scheme, catalog({"source": "https://h/c"}).credential_env) == (
        "https",
        {},
    )


def test_a_source_is_refused_word_for_word() -> None:
    known = "abfs://, abfss://, az://, gcs://, gs://, http://, https://, s3://, s3a://"
    assert problems(CatalogConfig, {"source": "ftp://x", "credentials": {"k": {"secure": "v"}}}) == [
        f"source = 'ftp://x': has no URL scheme the copy can read. Fix: use a URL starting with one of: {known}"
    ]
    assert problems(CatalogConfig, {"source": "/local/path"})[0].startswith("source = '/local/path': has no URL")
    creds = {"k": {"secure": "v"}, "accessKeyId": {"secure": "v"}}
    assert problems(CatalogConfig, {"source": "s3://b", "anonymous": True, "credentials": creds}) == [
        "credentials.k = '[secret]': is not a credential for s3:// sources. Fix: use: accessKeyId, secretAccessKey, "
        "sessionToken, region, endpointUrl",
        "anonymous = true: is set together with credentials. Fix: remove anonymous for a private source, or the "
        "credentials for a public one",
    ]
    assert problems(CatalogConfig, {"source": "https://h", "credentials": {"k": {"secure": "v"}}}) == [
        "credentials.k = '[secret]': is not a credential for https:// sources. Fix: use: none (public https needs no "
        "credentials)"
    ]
    assert problems(CatalogConfig, {"source": "s3://b", "credentials": "abc"}) == [
        "credentials = '[secret]': must be an object. Fix: set its fields with `pulumi config set --path "
        "credentials.<field>`"
    ]


def test_where_a_catalog_lands() -> None:
    assert catalog_path(storage({"kind": "pvc", "mountPath": "/data/"}), "gaia") == "/data/catalogs/gaia"
    assert catalog_path(storage({"kind": "pvc"}), "gaia") == "/data/catalogs/gaia"
    assert catalog_path(storage({"kind": "pvc", "mountPath": "/mnt/X"}), "gaia") == "/mnt/X/catalogs/gaia"


def test_provisioning_is_refused_where_it_cannot_work_word_for_word() -> None:
    long_name = "x" * (MAX_NAME + 1)
    catalogs = {"a": catalog({"source": "s3://b"}), long_name: catalog({"source": "s3://b"})}
    too_long = (
        ("catalogs", long_name), long_name,
        f"is {MAX_NAME + 1} characters; the Job `<name>-provision-<hash>` must stay a 63-character label",
        f"use at most {MAX_NAME} characters",
    )  # fmt: skip
    store = storage({"kind": "objectStore", "objectStore": {"url": "s3://b"}})
    assert [details(p) for p in provisioning_problems(catalogs, store, {})] == [
        (
            ("catalogs",), ["a", long_name],
            "are copied onto a claim, but storage.kind objectStore has none (it reads catalogs in place)",
            "remove catalogs and point verify.catalogPath at the catalog's URL in the object store",
        ),
        too_long,
    ]  # fmt: skip
    assert [details(p) for p in provisioning_problems(catalogs, storage({}), {})] == [
        (
            ("catalogs",), ["a", long_name], "are copied onto a claim, but storage.kind none has none",
            "set storage.kind pvc (or nfs, existingClaim)",
        ),
        too_long,
    ]  # fmt: skip
    read_only = storage({"kind": "existingClaim", "accessMode": "ReadOnlyMany"})
    assert [details(p) for p in provisioning_problems({"a": catalogs["a"]}, read_only, {})] == [
        (
            ("storage", "accessMode"), "ReadOnlyMany", "lets the provisioning Job not write the claim",
            "use ReadWriteMany (the workers mount it read-only anyway)",
        )
    ]  # fmt: skip
    host = storage({"kind": "hostPath", "hostPath": {"path": "/x"}})
    assert [details(p) for p in provisioning_problems({"a": catalogs["a"]}, host, {"other": "n"})] == [
        (
            ("storage", "kind"), "hostPath",
            "makes the provisioning Job copy onto the node it lands on, which need not be the workers'",
            "pin the workers to one node (cluster.workers.placement.nodeSelector.kubernetes.io/hostname: <node>, the "
            "same in every cluster.workerGroups entry; the Job follows it), or use storage.kind pvc or nfs",
        )
    ]  # fmt: skip


def test_provisioning_is_accepted_where_it_works() -> None:
    one = {"x" * MAX_NAME: catalog({"source": "s3://b"})}
    assert list(provisioning_problems({}, storage({}), {})) == []
    assert list(provisioning_problems(one, storage({"kind": "pvc"}), {})) == []
    assert list(provisioning_problems(one, storage({"kind": "existingClaim", "accessMode": "ReadWriteOnce"}), {})) == []
    host = storage({"kind": "hostPath", "hostPath": {"path": "/x"}})
    assert list(provisioning_problems(one, host, {"kubernetes.io/hostname": "n"})) == []


def test_the_job_follows_the_workers_one_node() -> None:
    def pinned(*nodes: str | None) -> dict[str, Any]:
        selector = [{"kubernetes.io/hostname": n} if n else {} for n in nodes]
        groups = {f"g{i}": {"placement": {"nodeSelector": s}} for i, s in enumerate(selector[1:])}
        return {"workers": {"placement": {"nodeSelector": selector[0]}}, "workerGroups": groups}

    assert job_node_selector(ClusterConfig.model_validate(pinned("n1", "n1"))) == {"kubernetes.io/hostname": "n1"}
    assert job_node_selector(ClusterConfig.model_validate(pinned("n1"))) == {"kubernetes.io/hostname": "n1"}
    assert job_node_selector(ClusterConfig.model_validate(pinned("n1", "n2"))) == {}
    assert job_node_selector(ClusterConfig.model_validate(pinned("n1", None))) == {}
    assert job_node_selector(ClusterConfig.model_validate(pinned(None))) == {}


# components/notebook_config.py


def test_the_home_claim_is_created_or_given_not_both() -> None:
    assert not NotebookStorageConfig.model_validate({}).enabled
    assert NotebookStorageConfig.model_validate({"size": "1Gi", "storageClassName": "s"}).enabled
    assert NotebookStorageConfig.model_validate({"existingClaim": "home"}).enabled
    assert problems(NotebookStorageConfig, {"size": "1Gi", "existingClaim": "c", "storageClassName": "s"}) == [
        "existingClaim = 'c': is set together with notebook.storage.size. Fix: give size (a new claim) or "
        "existingClaim (yours), not both"
    ]
    assert problems(NotebookStorageConfig, {"existingClaim": "c", "storageClassName": "s"}) == [
        "storageClassName = 's': applies only to a claim created here. Fix: set notebook.storage.size too, or remove "
        "storageClassName"
    ]


def test_the_notebook_against_the_image_and_the_storage() -> None:
    on = NotebookConfig.model_validate({"enabled": True})
    prebuilt = ImageConfig.model_validate({"ref": DIGEST})
    single = storage({"kind": "pvc", "accessMode": "ReadWriteOncePod"})
    assert [details(p) for p in notebook_problems(on, {"image": prebuilt, "storage": single})] == [
        (
            ("imageRef",), None,
            "is required when image.ref is prebuilt (nothing is built, so no notebook image either)",
            "build `docker build --target notebook docker/`, push it, and set notebook.imageRef to its digest",
        ),
        (
            ("enabled",), True,
            "mounts the catalog claim in one more pod, which may run on another node, but storage.accessMode is "
            "ReadWriteOncePod",
            "use ReadWriteMany or ReadOnlyMany, or notebook.enabled false",
        ),
    ]  # fmt: skip
    assert list(notebook_problems(NotebookConfig.model_validate({}), {"image": prebuilt, "storage": single})) == []
    with_ref = NotebookConfig.model_validate({"enabled": True, "imageRef": DIGEST})
    assert list(notebook_problems(with_ref, {"image": prebuilt, "storage": storage({"kind": "pvc"})})) == []
    assert list(notebook_problems(on, {"image": ImageConfig.model_validate({"repository": "r/x"})})) == []
    assert list(notebook_problems(on, {"storage": storage({"kind": "none", "accessMode": "ReadWriteOnce"})})) == []
    assert list(notebook_problems(on, {})) == []
