"""The rules of components/config.py across a section's fields and across sections, as the user sees them: each
report line word for word (key, bad value, what is wrong, the fix), what is accepted beside it, and the defaults
that follow other keys (`operator.install` with `fromStack`, `verify.catalogPath` from the first catalog). Fast
enough for mutation testing (docs/mutation.md); tests/test_config.py checks the same rules on complete stacks."""

from __future__ import annotations

from typing import Any

import pytest

from components.config import ConfigError, StackConfig, parse_stack_config
from components.lock import base_image

IMAGE = {"repository": "r/x"}
OFF = {"enabled": False}
PLATFORM_FIX = "Fix: remove it from this stack (a platform stack takes only role, kubeContext, operator)"


def problems(raw: dict[str, Any], secret_keys: frozenset[str] = frozenset()) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse_stack_config(raw, secret_keys)
    return err.value.problems


def accepted(raw: dict[str, Any], secret_keys: frozenset[str] = frozenset()) -> StackConfig:
    return parse_stack_config(raw, secret_keys)


# --- security -----------------------------------------------------------------------------------------------------


def test_the_replaced_metrics_namespaces_key_names_its_successor() -> None:
    raw = {"image": IMAGE, "verify": OFF, "security": {"metricsNamespaces": ["monitoring"], "tls": False}}
    assert problems(raw) == [
        'security.metricsNamespaces = ["monitoring"]: was replaced by monitoring.prometheusNamespace (scrapers are let'
        " in while monitoring.enabled is true). Fix: remove it; set monitoring.enabled true and"
        " monitoring.prometheusNamespace to your Prometheus's namespace (default monitoring)"
    ]
    raw["security"] = {"metricsNamespaces": "a,b", "tls": "not a bool"}  # reported alone, before the fields
    assert problems(raw)[0].startswith("security.metricsNamespaces = 'a,b': was replaced by")
    assert len(problems(raw)) == 1
    security = accepted({"image": IMAGE, "verify": OFF, "security": {"tls": False, "clientNamespaces": "a,b"}})
    assert security.security.tls is False and security.security.client_namespaces == ["a", "b"]


# --- operator -----------------------------------------------------------------------------------------------------


def test_an_operator_from_another_stack_is_not_installed_here() -> None:
    assert accepted({"image": IMAGE, "verify": OFF}).operator.install is True
    adopted = accepted({"image": IMAGE, "verify": OFF, "operator": {"fromStack": "platform"}}).operator
    assert adopted.install is False and adopted.from_stack == "platform"
    assert accepted({"image": IMAGE, "verify": OFF, "operator": {"fromStack": None}}).operator.install is True
    given = {"fromStack": "org/lsdb-k8s/platform", "install": False}
    assert accepted({"image": IMAGE, "verify": OFF, "operator": given}).operator.install is False
    assert problems({"image": IMAGE, "verify": OFF, "operator": {"fromStack": "platform", "install": True}}) == [
        "operator.install = true: conflicts with operator.fromStack (that stack installed the operator). Fix: remove"
        " operator.install or set it to false"
    ]
    assert accepted({"image": IMAGE, "verify": OFF, "operator": {"install": False}}).operator.install is False


def test_the_operator_keeps_its_own_namespace_when_installed_here() -> None:
    same = {"image": IMAGE, "verify": OFF, "namespace": "astro", "operator": {"namespace": "astro"}}
    assert problems(same) == [
        "operator.namespace = 'astro': is the same as the cluster namespace. Fix: keep the cluster-wide operator in"
        " its own namespace (default dask-operator)"
    ]
    assert problems({"image": IMAGE, "verify": OFF, "operator": {"namespace": "lsdb"}})[0].startswith(
        "operator.namespace = 'lsdb': is the same as the cluster namespace"
    )  # the default cluster namespace
    adopted = {**same, "operator": {"namespace": "astro", "fromStack": "platform"}}
    assert accepted(adopted).operator.namespace == "astro"  # not installed here: another stack's namespace
    assert accepted({**same, "operator": {"namespace": "astro", "install": False}}).namespace == "astro"
    assert accepted({**same, "operator": {"namespace": "dask-operator"}}).operator.namespace == "dask-operator"


