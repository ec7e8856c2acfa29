"""The guardrails of the `lsdb-k8s-guardrails` policy pack (`pulumi preview --policy-pack policy`), all mandatory.

Props may be the SDK's unknown-checking proxies (Mapping and Sequence, not dict and list): the helpers rely on those
interfaces only. A value unknown during preview (an image digest of the same update) raises the SDK's
UnknownValueError ("can't run policy during preview"); the check then runs during `up`. No side effects here:
`__main__.py` builds the PolicyPack (which starts the analyzer server)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

PACK_NAME = "lsdb-k8s-guardrails"

DASK_CLUSTER = "kubernetes:kubernetes.dask.org/v1:DaskCluster"
DASK_WORKER_GROUP = "kubernetes:kubernetes.dask.org/v1:DaskWorkerGroup"
DASK_AUTOSCALER = "kubernetes:kubernetes.dask.org/v1:DaskAutoscaler"
SERVICE = "kubernetes:core/v1:Service"
SERVICE_PATCH = "kubernetes:core/v1:ServicePatch"
NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
# The notebook's objects (components/notebook.py): this label pair on the Deployment, its pods and its Service.
NOTEBOOK_LABELS = {"app.kubernetes.io/part-of": "lsdb-k8s", "app.kubernetes.io/component": "notebook"}
# Labels the operator adds to the pods it builds (dask_kubernetes controller.build_*_deployment_spec), on top of
# the DaskCluster's own metadata labels, which it copies.
CLUSTER_NAME_LABEL, COMPONENT_LABEL = "dask.org/cluster-name", "dask.org/component"
TLS_ENV = ("DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION", "DASK_DISTRIBUTED__COMM__TLS__CA_FILE")

DIGEST_IMAGE = re.compile(r"^[^\s@]+@sha256:[0-9a-f]{64}$")
# The guide: "Keep --nthreads at 1 or 2 per worker for LSDB workloads." The stack config states the same bounds
# (components/cluster_config.py; this pack runs without `components`, tests/test_config.py checks they agree).
MIN_THREADS, MAX_THREADS = 1, 2
DEFAULT_AUTOSCALER_CEILING = 50
PUBLIC_SERVICE_TYPES = ("LoadBalancer", "NodePort")
PUBLIC_FIX = "keep it ClusterIP and use `kubectl port-forward` (or an authenticated Ingress) to reach it"


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _sequence(value: Any) -> Sequence[Any]:
    return value if isinstance(value, Sequence) and not isinstance(value, str) else ()


def _resource_label(args: ResourceValidationArgs) -> str:
    kind = args.resource_type.rsplit(":", 1)[-1]
    name = _mapping(args.props.get("metadata")).get("name") or args.name
    return f"{kind} {name}"


def dask_pod_specs(resource_type: str, props: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(component, pod spec) for each Dask pod template of a DaskCluster or (its callers check) DaskWorkerGroup."""
    spec = _mapping(props.get("spec"))
    if resource_type == DASK_CLUSTER:
        yield "scheduler", _mapping(_mapping(spec.get("scheduler")).get("spec"))
    yield "worker", _mapping(_mapping(spec.get("worker")).get("spec"))


def dask_containers(resource_type: str, props: Mapping[str, Any]) -> Iterator[tuple[str, str, str, Mapping[str, Any]]]:
    """(component, "container" or "initContainer", name, container) for every container of the Dask pods."""
    for component, pod in dask_pod_specs(resource_type, props):
        for field, what in (("initContainers", "initContainer"), ("containers", "container")):
            for index, container in enumerate(_sequence(pod.get(field))):
                container = _mapping(container)
                yield component, what, str(container.get("name") or f"#{index}"), container


def _command_line(container: Mapping[str, Any]) -> list[str]:
    return [str(a) for a in (*_sequence(container.get("command")), *_sequence(container.get("args")))]


def is_dask_worker(container: Mapping[str, Any]) -> bool:
    """`dask worker ...`, `dask-worker ...` or `python -m distributed.cli.dask_worker ...`."""
    argv = _command_line(container)
    for i, arg in enumerate(argv):
        base = arg.rsplit("/", 1)[-1]
        if base == "dask-worker" or arg == "distributed.cli.dask_worker":
            return True
        if base == "dask" and i + 1 < len(argv) and argv[i + 1] == "worker":
            return True
    return False


