"""Cluster sizing read from the catalog itself: `python -m tools.sizing CATALOG [--storage-option k=v ...]`.

Reads metadata only, never a row: the HATS properties and partition list (`hats.read_hats(..., read_moc=False)`),
then the parquet footers: `dataset/_metadata` (one file holding every partition's row groups) when the catalog has
one, else each partition file's footer (a few KiB from its end). From those it prints the partitions, the bytes on
disk (compressed column data), the largest partition (bytes on disk, bytes uncompressed, rows) and a
recommendation:

* worker memory = (WORKER_BASE_BYTES + threads x MEMORY_FACTOR x largest partition's uncompressed bytes)
  / DASK_PAUSE_FRACTION, rounded up to a MEMORY_STEP and at least MIN_WORKER_MEMORY. MEMORY_FACTOR is the peak
  memory of loading a partition per uncompressed byte its footer declares, measured by `bench/sizing.py` (see
  there and docs/operations.md); WORKER_BASE_BYTES is an idle worker with lsdb imported, measured the same way. Dividing
  by Dask's pause fraction keeps the worker below the point where it stops taking tasks;
* threads per worker: 2, or 1 when a partition alone needs more than MAX_BYTES_PER_THREAD (the guide: 1-2);
* workers and autoscaler maximum: the `cluster.size` preset whose worker memory fits, capped at the number of
  workers the partitions can keep busy (ceil(partitions / threads)): more would idle ("workers idle: too few
  partitions" in the guide's troubleshooting).

It ends with the `pulumi config set --path ...` commands; `--write Pulumi.<stack>.yaml` applies them to the stack
file with ruamel.yaml (round trip: comments, order and quoting of everything else kept).

Works on local paths, `s3://` (give `--storage-option anon=false` and credentials in the environment or as
options, as the pods do), `gs://`, `abfs://` and `http(s)://`. Offline tool: never imported by `pulumi up`.
"""

from __future__ import annotations

import argparse
import importlib
import math
import re
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.cluster_config import SIZE_PRESETS
from components.section import quantity_bytes
from components.verification.query import parse_storage_options

# Measured by bench/sizing.py (figures in docs/operations.md): loading one partition with lsdb grows a peak RSS by
# about 22 MiB plus 2.20 bytes per uncompressed byte in the partition's footer (2.81x overall for a 36 MiB partition).
# MEMORY_FACTOR rounds the marginal 2.2 up; the fixed part per load is inside WORKER_BASE_BYTES (an idle process
# with lsdb, pandas and pyarrow imported measured 313 MiB RSS; 400 MiB leaves room for two concurrent loads).
MEMORY_FACTOR = 3.0
WORKER_BASE_BYTES = 400 * 2**20
DASK_PAUSE_FRACTION = 0.8  # distributed.worker.memory.pause: above it a worker takes no new tasks
MEMORY_STEP = 2**29  # recommend memory in steps of 0.5 GiB
MIN_WORKER_MEMORY = 2**30  # the config's floor (cluster.workers.memory >= 1Gi)
MAX_BYTES_PER_THREAD = 2 * 2**30  # above this per partition, run one partition at a time (threads: 1)
FOOTER_THREADS = 16  # concurrent footer reads when there is no _metadata (object stores are latency bound)
FOOTER_GUESS = 16 * 2**10  # bytes read from a file's end to find its footer (length and magic in the last 8)
PARQUET_MAGIC = b"PAR1"
PIXEL_PATH = re.compile(r"Norder=(\d+)/Dir=\d+/Npix=(\d+)")
PROJECT_KEY = "lsdb-k8s"


@dataclass(frozen=True)
class PartitionSize:
    order: int
    pixel: int
    rows: int = 0
    bytes_on_disk: int = 0  # compressed column chunks, as the footer declares them
    bytes_uncompressed: int = 0  # uncompressed row groups, as the footer declares them

    def add(self, rows: int, on_disk: int, uncompressed: int) -> PartitionSize:
        return PartitionSize(
            self.order,
            self.pixel,
            self.rows + rows,
            self.bytes_on_disk + on_disk,
            self.bytes_uncompressed + uncompressed,
        )


