"""Catalog provisioning end to end without a cluster: the rendered Job's command copies real HATS catalogs.

The catalogs (tests/fixtures/catalogs, made by hats-import: `plain`, and `collection` with a margin and an index)
are served by a loopback HTTP server without directory listings (a listing request is refused) and by moto's S3
server. The Job and its ConfigMap/Secret are rendered by components/catalogs.py and the container command run as
rendered (tests/support/job_runner.py), the claim mapped to a local folder. Then lsdb reads the copy.
"""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from components.catalogs import (
    CLAIM_VOLUME,
    CatalogConfig,
    code_config_map_manifest,
    credentials_secret_manifest,
    engine_source,
    provision_job_manifest,
)
from components.provision.catalog_copy import PART_SUFFIX, STATE_DIR
from tests.support.job_runner import run_job, start_job
from tests.test_catalogs import stack
from tools.object_servers import LOOPBACK, s3_server

FIXTURES = Path(__file__).parent / "fixtures" / "catalogs"
CONFIG = stack()  # a claim mounted at /data in namespace lsdb
IMAGE = "registry.example/lsdb@sha256:" + "0" * 64
CONE = {"ra": 180.0, "dec": 0.0, "radius_arcsec": 3600.0}  # the dense field of the fixture rows
NAME = "sky"