def test_a_platform_stack_installs_the_operator() -> None:
    line = "operator.install = false: must be true for role platform. Fix: remove operator.install/fromStack"
    assert problems({"role": "platform", "operator": {"install": False}}) == [line]
    assert problems({"role": "platform", "operator": {"fromStack": "other"}}) == [line]
    platform = accepted({"role": "platform", "operator": {"namespace": "ops"}})
    assert platform.is_platform and platform.operator.install and platform.operator.namespace == "ops"
    assert accepted({"role": "platform", "kubeContext": "kind-x"}).kube_context == "kind-x"


def test_a_platform_stack_takes_only_its_own_keys() -> None:
    raw = {"role": "platform", "storage": {"kind": "pvc"}, "createNamespace": False, "namespace": "x",
           "kubeContext": "k", "operator": {"namespace": "ops"}, "security": {"tls": True}, "monitoring": {},
           "cluster": {"name": "c"}}  # fmt: skip
    assert problems(raw) == [  # as users write them (camelCase), sorted
        f"{key} = '[set]': is set, but role platform installs only the operator and its CRDs. {PLATFORM_FIX}"
        for key in ("cluster", "createNamespace", "monitoring", "namespace", "security", "storage")
    ]
    assert accepted({"image": IMAGE, "verify": OFF, "namespace": "x", "createNamespace": False}).namespace == "x"


# --- image and registry -------------------------------------------------------------------------------------------


def test_a_cluster_needs_an_image() -> None:
    assert problems({"verify": OFF}) == [
        "image.repository = null: is required when image.ref is not set. Fix: e.g. ghcr.io/<org>/lsdb-dask"
    ]
    assert problems({"verify": OFF, "image": {"repository": ""}})[0].startswith("image.repository = null: is required")
    assert accepted({"verify": OFF, "image": {"ref": "r/x@sha256:" + "0" * 64}}).image.repository is None
    assert accepted({"role": "platform"}).image.repository is None  # a platform stack builds no image


def test_a_built_image_is_pushed_and_runs_the_pinned_python() -> None:
    base = base_image()
    push = (
        "image.push = false: leaves no registry digest for the cluster to pull (it never uses tags). Fix: set"
        " image.push true (dev uses the local registry) or give a prebuilt image.ref"
    )
    python = (
        f"image.pythonVersion = '3.11.99': differs from {base.python_version}, the Python of the base image"
        f" docker/Dockerfile pins ({base.ref}). Fix: pulumi config set --path image.pythonVersion"
        f" {base.python_version}, or move the image to another release with `python -m tools.relock --python X.Y.Z`"
    )
    built = {"repository": "r/x", "push": False, "pythonVersion": "3.11.99"}
    assert problems({"verify": OFF, "image": built}) == [push, python]
    assert problems({"verify": OFF, "image": {**built, "push": True}}) == [python]
    assert problems({"verify": OFF, "image": {**built, "pythonVersion": base.python_version}}) == [push]
    prebuilt = accepted({"verify": OFF, "image": {**built, "repository": None, "ref": "r/x@sha256:" + "0" * 64}})
    assert prebuilt.image.python_version == "3.11.99" and prebuilt.image.push is False
    assert accepted({"verify": OFF, "image": IMAGE}).image.python_version == base.python_version


def test_a_registry_password_comes_with_its_server_and_user() -> None:
    line = (
        "image.registry = '[password set]': needs server and username with the password. Fix: set"
        " image.registry.server and image.registry.username"
    )
    secret = frozenset({"image"})
    for registry in ({"password": "pw"}, {"password": "pw", "server": "ghcr.io"}, {"password": "pw", "username": "u"}):
        assert problems({"verify": OFF, "image": {**IMAGE, "registry": registry}}, secret) == [line]
    full = {"password": "pw", "server": "ghcr.io", "username": "u"}
    assert accepted({"verify": OFF, "image": {**IMAGE, "registry": full}}, secret).image.registry.username == "u"
    public = accepted({"verify": OFF, "image": {**IMAGE, "registry": {"server": "ghcr.io"}}}).image.registry
    assert public.server == "ghcr.io" and public.password is None


