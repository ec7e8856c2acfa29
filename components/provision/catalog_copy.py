"""Copy a HATS catalog or collection from a URL onto a local directory (the stack's claim).

The copy Job's engine, `python /opt/lsdb-provision/catalog_copy.py --source URL --dest DIR`, prints one JSON line,
the summary. Standard
library and the lock's packages only: the program mounts this text from a ConfigMap named by its hash
(components/catalogs.py), so the image stays the lock's. What it reads, compares, skips, writes: docs/storage.md."""

from __future__ import annotations

import argparse
import concurrent.futures
import io
import json
import os
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

STATE_DIR = ".lsdb-provision"
JOURNAL = "copied.jsonl"
PART_SUFFIX = ".lsdb-provision-part"
COLLECTION_PROPERTIES = "collection.properties"
PROPERTIES = ("hats.properties", "properties")  # hats reads the first that exists
PARTITION_INFO = "partition_info.csv"
METADATA = "dataset/_metadata"
OPTIONAL_FILES = (
    "dataset/_common_metadata",
    "point_map.fits",
    "skymap.fits",
    "per_partition_statistics.parquet",
    "dataset/data_thumbnail.parquet",
)
CHECKSUM_KEYS = ("ETag", "etag", "md5Hash")  # s3fs / http, adlfs, gcsfs
DEFAULT_THREADS = 8


class ProvisionError(Exception):
    """The copy cannot be made as the source describes it; the message names the file and the source."""


class Source:
    """The source catalog behind fsspec, paths relative to its root: whole-file reads and file info, errors naming
    file and source."""

    def __init__(self, url: str, storage_options: dict[str, Any]) -> None:
        import fsspec
        from fsspec.implementations.dirfs import DirFileSystem

        self.url = url.rstrip("/")
        fs, root = fsspec.core.url_to_fs(self.url, **storage_options)
        self.fs = DirFileSystem(root.rstrip("/"), fs)
        # Object stores list a prefix in one request; a plain HTTP server may have no listing at all.
        self.listable = not fs.protocol or "http" not in fs.protocol
        self.listings: dict[str, dict[str, dict[str, Any]]] = {}
        self.lock = threading.Lock()

    def where(self, rel: str) -> str:
        return f"{self.url}/{rel}"

    def fail(self, rel: str, exc: Exception) -> ProvisionError:
        """The error naming the file and the source (the drivers raise many kinds: ClientError, aiohttp's, ...)."""
        if isinstance(exc, FileNotFoundError):
            return ProvisionError(f"{rel}: not found at {self.where(rel)} (source {self.url})")
        return ProvisionError(f"{rel}: cannot read {self.where(rel)} (source {self.url}): {exc}")

    def read(self, rel: str) -> bytes | None:
        """The file's content, None when it does not exist."""
        try:
            data: bytes = self.fs.cat_file(rel)
            return data
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise self.fail(rel, exc) from exc

    def info(self, rel: str) -> dict[str, Any]:
        """Size and checksum of one file: from its directory's listing where the store has listings (one request
        per partition directory, not per file), else from the file itself (HTTP: a HEAD request)."""
        directory = rel.rsplit("/", 1)[0] if "/" in rel else ""
        try:
            if self.listable:
                with self.lock:
                    if directory not in self.listings:
                        entries = self.fs.ls(directory, detail=True)
                        self.listings[directory] = {e["name"]: e for e in entries if e.get("type") == "file"}
                if rel in self.listings[directory]:
                    return self.listings[directory][rel]
            info: dict[str, Any] = self.fs.info(rel)
            return info
        except Exception as exc:
            raise self.fail(rel, exc) from exc


def _properties(cls: Any, data: bytes, where: str) -> Any:
    """Parse a properties file exactly as hats does (jproperties, then hats' pydantic model)."""
    from jproperties import Properties  # type: ignore[import-untyped]

    p = Properties()
    try:
        p.load(io.BytesIO(data), "utf-8")
        return cls(**p.properties)
    except Exception as exc:
        raise ProvisionError(f"{where}: not a valid HATS properties file: {exc}") from exc


def _metadata_partitions(meta: bytes, where: str) -> dict[str, int]:
    """Partition file (relative to the catalog) -> rows, from the `_metadata` row groups' file paths."""
    import pyarrow.parquet as pq

    try:
        footer = pq.read_metadata(io.BytesIO(meta))
    except Exception as exc:
        raise ProvisionError(f"{METADATA}: corrupt at {where}: {exc}") from exc
    partitions: dict[str, int] = {}
    for i in range(footer.num_row_groups):
        group = footer.row_group(i)
        rel = "dataset/" + group.column(0).file_path.lstrip("/")
        partitions[rel] = partitions.get(rel, 0) + group.num_rows
    return partitions


