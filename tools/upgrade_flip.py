"""A blue/green upgrade of the rendered cluster, emulated: what tests/test_upgrade_e2e.py checks and
bench/upgrade.py measures, so both exercise the same steps: `render_stack` (a config change rendered),
`start_cluster` (its pods as processes on the shared catalog claim), `EndpointProbe` (new Dask comms to the stable
address at a fixed rate: which scheduler answered, or why not).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from components.lock import PROJECT_DIR
from tools.pod_emulator import EmulatedCluster
from tools.render import merge_patch, write_render
from tools.render import render_stack as render_stack_objects

VERIFICATION_TYPE = "pulumi-python:dynamic/lsdb:Verification"
CATALOG_CLAIM = "hats-catalog-pvc"


@dataclass
class Rendered:
    daskcluster: dict[str, Any]
    stable_service: dict[str, Any]  # as it lives after `pulumi up`: its selector patch applied
    summary: dict[str, Any]
    unpatched_service: dict[str, Any]  # the Service object alone (what exists before the first patch)

    @property
    def name(self) -> str:
        return str(self.daskcluster["metadata"]["name"])

    @property
    def exports(self) -> dict[str, Any]:
        return dict(self.summary["exports"])

    @property
    def props(self) -> dict[str, Any]:
        """The LsdbVerification inputs `pulumi up` would hand the provider."""
        (found,) = [r for r in self.summary["resources"] if r["type"] == VERIFICATION_TYPE]
        return dict(found["inputs"])


def render_stack(stack: str, out: Path, cluster: Mapping[str, Any] | None = None) -> Rendered:
    """What `python -m tools.render --stack <stack>` writes, with `cluster` merged into the stack's
    `lsdb-k8s:cluster` config (rendered in this process)."""
    stack_dir = out.parent / f"{out.name}-stack"
    stack_dir.mkdir(parents=True, exist_ok=True)
    (stack_dir / "Pulumi.yaml").write_text((PROJECT_DIR / "Pulumi.yaml").read_text())
    doc = yaml.safe_load((PROJECT_DIR / f"Pulumi.{stack}.yaml").read_text())
    doc["config"]["lsdb-k8s:cluster"] = merge_patch(doc["config"].get("lsdb-k8s:cluster") or {}, cluster or {})
    (stack_dir / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    with contextlib.redirect_stdout(sys.stderr):  # the program may print under mocks
        rendered = render_stack_objects(stack, stack_dir)
    write_render(rendered, out)
    docs = rendered.live_objects()  # the stable Service with its selector patch applied, as it lives after `up`
    (daskcluster,) = [d for d in docs if d["kind"] == "DaskCluster"]
    (stable,) = [d for d in docs if d["kind"] == "Service"]
    (service,) = [o for f, o in rendered.objects if o["kind"] == "Service" and f not in rendered.patch_files]
    return Rendered(daskcluster, stable, rendered.summary, service)


def start_cluster(
    manifest: Mapping[str, Any], workdir: Path, claim: Path, *, timeout: float = 120.0
) -> EmulatedCluster:
    """The DaskCluster's pods as processes on the catalog claim, its workers registered."""
    cluster = EmulatedCluster(manifest, workdir, claims={CATALOG_CLAIM: claim})
    try:
        cluster.start(timeout=timeout)
        cluster.wait_for_workers(timeout=timeout)
    except BaseException:
        cluster.stop()
        raise
    return cluster


@dataclass
class Probe:
    started: float
    ended: float
    ok: bool
    scheduler_id: str | None = None
    error: str | None = None


@dataclass
class EndpointProbe:
    """A new Dask comm to `address` every `interval` s (bounded in count and time), one attempt each within `timeout`:
    TCP connect, handshake, `identity`."""

    address: str
    interval: float = 0.05
    timeout: float = 2.0
    max_probes: int = 4000
    max_seconds: float = 300.0
    probes: list[Probe] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="endpoint-probe", daemon=True)

    def start(self) -> EndpointProbe:
        self._thread.start()
        return self

    def stop(self) -> EndpointProbe:
        self._stop.set()
        self._thread.join(self.timeout + 5)
        return self

    def __enter__(self) -> EndpointProbe:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _run(self) -> None:
        began = time.monotonic()
        next_at = began
        while not self._stop.is_set() and len(self.probes) < self.max_probes:
            if time.monotonic() - began > self.max_seconds:
                break
            self.probes.append(await self._one())
            next_at += self.interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at = max(next_at, time.monotonic() - self.interval)  # a slow probe does not cause a burst

    async def _one(self) -> Probe:
        from distributed.comm import registry
        from distributed.comm.addressing import parse_address

        started = time.monotonic()
        comm = None
        try:
            scheme, loc = parse_address(self.address)
            connector = registry.get_backend(scheme).get_connector()  # type: ignore[no-untyped-call]
            async with asyncio.timeout(self.timeout):
                comm = await connector.connect(loc, deserialize=True)  # one attempt, no retry
                await comm.write(comm.handshake_info())
                await comm.read()
                await comm.write({"op": "identity", "reply": True})
                identity = await comm.read()
            return Probe(started, time.monotonic(), True, scheduler_id=str(identity.get("id")))
        except Exception as exc:
            return Probe(started, time.monotonic(), False, error=f"{type(exc).__name__}: {exc}"[:200])
        finally:
            if comm is not None:
                comm.abort()

    # -- figures --

    def window(self, start: float = -math.inf) -> list[Probe]:
        """The probes started at or after `start`."""
        return [p for p in self.probes if p.started >= start]

    def failed(self, start: float = -math.inf) -> int:
        return sum(not p.ok for p in self.window(start))

    def unavailable_seconds(self) -> float:
        """Longest time from the end of a successful probe to the end of the next successful one, over spans that
        contain failed probes (0.0 when every probe succeeded)."""
        worst = 0.0
        last_ok: float | None = None
        failed_since = False
        probes = self.window()  # a copy: the probe thread appends
        for p in probes:
            if p.ok:
                if failed_since and last_ok is not None:
                    worst = max(worst, p.ended - last_ok)
                last_ok, failed_since = p.ended, False
            else:
                failed_since = True
        if failed_since and last_ok is not None:  # still failing at the end of the window
            worst = max(worst, probes[-1].ended - last_ok)
        return worst

    def served_by(self, start: float = -math.inf) -> list[str]:
        """The scheduler ids that answered, in order, consecutive repeats collapsed."""
        out: list[str] = []
        for p in self.window(start):
            if p.ok and p.scheduler_id and (not out or out[-1] != p.scheduler_id):
                out.append(p.scheduler_id)
        return out

    def errors(self) -> list[str]:
        return [p.error or "" for p in self.window() if not p.ok]


def scheduler_id(address: str, timeout: float = 10.0) -> str:
    """The id of the scheduler answering at `address` (one identity probe)."""
    probe = EndpointProbe(address, timeout=timeout)
    result = asyncio.run(probe._one())
    if not result.ok or result.scheduler_id is None:
        raise RuntimeError(f"no scheduler answered at {address}: {result.error}")
    return result.scheduler_id
