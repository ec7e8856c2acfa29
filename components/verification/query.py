"""What a verification asks (`VerifyConfig`, the stack's `verify` section; `VerificationQuery`, one run) and what
it answers (`VerificationResult`): the CLI's flags, the resource's properties and `OUTPUT_KEYS` derive from their
fields. pydantic and the standard library only: `pulumi up` imports this.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Annotated, Any, Literal, NamedTuple, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, model_validator
from pydantic.alias_generators import to_camel

from components.section import Fix, Section, comma_list, empty_section, problem, raise_problems

Columns = Annotated[list[Annotated[str, Field(min_length=1)]], BeforeValidator(comma_list)]


class ConeConfig(Section):
    ra: Annotated[float, Fix("use a right ascension in degrees, 0 ≤ ra < 360")] = Field(
        180.0, ge=0.0, lt=360.0, description="Cone centre right ascension, degrees."
    )
    dec: Annotated[float, Fix("use a declination in degrees, -90 ≤ dec ≤ 90")] = Field(
        0.0, ge=-90.0, le=90.0, description="Cone centre declination, degrees."
    )
    radius_arcsec: Annotated[float, Fix("e.g. 600")] = Field(600.0, gt=0.0, description="Cone radius, arcseconds.")


class VerifyConfig(Section):
    """The post-deploy LSDB check."""

    enabled: bool = Field(
        True,
        description="Verify the cluster with an LSDB cone search when it is created, and again whenever its spec, "
        "the image, the operator version, the catalog or the query changes. `false` keeps only the gate: the "
        "switch to a new cluster still waits for its scheduler to answer and for `minWorkers` workers (or the fewer "
        "the cluster always has); no catalog needed.",
    )
    catalog_path: str | None = Field(
        None,
        description="Catalog path as the workers see it (e.g. `/data/catalogs/my_catalog`), or its URL in the "
        "object store (`s3://bucket/catalogs/my_catalog`, same scheme as `storage.objectStore.url`); required "
        "when enabled.",
    )
    cone: ConeConfig = Field(default_factory=empty_section, description="The cone search the check runs.")
    columns: Columns = Field(
        default_factory=lambda: ["ra", "dec"], description="Columns to load (a list, or comma-separated)."
    )
    min_rows: Annotated[int, Fix("use 0 or more")] = Field(
        1, ge=0, description="Fail when the cone returns fewer rows."
    )
    min_workers: Annotated[int, Fix("use 1 or more")] = Field(
        1,
        ge=1,
        description="Workers (of any group) to wait for; at most those the cluster always has: "
        "`autoscaler.minimum` (or `workers.replicas`) plus the `workerGroups`' replicas.",
    )
    timeout_seconds: Annotated[float, Fix("e.g. 900")] = Field(
        900.0,  # connect (600, a cold image pull) plus the query stages
        gt=0.0,
        description="Overall deadline, seconds (the connect stage alone may take 600).",
    )
    connect: Literal["portForward", "direct"] = Field(
        "portForward",
        description="`portForward` (kr8s port-forward with the stack's kube context) or `direct` (the in-cluster "
        "address, for runners inside the cluster).",
    )


class VerificationQuery(VerifyConfig):
    """One run of the check; the gate (`stages: gate`) needs no catalog and may wait for no worker."""

    catalog_path: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)] | None = Field(
        None,
        description="Catalog path as the workers see it (e.g. /data/sample), or its URL in the object store "
        "(not used by the gate).",
    )
    columns: Columns = Field(default_factory=list, description="Columns to load, comma-separated (default: all).")
    min_workers: Annotated[int, Fix("use 1 or more (0 only with stages gate)")] = Field(
        1, ge=0, description="Workers (of any group) to wait for (the gate may wait for none)."
    )
    storage_options: dict[str, Any] | None = Field(
        None,
        description="Passed to lsdb.open_catalog on the worker, e.g. {'anon': False}: the pods' credentials or "
        "identity (the stack's storage.catalogStorageOptions).",
    )
    sample_rows: int = Field(5, ge=0, description="Rows of the result to show.")
    stages: Literal["all", "gate"] = Field(
        "all",
        description="`all` (connect, workers, versions, open, compute, rows) or `gate` (connect and workers only: "
        "what `pulumi up` runs with verify.enabled false; no catalog needed).",
    )

    @model_validator(mode="after")
    def _the_lsdb_query_needs(self) -> VerificationQuery:
        """A catalog, and a worker to open it on: what every stage after the gate's needs."""
        if self.stages == GATE:
            return self
        found = []
        if self.catalog_path is None:
            fix = "give the catalog path as workers see it (e.g. /data/sample), or stages gate"
            found.append(problem("catalogPath", None, "is required for the LSDB query", fix))
        if self.min_workers < 1:
            found.append(problem("minWorkers", self.min_workers, "is below 1: the query runs on a worker", "use 1+"))
        raise_problems("VerificationQuery", found)
        return self

    def to_json(self) -> str:
        """The query as the child process gets it, keys as users write them."""
        return self.model_dump_json(by_alias=True, exclude={"enabled"})


