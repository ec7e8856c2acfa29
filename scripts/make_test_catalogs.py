"""Generate the provisioning tests' fixture catalogs with hats-import: `python scripts/make_test_catalogs.py [OUT]`.

Writes, under OUT (default tests/fixtures/catalogs/), two LSDB-format (HATS) catalogs made by hats-import from the
same deterministic rows as scripts/sample_catalog.py (3,000 rows, a third of them in the dense field around
ra=180 dec=0 that the tests' cone search reads):
- `plain/`: a lone catalog;
- `collection/`: a collection whose primary catalog has a 60-arcsecond margin and an index on `id`.

hats-import is not in the project's environment (nor in the image's lock): it runs from its own virtualenv, with
the lock's versions of what they share (hats, pandas, pyarrow ...) except dask: on Python 3.11 hats-import's
index builder refuses any dask but 2025.3.x (`IndexArguments.check_versions`, a dask-expr regression):

    python3 -m venv .build/hats-import-venv
    .build/hats-import-venv/bin/pip install hats-import==0.11.1 -c docker/requirements.lock
    .build/hats-import-venv/bin/pip install "dask[dataframe]==2025.3.0" distributed==2025.3.0
    .build/hats-import-venv/bin/python scripts/make_test_catalogs.py

The output is committed (a few hundred KB); re-run this only to change the fixtures.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "tests" / "fixtures" / "catalogs"
ROWS = 3_000
FIELD_FRACTION = 1 / 3
PIXEL_THRESHOLD = 400  # rows per partition at most: several partitions even for 3,000 rows
MARGIN_ARCSEC = 60.0


def make_catalogs(out: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from dask.distributed import Client
    from hats_import.catalog.arguments import ImportArguments
    from hats_import.collection.arguments import CollectionArguments
    from hats_import.pipeline import pipeline_with_client

    from scripts.sample_catalog import sample_dataframe

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        rows = tmp / "rows.parquet"
        sample_dataframe(ROWS, field_fraction=FIELD_FRACTION).to_parquet(rows, index=False)
        common = {
            "input_file_list": [str(rows)],
            "file_reader": "parquet",
            "ra_column": "ra",
            "dec_column": "dec",
            "pixel_threshold": PIXEL_THRESHOLD,
            "highest_healpix_order": 4,
        }
        staging = tmp / "out"
        with Client(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as client:
            plain = ImportArguments(
                output_artifact_name="plain", output_path=str(staging), tmp_dir=str(tmp), progress_bar=False, **common
            )
            pipeline_with_client(plain, client)
            collection = (
                CollectionArguments(
                    output_artifact_name="collection", output_path=str(staging), tmp_dir=str(tmp), progress_bar=False
                )
                .catalog(output_artifact_name="main", **common)
                .add_margin(margin_threshold=MARGIN_ARCSEC, is_default=True)
                .add_index(indexing_column="id", include_healpix_29=False)
            )
            pipeline_with_client(collection, client)
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(staging, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("out", nargs="?", type=Path, default=DEFAULT_OUT, help="output directory (replaced)")
    args = parser.parse_args(argv)
    try:
        import hats_import  # noqa: F401
    except ImportError:
        print("error: hats-import is not installed here; run this with .build/hats-import-venv (see --help)")
        return 2
    make_catalogs(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
