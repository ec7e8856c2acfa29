"""Benchmark of `python -m tools.sizing`: metadata only, and is its memory recommendation safe?

    .venv/bin/python bench/sizing.py [--workdir DIR]

1. Cost: on a catalog of 3,072 partitions (HEALPix order 4), the tool vs `lsdb.open_catalog` on the same catalog,
   each in a fresh process: wall time, peak RSS growth (sampled), bytes read (/proc/self/io rchar: every read
   syscall, pyarrow's included); printed as ratios. The tool must read no partition data (it reads `_metadata`).
2. MEMORY_FACTOR: in a fresh process per partition, peak RSS growth while loading one partition with lsdb, per
   uncompressed byte its footer declares, for partitions of several sizes; and the RSS of an idle worker process
   with lsdb imported (WORKER_BASE_BYTES).
3. Headroom: a real `dask worker` (with its nanny, which kills it at 95% of --memory-limit) with exactly the
   recommended memory and threads computes the largest partition of a skewed catalog once per thread, at the same
   time; its peak RSS is sampled. Reported: recommended / peak, and whether the worker survived.

Figures are printed, never asserted on timing; the numbers in docs/operations.md come from one run of this script.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Runs in a fresh interpreter: measure one operation's time, peak RSS growth, bytes read and partition files opened.
PROBE = r"""
import json, os, sys, threading, time
import psutil
sys.path.insert(0, sys.argv[1])
def rchar():
    return int(next(l.split()[1] for l in open("/proc/self/io") if l.startswith("rchar")))
what, target = sys.argv[2], sys.argv[3]
import lsdb, hats, pyarrow, pandas  # imports are not the operation
from tools import sizing
me = psutil.Process()
base_rss = peak = me.memory_info().rss
done = threading.Event()
def sample():
    global peak
    while not done.is_set():
        peak = max(peak, me.memory_info().rss)
        time.sleep(0.002)
sampler = threading.Thread(target=sample, daemon=True)
sampler.start()
base_read, t0 = rchar(), time.perf_counter()
if what == "sizing":
    sizing.recommend(sizing.read_sizes(target))
elif what == "open_catalog":
    lsdb.open_catalog(target)
elif what == "load":
    order, pixel = map(int, sys.argv[4:6])
    df = lsdb.open_catalog(target).get_partition(order, pixel).compute()
