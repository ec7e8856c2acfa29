"""What an upgrade costs the users of the stable endpoint: `python bench/upgrade.py [--interval 0.05]`.

Both runs use the dev stack as `python -m tools.render` renders it (v1) and after a config change of the worker
pod spec (v2: `cluster.workers.memory` 1Gi -> 2Gi, a new hash), run as local processes by the pod emulator
(tools/pod_emulator.py, the pinned operator's builders), with the stable Service `lsdb-dev-scheduler`
emulated by a `ServiceAlias` (tools/service_alias.py: new connections go to the Ready pod the selector
matches). An `EndpointProbe` opens a new Dask comm to the stable endpoint every `--interval` seconds (TCP connect,
handshake, identity; one attempt, 2 s bound) from before the change until 2 s after it completed.

1. Blue/green (what the program does): v2 starts beside v1, the verification provider's `create` checks v2 through
   its own Service, the stable Service takes v2's selector, v1 stops.
2. Delete-and-recreate (what an in-place replace of the same cluster would do): v1 stops, then v2 starts under
   v1's name, so the unchanged stable Service selects it once its scheduler is Ready.

Prints, for each: probes, failed probes, seconds of unavailability (longest span between two successful probes
with failures in between) and the slowest successful probe; then the ratios (recreate / blue-green). Measured in
one run on this machine; no assertion on the figures. Exits non-zero only if something fails to run.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools.service_alias import ServiceAlias  # noqa: E402
from tools.upgrade_flip import EndpointProbe, Rendered, render_stack, scheduler_id, start_cluster  # noqa: E402

STACK = "dev"
V2_CHANGE = {"workers": {"memory": "2Gi"}}
AFTER_SECONDS = 2.0


def figures(probe: EndpointProbe) -> dict[str, Any]:
    ok = [p.ended - p.started for p in probe.probes if p.ok]
    return {
        "probes": len(probe.probes),
        "failed": probe.failed(),
        "unavailable_s": probe.unavailable_seconds(),
        "slowest_ok_s": max(ok) if ok else float("nan"),
        "window_s": probe.probes[-1].ended - probe.probes[0].started if probe.probes else 0.0,
        "errors": sorted({(e or "").split(":", 1)[0] for e in probe.errors()}),
    }


def blue_green(v1: Rendered, v2: Rendered, root: Path, claim: Path, interval: float) -> dict[str, Any]:
    from components.verification.resource import new_provider

    blue = start_cluster(v1.daskcluster, root / "bg-v1", claim, timeout=180)
    green = None
    try:
        with ServiceAlias(v1.stable_service, [blue]) as stable:
            address = stable.map_address(v1.exports["schedulerAddress"])
            with EndpointProbe(address, interval=interval) as probe:
                time.sleep(AFTER_SECONDS)
                green = start_cluster(v2.daskcluster, root / "bg-v2", claim, timeout=180)
                stable.clusters.append(green)
                props = {
                    **v2.props,
                    "connect": "direct",
                    "schedulerAddress": green.map_address(v2.props["schedulerAddress"]),
                    "catalogPath": green.map_path(v2.props["catalogPath"]),
                }
                outs = new_provider().create(props).outs
                stable.apply(v2.stable_service)
                v2_id = scheduler_id(address)
                blue.stop()
                time.sleep(AFTER_SECONDS)
            result = figures(probe)
            result["verified_rows"] = outs["rows"]
            result["served_v2_at_end"] = probe.served_by()[-1:] == [v2_id]
            return result
    finally:
        blue.stop()
        if green is not None:
            green.stop()


def delete_and_recreate(v1: Rendered, v2: Rendered, root: Path, claim: Path, interval: float) -> dict[str, Any]:
    same_name = copy.deepcopy(v2.daskcluster)
    same_name["metadata"]["name"] = v1.name
    same_name["spec"]["scheduler"]["service"]["selector"] = dict(v1.stable_service["spec"]["selector"])
    old = start_cluster(v1.daskcluster, root / "rc-v1", claim, timeout=180)
    new = None
    try:
        with ServiceAlias(v1.stable_service, [old]) as stable:
            address = stable.map_address(v1.exports["schedulerAddress"])
            with EndpointProbe(address, interval=interval) as probe:
                time.sleep(AFTER_SECONDS)
                old.stop()
                new = start_cluster(same_name, root / "rc-v2", claim, timeout=180)
                stable.clusters.append(new)
                deadline = time.monotonic() + 60
                while not (probe.probes and probe.probes[-1].ok) and time.monotonic() < deadline:
                    time.sleep(0.05)
                time.sleep(AFTER_SECONDS)
            return figures(probe)
    finally:
        old.stop()
        if new is not None:
            new.stop()


def ratio(a: float, b: float) -> str:
    if b == 0:
        return "inf (blue/green: none)" if a > 0 else "1 (both none)"
    return f"{a / b:.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between probes (default 0.05)")
    parser.add_argument("--rows", type=int, default=50_000, help="rows of the sample catalog (default 50000)")
    args = parser.parse_args()

    from scripts.sample_catalog import write_sample_catalog

    with tempfile.TemporaryDirectory(prefix="lsdb-bench-upgrade-") as tmp:
        root = Path(tmp)
        v1 = render_stack(STACK, root / "render-v1")
        v2 = render_stack(STACK, root / "render-v2", cluster=V2_CHANGE)
        claim = root / "pvc"
        # The workers mount the claim at the storage mountPath; the catalog sits where verify.catalogPath says.
        mount = v1.daskcluster["spec"]["worker"]["spec"]["containers"][0]["volumeMounts"][0]["mountPath"]
        write_sample_catalog(str(claim / Path(v1.props["catalogPath"]).relative_to(mount)), args.rows, seed=42)
        print(f"v1 {v1.name} -> v2 {v2.name} ({V2_CHANGE}); probe every {args.interval:g} s", flush=True)
        bg = blue_green(v1, v2, root, claim, args.interval)
        rc = delete_and_recreate(v1, v2, root, claim, args.interval)

    print(f"{'':24}{'probes':>8}{'failed':>8}{'unavailable s':>15}{'slowest ok s':>14}{'window s':>10}")
    for label, r in (("blue/green", bg), ("delete-and-recreate", rc)):
        print(
            f"{label:24}{r['probes']:>8}{r['failed']:>8}{r['unavailable_s']:>15.3f}{r['slowest_ok_s']:>14.3f}"
            f"{r['window_s']:>10.1f}  {', '.join(r['errors'])}"
        )
    print(f"blue/green verified v2: {bg['verified_rows']} rows; stable endpoint on v2 at the end: "
          f"{bg['served_v2_at_end']}")  # fmt: skip
    print(f"ratio recreate / blue-green: failed connections {ratio(rc['failed'], bg['failed'])}, "
          f"unavailable seconds {ratio(rc['unavailable_s'], bg['unavailable_s'])}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
