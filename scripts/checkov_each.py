"""checkov's own command line, each `-d` directory's report holding that directory's results only.

Run by checkov's interpreter (scan/venv/bin/python: this file imports nothing of the project), with checkov's
arguments, from scripts/scan.py's `checkov`. Two changes to checkov 3.3.30 (scan/requirements.txt), the same
results, measured on tests/test_matrix.py's run over 20 directories:

* its RunnerRegistry merges each directory's report into the earlier directories' and prints the merged reports
  after each directory: 150 MB of JSON, most of the run's main process CPU spent encoding and printing it. Here
  the registry starts each directory with no report, so each result is printed once (14 MB). Each directory is
  still scanned on its own (each framework runs in its own forked process per directory: the graph checks,
  CKV2_K8S_6, see one directory at a time) and the exit code is still 1 when any directory has a failed check.
  Should checkov stop reading what this clears, scan.py still counts each result once (it drops the repeats);
* its Kubernetes YAML loader (`SafeLineLoader`: PyYAML's safe loader, each mapping given its first and last line)
  is PyYAML's pure-Python parser: here the same loader on PyYAML's libyaml parser, the same documents with the same
  lines, in a quarter of the time (7.4 -> 1.9 s of CPU over those 423 files, at load 4). tests/test_matrix.py checks
  both loaders read the matrix's files alike.

The whole run: 28 -> 15 s of CPU (load 2).
"""

import sys
import warnings
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml
from checkov.kubernetes.parser import k8_yaml


class LineLoader(yaml.CSafeLoader):
    """k8_yaml.SafeLineLoader on libyaml's parser."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        mapping = super().construct_mapping(node, deep=deep)
        mapping["__startline__"] = node.start_mark.line + 1
        mapping["__endline__"] = node.end_mark.line + 1
        return mapping


def same_reading(paths: list[str]) -> None:
    """Exit 1 unless checkov's loader and LineLoader read every file alike (tests/test_matrix.py runs it)."""
    for path in paths:
        text = Path(path).read_text(encoding="utf-8")
        if list(yaml.load_all(text, Loader=k8_yaml.SafeLineLoader)) != list(yaml.load_all(text, Loader=LineLoader)):
            sys.exit(f"{path}: read differently")
    print(f"{len(paths)} files read alike")


def main() -> int | None:
    """checkov's command line (its entry point's code) with the two changes."""
    from checkov.common.runners.runner_registry import RunnerRegistry
    from checkov.main import Checkov

    run = RunnerRegistry.run

    def run_one_directory(self: RunnerRegistry, *args: Any, **kwargs: Any) -> Any:
        """RunnerRegistry.run with none of the earlier directories' reports to merge into."""
        self.scan_reports = []
        self._check_type_to_report_map = {}
        return run(self, *args, **kwargs)

    RunnerRegistry.run = run_one_directory  # type: ignore[method-assign]
    k8_yaml.SafeLineLoader = LineLoader  # type: ignore[misc]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=SyntaxWarning)
        return Checkov().run()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--same-reading"]:
        same_reading(sys.argv[2:])
        sys.exit(0)
    sys.exit(main())
