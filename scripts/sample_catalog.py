"""Write a small, deterministic HATS catalog with lsdb: `python scripts/sample_catalog.py OUT_DIR --rows N`.

Used to seed the dev cluster's catalog volume (`make up`) and by the tests and the benchmark, which
query it through a real Dask cluster. Most rows are spread uniformly over the sphere (a cone of radius r
degrees holds about `n_rows * (1 - cos r) / 2` of them); a fraction (`field_fraction`, default 10%) forms a
dense field, uniform inside a cap of `field_radius_deg` (default 2 degrees) around `field_center`
(default ra=180, dec=0: the cone that `Pulumi.dev.yaml` verifies), so a small cone there returns plenty of rows
even from a small catalog.

Importing this module has no side effects and imports nothing heavy: lsdb, numpy and pandas are
imported inside the functions.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_NAME = "sample"
DEFAULT_SEED = 42
DEFAULT_FIELD_CENTER = (180.0, 0.0)
DEFAULT_FIELD_RADIUS_DEG = 2.0
DEFAULT_FIELD_FRACTION = 0.1
COLUMNS = ("id", "ra", "dec", "phot_g_mean_mag", "phot_bp_rp")


def sample_dataframe(
    n_rows: int,
    seed: int = DEFAULT_SEED,
    *,
    field_center: tuple[float, float] = DEFAULT_FIELD_CENTER,
    field_radius_deg: float = DEFAULT_FIELD_RADIUS_DEG,
    field_fraction: float = DEFAULT_FIELD_FRACTION,
) -> pd.DataFrame:
    """The rows of the sample catalog: the same arguments give the same rows, byte for byte."""
    import numpy as np
    import pandas as pd

    if n_rows < 1:
        raise ValueError(f"n_rows must be at least 1, got {n_rows}")
    if not 0.0 <= field_fraction <= 1.0:
        raise ValueError(f"field_fraction must be within [0, 1], got {field_fraction}")
    if not 0.0 < field_radius_deg <= 180.0:
        raise ValueError(f"field_radius_deg must be within (0, 180], got {field_radius_deg}")
    rng = np.random.default_rng(seed)
    n_field = round(n_rows * field_fraction)
    n_sky = n_rows - n_field
    # Uniform on the sphere: sin(dec) is uniform in [-1, 1].
    sky_ra = rng.uniform(0.0, 360.0, n_sky)
    sky_dec = np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, n_sky)))
    # Uniform in a cap: cos(distance to the centre) is uniform in [cos(radius), 1].
    cos_dist = rng.uniform(np.cos(np.radians(field_radius_deg)), 1.0, n_field)
    sin_dist = np.sqrt(1.0 - cos_dist**2)
    bearing = rng.uniform(0.0, 2.0 * np.pi, n_field)
    ra0, dec0 = np.radians(field_center[0]), np.radians(field_center[1])
    centre = np.array([np.cos(dec0) * np.cos(ra0), np.cos(dec0) * np.sin(ra0), np.sin(dec0)])
    east = np.array([-np.sin(ra0), np.cos(ra0), 0.0])
    north = np.cross(centre, east)
    xyz = (
        cos_dist[:, None] * centre
        + (sin_dist * np.cos(bearing))[:, None] * east
        + (sin_dist * np.sin(bearing))[:, None] * north
    )
    field_ra = np.degrees(np.arctan2(xyz[:, 1], xyz[:, 0])) % 360.0
    field_dec = np.degrees(np.arcsin(np.clip(xyz[:, 2], -1.0, 1.0)))
    ra = np.concatenate([sky_ra, field_ra])
    dec = np.concatenate([sky_dec, field_dec])
    mag = np.clip(rng.normal(18.0, 1.5, n_rows), 8.0, 23.0)
    color = rng.normal(1.0, 0.4, n_rows)
    return pd.DataFrame(
        {
            "id": np.arange(n_rows, dtype=np.int64),
            "ra": ra,
            "dec": dec,
            "phot_g_mean_mag": mag.astype(np.float32),
            "phot_bp_rp": color.astype(np.float32),
        }
    )


def dense_moc_order(background_rows: int, rows_per_cell: int = 4) -> int:
    """Deepest HEALPix order (0..10) whose 12 * 4**order cells each expect `rows_per_cell` background rows."""
    order = 0
    while order < 10 and background_rows / (12 * 4 ** (order + 1)) >= rows_per_cell:
        order += 1
    return order


def write_sample_catalog(
    path: str | Path,
    n_rows: int,
    *,
    seed: int = DEFAULT_SEED,
    catalog_name: str = DEFAULT_NAME,
    partition_rows: int | None = None,
    highest_order: int = 7,
    field_center: tuple[float, float] = DEFAULT_FIELD_CENTER,
    field_radius_deg: float = DEFAULT_FIELD_RADIUS_DEG,
    field_fraction: float = DEFAULT_FIELD_FRACTION,
    margin_arcsec: float | None = None,
    coverage_order: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a HATS collection of `n_rows` rows (`sample_dataframe`) to `path`; return `path`.

    `partition_rows` defaults to about a sixteenth of the rows (at least 1,000), so even small catalogs have
    several partitions and a cone query touches only some of them. No margin catalog unless `margin_arcsec`
    is given (building one costs several seconds of numba compilation). The coverage map (the point map,
    from which hats derives the MOC it loads; `coverage_order`) defaults to the deepest order at which every
    cell still expects a few background rows, as for a dense survey: at lsdb's default order 8 the sparse
    random background would give a MOC with a cell per row, megabytes that every open of the catalog reads
    and ships, which no real all-sky catalog has. The write runs under dask's synchronous scheduler: it never
    starts or uses a cluster, whatever `dask.config` says.
    """
    import dask
    import lsdb

    out = Path(path)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} is not empty; pass overwrite=True (--overwrite) to replace it")
    df = sample_dataframe(
        n_rows, seed, field_center=field_center, field_radius_deg=field_radius_deg, field_fraction=field_fraction
    )
    if partition_rows is None:
        partition_rows = max(1_000, n_rows // 16)
    if coverage_order is None:
        coverage_order = dense_moc_order(n_rows - round(n_rows * field_fraction))
    with dask.config.set(scheduler="synchronous"):
        catalog = lsdb.from_dataframe(
            df,
            catalog_name=catalog_name,
            ra_column="ra",
            dec_column="dec",
            partition_rows=partition_rows,
            highest_order=highest_order,
            margin_threshold=margin_arcsec,
            moc_max_order=coverage_order,
            skymap_order=coverage_order,  # hats derives the catalog's MOC from the point map at this order
        )
        catalog.write_catalog(out, catalog_name=catalog_name, overwrite=overwrite, progress_bar=False)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="directory to write the HATS collection to")
    parser.add_argument("--rows", type=int, default=10_000, help="number of rows (default 10000)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"random seed (default {DEFAULT_SEED})")
    parser.add_argument("--name", default=DEFAULT_NAME, help=f"catalog name (default {DEFAULT_NAME})")
    parser.add_argument("--partition-rows", type=int, default=None, help="target rows per partition")
    parser.add_argument(
        "--field-fraction",
        type=float,
        default=DEFAULT_FIELD_FRACTION,
        help=f"share of rows in the dense field around ra=180 dec=0 (default {DEFAULT_FIELD_FRACTION})",
    )
    parser.add_argument("--margin-arcsec", type=float, default=None, help="also write a margin catalog")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing catalog")
    args = parser.parse_args(argv)
    try:
        out = write_sample_catalog(
            args.out_dir,
            args.rows,
            seed=args.seed,
            catalog_name=args.name,
            partition_rows=args.partition_rows,
            field_fraction=args.field_fraction,
            margin_arcsec=args.margin_arcsec,
            overwrite=args.overwrite,
        )
    except (FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.rows} rows (seed {args.seed}) to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
