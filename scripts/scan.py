"""`make scan`: checkov, an outside scanner, on everything the stacks deploy and on the image's Dockerfile.

For each stack: render it offline (tools/render.py, in this process; `--project` renders another checkout with
its own `python -m tools.render`), derive the Deployments and Service the Dask operator creates from the
rendered DaskCluster with the pinned operator's own builders (`build_scheduler_deployment_spec`,
`build_worker_deployment_spec`, via tools/operator_objects.py), then run checkov ONCE on all of it
(`--framework kubernetes dockerfile`, every stack's directory and docker/) and count the results per stack by
file path. Exit 1 when any check fails (CI runs this, so a regression fails the build). A check that does not
apply is skipped inline, with its reason, where the object is declared (a `checkov.io/skip` annotation, a
`# checkov:skip=` comment). `VARIANTS` are shipped stacks scanned again with a feature none of them turns on
(`staging-notebook`: staging with `notebook.enabled`), so every object kind the program can create is scanned.

checkov runs from its own virtualenv (`scan/venv`, from scan/requirements.txt; `--checkov` to use another):
its dependencies would otherwise disturb the program's lock. `--project` scans another checkout (the same
operator builders are used), which is how the figures in docs/security.md were measured.
"""

from __future__ import annotations

import argparse
import contextlib
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
# checkov's command line with each directory's report its own (see `checkov`), run by checkov's interpreter.
EACH_DIRECTORY = ROOT / "scripts" / "checkov_each.py"
STACKS = ("platform", "dev", "staging", "prod")
# Shipped stacks scanned again with features no shipped stack turns on: name -> (stack, config keys to add).
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "staging-notebook": ("staging", {"lsdb-k8s:notebook": {"enabled": True}}),
}


def variant_project(project: Path, variant: str, work: Path) -> Path:
    """A copy of the project's stack files plus `Pulumi.<variant>.yaml`: its base stack's file with the keys added."""
    base, extra = VARIANTS[variant]
    work.mkdir(parents=True, exist_ok=True)
    for path in project.glob("Pulumi*.yaml"):
        (work / path.name).write_text(path.read_text())
    doc = yaml.safe_load((project / f"Pulumi.{base}.yaml").read_text())
    doc["config"] = {**doc["config"], **extra}
    (work / f"Pulumi.{variant}.yaml").write_text(yaml.safe_dump(doc))
    return work


def render(project: Path, stack: str, out: Path) -> list[dict[str, Any]]:
    """The stack's rendered objects, written to `out` as `python -m tools.render --out` writes them."""
    if stack in VARIANTS:  # rendered by this checkout's program (the variant's file exists only here)
        from tools.render import render_stack, write_render

        stacks = variant_project(project, stack, out.parent / "stack-files")
        with contextlib.redirect_stdout(sys.stderr):
            write_render(render_stack(stack, project_dir=stacks), out)
    elif project == ROOT:
        from tools.render import render_stack, write_render

        with contextlib.redirect_stdout(sys.stderr):  # the program may print under mocks
            write_render(render_stack(stack), out)
    else:
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
    from tools.render import load_yaml  # libyaml's parser: a third of the time (the CRDs are 2 MB)

    return [load_yaml(p.read_text()) for p in sorted(out.glob("[0-9]*.yaml"))]


def operator_built(daskcluster: dict[str, Any]) -> list[dict[str, Any]]:
    """The scheduler and worker Deployments and the scheduler Service, as the operator sends them."""
    from tools.operator_objects import operator_objects

    objects = operator_objects(daskcluster, uuids=[f"{i:010x}" for i in range(100)])
    built = [*objects.deployments, objects.scheduler_service]
    for obj in built:
        obj["metadata"]["namespace"] = daskcluster["metadata"]["namespace"]
        obj["metadata"].pop("ownerReferences", None)  # uids of objects that exist only in the API server
    return built