@dataclass
class CatalogSizes:
    path: str
    name: str
    partitions: list[PartitionSize]
    source: str  # where the sizes came from: "_metadata" or "footers"

    @property
    def total_bytes_on_disk(self) -> int:
        return sum(p.bytes_on_disk for p in self.partitions)

    @property
    def total_rows(self) -> int:
        return sum(p.rows for p in self.partitions)

    @property
    def largest(self) -> PartitionSize:
        return max(self.partitions, key=lambda p: (p.bytes_uncompressed, p.rows))


@dataclass
class Recommendation:
    size: str
    threads: int
    memory: str
    memory_bytes: int
    replicas: int
    minimum: int
    maximum: int
    busy_workers: int
    notes: list[str] = field(default_factory=list)

    def settings(self) -> dict[str, Any]:
        """`--path` key (under lsdb-k8s:) -> value, in the order the commands are printed."""
        return {
            "cluster.size": self.size,
            "cluster.workers.threads": self.threads,
            "cluster.workers.memory": self.memory,
            "cluster.workers.replicas": self.replicas,
            "cluster.autoscaler.minimum": self.minimum,
            "cluster.autoscaler.maximum": self.maximum,
        }


# --- reading ------------------------------------------------------------------------------------------------


def _main_catalog(path: str, storage_options: Mapping[str, Any]) -> Any:
    hats: Any = importlib.import_module("hats")  # Any: hats re-exports its API implicitly

    catalog = hats.read_hats(path, read_moc=False, storage_options=dict(storage_options) or None)
    catalog = getattr(catalog, "main_catalog", catalog)  # a collection: its primary table
    if not hasattr(catalog, "get_healpix_pixels"):
        raise ValueError(f"{path} is a HATS {type(catalog).__name__}, not a partitioned catalog")
    return catalog


def _footer_sizes(metadata: Any) -> list[tuple[str | None, int, int, int]]:
    """(file path, rows, compressed bytes, uncompressed bytes) of each row group of a parquet FileMetaData."""
    out = []
    for i in range(metadata.num_row_groups):
        group = metadata.row_group(i)
        compressed = sum(group.column(c).total_compressed_size for c in range(group.num_columns))
        file_path = group.column(0).file_path if group.num_columns else None
        out.append((file_path or None, group.num_rows, compressed, group.total_byte_size))
    return out