def _partition_info_files(info: bytes, npix_suffix: str, where: str) -> list[str]:
    """Partition files (relative to the catalog) of the pixels `partition_info.csv` lists, named by hats."""
    from hats.catalog.partition_info import PartitionInfo
    from hats.io.paths import pixel_catalog_file

    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / PARTITION_INFO
        local.write_bytes(info)
        try:
            pixels = PartitionInfo.read_from_csv(local).get_healpix_pixels()
        except Exception as exc:
            raise ProvisionError(f"{PARTITION_INFO}: corrupt at {where}: {exc}") from exc
    if npix_suffix == "/":  # a directory per pixel: its files are the ones _metadata lists
        return []
    base = "/catalog"  # hats builds paths below a base; only the relative part matters
    return [pixel_catalog_file(base, p, npix_suffix=npix_suffix).relative_to(base).as_posix() for p in pixels]


def _plan_catalog(
    source: Source, prefix: str, read: Callable[[str], bytes | None], partitions: dict[str, int | None]
) -> None:
    """One catalog's metadata files (`read` keeps them) and partition files (-> rows), paths below `prefix`."""
    from hats.catalog.dataset.table_properties import TableProperties

    def at(rel: str) -> str:
        return f"{prefix}/{rel}" if prefix else rel

    # lsdb writes both; copy each one there is
    found = [(name, data) for name in PROPERTIES if (data := read(at(name))) is not None]
    if not found:
        raise ProvisionError(
            f"{at(PROPERTIES[0])}: not found at {source.where(at(PROPERTIES[0]))} "
            f"(nor {PROPERTIES[1]}; source {source.url}): not a HATS catalog"
        )
    properties = _properties(TableProperties, found[0][1], source.where(at(found[0][0])))
    meta, info = read(at(METADATA)), read(at(PARTITION_INFO))
    if meta is None and info is None:
        raise ProvisionError(
            f"{at(PARTITION_INFO)}: not found, nor {METADATA}, at {source.where(prefix)} "
            f"(source {source.url}): hats needs one of them to know the partitions"
        )
    if meta is not None:
        for rel, rows in _metadata_partitions(meta, source.where(at(METADATA))).items():
            partitions[at(rel)] = rows
    if info is not None:
        for rel in _partition_info_files(info, properties.npix_suffix, source.where(at(PARTITION_INFO))):
            partitions.setdefault(at(rel), None)
    for rel in [*OPTIONAL_FILES, *(f"skymap.{k}.fits" for k in (properties.skymap_alt_orders or []))]:
        read(at(rel))


def plan(source: Source, summary: dict[str, Any]) -> tuple[dict[str, bytes], dict[str, int | None]]:
    """The catalog's, or the collection's members': (metadata file -> content, written last; partition file -> rows
    from _metadata, None where it does not list it), paths relative to the destination."""
    from hats.catalog.dataset.collection_properties import CollectionProperties

    metadata: dict[str, bytes] = {}
    partitions: dict[str, int | None] = {}

    def read(rel: str) -> bytes | None:
        data = source.read(rel)
        if data is not None:
            metadata[rel] = data
            summary["metadataBytesRead"] += len(data)
        return data

    members = [""]
    if (collection := read(COLLECTION_PROPERTIES)) is not None:
        props = _properties(CollectionProperties, collection, source.where(COLLECTION_PROPERTIES))
        members = [props.hats_primary_table_url, *(props.all_margins or []), *(props.all_indexes or {}).values()]
        for member in members:
            if "://" in member or member.startswith("/") or ".." in member.split("/"):
                raise ProvisionError(
                    f"{COLLECTION_PROPERTIES}: member {member!r} is outside the collection (source {source.url}); "
                    "only members stored below the collection can be provisioned"
                )
    for member in members:
        _plan_catalog(source, member.strip("/"), read, partitions)
    return metadata, partitions


class Journal:
    """What was copied: relative path -> (size, checksum), appended one JSON line per file as each finishes."""

    def __init__(self, dest: Path) -> None:
        self.path = dest / STATE_DIR / JOURNAL
        self.entries: dict[str, tuple[int, str | None]] = {}
        for line in self.path.read_text().splitlines() if self.path.is_file() else []:
            try:
                entry = json.loads(line)
                self.entries[entry["path"]] = (int(entry["size"]), entry.get("checksum"))
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by an interruption
        self.lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def line(rel: str, size: int, checksum: str | None) -> str:
        return json.dumps({"path": rel, "size": size, "checksum": checksum}) + "\n"

    def record(self, rel: str, size: int, checksum: str | None) -> None:
        with self.lock:
            self.entries[rel] = (size, checksum)
            with open(self.path, "a") as out:
                out.write(self.line(rel, size, checksum))  # no fsync per file: one sync before the metadata goes in

    def compact(self, keep: dict[str, Any]) -> None:
        self.entries = {rel: self.entries[rel] for rel in sorted(keep) if rel in self.entries}
        _write_atomic(self.path, "".join(self.line(r, s, c) for r, (s, c) in self.entries.items()).encode())