def checkov(binary: Path, targets: dict[str, Path]) -> dict[str, Any]:
    """One checkov run over every target directory (no network: --skip-download); per target: its counts and
    failed checks, attributed by the checked file's path (checkov prints one JSON report per directory and
    framework; each check is counted once). `--compact` leaves each result's code block out of the report. When
    `binary` sits in a virtualenv (scan/venv), checkov runs through scripts/checkov_each.py, its command line with
    each directory's report holding that directory's results only and a faster YAML parser, the same results: plain
    checkov 3 repeats the earlier directories' results in each directory's report, 150 MB of JSON over the suite's
    20 directories (1 GB without `--compact`). That run took 28 s of CPU, 15 s through checkov_each (load 2)."""
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"}
    dirs = [arg for d in targets.values() for arg in ("-d", str(d))]
    interpreter = binary.parent / "python"
    command = [str(interpreter), str(EACH_DIRECTORY)] if interpreter.is_file() else [str(binary)]
    argv = [*command, *dirs, "--framework", "kubernetes", "dockerfile", "--skip-download", "--compact", "-o", "json"]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode not in (0, 1) or not proc.stdout.strip():
        raise SystemExit(f"checkov failed to run (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    reports: list[Any] = []
    # One JSON document after another; read in place (slicing the rest of the text before each one copied it: 5 s of
    # CPU on the suite's 150 MB, one run over the matrix's and `make scan`'s 20 directories).
    decoder, text = json.JSONDecoder(), proc.stdout
    at = _past_blanks(text, 0)
    while at < len(text):
        doc, at = decoder.raw_decode(text, at)
        at = _past_blanks(text, at)
        reports += doc if isinstance(doc, list) else [doc]
    results: dict[str, Any] = {t: {"passed": 0, "failed": 0, "skipped": 0, "failed_checks": []} for t in targets}
    seen: set[tuple[Any, ...]] = set()
    for report in reports:
        for kind, key in (("passed_checks", "passed"), ("failed_checks", "failed"), ("skipped_checks", "skipped")):
            for check in report.get("results", {}).get(kind, []):
                # checkov 3's kubernetes report for several directories repeats earlier directories' results.
                identity = (kind, check["check_id"], check.get("file_abs_path"), check.get("resource"),
                            tuple(check.get("file_line_range") or ()))  # fmt: skip
                if identity in seen:
                    continue
                seen.add(identity)
                target = results[_target_of(check, targets)]
                target[key] += 1
                if key == "failed":
                    target["failed_checks"].append(check)
    return results


def _past_blanks(text: str, at: int) -> int:
    while at < len(text) and text[at].isspace():
        at += 1
    return at


def _target_of(check: dict[str, Any], targets: dict[str, Path]) -> str:
    """The target whose directory holds the checked file (checkov reports absolute or target-relative paths)."""
    path = Path(check.get("file_abs_path") or check["file_path"])
    for name, directory in targets.items():
        if path.is_relative_to(directory):
            return name
    raise SystemExit(f"checkov reported a file outside the scanned directories: {path}")


def scan_targets(project: Path, stacks: tuple[str, ...], work: Path) -> dict[str, Path]:
    """What `make scan` gives checkov, written under `work`: per stack, a directory of its rendered objects and the
    operator-built ones (each stack in its own: checkov's graph checks, CKV2_K8S_6, must see one stack at a time);
    and `docker/`. tests/test_matrix.py passes them to its own checkov run, so the suite scans everything once."""
    targets: dict[str, Path] = {}
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
        targets[stack] = out.resolve()
    targets["dockerfile"] = (project / "docker").resolve()
    return targets


def scan(project: Path, binary: Path, stacks: tuple[str, ...], work: Path) -> dict[str, Any]:
    return checkov(binary, scan_targets(project, stacks, work))


def default_stacks(project: Path) -> tuple[str, ...]:
    """Every shipped stack, and the variants when scanning this checkout (only its program renders them)."""
    return (*STACKS, *VARIANTS) if project == ROOT else STACKS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/scan.py", description=__doc__.splitlines()[0])
    parser.add_argument("--checkov", type=Path, default=DEFAULT_CHECKOV, help="checkov executable (scan/venv)")
    parser.add_argument("--project", type=Path, default=ROOT, help="checkout to scan (default: this one)")
    parser.add_argument(
        "--stack", action="append", choices=[*STACKS, *VARIANTS], help="stack(s) to scan (default: all)"
    )
    parser.add_argument("--json", action="store_true", help="print the counts as JSON")
    args = parser.parse_args(argv)
    if not args.checkov.is_file():
        print(f"error: {args.checkov} not found; run `make scan` (it builds scan/venv)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="lsdb-scan-") as tmp:
        project = args.project.resolve()
        results = scan(project, args.checkov, tuple(args.stack or default_stacks(project)), Path(tmp))
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
