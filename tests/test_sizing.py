"""`python -m tools.sizing`: partition sizes from the catalog's metadata, and the recommendation drawn from them.

Catalogs are generated with known partition counts and row counts (scripts/sized_catalog.py), one of them skewed
(the largest partition ten times the median). Sizes must match the files, no partition file may be opened when
`_metadata` exists, and the footers fallback must agree with it. Local and HTTP here; S3 in
tests/test_e2e_object_store.py (it needs the moto server).
"""

from __future__ import annotations

import math
import shutil
import statistics
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.cluster_config import SIZE_PRESETS
from components.config import parse_stack_config
from components.lock import PROJECT_DIR
from scripts.sized_catalog import write_sized_catalog
from tools import sizing
from tools.object_servers import http_file_server

SKEWED = {**dict.fromkeys(range(20), 1_000), 30: 10_000}


@pytest.fixture(scope="module")
def skewed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sized_catalog(tmp_path_factory.mktemp("skewed") / "cat", SKEWED, order=1, name="skewed")


@pytest.fixture(scope="module")
def uniform(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sized_catalog(tmp_path_factory.mktemp("uniform") / "cat", dict.fromkeys(range(3), 2_000), order=0)


def partition_files(catalog: Path) -> dict[tuple[int, int], Path]:
    found = {}
    for f in catalog.rglob("Npix=*.parquet"):
        match = sizing.PIXEL_PATH.search(f.as_posix())
        assert match
        found[(int(match.group(1)), int(match.group(2)))] = f
    return found


def bytes_read(fn: Any) -> tuple[Any, int]:
    """`fn()` and the bytes this process read meanwhile (/proc/self/io rchar: every read syscall, all threads)."""
    import hats  # noqa: F401 - imports are not part of the measurement
    import pyarrow.parquet  # noqa: F401

    def rchar() -> int:
        return int(next(line.split()[1] for line in Path("/proc/self/io").read_text().splitlines() if "rchar" in line))

    before = rchar()
    value = fn()
    return value, rchar() - before


def data_bytes(catalog: Path) -> int:
    return sum(f.stat().st_size for f in partition_files(catalog).values())


def test_skewed_catalog_sizes_match_the_files_and_no_partition_is_opened(skewed: Path) -> None:
    sizes, read = bytes_read(lambda: sizing.read_sizes(str(skewed)))
    metadata = sum(f.stat().st_size for f in skewed.rglob("*") if f.is_file() and "Npix=" not in f.name)
    assert read <= metadata + 64 * 1024, "with _metadata, no partition file may be read"
    assert read < data_bytes(skewed) / 4
    assert sizes.source == "_metadata"
    assert len(sizes.partitions) == len(SKEWED)
    assert {(p.order, p.pixel): p.rows for p in sizes.partitions} == {(1, k): v for k, v in SKEWED.items()}
    assert sizes.total_rows == sum(SKEWED.values())
    files = partition_files(skewed)
    for part in sizes.partitions:
        on_disk = files[(part.order, part.pixel)].stat().st_size
        assert 0.5 * on_disk < part.bytes_on_disk <= on_disk  # column data; the file adds footer and header
        assert part.bytes_uncompressed >= part.bytes_on_disk * 0.9  # random floats barely compress
    big = sizes.largest
    assert (big.order, big.pixel, big.rows) == (1, 30, 10_000)
    median = statistics.median(p.bytes_on_disk for p in sizes.partitions)
    assert 8 * median <= big.bytes_on_disk <= 12 * median


def test_footers_fallback_agrees_with_metadata(skewed: Path, tmp_path: Path) -> None:
    copy = tmp_path / "cat"
    shutil.copytree(skewed, copy)
    for f in copy.rglob("_metadata"):
        f.unlink()
    with_metadata = sizing.read_sizes(str(skewed))
    footers, read = bytes_read(lambda: sizing.read_sizes(str(copy)))
    assert footers.source == "footers"
    assert footers.partitions == with_metadata.partitions
    assert read < data_bytes(copy) / 4, "only the footers of the partition files may be read"


def test_recommendation_follows_the_largest_partition(skewed: Path) -> None:
    sizes = sizing.read_sizes(str(skewed))
    rec = sizing.recommend(sizes)
    need = (sizing.WORKER_BASE_BYTES + rec.threads * sizing.MEMORY_FACTOR * sizes.largest.bytes_uncompressed) / (
        sizing.DASK_PAUSE_FRACTION
    )
    assert (rec.memory_bytes >= need and rec.memory_bytes - need < sizing.MEMORY_STEP) or rec.memory_bytes == 2**30
    assert rec.threads == 2 and rec.size == "small"
    assert rec.maximum == min(SIZE_PRESETS["small"]["maximum"], math.ceil(len(SKEWED) / 2))


def test_few_partitions_cap_the_workers(uniform: Path) -> None:
    sizes = sizing.read_sizes(str(uniform))
    assert len(sizes.partitions) == 3 and sizes.total_rows == 6_000
    rec = sizing.recommend(sizes)
    assert rec.busy_workers == 2  # 3 partitions, 2 threads each
    assert rec.maximum == 2 and rec.replicas <= 2 and rec.minimum <= 2
    assert any("keep at most 2 worker(s)" in n for n in rec.notes)


@pytest.mark.parametrize(
    ("largest_uncompressed", "threads", "size", "memory"),
    [
        (10 * 2**20, 2, "small", "1Gi"),  # (400Mi + 2 x 3 x 10Mi) / 0.8 = 575Mi -> the 1Gi floor
        (300 * 2**20, 2, "small", "3Gi"),  # (400 + 1800) / 0.8 = 2750Mi -> 3Gi
        (1024 * 2**20, 1, "large", "4608Mi"),  # 3Gi per partition: one thread; (400 + 3072) / 0.8 = 4340Mi
        (6 * 2**30, 1, "xlarge", "23Gi"),  # beyond every preset: memory explicit, noted
    ],
)
def test_recommendation_table(largest_uncompressed: int, threads: int, size: str, memory: str) -> None:
    parts = [sizing.PartitionSize(3, i, 1000, 1000, 1000) for i in range(99)]
    parts.append(sizing.PartitionSize(3, 99, 10**6, largest_uncompressed // 2, largest_uncompressed))
    rec = sizing.recommend(sizing.CatalogSizes("x", "x", parts, "_metadata"))
    assert (rec.threads, rec.size, rec.memory) == (threads, size, memory)
    assert rec.maximum == min(SIZE_PRESETS[size]["maximum"], math.ceil(100 / threads))
    if size == "xlarge" and memory == "23Gi":
        assert any("less than needed" in n for n in rec.notes)
    # Every recommendation is a valid stack config.
    cluster: dict[str, Any] = {"name": "c"}
    for key, value in rec.settings().items():
        node = cluster
        *parents, leaf = key.split(".")[1:]
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    cfg = parse_stack_config({"cluster": cluster, "image": {"repository": "r/x"}, "verify": {"enabled": False}})
    assert cfg.cluster.workers.memory == memory


def test_cli_prints_the_figures_and_the_commands(skewed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert sizing.main([str(skewed), "--stack", "prod"]) == 0
    out = capsys.readouterr().out
    assert "partitions   21" in out
    assert "Norder=1 Npix=30" in out and "10000 rows" in out
    commands = [line.strip() for line in out.splitlines() if line.strip().startswith("pulumi config set")]
    assert commands[0] == "pulumi config set --stack prod --path cluster.size small"
    assert len(commands) == 6 and all(" --path cluster." in c for c in commands)


def test_write_keeps_comments_and_order(skewed: Path, tmp_path: Path) -> None:
    stack_file = tmp_path / "Pulumi.dev.yaml"
    original = (PROJECT_DIR / "Pulumi.dev.yaml").read_text()
    stack_file.write_text(original)
    assert sizing.main([str(skewed), "--write", str(stack_file)]) == 0
    written = stack_file.read_text()
    comments = [line for line in original.splitlines() if line.lstrip().startswith("#")]
    assert comments and all(c in written.splitlines() for c in comments)
    before, after = yaml.safe_load(original)["config"], yaml.safe_load(written)["config"]
    assert list(before) == list(after)  # top-level order kept
    kept = [k for k in after["lsdb-k8s:cluster"] if k in before["lsdb-k8s:cluster"]]
    assert kept == list(before["lsdb-k8s:cluster"])  # existing keys keep their order; new ones are added
    rec = sizing.recommend(sizing.read_sizes(str(skewed)))
    assert after["lsdb-k8s:cluster"]["workers"]["memory"] == rec.memory
    assert after["lsdb-k8s:cluster"]["autoscaler"]["maximum"] == rec.maximum
    for key in ("lsdb-k8s:storage", "lsdb-k8s:verify", "lsdb-k8s:image"):
        assert before[key] == after[key]
    raw = {k.split(":", 1)[1]: v for k, v in after.items()}
    parse_stack_config(raw)  # still a valid dev stack


def test_http_catalog_gives_the_same_sizes(skewed: Path) -> None:
    local = sizing.read_sizes(str(skewed))
    with http_file_server(skewed.parent) as base:
        remote = sizing.read_sizes(f"{base}/{skewed.name}")
    assert remote.partitions == local.partitions


def test_unreadable_catalog_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert sizing.main([str(tmp_path / "missing")]) == 1
    assert "could not read the catalog metadata" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        sizing.main([str(tmp_path), "--storage-option", "anon"])