def nthreads_values(argv: Sequence[str]) -> list[str]:
    """Every value given to --nthreads, in both `--nthreads N` and `--nthreads=N` forms."""
    values = []
    for i, arg in enumerate(argv):
        if arg == "--nthreads":
            values.append(argv[i + 1] if i + 1 < len(argv) else "")
        elif arg.startswith("--nthreads="):
            values.append(arg.split("=", 1)[1])
    return values


def validate_image_digests(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    """Dask scheduler and worker images must be pinned by digest (repository@sha256:...), never a tag."""
    if args.resource_type not in (DASK_CLUSTER, DASK_WORKER_GROUP):
        return
    label = _resource_label(args)
    for component, what, name, container in dask_containers(args.resource_type, args.props):
        image = container.get("image")
        if not image:
            report_violation(f"{label}: {component} {what} '{name}' has no image; pin it as repository@sha256:<digest>")
            continue
        image = str(image)
        if DIGEST_IMAGE.match(image):
            continue
        last = image.rsplit("/", 1)[-1]
        tag = last.split(":", 1)[1] if ":" in last else "latest"
        floating = " (the floating tag 'latest' is rejected)" if tag == "latest" else f" (tag '{tag}' can move)"
        report_violation(
            f"{label}: {component} {what} '{name}' image '{image}' is not pinned by digest{floating}; "
            "use repository@sha256:<digest> so scheduler, workers and client run the same build"
        )


def validate_memory_limits(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    """Every Dask scheduler and worker container must set resources.limits.memory."""
    if args.resource_type not in (DASK_CLUSTER, DASK_WORKER_GROUP):
        return
    label = _resource_label(args)
    for component, pod in dask_pod_specs(args.resource_type, args.props):  # an OOM is then a clear OOMKilled
        containers = _sequence(pod.get("containers"))
        if not containers:
            report_violation(f"{label}: the {component} pod spec has no containers, so no memory limit")
        for index, container in enumerate(containers):
            container = _mapping(container)
            name = container.get("name") or f"#{index}"
            limits = _mapping(_mapping(container.get("resources")).get("limits"))
            if not limits.get("memory"):
                report_violation(
                    f"{label}: {component} container '{name}' has no resources.limits.memory; "
                    "set one (the guide's manifest sets limits.memory equal to requests.memory)"
                )


def validate_worker_threads(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type not in (DASK_CLUSTER, DASK_WORKER_GROUP):
        return
    label = _resource_label(args)
    workers = [
        (name, c)
        for component, what, name, c in dask_containers(args.resource_type, args.props)
        if component == "worker" and what == "container" and (is_dask_worker(c) or name == "worker")
    ]
    if not workers:
        report_violation(
            f"{label}: no Dask worker container found (a `dask worker` command or a container named 'worker'), "
            f"so --nthreads cannot be checked; keep --nthreads between {MIN_THREADS} and {MAX_THREADS}"
        )
    for name, container in workers:
        values = nthreads_values(_command_line(container))
        if not values:
            report_violation(
                f"{label}: worker container '{name}' does not pass --nthreads (Dask then starts one thread per "
                f"core); pass --nthreads {MIN_THREADS} or {MAX_THREADS}"
            )
        for value in values:
            if not value.isdigit() or not MIN_THREADS <= int(value) <= MAX_THREADS:
                report_violation(
                    f"{label}: worker container '{name}' runs --nthreads {value or '(missing value)'}; "
                    f"LSDB workers must use {MIN_THREADS} to {MAX_THREADS} threads (add workers, not threads)"
                )


def validate_autoscaler_ceiling(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    """DaskAutoscaler maximum must not exceed the configured ceiling (default 50 workers)."""
    if args.resource_type != DASK_AUTOSCALER:
        return
    label = _resource_label(args)
    ceiling = int(args.get_config().get("maximum", DEFAULT_AUTOSCALER_CEILING))  # Configure() gives floats (50.0)
    spec = _mapping(args.props.get("spec"))
    maximum, minimum = spec.get("maximum"), spec.get("minimum")
    if not isinstance(maximum, int | float) or isinstance(maximum, bool):
        report_violation(f"{label}: spec.maximum is not set to a number; set it to at most {ceiling}")
        return
    if maximum > ceiling:
        report_violation(
            f"{label}: spec.maximum {int(maximum)} exceeds the ceiling of {ceiling} workers "
            f"(policy config {POLICY_AUTOSCALER}.maximum)"
        )
    if isinstance(minimum, int | float) and not isinstance(minimum, bool) and minimum > maximum:
        report_violation(f"{label}: spec.minimum {int(minimum)} is above spec.maximum {int(maximum)}")


def public_scheduler_service(label: str, spec: Mapping[str, Any]) -> list[str]:
    """What exposes a Service spec that selects a Dask scheduler (none if it does not select one)."""
    if _mapping(spec.get("selector")).get(COMPONENT_LABEL) != "scheduler":
        return []
    found = []
    service_type = spec.get("type") or "ClusterIP"
    if service_type in PUBLIC_SERVICE_TYPES:
        found.append(
            f"{label}: type {service_type} exposes the Dask scheduler (selector dask.org/component: scheduler) "
            f"and its dashboard outside the cluster; {PUBLIC_FIX}"
        )
    if _sequence(spec.get("externalIPs")):
        found.append(f"{label}: externalIPs expose the Dask scheduler outside the cluster; {PUBLIC_FIX}")
    return found


def validate_scheduler_not_public(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    """The Dask scheduler/dashboard Service must be ClusterIP: no LoadBalancer, NodePort or externalIPs."""
    label = _resource_label(args)
    if args.resource_type == DASK_CLUSTER:
        service = _mapping(_mapping(_mapping(args.props.get("spec")).get("scheduler")).get("service"))
        service_type = service.get("type") or "ClusterIP"  # Kubernetes' default
        if service_type != "ClusterIP":
            report_violation(
                f"{label}: spec.scheduler.service.type is {service_type}, which exposes the scheduler and "
                f"dashboard outside the cluster; {PUBLIC_FIX}"
            )
        if _sequence(service.get("externalIPs")):
            report_violation(f"{label}: spec.scheduler.service sets externalIPs; {PUBLIC_FIX}")
    elif args.resource_type in (SERVICE, SERVICE_PATCH):
        for message in public_scheduler_service(label, _mapping(args.props.get("spec"))):
            report_violation(message)


def _object_key(props: Mapping[str, Any]) -> tuple[Any, Any]:
    meta = _mapping(props.get("metadata"))
    return meta.get("namespace") or "default", meta.get("name")


def validate_patched_services_not_public(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    """A Service whose selector a ServicePatch points at the Dask scheduler must be ClusterIP, without
    externalIPs, once patched."""
    # The program's stable `<cluster.name>-scheduler`, checked as it ends up: neither part alone shows what it exposes.
    patches: dict[tuple[Any, Any], list[Mapping[str, Any]]] = {}
    for r in args.resources:
        if r.resource_type == SERVICE_PATCH:
            patches.setdefault(_object_key(r.props), []).append(_mapping(r.props.get("spec")))
    for r in args.resources:
        if r.resource_type != SERVICE or _object_key(r.props) not in patches:
            continue
        parts = [_mapping(r.props.get("spec")), *patches[_object_key(r.props)]]
        merged: dict[str, Any] = {}
        for spec in parts:
            merged |= dict(spec)  # Server-Side Apply: the selector is an atomic map, type and externalIPs replace
        label = f"Service {_object_key(r.props)[1]} (with its ServicePatch)"
        alone = {m.split(": ", 1)[1] for spec in parts for m in public_scheduler_service(label, spec)}
        for message in public_scheduler_service(label, merged):
            if message.split(": ", 1)[1] not in alone:  # already reported by dask-scheduler-not-public
                report_violation(message)


def selector_matches(selector: Any, labels: Mapping[str, str]) -> bool:
    """Kubernetes label-selector semantics: every matchLabels pair and matchExpressions requirement holds."""
    selector = _mapping(selector)
    if any(labels.get(k) != v for k, v in _mapping(selector.get("matchLabels")).items()):
        return False
    for req in _sequence(selector.get("matchExpressions")):
        req = _mapping(req)
        key, op, values = req.get("key"), req.get("operator"), list(_sequence(req.get("values")))
        present = key in labels
        ok = {
            "In": present and labels.get(str(key)) in values,
            "NotIn": not (present and labels.get(str(key)) in values),
            "Exists": present,
            "DoesNotExist": not present,
        }.get(str(op), False)
        if not ok:
            return False
    return True


def dask_pod_labels(resource_type: str, props: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """component -> the labels the operator puts on the pods of this DaskCluster or DaskWorkerGroup (its own labels,
    a group's `spec.worker.metadata.labels`, and the operator's `dask.org/*` labels)."""
    metadata, spec = _mapping(props.get("metadata")), _mapping(props.get("spec"))
    own = {str(k): str(v) for k, v in _mapping(metadata.get("labels")).items()}
    if resource_type == DASK_WORKER_GROUP:
        pod = _mapping(_mapping(_mapping(spec.get("worker")).get("metadata")).get("labels"))
        labels = {**own, **{str(k): str(v) for k, v in pod.items()}}
        return {"worker": {**labels, CLUSTER_NAME_LABEL: str(spec.get("cluster") or ""), COMPONENT_LABEL: "worker"}}
    name = str(metadata.get("name") or "")
    return {c: {**own, CLUSTER_NAME_LABEL: name, COMPONENT_LABEL: c} for c in ("scheduler", "worker")}


def _isolates_ingress(policy_props: Mapping[str, Any], namespace: Any, labels: Mapping[str, str]) -> bool:
    metadata, spec = _mapping(policy_props.get("metadata")), _mapping(policy_props.get("spec"))
    if (metadata.get("namespace") or None) != (namespace or None):
        return False
    types = list(_sequence(spec.get("policyTypes"))) or ["Ingress"]
    return "Ingress" in types and selector_matches(spec.get("podSelector"), labels)


def validate_network_policies(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    """Every DaskCluster's (and DaskWorkerGroup's) pods must be selected by a NetworkPolicy (ingress)."""
    policies = [r.props for r in args.resources if r.resource_type == NETWORK_POLICY]
    for resource in args.resources:
        if resource.resource_type not in (DASK_CLUSTER, DASK_WORKER_GROUP):
            continue
        metadata = _mapping(resource.props.get("metadata"))
        namespace = metadata.get("namespace")
        kind = resource.resource_type.rsplit(":", 1)[-1]
        for component, labels in dask_pod_labels(resource.resource_type, resource.props).items():
            if not any(_isolates_ingress(p, namespace, labels) for p in policies):
                report_violation(
                    f"{kind} {metadata.get('name') or resource.name}: no NetworkPolicy in namespace "
                    f"{namespace or '(default)'} selects its {component} pods for ingress, so any pod of the cluster "
                    "can reach them (a Dask client runs arbitrary code on the workers); keep security.networkPolicy "
                    "true",
                    resource.urn,
                )


def validate_tls_in_prod(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    """In stacks named prod*, Dask scheduler and workers must require TLS (scheduler on tls://)."""
    stack = os.environ.get("PULUMI_STACK", "")  # the stack being deployed: the Pulumi CLI sets it for the pack
    if args.resource_type not in (DASK_CLUSTER, DASK_WORKER_GROUP) or not stack.startswith("prod"):
        return
    label = _resource_label(args)
    fix = "set security.tls true (the default)"
    for component, what, name, container in dask_containers(args.resource_type, args.props):
        if what != "container":
            continue
        env = {str(_mapping(e).get("name")): str(_mapping(e).get("value", "")) for e in _sequence(container.get("env"))}
        missing = [k for k in TLS_ENV if not env.get(k)]
        if missing or env.get(TLS_ENV[0], "").lower() not in ("true", "1", "yes"):
            report_violation(
                f"{label}: {component} container '{name}' does not require TLS in stack {stack} "
                f"({TLS_ENV[0]}=True and {TLS_ENV[1]} needed); {fix}"
            )
        argv = _command_line(container)
        if component == "scheduler" and not any(a in ("tls", "--protocol=tls") or a.startswith("tls://") for a in argv):
            report_violation(f"{label}: the scheduler does not listen on tls:// in stack {stack}; {fix}")


def _is_notebook(labels: Any) -> bool:
    labels = _mapping(labels)
    return all(labels.get(k) == v for k, v in NOTEBOOK_LABELS.items())


def notebook_problems(label: str, pod: Mapping[str, Any]) -> list[str]:
    """How a notebook pod spec falls short of the cluster's pods: digest image, memory limit, non-root, read-only
    root, no privilege escalation, no API token (a notebook runs whatever its users type)."""
    found = []
    if _mapping(pod.get("securityContext")).get("runAsNonRoot") is not True:
        found.append(f"{label}: the pod does not set securityContext.runAsNonRoot true")
    if pod.get("automountServiceAccountToken") is not False:
        found.append(f"{label}: the pod mounts a Kubernetes API token (set automountServiceAccountToken false)")
    for field in ("initContainers", "containers"):
        for container in _sequence(pod.get(field)):
            container = _mapping(container)
            name = container.get("name")
            if not DIGEST_IMAGE.match(str(container.get("image") or "")):
                found.append(f"{label}: container '{name}' image is not pinned as repository@sha256:<digest>")
            if not _mapping(_mapping(container.get("resources")).get("limits")).get("memory"):
                found.append(f"{label}: container '{name}' sets no resources.limits.memory")
            context = _mapping(container.get("securityContext"))
            read_only, escalation = context.get("readOnlyRootFilesystem"), context.get("allowPrivilegeEscalation")
            if read_only is not True or escalation is not False:
                found.append(
                    f"{label}: container '{name}' must set readOnlyRootFilesystem true and allowPrivilegeEscalation "
                    "false"
                )
    return found


def validate_notebook(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    """The notebook runs a digest-pinned image, non-root, read-only, memory-limited, without an API token, behind
    a ClusterIP Service."""
    label, props = _resource_label(args), args.props
    spec = _mapping(props.get("spec"))
    if args.resource_type == DEPLOYMENT and _is_notebook(_mapping(props.get("metadata")).get("labels")):
        for message in notebook_problems(label, _mapping(_mapping(spec.get("template")).get("spec"))):
            report_violation(message)
    elif (
        args.resource_type == SERVICE
        and _is_notebook(spec.get("selector"))
        and ((spec.get("type") or "ClusterIP") != "ClusterIP" or _sequence(spec.get("externalIPs")))
    ):
        report_violation(
            f"{label}: exposes the notebook (a token away from running code in the cluster) outside the cluster; "
            "keep it ClusterIP and use `kubectl port-forward`"
        )


POLICY_IMAGE = "dask-image-pinned-by-digest"
POLICY_MEMORY = "dask-memory-limits"
POLICY_THREADS = "dask-worker-threads"
POLICY_AUTOSCALER = "dask-autoscaler-ceiling"
POLICY_PUBLIC = "dask-scheduler-not-public"
POLICY_PUBLIC_PATCHED = "dask-patched-scheduler-service-not-public"
POLICY_NETWORK = "dask-cluster-network-policy"
POLICY_TLS = "dask-tls-in-prod"
POLICY_NOTEBOOK = "lsdb-notebook-hardened"


def mandatory(kind: Any, name: str, validate: Any, description: str | None = None, **extra: Any) -> Any:
    """A mandatory policy described by its validator's docstring (on one line)."""
    return kind(name, description or " ".join(validate.__doc__.split()), validate, EnforcementLevel.MANDATORY, **extra)


THREADS = f"Dask workers must run with --nthreads {MIN_THREADS} or {MAX_THREADS} (the LSDB guide's range)."
CEILING_SCHEMA = PolicyConfigSchema(
    {
        "maximum": {
            "type": "integer",
            "minimum": 1,
            "default": DEFAULT_AUTOSCALER_CEILING,
            "description": "The largest DaskAutoscaler spec.maximum allowed.",
        }
    }
)
POLICIES = [
    mandatory(ResourceValidationPolicy, POLICY_IMAGE, validate_image_digests),
    mandatory(ResourceValidationPolicy, POLICY_MEMORY, validate_memory_limits),
    mandatory(ResourceValidationPolicy, POLICY_THREADS, validate_worker_threads, THREADS),
    mandatory(ResourceValidationPolicy, POLICY_AUTOSCALER, validate_autoscaler_ceiling, config_schema=CEILING_SCHEMA),
    mandatory(ResourceValidationPolicy, POLICY_PUBLIC, validate_scheduler_not_public),
    mandatory(StackValidationPolicy, POLICY_PUBLIC_PATCHED, validate_patched_services_not_public),
    mandatory(ResourceValidationPolicy, POLICY_TLS, validate_tls_in_prod),
    mandatory(StackValidationPolicy, POLICY_NETWORK, validate_network_policies),
    mandatory(ResourceValidationPolicy, POLICY_NOTEBOOK, validate_notebook),
]
