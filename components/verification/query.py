"""What a verification asks, and the vocabulary every entry point shares (check, CLI, resource, stack config).

Standard library only: the stack config model and the Pulumi program import this module during `pulumi up`.
Each rule and each list is written once here:

* the bounds of a query (`RA_RANGE`, `DEC_RANGE`, `MIN_RADIUS_ARCSEC`, `MIN_ROWS`, `MIN_WORKERS`, `MIN_TIMEOUT`)
  and `query_problems`, which applies them;
* `CONNECT_MODES`, how the check reaches the scheduler;
* `OUTPUT_KEYS`, the output properties of the `LsdbVerification` resource (and of the program's export).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

# Bounds of a cone query, shared with the stack config (verify.*). Open or closed as the names' comments say.
RA_RANGE: tuple[float, float] = (0.0, 360.0)  # degrees, RA_RANGE[0] <= ra < RA_RANGE[1]
DEC_RANGE: tuple[float, float] = (-90.0, 90.0)  # degrees, DEC_RANGE[0] <= dec <= DEC_RANGE[1]
MIN_RADIUS_ARCSEC = 0.0  # radius_arcsec > MIN_RADIUS_ARCSEC (exclusive)
MIN_ROWS = 0  # min_rows >= MIN_ROWS
MIN_WORKERS = 1  # min_workers >= MIN_WORKERS
MIN_TIMEOUT = 0.0  # timeout > MIN_TIMEOUT (exclusive), seconds

# How the check reaches the scheduler: a kr8s port-forward to the scheduler Service, or its address as given.
PORT_FORWARD = "portForward"
DIRECT = "direct"
CONNECT_MODES: tuple[str, ...] = (PORT_FORWARD, DIRECT)
DEFAULT_CONNECT = PORT_FORWARD

# The output properties of LsdbVerification, in the order the resource declares them.
OUTPUT_KEYS: tuple[str, ...] = (
    "rows",
    "partitions",
    "workers",
    "workersByGroup",
    "elapsedSeconds",
    "versions",
    "sample",
    "stageSeconds",
    "warnings",
)


def output_field(key: str) -> str:
    """The `VerificationResult` field behind an output key: `elapsedSeconds` -> `elapsed_seconds`."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


# The operator names each worker `<DaskWorkerGroup>-worker-<10 hex>` (build_worker_deployment_spec), and the
# program passes that name to `dask worker --name`: the group is the name without the suffix.
WORKER_NAME = re.compile(r"^(?P<group>.+)-worker-[0-9a-f]{10}$")
UNGROUPED = "(not an operator worker)"


def worker_group_of(worker_name: object) -> str:
    """The DaskWorkerGroup a worker belongs to, from its name; UNGROUPED for a worker the operator did not name."""
    m = WORKER_NAME.match(str(worker_name))
    return m.group("group") if m else UNGROUPED


def parse_storage_options(items: Iterable[str]) -> dict[str, Any]:
    """`["anon=false", "endpoint_url=http://h:9000"]` -> `{"anon": False, "endpoint_url": "http://h:9000"}`.

    The `--storage-option KEY=VALUE` flags of the verification and sizing commands: a value is parsed as JSON
    where it parses (`false`, `3`, `{"region_name": "x"}`), else kept as the string. Raises ValueError naming
    the item without `=`.
    """
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


def storage_option_flags(options: Mapping[str, Any]) -> list[str]:
    """The inverse of `parse_storage_options`: `--storage-option KEY=<JSON>` pairs, in key order."""
    flags: list[str] = []
    for key in sorted(options):
        flags += ["--storage-option", f"{key}={json.dumps(options[key])}"]
    return flags


DEFAULT_TIMEOUT = 900.0  # connect (600, a cold image pull) plus the query stages
DEFAULT_SAMPLE_ROWS = 5