class NoListingHandler(http.server.SimpleHTTPRequestHandler):
    """Static files only: a directory request is refused (as on most object-store websites and CDNs).

    `stall` (a server attribute): a path whose GET sends headers and half the body, then waits for `release`."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        local = Path(self.translate_path(self.path))
        if local.is_dir():
            self.send_error(403, "no directory listing")
            return
        stall = getattr(self.server, "stall", None)
        if stall and self.path.endswith(stall) and local.is_file():
            data = local.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.server.release.wait(120)  # type: ignore[attr-defined]
            return
        super().do_GET()


class HttpSource:
    def __init__(self, root: Path) -> None:
        handler = functools.partial(NoListingHandler, directory=str(root))
        self.server = http.server.ThreadingHTTPServer((LOOPBACK, 0), handler)
        self.server.stall = None  # type: ignore[attr-defined]
        self.server.release = threading.Event()  # type: ignore[attr-defined]
        self.url = f"http://{LOOPBACK}:{self.server.server_address[1]}"
        # Polled every 50 ms (not serve_forever's 0.5 s): close() waits for the loop to see the shutdown.
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.release.set()  # type: ignore[attr-defined]
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def source_dir(tmp_path: Path) -> Path:
    """A private copy of the fixtures, which a test may damage."""
    return Path(shutil.copytree(FIXTURES, tmp_path / "source"))


@pytest.fixture
def http_source(source_dir: Path) -> Iterator[HttpSource]:
    server = HttpSource(source_dir)
    try:
        yield server
    finally:
        server.close()


def render(catalog: CatalogConfig, secrets: dict[str, str] | None = None) -> dict[str, Any]:
    source = engine_source()
    job = provision_job_manifest(NAME, catalog, CONFIG, None, source, IMAGE)
    secret = credentials_secret_manifest(NAME, catalog, "lsdb", secrets or {})
    return {
        "job": job,
        "config_maps": [code_config_map_manifest(NAME, "lsdb", source)],
        "secrets": [secret] if secret else [],
    }


def provision(catalog: CatalogConfig, claim: Path, scratch: Path, secrets: dict[str, str] | None = None) -> Any:
    rendered = render(catalog, secrets)
    scratch.mkdir(parents=True, exist_ok=True)
    return run_job(volumes={CLAIM_VOLUME: claim}, scratch=scratch, **rendered)


def summary(proc: Any) -> dict[str, Any]:
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def cone(path: str, storage_options: dict[str, Any] | None = None) -> Any:
    import dask
    import lsdb

    with dask.config.set(scheduler="synchronous"):
        catalog = lsdb.open_catalog(path, search_filter=lsdb.ConeSearch(**CONE), storage_options=storage_options)
        df = catalog.compute(progress_bar=False)
    return df.sort_values("id").reset_index(drop=True)


def assert_same_rows(copy: Any, source: Any) -> None:
    import pandas as pd

    assert len(source) > 100, "the cone should hold a few hundred rows"
    pd.testing.assert_frame_equal(copy, source)


def source_files(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_size for p in root.rglob("*") if p.is_file()}


def copied_files(dest: Path) -> dict[str, int]:
    return {k: v for k, v in source_files(dest).items() if not k.startswith(STATE_DIR + "/")}


@pytest.mark.parametrize("which", ["plain", "collection"])
def test_http_copy_reads_back_the_same_rows_and_a_rerun_moves_nothing(
    which: str, http_source: HttpSource, source_dir: Path, tmp_path: Path
) -> None:
    claim = tmp_path / "claim"
    url = f"{http_source.url}/{which}"
    first = summary(provision(CatalogConfig(source=url), claim, tmp_path / "run1"))
    dest = claim / "catalogs" / NAME
    assert copied_files(dest) == source_files(source_dir / which)  # every file, same sizes, nothing else
    assert first["bytesCopied"] == sum(source_files(source_dir / which).values())
    assert_same_rows(cone(str(dest)), cone(url))
    if which == "collection":  # lsdb opened the collection: its default margin came along
        import lsdb

        assert lsdb.open_catalog(str(dest)).margin is not None
    second = summary(provision(CatalogConfig(source=url), claim, tmp_path / "run2"))
    assert (second["filesCopied"], second["bytesCopied"]) == (0, 0)
    assert second["files"] == first["files"]


def test_s3_copy_with_the_rendered_secret(source_dir: Path, tmp_path: Path) -> None:
    with s3_server(tmp_path / "moto") as s3:
        url = s3.upload(source_dir / "collection", "releases/collection")
        keys = {"accessKeyId": s3.access_key_id, "secretAccessKey": s3.secret_access_key,
                "endpointUrl": s3.endpoint, "region": s3.region}  # fmt: skip
        catalog = CatalogConfig(source=url, credentials={key: {"secure": "v1:x"} for key in keys})
        claim = tmp_path / "claim"
        first = summary(provision(catalog, claim, tmp_path / "run1", secrets=keys))
        dest = claim / "catalogs" / NAME
        assert copied_files(dest) == source_files(source_dir / "collection")
        assert first["bytesCopied"] == sum(source_files(source_dir / "collection").values())
        assert_same_rows(
            cone(str(dest)), cone(url, {**s3.storage_options(), "anon": False})
        )  # hats opens s3 anonymously unless told
        second = summary(provision(catalog, claim, tmp_path / "run2", secrets=keys))
        assert (second["filesCopied"], second["bytesCopied"]) == (0, 0)
        # Without the Secret's keys the source refuses: the Job fails naming the source.
        denied = provision(catalog, tmp_path / "claim2", tmp_path / "run3", secrets=dict.fromkeys(keys, "wrong"))
        assert denied.returncode == 1 and url in denied.stderr


def test_an_interrupted_copy_resumes_with_only_the_rest(http_source: HttpSource, source_dir: Path, tmp_path: Path):
    stalled = "main/dataset/Norder=1/Dir=0/Npix=25.parquet"
    http_source.server.stall = stalled  # type: ignore[attr-defined]
    url = f"{http_source.url}/collection"
    claim, dest = tmp_path / "claim", tmp_path / "claim" / "catalogs" / NAME
    scratch = tmp_path / "run1"
    scratch.mkdir()
    rendered = render(CatalogConfig(source=url))
    proc = start_job(volumes={CLAIM_VOLUME: claim}, scratch=scratch, **rendered)
    partitions = {rel for rel in source_files(source_dir / "collection") if "/Npix=" in rel or "/part." in rel}
    others = partitions - {stalled}
    deadline = time.monotonic() + 120
    while not (all((dest / rel).is_file() for rel in others) and (dest / (stalled + PART_SUFFIX)).exists()):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the copy did not reach the stalled file"
        time.sleep(0.2)
    proc.kill()  # the Job's pod is killed mid-file
    proc.communicate()
    http_source.server.release.set()  # type: ignore[attr-defined]
    http_source.server.stall = None  # type: ignore[attr-defined]
    assert not (dest / stalled).exists(), "a half file was left under its final name"
    assert not (dest / "collection.properties").exists(), "an incomplete copy must not look like a collection"
    missing = {rel: size for rel, size in source_files(source_dir / "collection").items() if not (dest / rel).is_file()}
    assert stalled in missing and len(missing) < len(source_files(source_dir / "collection"))

    resumed = summary(provision(CatalogConfig(source=url), claim, tmp_path / "run2"))
    assert resumed["bytesCopied"] == sum(missing.values())  # only the rest: the stalled file and the metadata
    assert resumed["filesCopied"] == len(missing)
    assert copied_files(dest) == source_files(source_dir / "collection")  # and no temporary file is left
    assert_same_rows(cone(str(dest)), cone(url))


def test_a_deleted_source_file_fails_naming_it(http_source: HttpSource, source_dir: Path, tmp_path: Path) -> None:
    gone = "dataset/Norder=1/Dir=0/Npix=26.parquet"
    (source_dir / "plain" / gone).unlink()
    url = f"{http_source.url}/plain"
    proc = provision(CatalogConfig(source=url), tmp_path / "claim", tmp_path / "run")
    assert proc.returncode == 1
    assert gone in proc.stderr and f"{url}/{gone}" in proc.stderr and "not found" in proc.stderr
    assert not (tmp_path / "claim" / "catalogs" / NAME / "hats.properties").exists()


def test_a_corrupt_source_file_fails_naming_it(http_source: HttpSource, source_dir: Path, tmp_path: Path) -> None:
    bad = "dataset/Norder=0/Dir=0/Npix=4.parquet"
    path = source_dir / "plain" / bad
    path.write_bytes(b"\0" * path.stat().st_size)  # same size, not parquet
    proc = provision(CatalogConfig(source=f"{http_source.url}/plain"), tmp_path / "claim", tmp_path / "run")
    assert proc.returncode == 1
    assert bad in proc.stderr and "corrupt" in proc.stderr


def test_a_changed_source_is_copied_over_the_old_copy_in_place(
    http_source: HttpSource, source_dir: Path, tmp_path: Path
) -> None:
    """The old copy stays in `<mountPath>/catalogs/<name>` and the new Job (a new name) updates it: matching files
    kept, the rest copied, files the new source does not list removed."""
    claim, dest = tmp_path / "claim", tmp_path / "claim" / "catalogs" / NAME
    old, new = CatalogConfig(source=f"{http_source.url}/collection"), CatalogConfig(source=f"{http_source.url}/plain")
    assert render(old)["job"]["metadata"]["name"] != render(new)["job"]["metadata"]["name"]
    summary(provision(old, claim, tmp_path / "run1"))
    changed = summary(provision(new, claim, tmp_path / "run2"))
    assert copied_files(dest) == source_files(source_dir / "plain")
    assert "collection.properties" in changed["removed"] and "main_id/hats.properties" in changed["removed"]
    assert_same_rows(cone(str(dest)), cone(new.source))


def test_a_collection_member_outside_the_collection_is_refused(source_dir: Path, tmp_path: Path) -> None:
    from components.provision.catalog_copy import ProvisionError
    from components.provision.catalog_copy import provision as copy

    props = source_dir / "collection" / "collection.properties"
    props.write_text(props.read_text().replace("hats_primary_table_url=main", "hats_primary_table_url=../plain"))
    with pytest.raises(ProvisionError, match=r"member '\.\./plain' is outside the collection"):
        copy(str(source_dir / "collection"), tmp_path / "dest")
    assert not (tmp_path / "dest").exists()  # refused before anything was written