# How the check reaches the scheduler: a kr8s port-forward to the scheduler Service, or its address as given.
CONNECT_MODES: tuple[str, ...] = get_args(VerifyConfig.model_fields["connect"].annotation)
PORT_FORWARD, DIRECT = CONNECT_MODES
ALL, GATE = get_args(VerificationQuery.model_fields["stages"].annotation)


class VerificationResult(BaseModel):
    """What a successful verification saw: the CLI's `--json` report; a gate's has no rows, versions or sample."""

    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True, validate_by_alias=True)

    rows: int | None = None
    partitions: int | None = None
    workers: int
    workers_by_group: dict[str, int]
    elapsed_seconds: float
    versions: dict[str, str] = Field(default_factory=dict)
    sample: list[dict[str, Any]] = Field(default_factory=list)
    stage_seconds: dict[str, float]
    warnings: list[str]
    scheduler: str
    catalog_path: str | None = None

    def to_outputs(self) -> dict[str, Any]:
        """The output properties of `LsdbVerification`."""
        return self.model_dump(by_alias=True, exclude=SHOWN_ONLY)


# Shown by the CLI, not outputs: the address it connected to (a port-forward's local port) and the catalog (an input).
SHOWN_ONLY = {"scheduler", "catalog_path"}
# The output properties of LsdbVerification (and of the program's `verification` export), in field order.
OUTPUT_KEYS: tuple[str, ...] = tuple(
    to_camel(name) for name in VerificationResult.model_fields if name not in SHOWN_ONLY
)


class ClusterRef(NamedTuple):
    """The Kubernetes objects the check is about: named in messages and by the port-forward."""

    namespace: str | None = None
    cluster_name: str | None = None
    kube_context: str | None = None


# The operator names each worker `<DaskWorkerGroup>-worker-<10 hex>` (build_worker_deployment_spec), and the
# program passes that name to `dask worker --name`: the group is the name without the suffix.
WORKER_NAME = re.compile(r"^(?P<group>.+)-worker-[0-9a-f]{10}$")
UNGROUPED = "(not an operator worker)"


def worker_group_of(worker_name: object) -> str:
    """The DaskWorkerGroup of a worker, from its name."""
    m = WORKER_NAME.match(str(worker_name))
    return m.group("group") if m else UNGROUPED


def parse_storage_options(items: Iterable[str]) -> dict[str, Any]:
    """`--storage-option KEY=VALUE` flags: `["anon=false", "u=http://h"]` -> `{"anon": False, "u": "http://h"}` (a
    value is JSON where it parses, else the string)."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"storage option {item!r} is not KEY=VALUE (e.g. anon=false)")
        try:
            options[key.strip()] = json.loads(value)
        except ValueError:
            options[key.strip()] = value
    return options
