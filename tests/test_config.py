"""Config validation, table-driven: every rejection names the key, the bad value and a fix, all at once."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from components.cluster_config import MAX_CLUSTER_NAME
from components.config import ConfigError, parse_stack_config
from components.section import quantity_bytes
from tools.mock_runtime import ProgramRun, run_program

VALID: dict[str, Any] = {
    "namespace": "lsdb-test",
    "storage": {"kind": "pvc", "size": "10Gi"},
    "cluster": {"name": "lsdb-cluster", "size": "small"},
    "image": {"repository": "ghcr.io/acme/lsdb-dask"},
    "verify": {"catalogPath": "/data/catalogs/sample"},
}


def with_changes(**changes: Any) -> dict[str, Any]:
    """VALID with dotted keys replaced (value None deletes the key)."""
    raw = copy.deepcopy(VALID)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = raw
        for p in parents:
            node = node.setdefault(p, {})
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return raw


def problems_for(raw: dict[str, Any], secret_keys: frozenset[str] = frozenset()) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse_stack_config(raw, secret_keys)
    return err.value.problems


def test_valid_config_parses_with_preset_defaults() -> None:
    cfg = parse_stack_config(VALID)
    assert cfg.cluster.workers.replicas == 2 and cfg.cluster.workers.memory == "4Gi"
    assert cfg.cluster.scheduler.memory == "6Gi"  # the guide's scheduler
    assert cfg.storage.access_mode == "ReadWriteMany"
    assert cfg.operator.namespace == "dask-operator" and cfg.operator.install


@pytest.mark.parametrize(
    ("size", "replicas", "cpu", "memory", "maximum"),
    [
        ("small", 2, "2", "4Gi", 4),
        ("medium", 4, "2", "4Gi", 8),
        ("large", 6, "2", "8Gi", 12),
        ("xlarge", 12, "4", "16Gi", 24),
    ],
)
def test_size_presets_follow_the_guide_table(size: str, replicas: int, cpu: str, memory: str, maximum: int) -> None:
    cfg = parse_stack_config(with_changes(cluster__size=size))
    assert (cfg.cluster.workers.replicas, cfg.cluster.workers.cpu, cfg.cluster.workers.memory) == (
        replicas,
        cpu,
        memory,
    )
    assert cfg.cluster.autoscaler.maximum == maximum


def test_explicit_values_override_the_preset() -> None:
    cfg = parse_stack_config(with_changes(cluster__size="large", cluster__workers={"memory": "12Gi", "replicas": 3}))
    assert cfg.cluster.workers.memory == "12Gi" and cfg.cluster.workers.replicas == 3
    assert cfg.cluster.workers.cpu == "2"  # still from the preset


def test_numbers_given_as_strings_or_floats_are_accepted() -> None:
    # `pulumi config set --path` may store "4"; Pulumi hands numbers back as floats.
    cfg = parse_stack_config(with_changes(cluster__workers={"replicas": "3", "threads": 1.0}))
    assert cfg.cluster.workers.replicas == 3 and cfg.cluster.workers.threads == 1


REJECTIONS = [
    ("cluster name with uppercase", with_changes(cluster__name="LSDB"), "cluster.name"),
    ("cluster name too long for its derived names", with_changes(cluster__name="a" * 29), "cluster.name"),
    ("cluster name starting with a digit", with_changes(cluster__name="1lsdb"), "cluster.name"),
    ("cluster name with underscore", with_changes(cluster__name="lsdb_cluster"), "cluster.name"),
    ("negative replicas", with_changes(cluster__workers={"replicas": -1}), "cluster.workers.replicas"),
    (
        "autoscaler minimum above maximum",
        with_changes(cluster__autoscaler={"minimum": 5, "maximum": 3}),
        "cluster.autoscaler.minimum",
    ),
    (
        "autoscaler maximum zero",
        with_changes(cluster__autoscaler={"minimum": 0, "maximum": 0}),
        "cluster.autoscaler.maximum",
    ),
    ("namespace not a DNS label", with_changes(namespace="LSDB.Prod"), "namespace"),
    ("worker cpu not a quantity", with_changes(cluster__workers={"cpu": "two"}), "cluster.workers.cpu"),
    ("worker memory not a quantity", with_changes(cluster__workers={"memory": "4 GB"}), "cluster.workers.memory"),
    (
        "scheduler memory not a quantity",
        with_changes(cluster__scheduler={"memory": "-1Gi"}),
        "cluster.scheduler.memory",
    ),
    ("cpu limit not a quantity", with_changes(cluster__workers={"cpuLimit": "lots"}), "cluster.workers.cpuLimit"),
    ("threads below one", with_changes(cluster__workers={"threads": 0}), "cluster.workers.threads"),
    (
        "ReadWriteOnce with several workers",
        with_changes(storage={"kind": "pvc", "accessMode": "ReadWriteOnce"}),
        "storage.accessMode",
    ),
    (
        "ReadWriteOnce with autoscaler able to add workers",
        with_changes(
            storage={"kind": "pvc", "accessMode": "ReadWriteOnce"},
            cluster__workers={"replicas": 1},
            cluster__autoscaler={"minimum": 1, "maximum": 3},
        ),
        "storage.accessMode",
    ),
    (
        "nfs without server",
        with_changes(storage={"kind": "nfs", "nfs": {"path": "/exports/hats"}}),
        "storage.nfs.server",
    ),
    ("nfs without path", with_changes(storage={"kind": "nfs", "nfs": {"server": "nfs.local"}}), "storage.nfs.path"),
    (
        "object store scheme without driver",
        with_changes(storage={"kind": "objectStore", "objectStore": {"url": "ftp://host/cat"}}),
        "storage.objectStore.url",
    ),
    ("unknown top-level key", with_changes(namspace="x"), "namspace"),
    ("unknown nested key (typo)", with_changes(cluster__workers={"replica": 3}), "cluster.workers.replica"),
    ("unknown storage kind", with_changes(storage={"kind": "s3"}), "storage.kind"),
    ("operator namespace invalid", with_changes(operator={"namespace": "Dask Operator"}), "operator.namespace"),
    ("operator chartSource unknown", with_changes(operator={"chartSource": "oci"}), "operator.chartSource"),
    ("operator in the cluster namespace", with_changes(operator={"namespace": "lsdb-test"}), "operator.namespace"),
    ("verify without catalog", with_changes(verify={"enabled": True}), "verify.catalogPath"),
    ("verify catalog outside mount", with_changes(verify={"catalogPath": "/home/me/cat"}), "verify.catalogPath"),
    (
        "verify minWorkers above max",
        with_changes(verify={"catalogPath": "/data/c", "minWorkers": 9}),
        "verify.minWorkers",
    ),
    ("verify connect unknown", with_changes(verify={"catalogPath": "/data/c", "connect": "ssh"}), "verify.connect"),
    (
        "verify dec out of range",
        with_changes(verify={"catalogPath": "/data/c", "cone": {"dec": 100}}),
        "verify.cone.dec",
    ),
    ("bool given as number", with_changes(cluster__autoscaler={"enabled": 3}), "cluster.autoscaler.enabled"),
    ("idle timeout negative", with_changes(cluster__idleTimeoutSeconds=-5), "cluster.idleTimeoutSeconds"),
    ("mountPath relative", with_changes(storage={"kind": "pvc", "mountPath": "data"}), "storage.mountPath"),
    ("hostPath without path", with_changes(storage={"kind": "hostPath"}), "storage.hostPath.path"),
    # placement, spot, worker groups, disruption budget, monitoring (issue 12)
    (
        "toleration with a misspelt field",
        with_changes(cluster__workers={"placement": {"tolerations": [{"key": "gpu", "efect": "NoSchedule"}]}}),
        "cluster.workers.placement.tolerations.0",
    ),
    (
        "toleration operator not a Kubernetes value type",
        with_changes(cluster__scheduler={"placement": {"tolerations": [{"key": "a", "operator": 3}]}}),
        "cluster.scheduler.placement.tolerations.0.operator",
    ),
    (
        "affinity with an unknown field",
        with_changes(cluster__scheduler={"placement": {"affinity": {"nodeAfinity": {}}}}),
        "cluster.scheduler.placement.affinity",
    ),
    (
        "node affinity term without nodeSelectorTerms",
        with_changes(
            cluster__workers={
                "placement": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}}}
            }
        ),
        "cluster.workers.placement.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution",
    ),
    (
        "topology spread without maxSkew",
        with_changes(
            cluster__workers={
                "placement": {
                    "topologySpreadConstraints": [{"topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"}]
                }
            }
        ),
        "cluster.workers.placement.topologySpreadConstraints.0",
    ),
    (
        "nodeSelector value not a string",
        with_changes(cluster__workers={"placement": {"nodeSelector": {"cloud.google.com/gke-spot": True}}}),
        "cluster.workers.placement.nodeSelector.cloud.google.com/gke-spot",
    ),
    (
        "nodeSelector key not a label",
        with_changes(cluster__workers={"placement": {"nodeSelector": {"pool type": "big"}}}),
        "cluster.workers.placement.nodeSelector.pool type",
    ),
    (
        "priorityClassName not a string",
        with_changes(cluster__scheduler={"placement": {"priorityClassName": ["high"]}}),
        "cluster.scheduler.placement.priorityClassName",
    ),
    (
        "placement unknown key",
        with_changes(cluster__workers={"placement": {"nodeSelecter": {}}}),
        "cluster.workers.placement.nodeSelecter",
    ),
    ("spot provider unknown", with_changes(cluster__workers={"spot": "ibm"}), "cluster.workers.spot"),
    (
        "disruptionBudget not a bool",
        with_changes(cluster__scheduler={"disruptionBudget": "maybe"}),
        "cluster.scheduler.disruptionBudget",
    ),
    (
        "worker group name uppercase",
        with_changes(cluster__workerGroups={"HighMem": {}}),
        "cluster.workerGroups.HighMem",
    ),
    ("worker group named default", with_changes(cluster__workerGroups={"default": {}}), "cluster.workerGroups.default"),
    (
        "worker group name too long with the cluster name",
        with_changes(cluster__workerGroups={"g" * 51: {}}),
        "cluster.workerGroups." + "g" * 51,
    ),
    (
        "worker group memory below 1Gi",
        with_changes(cluster__workerGroups={"small": {"memory": "512Mi"}}),
        "cluster.workerGroups.small.memory",
    ),
    (
        "worker group cpu not a quantity",
        with_changes(cluster__workerGroups={"hm": {"cpu": "many"}}),
        "cluster.workerGroups.hm.cpu",
    ),
    (
        "worker group negative replicas",
        with_changes(cluster__workerGroups={"hm": {"replicas": -2}}),
        "cluster.workerGroups.hm.replicas",
    ),
    (
        "worker group threads zero",
        with_changes(cluster__workerGroups={"hm": {"threads": 0}}),
        "cluster.workerGroups.hm.threads",
    ),
    (
        "worker group unknown key",
        with_changes(cluster__workerGroups={"hm": {"memoryLimit": "8Gi"}}),
        "cluster.workerGroups.hm.memoryLimit",
    ),
    (
        "worker group bad placement",
        with_changes(cluster__workerGroups={"hm": {"placement": {"tolerations": [{"effect": "Sometimes", "foo": 1}]}}}),
        "cluster.workerGroups.hm.placement.tolerations.0",
    ),
    (
        "worker groups make ReadWriteOnce storage unsafe",
        with_changes(
            storage={"kind": "pvc", "accessMode": "ReadWriteOnce"},
            cluster__workers={"replicas": 1},
            cluster__autoscaler={"enabled": False},
            cluster__workerGroups={"hm": {"replicas": 1}},
        ),
        "storage.accessMode",
    ),
    ("monitoring enabled not a bool", with_changes(monitoring={"enabled": "yes please"}), "monitoring.enabled"),
    (
        "monitoring label value too long",
        with_changes(monitoring={"labels": {"release": "x" * 64}}),
        "monitoring.labels.release",
    ),
    (
        "dashboard label key invalid",
        with_changes(monitoring={"dashboardLabels": {"grafana dashboard": "1"}}),
        "monitoring.dashboardLabels.grafana dashboard",
    ),
    (
        "dashboard namespace invalid",
        with_changes(monitoring={"dashboardNamespace": "Monitoring"}),
        "monitoring.dashboardNamespace",
    ),
]


@pytest.mark.parametrize(("case", "raw", "key"), REJECTIONS, ids=[c[0] for c in REJECTIONS])
def test_rejection_names_key_value_and_fix(case: str, raw: dict[str, Any], key: str) -> None:
    problems = problems_for(raw)
    matching = [p for p in problems if p.startswith(f"{key} = ")]
    assert matching, f"{case}: no problem names {key}: {problems}"
    assert "Fix: " in matching[0] and len(matching[0].split("Fix: ", 1)[1]) > 5


def test_object_store_credentials_must_be_secret_and_known() -> None:
    raw = with_changes(
        storage={
            "kind": "objectStore",
            "objectStore": {"url": "s3://bucket/cat", "credentials": {"accessKeyId": "AKIA", "password": "x"}},
        },
        verify={"catalogPath": "s3://bucket/cat"},
    )
    problems = problems_for(raw)
    assert any(p.startswith("storage.objectStore.credentials.password") for p in problems)
    assert any("plaintext" in p and "--secret" in p for p in problems)
    assert not any("AKIA" in p for p in problems), "a secret value leaked into an error message"
    cfg = parse_stack_config(
        with_changes(
            storage={"kind": "objectStore", "objectStore": {"url": "s3://b/c", "credentials": {"accessKeyId": "A"}}},
            verify={"catalogPath": "s3://b/c"},
        ),
        frozenset({"storage"}),
    )
    assert cfg.storage.credential_env == {"accessKeyId": "AWS_ACCESS_KEY_ID"}


def test_object_store_schemes_match_fsspec_drivers() -> None:
    # Our scheme table must agree with fsspec's own registry about which package serves each scheme.
    from fsspec.registry import known_implementations

    from components.storage_config import OBJECT_STORES, SCHEME_ALIASES

    for scheme in [*OBJECT_STORES, *SCHEME_ALIASES]:
        driver = OBJECT_STORES[SCHEME_ALIASES.get(scheme, scheme)][0]
        module = known_implementations[scheme]["class"].split(".")[0]
        assert module == driver or (module == "fsspec" and driver == "aiohttp"), scheme


def test_production_keys_parse() -> None:
    cfg = parse_stack_config(
        with_changes(
            cluster__workers={"spot": "gcp", "placement": {"nodeSelector": {"pool": "workers"}}},
            cluster__scheduler={"disruptionBudget": False, "placement": {"priorityClassName": "high"}},
            cluster__workerGroups={"highmem": {"memory": "32Gi", "replicas": 2, "spot": "aws"}},
            monitoring={"enabled": True, "labels": {"release": "kps"}},
        )
    )
    assert cfg.cluster.spot_providers == ["aws", "gcp"]
    assert cfg.cluster.max_workers == 4 + 2  # the autoscaler's maximum plus the fixed group
    assert cfg.cluster.worker_groups["highmem"].memory_bytes == 32 * 2**30
    assert cfg.cluster.worker_groups["highmem"].threads == 2 and cfg.cluster.worker_groups["highmem"].cpu == "2"
    assert not cfg.cluster.scheduler.disruption_budget and cfg.cluster.scheduler.placement.priority_class_name == "high"
    assert cfg.monitoring.dashboard_labels == {"grafana_dashboard": "1"}
    defaults = parse_stack_config(VALID)
    assert not defaults.monitoring.enabled and defaults.cluster.scheduler.disruption_budget
    assert defaults.cluster.worker_groups == {} and defaults.cluster.workers.spot is None


def test_placement_problems_are_all_reported_with_the_schema_reason() -> None:
    problems = problems_for(
        with_changes(
            cluster__workers={"placement": {"tolerations": [{"key": "a", "effectt": "NoSchedule"}]}},
            cluster__scheduler={"placement": {"affinity": {"podAntiAffinity": {"bogus": 1}}}},
        )
    )
    assert any("tolerations.0" in p and "'effectt' was unexpected" in p for p in problems), problems
    assert any("affinity.podAntiAffinity" in p and "'bogus' was unexpected" in p for p in problems), problems


def test_all_problems_reported_at_once() -> None:
    raw = with_changes(
        namespace="Bad_NS",
        cluster__name="UPPER",
        cluster__workers={"replicas": -2, "threads": 0, "cpu": "x"},
        cluster__autoscaler={"minimum": 4, "maximum": 2},
    )
    problems = problems_for(raw)
    keys = {p.split(" = ", 1)[0] for p in problems}
    expected = {
        "namespace",
        "cluster.name",
        "cluster.workers.replicas",
        "cluster.workers.threads",
        "cluster.workers.cpu",
        "cluster.autoscaler.minimum",
    }
    assert expected <= keys
    assert str(len(problems)) in str(ConfigError(problems))


def test_cluster_name_limits_name_the_maximum_and_the_derived_name() -> None:
    ok = parse_stack_config(with_changes(cluster__name="a" * MAX_CLUSTER_NAME))
    assert ok.cluster.name == "a" * MAX_CLUSTER_NAME
    (problem,) = problems_for(with_changes(cluster__name="a" * (MAX_CLUSTER_NAME + 1)))
    assert f"more than the maximum of {MAX_CLUSTER_NAME}" in problem and "worker Deployment" in problem
    assert "over the Kubernetes limit of 63" in problem and "Fix:" in problem
    (problem,) = problems_for(with_changes(cluster__name="9lives"))
    assert "DNS-1035" in problem and "starting with a letter" in problem


def test_typo_suggests_the_right_key() -> None:
    problems = problems_for(with_changes(cluster__autoscaler={"maximun": 4}))
    assert any("did you mean 'cluster.autoscaler.maximum'" in p for p in problems)


def test_bad_config_registers_no_resource() -> None:
    config = {f"lsdb-k8s:{k}": json.dumps(v) if isinstance(v, dict) else v for k, v in VALID.items()}
    config["lsdb-k8s:cluster"] = json.dumps({"name": "Bad_Name", "workers": {"replicas": -1}})
    run = ProgramRun()
    with pytest.raises(ConfigError) as err:
        run_program(config, run=run)
    assert run.resources == []
    assert "cluster.name" in str(err.value) and "cluster.workers.replicas" in str(err.value)


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [("4Gi", 4 * 2**30), ("6G", 6 * 10**9), ("512Mi", 512 * 2**20), ("1e9", 10**9), ("1.5Gi", int(1.5 * 2**30))],
)
def test_quantity_bytes(quantity: str, expected: int) -> None:
    assert quantity_bytes(quantity) == expected


PLATFORM = {"role": "platform", "operator": {"install": True}}
ISSUE_14_REJECTIONS = [
    (
        "platform stack with a cluster section",
        {**PLATFORM, "cluster": {"name": "x"}, "image": {"repository": "ghcr.io/a/b"}},
        ["cluster", "image"],
    ),
    (
        "platform stack without the operator",
        {"role": "platform", "operator": {"fromStack": "other"}},
        ["operator.install"],
    ),
    ("unknown role", {**VALID, "role": "operator"}, ["role"]),
    (
        "minWorkers above the autoscaler minimum",
        with_changes(cluster__autoscaler={"minimum": 0, "maximum": 4}, verify={"catalogPath": "/data/c"}),
        ["verify.minWorkers"],
    ),
    (
        "minWorkers above replicas without autoscaler",
        with_changes(
            cluster__autoscaler={"enabled": False},
            cluster__workers={"replicas": 1},
            verify={"catalogPath": "/data/c", "minWorkers": 2},
        ),
        ["verify.minWorkers"],
    ),
    ("operator image with a tag", with_changes(operator={"image": "mirror/dask-operator:1.0"}), ["operator.image"]),
    ("fromStack with one slash", with_changes(operator={"fromStack": "lsdb-k8s/platform"}), ["operator.fromStack"]),
]


@pytest.mark.parametrize(("case", "raw", "keys"), ISSUE_14_REJECTIONS, ids=[c[0] for c in ISSUE_14_REJECTIONS])
def test_platform_adopt_and_worker_rules(case: str, raw: dict[str, Any], keys: list[str]) -> None:
    problems = problems_for(raw)
    for key in keys:
        assert any(p.startswith(f"{key} = ") and "Fix: " in p for p in problems), (case, key, problems)


def test_platform_and_adopt_configs_parse() -> None:
    platform = parse_stack_config(PLATFORM)
    assert platform.is_platform and platform.operator.install
    adopted = parse_stack_config(
        with_changes(
            createNamespace=False,
            storage={"kind": "existingClaim", "claimName": "my-claim", "accessMode": "ReadWriteOnce"},
        )
    )
    # The claim is the user's: its access mode is not ours to judge, and nothing is created for it.
    assert adopted.storage.mounts_volume and not adopted.storage.creates_claim and not adopted.create_namespace
    assert parse_stack_config(with_changes(operator={"fromStack": "platform"})).operator.install is False


def test_min_workers_counts_the_extra_groups_the_autoscaler_does_not_scale() -> None:
    groups = {"highmem": {"replicas": 2, "memory": "8Gi"}}
    autoscaled = with_changes(
        cluster__autoscaler={"minimum": 0, "maximum": 4},
        cluster__workerGroups=groups,
        verify={"catalogPath": "/data/c"},
    )
    # 0 from the autoscaled default group + 2 from highmem: the default minWorkers (1) is always there.
    assert parse_stack_config(autoscaled).cluster.min_workers == 2
    too_many = with_changes(
        cluster__autoscaler={"minimum": 0, "maximum": 4},
        cluster__workerGroups=groups,
        verify={"catalogPath": "/data/c", "minWorkers": 3},
    )
    (problem,) = problems_for(too_many)
    assert problem.startswith("verify.minWorkers = 3: exceeds cluster.autoscaler.minimum (0), the workers the ")
    assert "plus 2 in cluster.workerGroups" in problem


def test_the_thread_limit_is_one_rule_with_the_policy_pack() -> None:
    # The policy pack runs in its own venv without `components`: its constants must equal the config's bounds.
    import importlib.util

    from components.cluster_config import MAX_THREADS, MIN_THREADS
    from components.lock import PROJECT_DIR

    spec = importlib.util.spec_from_file_location("guardrails", PROJECT_DIR / "policy" / "lsdb_guardrails.py")
    assert spec is not None and spec.loader is not None
    guardrails = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(guardrails)
    assert (guardrails.MIN_THREADS, guardrails.MAX_THREADS) == (MIN_THREADS, MAX_THREADS)
    assert parse_stack_config(with_changes(cluster__workers={"threads": MAX_THREADS})).cluster.workers.threads == 2
    (problem,) = problems_for(with_changes(cluster__workers={"threads": MAX_THREADS + 1}))
    assert problem.startswith("cluster.workers.threads = 3: ") and "Fix: use 1 or 2 for LSDB workloads" in problem


def test_a_key_of_another_storage_kind_names_the_key_and_the_kinds_taking_it() -> None:
    (problem,) = problems_for(with_changes(storage={"kind": "pvc", "nfs": {"server": "nfs.local"}}))
    assert problem == (
        "storage.nfs.server = '[set]': is set but storage.kind is pvc. Fix: remove it, or set storage.kind nfs"
    )
    (problem,) = problems_for(with_changes(storage={"kind": "s3"}))
    assert problem.startswith("storage.kind = 's3': is not one of the allowed values. Fix: use one of: 'pvc', ")


def test_secret_values_never_reach_the_report() -> None:
    raw = with_changes(
        storage={"kind": "objectStore", "objectStore": {"url": "s3://b/c", "credentials": "AKIA-as-a-string"}},
        image={"repository": "ghcr.io/acme/lsdb-dask", "registry": {"password": "hunter2"}},
        verify={"catalogPath": "s3://b/c/x"},
    )
    report = "\n".join(problems_for({**raw, "unknownSecret": "s3cr3t"}, frozenset({"unknownSecret"})))
    for secret in ("AKIA", "hunter2", "s3cr3t"):
        assert secret not in report, secret
    assert "image.registry.password = '[plaintext]': is stored in plaintext" in report
    assert "storage.objectStore.credentials = '[secret]': must be an object" in report
    assert "unknownSecret = '[secret]': is not a known key" in report


def test_unknown_keys_the_cli_passes_are_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    # `pulumi up` hands a Python program its config as PULUMI_CONFIG (read with pulumi.runtime.get_config_env).
    config = {f"lsdb-k8s:{k}": json.dumps(v) if isinstance(v, dict) else v for k, v in VALID.items()}
    passed = {**config, "lsdb-k8s:namspace": "x", "kubernetes:context": "kind-lsdb"}
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps(passed))
    run = ProgramRun()
    with pytest.raises(ConfigError) as err:
        run_program({}, run=run)
    assert err.value.problems == ["namspace = 'x': is not a known key. Fix: did you mean 'namespace'?"]
    assert run.resources == []


def test_rules_across_sections_are_reported_beside_an_invalid_section() -> None:
    problems = problems_for(
        with_changes(cluster__name="BAD", operator={"namespace": "lsdb-test"}, verify={"catalogPath": "/home/x"})
    )
    assert [p.split(" = ", 1)[0] for p in problems] == ["operator.namespace", "cluster.name", "verify.catalogPath"]


def test_python_version_must_be_the_pinned_base_images_when_building() -> None:
    # The build no longer takes a Python version: docker/Dockerfile pins the base image by digest. A different
    # image.pythonVersion would make the client check compare against a Python the image does not run.
    from components.lock import base_image

    pinned = base_image().python_version
    other = "3.11.99" if pinned != "3.11.99" else "3.11.98"
    [found] = problems_for({**VALID, "image": {"repository": "ghcr.io/acme/lsdb-dask", "pythonVersion": other}})
    assert found.startswith(f"image.pythonVersion = '{other}': differs from {pinned}")
    assert f"Fix: pulumi config set --path image.pythonVersion {pinned}" in found
    # A prebuilt image.ref states its own Python (what the client check compares with).
    ref = "ghcr.io/acme/lsdb-dask@sha256:" + "a" * 64
    assert parse_stack_config({**VALID, "image": {"ref": ref, "pythonVersion": other}}).image.python_version == other
    assert parse_stack_config(VALID).image.python_version == pinned


# --- issue 20 defects 6 and 7 -------------------------------------------------------------------------------

# PodSpec topologySpreadConstraints fields (Kubernetes 1.25) that the pinned DaskCluster/DaskWorkerGroup CRDs do not
# declare: the API server would prune them without a word.
UNKEPT_SPREAD_FIELDS = {"minDomains": 2, "nodeAffinityPolicy": "Honor", "nodeTaintsPolicy": "Ignore",
                        "matchLabelKeys": ["pod-template-hash"]}  # fmt: skip
SPREAD = {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
          "labelSelector": {"matchLabels": {"dask.org/component": "worker"}}}  # fmt: skip


def test_placement_fields_the_crds_would_prune_are_refused_naming_each_key() -> None:
    placement = {"topologySpreadConstraints": [SPREAD, {**SPREAD, **UNKEPT_SPREAD_FIELDS}]}
    problems = problems_for(
        with_changes(
            cluster__workers={"placement": placement},
            cluster__scheduler={"placement": placement},
            cluster__workerGroups={"hm": {"placement": placement}},
        )
    )
    sections = (("workers", "DaskCluster"), ("scheduler", "DaskCluster"), ("workerGroups.hm", "DaskWorkerGroup"))
    for section, kind in sections:
        for field, value in UNKEPT_SPREAD_FIELDS.items():
            key = f"cluster.{section}.placement.topologySpreadConstraints.1.{field}"
            line = next((p for p in problems if p.startswith(f"{key} = ")), None)
            assert line is not None, (key, problems)
            shown = repr(value) if isinstance(value, str) else json.dumps(value)
            assert f" = {shown}: is not kept by the pinned {kind} CRD" in line, line
            assert "Fix: remove it" in line, line
    assert not any(".topologySpreadConstraints.0." in p for p in problems), problems  # the kept entry is fine
    assert len(problems) == 3 * len(UNKEPT_SPREAD_FIELDS), problems


def test_placement_the_crds_keep_is_accepted() -> None:
    placement = {
        "nodeSelector": {"pool": "dask"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "dask", "effect": "NoSchedule"}],
        "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 50,
            "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname", "namespaceSelector": {},
                                "labelSelector": {"matchLabels": {"a": "b"}}}}]}},
        "priorityClassName": "dask",
        "topologySpreadConstraints": [SPREAD],
    }  # fmt: skip
    cfg = parse_stack_config(with_changes(cluster__workers={"placement": placement}))
    assert cfg.cluster.workers.placement.pod_fields()["topologySpreadConstraints"] == [SPREAD]


@pytest.mark.parametrize("verify", [{"catalogPath": "/data/c"}, {"enabled": False}], ids=["verify on", "verify off"])
def test_an_idle_timeout_shorter_than_the_verification_is_refused(verify: dict[str, Any]) -> None:
    problems = problems_for(with_changes(cluster__idleTimeoutSeconds=600, verify=verify))
    line = next(p for p in problems if p.startswith("cluster.idleTimeoutSeconds = 600: "))
    assert "verify.timeoutSeconds (900" in line and "Fix: " in line, line
    assert len(problems) == 1, problems


@pytest.mark.parametrize(
    ("idle", "verify"),
    [(0, {}), (900, {}), (3600, {}), (120, {"timeoutSeconds": 120}), (120, {"enabled": False, "timeoutSeconds": 60})],
)
def test_no_idle_timeout_or_one_the_verification_fits_in_is_accepted(idle: int, verify: dict[str, Any]) -> None:
    raw = with_changes(cluster__idleTimeoutSeconds=idle, verify={"catalogPath": "/data/c", **verify})
    cfg = parse_stack_config(raw)
    assert cfg.cluster.idle_timeout_seconds == idle