def _write_atomic(final: Path, data: bytes) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(final.name + PART_SUFFIX)
    with open(tmp, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, final)


def copy_partition(source: Source, dest: Path, rel: str, rows: int | None, journal: Journal) -> int | None:
    """Copy one partition file unless the local one already matches (size and recorded checksum: None), then check
    its size and its footer's rows; the bytes written."""
    import pyarrow.parquet as pq

    info = source.info(rel)
    size, digest = info.get("size"), next((str(info[k]).strip('"') for k in CHECKSUM_KEYS if info.get(k)), None)
    final = dest / rel
    if final.is_file() and final.stat().st_size == size and journal.entries.get(rel, (None, None))[1] == digest:
        return None
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(final.name + PART_SUFFIX)
    where = f"{rel} ({source.where(rel)}, source {source.url})"
    try:
        # get_file streams the whole object (no range requests, which plain HTTP servers may not serve)
        source.fs.get_file(rel, str(tmp))
        written = tmp.stat().st_size
        if size is not None and written != size:
            raise ProvisionError(f"{rel}: read {written} bytes, the source says {size} ({source.where(rel)})")
        try:
            found = pq.read_metadata(tmp).num_rows
        except Exception as exc:
            raise ProvisionError(f"{where}: corrupt or not a parquet file: {exc}") from exc
        if rows is not None and found != rows:
            raise ProvisionError(f"{where}: has {found} rows, the catalog's _metadata says {rows}")
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, ProvisionError):
            raise
        raise source.fail(rel, exc) from exc
    os.replace(tmp, final)
    journal.record(rel, written, digest)
    return written


def _remove_stale(dest: Path, wanted: set[str], summary: dict[str, Any]) -> None:
    for path in sorted(dest.rglob("*"), reverse=True):
        rel = path.relative_to(dest).as_posix()
        if rel == STATE_DIR or rel.startswith(STATE_DIR + "/"):
            continue
        if path.is_file() and (rel not in wanted or path.name.endswith(PART_SUFFIX)):
            path.unlink()
            if not path.name.endswith(PART_SUFFIX):
                summary["removed"].append(rel)
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    summary["removed"].sort()


def provision(
    source_url: str, dest: Path, storage_options: dict[str, Any] | None = None, threads: int = DEFAULT_THREADS
) -> dict[str, Any]:
    """Make `dest` a copy of the catalog or collection at `source_url`; return what was done."""
    from hats.io.validation import is_valid_catalog, is_valid_collection

    source = Source(source_url, storage_options or {})
    zero = dict.fromkeys(("files", "filesCopied", "bytesCopied", "metadataBytesRead"), 0)
    summary: dict[str, Any] = {"source": source.url, "dest": str(dest), **zero, "removed": []}  # the JSON line printed
    metadata, partitions = plan(source, summary)
    dest.mkdir(parents=True, exist_ok=True)
    journal = Journal(dest)
    wanted = set(partitions) | set(metadata)
    _remove_stale(dest, wanted, summary)  # stale partial files, and files the source no longer has
    summary["files"] = len(wanted)
    copied: list[int] = []  # the size of each file written
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        futures = [pool.submit(copy_partition, source, dest, rel, rows, journal) for rel, rows in partitions.items()]
        try:
            copied += [n for future in concurrent.futures.as_completed(futures) if (n := future.result()) is not None]
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
    if copied:  # the partition files and the journal are on disk before any metadata says so
        os.sync()
    # Each catalog's properties file last: a directory holds them only once all its files are there.
    for rel in sorted(metadata, key=lambda r: (r.rsplit("/", 1)[-1] in (*PROPERTIES, COLLECTION_PROPERTIES), r)):
        if not ((dest / rel).is_file() and (dest / rel).read_bytes() == metadata[rel]):
            _write_atomic(dest / rel, metadata[rel])
            copied.append(len(metadata[rel]))
    summary |= {"filesCopied": len(copied), "bytesCopied": sum(copied)}
    journal.compact(partitions)
    collection = COLLECTION_PROPERTIES in metadata
    valid = is_valid_collection(dest, strict=True) if collection else is_valid_catalog(dest, strict=True)
    if not valid:  # hats' log says what is wrong
        raise ProvisionError(f"{dest}: hats' validation rejected the copy (see the log above)")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--source", required=True, help="URL of the HATS catalog or collection")
    parser.add_argument("--dest", required=True, type=Path, help="local directory to copy it to")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="parallel file copies")
    parser.add_argument("--storage-options", default="{}", help='fsspec options as JSON, e.g. {"anon": true}')
    args = parser.parse_args(argv)
    try:
        summary = provision(args.source, args.dest, json.loads(args.storage_options), args.threads)
    except ProvisionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