def read_footer(upath: Any) -> Any:
    """The FileMetaData of one parquet file from its last bytes only: one ranged read of FOOTER_GUESS bytes (a
    second one when the footer is longer), never the data pages. `upath`: a UPath (its fsspec filesystem)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    fs, path = upath.fs, upath.path
    size = int(fs.size(path))
    tail = bytes(fs.cat_file(path, start=max(0, size - FOOTER_GUESS), end=size))
    if tail[-4:] != PARQUET_MAGIC:
        raise ValueError(f"{upath} is not a parquet file (no PAR1 at its end)")
    length = int.from_bytes(tail[-8:-4], "little")
    if length + 8 > len(tail):
        tail = bytes(fs.cat_file(path, start=size - length - 8, end=size))
    # A parquet file whose data is only its footer: pyarrow parses the footer and never follows the offsets.
    return pq.read_metadata(pa.BufferReader(PARQUET_MAGIC + tail[-(length + 8) :]))


def read_sizes(path: str, storage_options: Mapping[str, Any] | None = None) -> CatalogSizes:
    """Partition sizes from the catalog's metadata (properties, partition info, parquet footers); no rows read."""
    from hats.io import paths

    file_io: Any = importlib.import_module("hats.io.file_io")  # Any: implicit re-exports
    catalog = _main_catalog(path, storage_options or {})
    base = catalog.catalog_base_dir
    pixels = catalog.get_healpix_pixels()
    sizes = {(int(p.order), int(p.pixel)): PartitionSize(int(p.order), int(p.pixel)) for p in pixels}
    source = "_metadata"
    try:
        metadata = file_io.read_parquet_metadata(paths.get_parquet_metadata_pointer(base))
    except (FileNotFoundError, OSError):
        metadata = None
    if metadata is not None:
        for file_path, rows, compressed, uncompressed in _footer_sizes(metadata):
            match = PIXEL_PATH.search(file_path or "")
            key = (int(match.group(1)), int(match.group(2))) if match else None
            if key in sizes:
                sizes[key] = sizes[key].add(rows, compressed, uncompressed)
    if metadata is None or not any(s.rows for s in sizes.values()):
        source = "footers"

        def footer(key: tuple[int, int]) -> tuple[tuple[int, int], list[tuple[str | None, int, int, int]]]:
            pixel = next(p for p in pixels if (p.order, p.pixel) == key)
            return key, _footer_sizes(read_footer(paths.pixel_catalog_file(base, pixel)))

        with ThreadPoolExecutor(FOOTER_THREADS) as pool:
            for key, groups in pool.map(footer, list(sizes)):
                sizes[key] = PartitionSize(*key)
                for _file, rows, compressed, uncompressed in groups:
                    sizes[key] = sizes[key].add(rows, compressed, uncompressed)
    name = str(catalog.catalog_info.catalog_name)
    return CatalogSizes(str(path), name, sorted(sizes.values(), key=lambda s: (s.order, s.pixel)), source)


# --- recommending -------------------------------------------------------------------------------------------


def _gi(n_bytes: int) -> str:
    """A Kubernetes quantity for a multiple of MEMORY_STEP: 1Gi, 1536Mi, 2Gi ..."""
    mib = n_bytes // 2**20
    return f"{mib // 1024}Gi" if mib % 1024 == 0 else f"{mib}Mi"


def recommend(sizes: CatalogSizes) -> Recommendation:
    if not sizes.partitions:
        raise ValueError(f"{sizes.path} lists no partitions")
    per_partition = math.ceil(MEMORY_FACTOR * sizes.largest.bytes_uncompressed)
    threads = 2 if per_partition <= MAX_BYTES_PER_THREAD else 1
    need = (WORKER_BASE_BYTES + threads * per_partition) / DASK_PAUSE_FRACTION
    memory = max(MIN_WORKER_MEMORY, math.ceil(need / MEMORY_STEP) * MEMORY_STEP)
    busy = max(1, math.ceil(len(sizes.partitions) / threads))
    fitting = [n for n, p in SIZE_PRESETS.items() if quantity_bytes(p["memory"]) >= memory]
    size = fitting[0] if fitting else list(SIZE_PRESETS)[-1]
    preset = SIZE_PRESETS[size]
    notes = []
    if not fitting:
        notes.append(f"the largest preset's {preset['memory']} is less than needed: memory is set explicitly")
    if preset["maximum"] > busy:
        notes.append(
            f"{len(sizes.partitions)} partition(s) keep at most {busy} worker(s) of {threads} thread(s) busy:"
            f" the {size} preset's {preset['maximum']} are capped"
        )
    maximum = min(preset["maximum"], busy)
    return Recommendation(
        size=size,
        threads=threads,
        memory=_gi(memory),
        memory_bytes=memory,
        replicas=min(preset["replicas"], maximum),
        minimum=min(preset["minimum"], maximum),
        maximum=maximum,
        busy_workers=busy,
        notes=notes,
    )


def config_commands(rec: Recommendation, stack: str | None = None) -> list[str]:
    where = f" --stack {stack}" if stack else ""
    return [f"pulumi config set{where} --path {key} {value}" for key, value in rec.settings().items()]


def _human(n_bytes: int) -> str:
    value = float(n_bytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n_bytes} B"  # pragma: no cover


