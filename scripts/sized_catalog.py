"""HATS catalogs with partitions of chosen sizes, for the sizing tests and benchmark.

`write_sized_catalog(path, {pixel: rows, ...}, order=k)` writes one partition per listed HEALPix pixel of order `k`
holding exactly that many rows (points at the centres of random descendants of the pixel, so each lands in it), with
lsdb (`from_dataframe` with lowest = highest order, so partitions are never merged or split). A skewed catalog is a
mapping whose largest value is ten times the others; a catalog of 1,000+ partitions is order 4 (3,072 pixels).

Columns: `id`, `ra`, `dec` and `width` float64 payload columns of random values (incompressible, so bytes on disk
grow with rows as a real survey's do). lsdb and numpy are imported inside the function.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

DESCENDANT_DEPTH = 8  # points sit at centres of the pixel's descendants this many orders deeper


def write_sized_catalog(
    path: str | Path,
    rows_per_pixel: Mapping[int, int],
    *,
    order: int,
    width: int = 8,
    seed: int = 7,
    name: str = "sized",
) -> Path:
    """Write the catalog to `path` (a HATS collection directory, like scripts/sample_catalog.py) and return it."""
    import astropy.units as u
    import cdshealpix
    import dask
    import lsdb
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    pixels = np.repeat(np.array(list(rows_per_pixel), dtype=np.uint64), list(rows_per_pixel.values()))
    children = 4**DESCENDANT_DEPTH
    deep = pixels * np.uint64(children) + rng.integers(0, children, len(pixels), dtype=np.uint64)
    lon, lat = cdshealpix.nested.healpix_to_lonlat(deep, order + DESCENDANT_DEPTH)
    data: dict[str, object] = {
        "id": np.arange(len(pixels), dtype=np.int64),
        "ra": lon.to_value(u.deg),
        "dec": lat.to_value(u.deg),
    }
    for i in range(width):
        data[f"f{i}"] = rng.normal(size=len(pixels))
    biggest = max(rows_per_pixel.values())
    with dask.config.set(scheduler="synchronous"):
        catalog = lsdb.from_dataframe(
            pd.DataFrame(data),
            catalog_name=name,
            ra_column="ra",
            dec_column="dec",
            lowest_order=order,
            highest_order=order,
            partition_rows=biggest + 1,
            margin_threshold=None,
            moc_max_order=order,
            skymap_order=order,
        )
        catalog.write_catalog(Path(path), catalog_name=name, progress_bar=False)
    return Path(path)
