"""What the post-deploy verification costs: `python bench/verification_overhead.py [--rows 1000000]`.

1. Query overhead, measured in one run on one cluster (a `dask scheduler` and 2 `dask worker` processes on
   127.0.0.1) over a sample HATS catalog of `--rows` rows: the whole `verify_catalog_query` (connect, workers,
   versions, open on a worker, compute, rows) against the bare query a user types from the guide
   (`Client(addr)`, `lsdb.open_catalog(path, search_filter=ConeSearch(...), columns=...)`, `.compute()`,
   close). Both start from a fresh Client each time, after a warm-up (every worker opens the catalog once and
   each query runs once: first imports are not the verification's cost); runs alternate, and the ratio is of
   the medians. Aim: <= 1.3.
2. Program evaluation under Pulumi mocks, each run in a fresh interpreter (imports included): a trivial
   program with and without one `LsdbVerification`, and the project's `__main__.py` on the dev stack with
   verify.enabled true and false.

Prints a report; exits non-zero only if something fails to run. No assertion on the figures.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CONE = {"ra": 180.0, "dec": 0.0, "radius_arcsec": 3600.0}  # the dev stack's cone, inside the sample's dense field
COLUMNS = ["id", "ra", "dec", "phot_g_mean_mag"]

TRIVIAL_PROGRAM = """
import pulumi
pulumi.export("namespace", "lsdb-bench")
"""

TRIVIAL_WITH_VERIFICATION = """
import pulumi
from components.verification.query import VerificationQuery
from components.verification.resource import LsdbVerification, VerificationArgs
pulumi.export("namespace", "lsdb-bench")
LsdbVerification("verify", VerificationArgs(
    query=VerificationQuery(
        catalog_path="/data/sample", cone={"ra": 180.0, "dec": 0.0, "radius_arcsec": 3600.0},
        columns=["id", "ra", "dec"], min_rows=1, min_workers=1, timeout_seconds=300.0, connect="portForward",
    ),
    namespace="lsdb-bench", cluster_name="lsdb-bench", kube_context=None,
    image_ref="localhost:5001/lsdb-dask@sha256:0", cluster_spec_hash="0",
))
"""

# Runs in a fresh interpreter: evaluate one program under the project's mock runtime, print seconds.
# stack: None (no config), "on" (the dev stack as is), "off" (the dev stack with verify.enabled false).
EVALUATE = """
import json, sys, time
started = time.perf_counter()
sys.path.insert(0, {root!r})
from pathlib import Path
from tools.mock_runtime import run_program
from tools.render import stack_config
config, secret_keys = stack_config("dev") if {stack!r} else ({{}}, [])
if {stack!r} == "off":
    config["lsdb-k8s:verify"] = json.dumps({{**json.loads(config["lsdb-k8s:verify"]), "enabled": False}})
run = run_program(config, secret_keys, stack="dev", program=Path({program!r}))
heavy = [m for m in ("lsdb", "dask", "distributed", "pandas") if m in sys.modules]
print(time.perf_counter() - started, len(run.resources), ",".join(heavy) or "-")
"""


def median(values: list[float]) -> float:
    return statistics.median(values)


def bare_query(address: str, path: Path) -> int:
    """The guide's manual check: connect, open the catalog on the client, compute on the cluster."""
    import lsdb
    from distributed import Client

    client = Client(address)
    try:
        catalog = lsdb.open_catalog(path, search_filter=lsdb.ConeSearch(**CONE), columns=COLUMNS)
        return len(catalog.compute(progress_bar=False))
    finally:
        client.close()


def warm_workers(address: str, path: Path) -> None:
    import lsdb
    from distributed import Client

    with Client(address, set_as_default=False) as client:
        client.run(lsdb.open_catalog, str(path), search_filter=lsdb.ConeSearch(**CONE), columns=COLUMNS)


def verification(address: str, path: Path) -> Any:
    from components.verification.check import verify_catalog_query
    from components.verification.query import VerificationQuery

    query = VerificationQuery(
        catalog_path=str(path), cone=CONE, columns=COLUMNS, min_rows=1, min_workers=2, timeout_seconds=300
    )
    return verify_catalog_query(address, query)


