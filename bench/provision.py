"""Catalog provisioning throughput: `python bench/provision.py [--rows 300000] [--threads 8]`.

One sample catalog (scripts/sample_catalog.py, lsdb-written, about `rows / partition-rows` partition files) is
served by a loopback HTTP server (`python -m http.server`, its own process) and by moto's S3 server
(tools/object_servers.py). For each source, in the same run and over the same files:
1. baseline: a plain single-threaded fsspec copy (`fs.get_file` of each file the catalog's metadata lists);
2. the provisioning engine (components/provision/catalog_copy.py) with `--threads` parallel copies, including its
   metadata reads, parquet footer checks and hats' strict validation;
3. the engine again on the finished copy (what a second `pulumi up` or a resumed Job costs).

Prints seconds, MB/s and the ratios (baseline time / engine time), and the bytes the re-run moved. Loopback
servers have no network latency: the gain from parallel copies on a real object store (tens of ms per request)
is larger than here. No assertion on the figures; exits non-zero only if something fails to run.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def baseline_copy(url: str, storage_options: dict[str, Any], files: list[str], dest: Path) -> int:
    """The plain way: fsspec, one file after the other."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(url, **storage_options)
    moved = 0
    for rel in files:
        local = dest / rel
        local.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(f"{root.rstrip('/')}/{rel}", str(local))
        moved += local.stat().st_size
    return moved


@contextlib.contextmanager
def http_server_process(root: Path) -> Iterator[str]:
    """Python's static file server in its own process (in this one it would compete for the GIL with the copy)."""
    from tools.local_dask import free_port, stop_process_groups
    from tools.object_servers import LOOPBACK, _wait_http

    port = free_port()
    log = root.parent / "http.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "http.server", "--bind", LOOPBACK, "--directory", str(root), str(port)],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        _wait_http(f"http://{LOOPBACK}:{port}/", proc, log)
        yield f"http://{LOOPBACK}:{port}"
    finally:
        stop_process_groups([proc], grace=5.0)


def catalog_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def measure(name: str, url: str, options: dict[str, Any], files: list[str], threads: int, work: Path) -> dict[str, Any]:
    from components.provision.catalog_copy import provision

    start = time.perf_counter()
    baseline_bytes = baseline_copy(url, options, files, work / f"{name}-baseline")
    baseline = time.perf_counter() - start
    start = time.perf_counter()
    first = provision(url, work / f"{name}-engine", options, threads)
    engine = time.perf_counter() - start
    start = time.perf_counter()
    again = provision(url, work / f"{name}-engine", options, threads)
    rerun = time.perf_counter() - start
    return {
        "source": name, "bytes": baseline_bytes, "baseline_s": baseline, "engine_s": engine, "rerun_s": rerun,
        "engine_bytes": first["bytesCopied"], "rerun_bytes": again["bytesCopied"],
        "rerun_metadata_bytes": again["metadataBytesRead"],
    }  # fmt: skip


def report(r: dict[str, Any], threads: int) -> None:
    mb = r["bytes"] / 1e6
    print(f"{r['source']}: {mb:.1f} MB")
    print(f"  baseline (fsspec, 1 thread)   {r['baseline_s']:7.2f} s  {mb / r['baseline_s']:7.1f} MB/s")
    print(f"  engine ({threads} threads)          {r['engine_s']:7.2f} s  {mb / r['engine_s']:7.1f} MB/s")
    print(f"  ratio baseline/engine         {r['baseline_s'] / r['engine_s']:7.2f}")
    print(
        f"  re-run                        {r['rerun_s']:7.2f} s  moved {r['rerun_bytes']} bytes "
        f"(metadata read: {r['rerun_metadata_bytes']} bytes)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=300_000, help="rows of the sample catalog")
    parser.add_argument("--partition-rows", type=int, default=5_000, help="rows per partition file")
    parser.add_argument("--threads", type=int, default=8, help="the engine's parallel copies")
    args = parser.parse_args(argv)

    from scripts.sample_catalog import write_sample_catalog
    from tools.object_servers import s3_server

    with tempfile.TemporaryDirectory() as tmp_dir:
        work = Path(tmp_dir)
        catalog = write_sample_catalog(work / "source", args.rows, partition_rows=args.partition_rows)
        files = catalog_files(catalog)
        print(
            f"catalog: {args.rows} rows, {len(files)} files, {sum((catalog / f).stat().st_size for f in files)} bytes"
        )
        results = []
        with http_server_process(catalog) as url:
            results.append(measure("http", url, {}, files, args.threads, work))
        with s3_server(work / "moto") as s3:
            url = s3.upload(catalog, "bench/catalog")
            options = {**s3.storage_options(), "anon": False}
            results.append(measure("s3", url, options, files, args.threads, work))
        for r in results:
            report(r, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