# --- monitoring ---------------------------------------------------------------------------------------------------


def test_monitor_and_dashboard_labels_are_kubernetes_labels() -> None:
    fix = "Fix: use a Kubernetes label (key ≤ 63 characters, value ≤ 63)"
    raw = {"image": IMAGE, "verify": OFF, "monitoring": {"labels": {"a b": "c"}, "dashboardLabels": {"x": "y" * 64}}}
    assert problems(raw) == [
        f"monitoring.labels.a b = 'c': is not a valid Kubernetes label key. {fix}",
        f"monitoring.dashboardLabels.x = '{'y' * 64}': is not a valid Kubernetes label value (≤ 63 characters:"
        f" letters, digits, -_.). {fix}",
    ]
    good = {"labels": {"release": "kube-prometheus-stack"}, "dashboardLabels": {"grafana_dashboard": "1"}}
    assert accepted({"image": IMAGE, "verify": OFF, "monitoring": good}).monitoring.labels == good["labels"]


# --- storage against the cluster ----------------------------------------------------------------------------------


def test_a_claim_one_node_mounts_serves_one_worker() -> None:
    assert problems({"image": IMAGE, "verify": OFF, "storage": {"kind": "pvc", "accessMode": "ReadWriteOnce"}}) == [
        "storage.accessMode = 'ReadWriteOnce': lets only one node mount the catalog, but up to 4 workers may run."
        " Fix: use ReadWriteMany (or ReadOnlyMany), or limit workers (and autoscaler.maximum) to 1"
    ]
    pod = {"kind": "pvc", "accessMode": "ReadWriteOncePod"}
    two = {"autoscaler": {"enabled": False}, "workers": {"replicas": 2}}
    assert problems({"image": IMAGE, "verify": OFF, "storage": pod, "cluster": two})[0].startswith(
        "storage.accessMode = 'ReadWriteOncePod': lets only one node mount the catalog, but up to 2 workers may run."
    )
    one = {"autoscaler": {"enabled": False}, "workers": {"replicas": 1}}
    assert accepted({"image": IMAGE, "verify": OFF, "storage": pod, "cluster": one}).storage.access_mode == (
        "ReadWriteOncePod"
    )
    claim = {"kind": "existingClaim", "accessMode": "ReadWriteOnce"}  # not created here: its mode is not ours
    assert accepted({"image": IMAGE, "verify": OFF, "storage": claim}).storage.kind == "existingClaim"
    shared = {"kind": "pvc", "accessMode": "ReadOnlyMany"}
    assert accepted({"image": IMAGE, "verify": OFF, "storage": shared}).storage.access_mode == "ReadOnlyMany"


def test_catalogs_are_copied_where_the_workers_read_them() -> None:
    host = {"kind": "hostPath", "hostPath": {"path": "/srv/cats"}}
    raw = {"image": IMAGE, "storage": host, "catalogs": {"a": {"source": "https://x/a"}}}
    assert problems(raw) == [
        "storage.kind = 'hostPath': makes the provisioning Job copy onto the node it lands on, which need not be the"
        " workers'. Fix: pin the workers to one node (cluster.workers.placement.nodeSelector.kubernetes.io/hostname:"
        " <node>, the same in every cluster.workerGroups entry; the Job follows it), or use storage.kind pvc or nfs"
    ]
    # pinned workers (the Job follows them) are accepted: tests/test_config_sections.py, without the placement's
    # schema check, which takes seconds to load
    assert accepted({**raw, "catalogs": {}, "verify": {"catalogPath": "/data/x"}}).catalogs == {}


def test_the_rules_across_sections_are_reported_together() -> None:
    name = "c" * 45  # one more than a provisioning Job's name leaves
    raw = {"image": IMAGE, "storage": {"kind": "pvc", "accessMode": "ReadWriteOnce"},
           "catalogs": {name: {"source": "https://x/c"}}, "cluster": {"idleTimeoutSeconds": 600}}  # fmt: skip
    assert [p.split(": ")[0] for p in problems(raw)] == [
        "storage.accessMode = 'ReadWriteOnce'",
        f"catalogs.{name} = '{name}'",
        "cluster.idleTimeoutSeconds = 600",
    ]