def connect_problem(connect: object) -> str | None:
    """Why `connect` is not a connect mode, or None. One message for the resource, the provider and the CLI."""
    if connect in CONNECT_MODES:
        return None
    return f"connect must be one of {', '.join(repr(m) for m in CONNECT_MODES)}, not {connect!r}"


def _finite(value: object) -> float | None:
    """`value` as a float when it is a finite number (not a bool), else None."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def query_problems(
    *, ra: object, dec: object, radius_arcsec: object, min_rows: object, min_workers: object, timeout: object
) -> list[str]:
    """Every bound the query breaks, worded for the check's `config` stage (empty when the query is valid).

    Arguments are `object`: the CLI and the provider pass what they were given, and a non-number is a problem
    to report, not a crash.
    """
    problems: list[str] = []
    ra_, dec_, radius_, timeout_ = _finite(ra), _finite(dec), _finite(radius_arcsec), _finite(timeout)
    if ra_ is None or not RA_RANGE[0] <= ra_ < RA_RANGE[1]:
        problems.append(f"ra={ra!r} is outside [{RA_RANGE[0]:g}, {RA_RANGE[1]:g}) degrees")
    if dec_ is None or not DEC_RANGE[0] <= dec_ <= DEC_RANGE[1]:
        problems.append(f"dec={dec!r} is outside [{DEC_RANGE[0]:g}, {DEC_RANGE[1]:g}] degrees")
    if radius_ is None or not radius_ > MIN_RADIUS_ARCSEC:
        problems.append(f"radius_arcsec={radius_arcsec!r} must be positive (arcseconds)")
    if not (isinstance(min_rows, int) and min_rows >= MIN_ROWS):
        problems.append(f"min_rows={min_rows!r} must not be negative")
    if not (isinstance(min_workers, int) and min_workers >= MIN_WORKERS):
        problems.append(f"min_workers={min_workers!r} must be at least {MIN_WORKERS}")
    if timeout_ is None or not timeout_ > MIN_TIMEOUT:
        problems.append(f"timeout={timeout!r} must be positive")
    return problems


@dataclasses.dataclass(frozen=True)
class ClusterRef:
    """Which Kubernetes objects the check is about. Only names them in messages (and for the port-forward)."""

    namespace: str | None = None
    cluster_name: str | None = None
    kube_context: str | None = None


@dataclasses.dataclass(frozen=True)
class VerificationQuery:
    """One cone query and what it must show: the parameters of `verify_catalog_query`, validated there.

    `catalog_path` is the path as the workers see it (it is opened on a worker), or an object-store/HTTP URL;
    `storage_options` go to `lsdb.open_catalog` (e.g. `{"anon": False}`: use the pods' credentials or identity,
    where hats would open s3:// anonymously). `stage_timeouts` lowers the
    per-stage ceilings (`DEFAULT_STAGE_TIMEOUTS` in check.py); every stage also ends with the overall `timeout`.
    """

    catalog_path: str
    ra: float
    dec: float
    radius_arcsec: float
    columns: tuple[str, ...] | None = None
    min_rows: int = 1
    min_workers: int = 1
    timeout: float = DEFAULT_TIMEOUT
    stage_timeouts: Mapping[str, float] | None = None
    sample_rows: int = DEFAULT_SAMPLE_ROWS
    storage_options: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        # A list given by a caller becomes a tuple: the query stays hashable-ish and cannot change under the check.
        if self.columns is not None and not isinstance(self.columns, tuple):
            object.__setattr__(self, "columns", tuple(self.columns))

    def problems(self) -> list[str]:
        """What is wrong with this query (the config stage's failure), empty when nothing is."""
        problems = [] if str(self.catalog_path or "").strip() else ["the catalog path is empty"]
        return problems + query_problems(
            ra=self.ra,
            dec=self.dec,
            radius_arcsec=self.radius_arcsec,
            min_rows=self.min_rows,
            min_workers=self.min_workers,
            timeout=self.timeout,
        )