def report(sizes: CatalogSizes, rec: Recommendation, stack: str | None = None) -> str:
    big = sizes.largest
    lines = [
        f"catalog      {sizes.name} at {sizes.path} (sizes from {sizes.source}; no rows read)",
        f"partitions   {len(sizes.partitions)}",
        f"rows         {sizes.total_rows}",
        f"on disk      {_human(sizes.total_bytes_on_disk)} ({sizes.total_bytes_on_disk} bytes)",
        f"largest      Norder={big.order} Npix={big.pixel}: {_human(big.bytes_on_disk)} on disk,"
        f" {_human(big.bytes_uncompressed)} uncompressed, {big.rows} rows",
        "recommended",
        f"  cluster.size             {rec.size}",
        f"  cluster.workers.threads  {rec.threads}",
        f"  cluster.workers.memory   {rec.memory}  (= ({_human(WORKER_BASE_BYTES)} + {rec.threads} x"
        f" {MEMORY_FACTOR:g} x {_human(big.bytes_uncompressed)}) / {DASK_PAUSE_FRACTION:g}, rounded up)",
        f"  workers                  {rec.replicas} (autoscaler {rec.minimum}..{rec.maximum};"
        f" the partitions keep at most {rec.busy_workers} busy)",
    ]
    lines += [f"  note: {n}" for n in rec.notes]
    lines += ["", "apply with:", *(f"  {c}" for c in config_commands(rec, stack))]
    return "\n".join(lines)


# --- the stack file -----------------------------------------------------------------------------------------


def write_stack_file(path: Path, settings: Mapping[str, Any]) -> None:
    """Set each `--path` key under `lsdb-k8s:<top>` in a Pulumi.<stack>.yaml, keeping comments and order."""
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap

    yaml = YAML()  # round trip
    yaml.preserve_quotes = True
    doc = yaml.load(path.read_text()) if path.is_file() else None
    if doc is None:
        doc = CommentedMap()
    config = doc.setdefault("config", CommentedMap())
    for dotted, value in settings.items():
        top, *rest = dotted.split(".")
        node = config.setdefault(f"{PROJECT_KEY}:{top}", CommentedMap())
        for part in rest[:-1]:
            node = node.setdefault(part, CommentedMap())
        node[rest[-1]] = value
    with path.open("w") as out:
        yaml.dump(doc, out)


# --- command line -------------------------------------------------------------------------------------------


def _stack_of(path: Path) -> str | None:
    match = re.fullmatch(r"Pulumi\.(.+)\.yaml", path.name)
    return match.group(1) if match else None


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tools.sizing",
        description="Recommend worker memory, threads and counts from a HATS catalog's metadata (no rows read).",
    )
    p.add_argument("catalog", help="catalog path or URL (local, s3://, gs://, abfs://, http(s)://)")
    p.add_argument(
        "--storage-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="fsspec storage option, repeatable; VALUE is JSON where it parses (anon=false)",
    )
    p.add_argument("--stack", help="stack name for the printed commands (default: from --write)")
    p.add_argument("--write", type=Path, metavar="Pulumi.<stack>.yaml", help="apply the settings to this stack file")
    args = p.parse_args(argv)
    try:
        options = parse_storage_options(args.storage_option)
    except ValueError as exc:
        p.error(str(exc))
    try:
        sizes = read_sizes(args.catalog, options)
        rec = recommend(sizes)
    except Exception as exc:  # a CLI: say what failed, no traceback
        print(
            f"error: could not read the catalog metadata at {args.catalog}: {type(exc).__name__}: {exc}",
            file=sys.stderr,
        )
        return 1
    stack = args.stack or (_stack_of(args.write) if args.write else None)
    print(report(sizes, rec, stack))
    if args.write:
        write_stack_file(args.write, rec.settings())
        print(f"\nwrote {len(rec.settings())} settings to {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