def query_overhead(rows: int, repeats: int, workdir: Path) -> None:
    from scripts.sample_catalog import write_sample_catalog
    from tools.local_dask import LocalDaskCluster

    path = workdir / f"sample-{rows}"
    if not (path / "collection.properties").exists():
        started = time.perf_counter()
        write_sample_catalog(path, rows, overwrite=True)
        print(f"wrote a {rows:,}-row sample catalog to {path} in {time.perf_counter() - started:.1f} s")
    with LocalDaskCluster(workdir / "dask", n_workers=2, nthreads=1, memory_limit="4GiB") as cluster:
        print(f"cluster: {cluster.address}, 2 workers x 1 thread (separate processes)")
        # Warm-up, not measured: the client and every worker open the catalog once (first imports of lsdb,
        # hats, astropy's FITS reader for the point map) and run the query once.
        warm_workers(cluster.address, path)
        want = bare_query(cluster.address, path)
        verification(cluster.address, path)
        bare_s: list[float] = []
        verify_s: list[float] = []
        stages: dict[str, list[float]] = {}
        for _ in range(repeats):
            started = time.perf_counter()
            got = bare_query(cluster.address, path)
            bare_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            result = verification(cluster.address, path)
            verify_s.append(time.perf_counter() - started)
            if got != want or result.rows != want:
                raise SystemExit(f"row counts disagree: bare {got}, verification {result.rows}, first run {want}")
            for stage, seconds in result.stage_seconds.items():
                stages.setdefault(stage, []).append(seconds)
    print(f"cone ra={CONE['ra']} dec={CONE['dec']} radius={CONE['radius_arcsec']}\": {want:,} rows, "
          f"{result.partitions} partition(s); {repeats} alternating runs each")  # fmt: skip
    print(f"  bare lsdb query    median {median(bare_s):.3f} s  (min {min(bare_s):.3f}, max {max(bare_s):.3f})")
    print(f"  whole verification median {median(verify_s):.3f} s  (min {min(verify_s):.3f}, max {max(verify_s):.3f})")
    print(f"  ratio verification / bare = {median(verify_s) / median(bare_s):.2f}  (aim <= 1.3)")
    print("  verification stages (median s): " + ", ".join(f"{k} {median(v):.3f}" for k, v in stages.items()))


def evaluate(program: Path, stack: str | None) -> tuple[float, int, str]:
    code = EVALUATE.format(root=str(ROOT), program=str(program), stack=stack)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise SystemExit(f"program evaluation failed:\n{proc.stderr[-3000:]}")
    seconds, resources, heavy = proc.stdout.split()[-3:]
    return float(seconds), int(resources), heavy


def evaluation_time(repeats: int, workdir: Path) -> None:
    programs: dict[str, tuple[str, str | None]] = {
        "trivial program": (TRIVIAL_PROGRAM, None),
        "trivial + LsdbVerification": (TRIVIAL_WITH_VERIFICATION, None),
    }
    pairs = [("trivial program", "trivial + LsdbVerification")]
    main = ROOT / "__main__.py"
    run_main = f"import runpy\nrunpy.run_path({str(main)!r}, run_name='__main__')\n"
    # The program (components/program.py) registers the verification itself when verify.enabled (dev enables it).
    programs["__main__.py, verify off (its gate)"] = (run_main, "off")
    programs["__main__.py, dev stack (verifies)"] = (run_main, "on")
    pairs.append(("__main__.py, verify off (its gate)", "__main__.py, dev stack (verifies)"))
    print(f"program evaluation under Pulumi mocks, fresh interpreter each, median of {repeats} (round-robin):")
    paths = {}
    for i, (label, (source, _)) in enumerate(programs.items()):
        paths[label] = workdir / f"program_{i}" / "__main__.py"
        paths[label].parent.mkdir(parents=True, exist_ok=True)
        paths[label].write_text(source)
    runs: dict[str, list[tuple[float, int, str]]] = {label: [] for label in programs}
    for _ in range(repeats):  # interleaved, so that load from other processes hits every program alike
        for label, (_, stack) in programs.items():
            runs[label].append(evaluate(paths[label], stack))
    medians = {}
    for label, results in runs.items():
        medians[label] = median([r[0] for r in results])
        resources, heavy = results[0][1], results[0][2]
        print(f"  {label:36s} {medians[label]:.3f} s  ({resources} resources; heavy modules imported: {heavy})")
    for without, with_ in pairs:
        if without in medians:
            print(f"  cost of the verification resource vs {without}: {medians[with_] - medians[without]:+.3f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="catalog rows (default 1000000)")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs of each query (default 7)")
    parser.add_argument("--eval-repeats", type=int, default=5, help="program evaluations of each kind (default 5)")
    parser.add_argument("--workdir", type=Path, help="keep the catalog here between runs (default: a temp dir)")
    parser.add_argument("--skip-query", action="store_true", help="only measure program evaluation")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lsdb-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        if not args.skip_query:
            query_overhead(args.rows, args.repeats, workdir)
        evaluation_time(args.eval_repeats, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
