"""`make scan`: checkov, an outside scanner, on everything the stacks deploy and on the image's Dockerfile.

For each stack: render it offline (`python -m tools.render`), derive the Deployments and Service the Dask
operator creates from the rendered DaskCluster with the pinned operator's own builders
(`build_scheduler_deployment_spec`, `build_worker_deployment_spec`, via tests/support/pod_emulator.py), and run
`checkov --framework kubernetes` on all of it; then `checkov --framework dockerfile` on docker/. Exit 1 when
any check fails (CI runs this, so a regression fails the build). A check that does not apply is skipped inline,
with its reason, where the object is declared (a `checkov.io/skip` annotation, a `# checkov:skip=` comment).

checkov runs from its own virtualenv (`scan/venv`, from scan/requirements.txt; `--checkov` to use another):
its dependencies would otherwise disturb the program's lock. `--project` scans another checkout (the same
operator builders are used), which is how the before/after figures in the README were measured.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT_CHECKOV = ROOT / "scan" / "venv" / "bin" / "checkov"
STACKS = ("platform", "dev", "staging", "prod")


def render(project: Path, stack: str, out: Path) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-m", "tools.render", "--stack", stack, "--out", str(out)],
        cwd=project,
        env={**os.environ, "PYTHONPATH": str(project)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        raise SystemExit(f"render of {stack} in {project} failed:\n{proc.stderr}")
    return [yaml.safe_load(p.read_text()) for p in sorted(out.glob("[0-9]*.yaml"))]


def operator_built(daskcluster: dict[str, Any]) -> list[dict[str, Any]]:
    """The scheduler and worker Deployments and the scheduler Service, as the operator sends them."""
    from tests.support.pod_emulator import operator_objects

    objects = operator_objects(daskcluster, uuids=[f"{i:010x}" for i in range(100)])
    built = [*objects.deployments, objects.scheduler_service]
    for obj in built:
        obj["metadata"]["namespace"] = daskcluster["metadata"]["namespace"]
        obj["metadata"].pop("ownerReferences", None)  # uids of objects that exist only in the API server
    return built


def checkov(binary: Path, framework: str, directory: Path) -> dict[str, Any]:
    """checkov's JSON summary and failed checks for one directory (no network: --skip-download)."""
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"}
    proc = subprocess.run(
        [str(binary), "-d", str(directory), "--framework", framework, "--skip-download", "-o", "json", "--quiet"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    if proc.returncode not in (0, 1) or not proc.stdout.strip():
        raise SystemExit(f"checkov failed to run (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    reports = json.loads(proc.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed: list[dict[str, Any]] = []
    summary = {"passed": 0, "failed": 0, "skipped": 0}
    for report in reports:
        if "summary" not in report:  # "no resources found" is a dict with only a summary-less body
            continue
        for key in summary:
            summary[key] += int(report["summary"].get(key, 0))
        failed += report.get("results", {}).get("failed_checks", [])
    return {**summary, "failed_checks": failed}


def scan(project: Path, binary: Path, stacks: tuple[str, ...], work: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for stack in stacks:
        out = work / stack
        objects = render(project, stack, out / "render")
        daskclusters = [o for o in objects if o.get("kind") == "DaskCluster"]
        built_dir = out / "operator-built"
        built_dir.mkdir(parents=True)
        for cluster in daskclusters:
            for i, obj in enumerate(operator_built(cluster)):
                name = obj["metadata"]["name"]
                (built_dir / f"{i:02d}-{obj['kind'].lower()}-{name}.yaml").write_text(yaml.safe_dump(obj))
        (out / "render" / "summary.yaml").unlink()  # not a Kubernetes object
        results[stack] = checkov(binary, "kubernetes", out)
    results["dockerfile"] = checkov(binary, "dockerfile", project / "docker")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/scan.py", description=__doc__.splitlines()[0])
    parser.add_argument("--checkov", type=Path, default=DEFAULT_CHECKOV, help="checkov executable (scan/venv)")
    parser.add_argument("--project", type=Path, default=ROOT, help="checkout to scan (default: this one)")
    parser.add_argument("--stack", action="append", choices=STACKS, help="stack(s) to scan (default: all)")
    parser.add_argument("--json", action="store_true", help="print the counts as JSON")
    args = parser.parse_args(argv)
    if not args.checkov.is_file():
        print(f"error: {args.checkov} not found; run `make scan` (it builds scan/venv)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="lsdb-scan-") as tmp:
        results = scan(args.project.resolve(), args.checkov, tuple(args.stack or STACKS), Path(tmp))
    total = sum(r["failed"] for r in results.values())
    if args.json:
        print(json.dumps({k: {n: v[n] for n in ("passed", "failed", "skipped")} for k, v in results.items()}))
    for target, r in results.items():
        print(f"{target:10} passed {r['passed']:4}  failed {r['failed']:3}  skipped {r['skipped']:3}")
        for check in r["failed_checks"]:
            print(f"  FAILED {check['check_id']} {check['check_name']}: {check['resource']} ({check['file_path']})")
    print(f"checkov: {total} failed check(s)")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
