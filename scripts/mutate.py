"""`make mutate`: mutmut on each module of `[tool.mutmut] only_mutate` (pyproject.toml), then the score per module.

One `mutmut run` per module (`mutmut run "components.security.*"`), so a module's result is on disk as soon as
it is done and `--module` reruns one. The score counts a mutant as caught when a test failed or timed out on
it; the denominator leaves out the mutants docs/mutation.md lists as equivalent (with why). Mutants no selected
test reaches ("no tests") count as survivors. The table goes to stdout and, in CI, to the job summary.

mutmut forks each mutant from a process that has already imported the tests, so a mutant of a function that runs
at import (a validator such as `partial(_dns_label, max_len=63)` in an `Annotated`
field) never takes effect there and shows as "no tests". After mutmut, each such "no tests" mutant of a module
with fast tests is run again in a fresh pytest process that has the mutant switched on before it imports anything
(`mutants/<module>.fresh.json`; "fresh" in the table).

    python scripts/mutate.py [--jobs N] [--module components/security.py ...] [--report-only]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import tomllib
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "mutation.md"
CAUGHT = {"killed", "timeout", "caught by type check"}
# mutmut's exit-code meanings (mutmut.stats.status_by_exit_code), kept here so the report needs no mutmut import.
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped", 36: "timeout"}
STATUS |= {37: "caught by type check", -24: "timeout", 24: "timeout", 152: "timeout", 255: "timeout"}
FRESH_TIMEOUT = 300  # seconds for one fresh run of a module's fast tests


def modules() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    return list(config["only_mutate"])


def dotted(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


def equivalent_mutants() -> set[str]:
    """Mutant names in backticks in docs/mutation.md's "Equivalent mutants" section."""
    section = DOC.read_text().split("## Equivalent mutants", 1)[-1].split("\n## ", 1)[0]
    return set(re.findall(r"`([\w.]+__mutmut_\d+)`", section))


def mutmut_codes(path: str) -> dict[str, int | None]:
    meta = ROOT / "mutants" / (path + ".meta")
    return dict(json.loads(meta.read_text())["exit_code_by_key"]) if meta.exists() else {}


def fresh_file(path: str) -> Path:
    return ROOT / "mutants" / (path + ".fresh.json")


def fresh_codes(path: str) -> dict[str, int]:
    """Exit codes of the fresh runs, if they are of the mutants mutmut generated last (else none)."""
    fresh, mutated = fresh_file(path), ROOT / "mutants" / path
    if not fresh.exists() or not mutated.exists() or fresh.stat().st_mtime < mutated.stat().st_mtime:
        return {}
    return dict(json.loads(fresh.read_text()))


def statuses(path: str) -> dict[str, str]:
    codes: dict[str, int | None] = {**mutmut_codes(path)}
    codes |= {name: code for name, code in fresh_codes(path).items() if name in codes}
    return {name: "not checked" if code is None else STATUS.get(code, "suspicious") for name, code in codes.items()}


def fresh_command(path: str) -> list[str] | None:
    """pytest on the module's fast tests, as mutmut runs them (None: the module has no fast tests)."""
    sys.path.insert(0, str(ROOT))
    from tools.mutation_selection import FAST_TESTS

    files = FAST_TESTS.get(dotted(path))
    if not files:
        return None
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    selection = list(config.get("pytest_add_cli_args_test_selection", []))
    keyword = selection[selection.index("-k") : selection.index("-k") + 2] if "-k" in selection else []
    return [sys.executable, "-m", "pytest", "-x", "-q", *config["pytest_add_cli_args"], *keyword, *files]


def run_fresh(path: str) -> None:
    """Run each "no tests" mutant of `path` in a fresh process with the mutant on from the start."""
    command = fresh_command(path)
    if command is None:
        return
    done = fresh_codes(path)
    todo = [n for n, c in mutmut_codes(path).items() if STATUS.get(c or 0) == "no tests" and n not in done]
    mutants = ROOT / "mutants"
    for name in todo:
        env = {**os.environ, "MUTANT_UNDER_TEST": name, "PYTHONPATH": str(mutants)}
        try:
            done[name] = subprocess.run(
                command, cwd=mutants, env=env, capture_output=True, timeout=FRESH_TIMEOUT
            ).returncode
        except subprocess.TimeoutExpired:
            done[name] = 36
        fresh_file(path).write_text(json.dumps(done, indent=0))
    if todo:
        print(f"   {len(todo)} mutants run fresh: {Counter(STATUS.get(c, 'suspicious') for c in done.values())}")


def report(paths: list[str]) -> str:
    equivalent = equivalent_mutants()
    rows = ["| module | mutants | caught | equivalent | survived | no tests | other | score |", "|---" * 8 + "|"]
    survivors = []
    for path in paths:
        found = statuses(path)
        if set(found.values()) <= {"not checked"}:
            rows.append(f"| {path} | not run | | | | | | |")
            continue
        counts = Counter("equivalent" if n in equivalent and s not in CAUGHT else s for n, s in found.items())
        caught = sum(counts[s] for s in CAUGHT)
        other = len(found) - caught - counts["equivalent"] - counts["survived"] - counts["no tests"]
        scored = len(found) - counts["equivalent"]
        score = f"{100 * caught / scored:.1f}%" if scored else "n/a"
        rows.append(
            f"| {path} | {len(found)} | {caught} | {counts['equivalent']} | {counts['survived']} "
            f"| {counts['no tests']} | {other} | {score} |"
        )
        survivors += sorted(n for n, s in found.items() if s in ("survived", "no tests") and n not in equivalent)
    text = "\n".join(rows) + "\n"
    if survivors:
        text += f"\n{len(survivors)} surviving mutants (`mutmut show NAME` shows one):\n\n"
        text += "".join(f"- `{n}`\n" for n in survivors)
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1, help="mutmut's --max-children (default 1)")
    parser.add_argument("--module", action="append", help="a path from only_mutate (repeatable); default all")
    parser.add_argument("--report-only", action="store_true", help="print the table from the last run")
    args = parser.parse_args()
    paths = args.module or modules()
    unknown = sorted(set(paths) - set(modules()))
    if unknown:
        parser.error(f"--module {unknown} is not in [tool.mutmut] only_mutate of pyproject.toml")
    mutmut = Path(sys.executable).parent / "mutmut"
    failed = []
    started = time.monotonic()
    for path in [] if args.report_only else paths:
        print(f"== mutmut on {path}", flush=True)
        command = [str(mutmut), "run", "--max-children", str(args.jobs), dotted(path) + ".*"]
        run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        if run.returncode != 0:
            print(run.stdout[-3000:], run.stderr[-3000:], sep="\n")
            failed.append(path)
        else:
            run_fresh(path)
    table = "## Mutation score\n\n" + report(paths)
    if not args.report_only:
        table += f"\n`make mutate` took {time.monotonic() - started:.0f} s with {args.jobs} worker(s).\n"
    if failed:
        table += f"\nmutmut itself failed on: {', '.join(failed)} (its output is above).\n"
    print(table)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a") as out:
            out.write(table)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