# --- the verification's catalog -----------------------------------------------------------------------------------

CATALOGS = {"second": {"source": "https://x/second"}, "first": {"source": "https://x/first"}}


def test_the_verification_reads_the_first_catalog_provisioned_by_default() -> None:
    pvc = {"kind": "pvc", "mountPath": "/mnt"}
    raw = {"image": IMAGE, "storage": pvc, "catalogs": CATALOGS}
    assert accepted(raw).verify.catalog_path == "/mnt/catalogs/second"  # the first as written, not sorted
    assert accepted({**raw, "verify": {"catalogPath": "/mnt/own"}}).verify.catalog_path == "/mnt/own"
    assert accepted({**raw, "verify": OFF}).verify.catalog_path is None
    claim = {"kind": "existingClaim"}
    assert accepted({**raw, "storage": claim}).verify.catalog_path == "/data/catalogs/second"
    # no claim to copy them onto: the catalogs are the problem, not the missing path
    assert [p.split(":")[0] for p in problems({**raw, "storage": {"kind": "none"}})] == [
        'catalogs = ["first", "second"]'
    ]
    store = {"kind": "objectStore", "objectStore": {"url": "s3://b"}}
    assert [p.split(":")[0] for p in problems({**raw, "storage": store})] == ['catalogs = ["first", "second"]']
    # an invalid storage section is reported alone
    bad = problems({**raw, "storage": {"kind": "pvc", "size": "x"}})
    assert len(bad) == 1 and bad[0].startswith("storage.size = 'x': ")


def test_the_verification_needs_a_catalog() -> None:
    assert (
        problems({"image": IMAGE, "storage": {"kind": "pvc"}})
        == problems({"image": IMAGE})
        == [
            "verify.catalogPath = null: is required while verification is enabled. Fix: set the catalog path as workers"
            " see it (e.g. /data/catalogs/my_catalog), provision one (catalogs.<name>), or verify.enabled false"
        ]
    )
    assert problems({"image": IMAGE, "verify": {"catalogPath": ""}})[0].startswith(
        "verify.catalogPath = null: is required while verification is enabled."
    )  # an empty path is none
    assert accepted({"image": IMAGE, "verify": OFF}).verify.catalog_path is None
    assert accepted({"role": "platform"}).verify.catalog_path is None
    # a catalogs section with problems is reported on its own
    bad = problems({"image": IMAGE, "catalogs": {"b": {"source": "bad"}}})
    assert len(bad) == 1 and bad[0].startswith("catalogs.b.source = 'bad': ")


def test_a_section_the_rules_read_that_is_invalid_is_reported_alone() -> None:
    raw = {"image": IMAGE, "storage": {"kind": "pvc", "size": "x"}, "verify": {"catalogPath": "/elsewhere"}}
    assert [p.split(" = ")[0] for p in problems(raw)] == ["storage.size"]
    raw = {"image": IMAGE, "cluster": {"size": "nope"}, "verify": {"catalogPath": "/data/x", "minWorkers": 50}}
    assert [p.split(" = ")[0] for p in problems(raw)] == ["cluster.size"]
    off = {"image": IMAGE, "verify": {"enabled": False, "catalogPath": "/elsewhere", "minWorkers": 50}}
    assert accepted(off).verify.min_workers == 50  # the rules apply to an enabled verification only
    pvc = {"kind": "pvc"}
    assert problems({"image": IMAGE, "storage": pvc, "verify": {"catalogPath": "/elsewhere", "minWorkers": 50}}) == [
        "verify.catalogPath = '/elsewhere': is not under storage.mountPath (/data). Fix: give the path as workers"
        " see it, below the mount path",
        "verify.minWorkers = 50: exceeds cluster.autoscaler.minimum (2), the workers the autoscaler keeps. Fix: lower"
        " verify.minWorkers or raise cluster.autoscaler.minimum",
    ]