seconds, read = time.perf_counter() - t0, rchar() - base_read
done.set(); sampler.join()
peak = max(peak, me.memory_info().rss)
print(json.dumps({"seconds": seconds, "rss_growth": peak - base_rss, "rss": base_rss, "read": read}))
"""


def probe(what: str, target: str, *extra: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(ROOT), what, target, *extra], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def catalog_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def cost(workdir: Path) -> None:
    from scripts.sized_catalog import write_sized_catalog

    path = workdir / "wide"
    if not path.exists():
        write_sized_catalog(path, dict.fromkeys(range(3072), 300), order=4, name="wide")
    tool, lsdb_open = probe("sizing", str(path)), probe("open_catalog", str(path))
    total = catalog_bytes(path)
    print(f"1. cost on 3072 partitions ({total / 2**20:.1f} MiB on disk)")
    for name, m in (("tools.sizing", tool), ("lsdb.open_catalog", lsdb_open)):
        print(
            f"   {name:18s} {m['seconds']:.2f} s, peak RSS +{m['rss_growth'] / 2**20:.1f} MiB,"
            f" read {m['read'] / 2**20:.2f} MiB ({m['read'] / total:.1%} of the catalog)"
        )
    print(
        f"   ratio sizing/open_catalog: time {tool['seconds'] / lsdb_open['seconds']:.2f},"
        f" peak RSS growth {tool['rss_growth'] / max(lsdb_open['rss_growth'], 1):.2f},"
        f" bytes read {tool['read'] / max(lsdb_open['read'], 1):.2f}"
    )


def memory_factor(workdir: Path) -> float:
    from scripts.sized_catalog import write_sized_catalog
    from tools import sizing

    path = workdir / "graded"
    if not path.exists():
        write_sized_catalog(path, {0: 20_000, 1: 100_000, 2: 400_000}, order=1, name="graded")
    sizes = sizing.read_sizes(str(path))
    idle = probe("idle", str(path))
    print(f"2. memory per uncompressed byte (idle process with lsdb imported: {idle['rss'] / 2**20:.0f} MiB RSS)")
    loads = []
    for part in sizes.partitions:
        m = probe("load", str(path), str(part.order), str(part.pixel))
        ratio = m["rss_growth"] / part.bytes_uncompressed
        loads.append((part.bytes_uncompressed, m["rss_growth"]))
        print(
            f"   {part.rows:7d} rows, {part.bytes_uncompressed / 2**20:6.1f} MiB uncompressed:"
            f" peak RSS +{m['rss_growth'] / 2**20:6.1f} MiB = {ratio:.2f} x"
        )
    # Growth = fixed + factor x bytes: the slope between the two largest partitions is the per-byte factor.
    (small, grow_small), (large, grow_large) = sorted(loads)[-2:]
    slope = (grow_large - grow_small) / (large - small)
    fixed = grow_large - slope * large
    print(
        f"   fit: +{fixed / 2**20:.0f} MiB per load + {slope:.2f} x uncompressed; tools/sizing.py uses"
        f" MEMORY_FACTOR = {sizing.MEMORY_FACTOR:g} and WORKER_BASE_BYTES = {sizing.WORKER_BASE_BYTES / 2**20:.0f} MiB"
    )
    return slope


LOAD_ON_WORKER = """
def load(path, order, pixel):
    # Inside a task: read the partition right here (synchronous), as the worker does for a task of a real query.
    import dask
    import lsdb
    with dask.config.set(scheduler="synchronous"):
        return len(lsdb.open_catalog(path).get_partition(order, pixel).compute(progress_bar=False))
"""


def headroom(workdir: Path) -> None:
    import psutil
    from distributed import Client

    from scripts.sized_catalog import write_sized_catalog
    from tools import sizing
    from tools.local_dask import LocalDaskCluster

    path = workdir / "skewed"
    if not path.exists():
        rows = dict.fromkeys(range(20), 50_000)
        rows[30] = 500_000  # ten times the median
        write_sized_catalog(path, rows, order=1, name="skewed")
    sizes = sizing.read_sizes(str(path))
    rec = sizing.recommend(sizes)
    big = sizes.largest
    with LocalDaskCluster(
        workdir / "cluster", n_workers=1, nthreads=rec.threads, memory_limit=str(rec.memory_bytes), nanny=True
    ) as cluster:
        nanny = psutil.Process(cluster.workers[0].pid)
        peak = 0
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                for child in nanny.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        peak = max(peak, child.memory_info().rss)
                time.sleep(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        namespace: dict[str, object] = {}
        exec(LOAD_ON_WORKER, namespace)
        with Client(cluster.address, set_as_default=False) as client:
            worker_pids_before = {c.pid for c in nanny.children()}
            futures = [
                client.submit(namespace["load"], str(path), big.order, big.pixel, pure=False)
                for _ in range(rec.threads)
            ]
            counts = client.gather(futures)
            survived = {c.pid for c in nanny.children()} == worker_pids_before
        stop.set()
        sampler.join()
    print(
        f"3. skewed catalog: largest partition {big.rows} rows, {big.bytes_uncompressed / 2**20:.1f} MiB uncompressed"
    )
    print(f"   recommended {rec.memory} ({rec.memory_bytes / 2**20:.0f} MiB), threads {rec.threads}")
    print(
        f"   worker peak RSS computing it {rec.threads}x at once: {peak / 2**20:.0f} MiB;"
        f" headroom recommended/peak = {rec.memory_bytes / peak:.2f}; rows {counts}; worker survived: {survived}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None, help="keep the generated catalogs here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lsdb-sizing-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        cost(workdir)
        memory_factor(workdir)
        headroom(workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
