"""Every command the emitted DaskCluster runs exists and parses in the environment installed from the lock.

The args come from the DaskCluster the real program registers for each committed stack (not re-typed here).
They are parsed with the commands' own click parsers, resolved the way the `dask` console script resolves
them (entry points in the `dask_cli` group), and the test checks what was parsed: `--help` would prove
nothing about the other flags, and `dask worker` silently takes an unknown flag as its scheduler address.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from components.cluster import DASHBOARD_PORT, SCHEDULER_PORT, SCRATCH_DIR, WORKER_DASHBOARD_PORT
from components.dask_operator import operator_version
from components.lock import PROJECT_DIR, locked_version
from components.section import quantity_bytes
from tools.emulated_image import expand
from tools.mock_runtime import run_program, unwrap_secrets

BIN = Path(sys.executable).parent  # the venv's bin: where the console scripts of the lock's packages live
# Every stack that runs a Dask cluster (the platform stack runs only the operator).
STACKS = sorted(
    p.name[len("Pulumi.") : -len(".yaml")]
    for p in PROJECT_DIR.glob("Pulumi.*.yaml")
    if "lsdb-k8s:role: platform" not in p.read_text()
)
# Staging takes its operator from the prod stack; under mocks that stack reports the locked version.
STACK_OUTPUTS = {"organization/lsdb-k8s/platform": {"operatorNamespace": "dask-operator", "operatorVersion": None}}
WORKER_NAME = "lsdb-dev-default-worker-5f7c9d8b4-x2x7q"  # what the operator injects as DASK_WORKER_NAME

# The guide's manifest (Creating a DaskCluster), which names the old entry points.
GUIDE_WORKER_ARGS = ["dask-worker", "--name", "$(DASK_WORKER_NAME)", "--nthreads", "2"]
GUIDE_SCHEDULER_ARGS = ["dask-scheduler"]


def stack_file_config(stack: str) -> dict[str, Any]:
    """`Pulumi.<stack>.yaml` as the engine hands it to the program (objects as JSON strings)."""
    data = yaml.safe_load((PROJECT_DIR / f"Pulumi.{stack}.yaml").read_text())["config"]
    return {k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in data.items()}


def emitted_cluster(stack: str) -> dict[str, Any]:
    outputs = {k: {**v, "operatorVersion": operator_version()} for k, v in STACK_OUTPUTS.items()}
    run = run_program(stack_file_config(stack), [], stack=stack, stack_outputs=outputs)
    return unwrap_secrets(run.one("kubernetes:kubernetes.dask.org/v1:DaskCluster").inputs)


@pytest.fixture(scope="module", params=STACKS)
def cluster(request) -> dict[str, Any]:
    return emitted_cluster(request.param)


def container(cluster: dict[str, Any], component: str) -> dict[str, Any]:
    (c,) = cluster["spec"][component]["spec"]["containers"]
    return c


def expand_args(args: list[str], env: dict[str, str]) -> list[str]:
    """Kubernetes' `$(VAR)` expansion of container args (the pod emulator's, `$$` escapes included)."""
    return [expand(a, env) for a in args]


def dask_subcommands() -> dict[str, click.Command]:
    """The subcommands `dask` registers, exactly as `dask.cli.run_cli` does (by the command's own name)."""
    commands: dict[str, click.Command] = {}
    for ep in metadata.entry_points(group="dask_cli"):
        cmd = ep.load()
        assert isinstance(cmd, click.Command), ep
        commands[cmd.name] = cmd
    return commands


def parse(args: list[str]) -> click.Context:
    """Parse `dask <sub> ...` with the subcommand's own click parser, as the container would run it."""
    assert args[0] == "dask", args
    (script,) = [ep for ep in metadata.entry_points(group="console_scripts") if ep.name == "dask"]
    assert script.value == "dask.__main__:main"  # whose run_cli dispatches to the dask_cli entry points
    cmd = dask_subcommands()[args[1]]
    return cmd.make_context(f"dask {args[1]}", list(args[2:]))


def test_the_environment_is_the_locked_one() -> None:
    # The parsers below are the ones the image has: same distributions at the same pins.
    for name in ("dask", "distributed", "click"):
        assert metadata.version(name) == locked_version(name), name


def test_dask_console_script_exists() -> None:
    assert shutil.which("dask", path=str(BIN)) == str(BIN / "dask")
    assert {"scheduler", "worker"} <= set(dask_subcommands())


def test_scheduler_command_parses_to_the_intended_settings(cluster) -> None:
    c = container(cluster, "scheduler")
    assert "command" not in c  # the image has no ENTRYPOINT: args are the command
    ctx = parse(c["args"])
    assert ctx.command.name == "scheduler"
    p = ctx.params
    assert p["port"] == str(SCHEDULER_PORT)
    assert p["dashboard_address"] == f":{DASHBOARD_PORT}"
    assert p["dashboard"] is True
    assert p["preload_argv"] == ()
    ports = {port["name"]: port["containerPort"] for port in c["ports"]}
    assert ports == {"tcp-comm": SCHEDULER_PORT, "http-dashboard": DASHBOARD_PORT}


def test_worker_command_parses_to_the_intended_settings(cluster, monkeypatch) -> None:
    import distributed.system
    from distributed.worker_memory import parse_memory_limit

    # As on a node with more memory than the limit (Dask caps the limit at the host's memory).
    monkeypatch.setattr(distributed.system, "MEMORY_LIMIT", 2**50)

    c = container(cluster, "worker")
    assert "command" not in c
    assert "$(DASK_WORKER_NAME)" in c["args"]
    ctx = parse(expand_args(c["args"], {"DASK_WORKER_NAME": WORKER_NAME}))
    assert ctx.command.name == "worker"
    p = ctx.params
    # No positional: the scheduler comes from DASK_SCHEDULER_ADDRESS (the operator sets it). An unknown flag
    # would land here instead, so this also proves every flag was recognised.
    assert p["scheduler"] is None
    assert p["preload_argv"] == ()
    assert p["name"] == WORKER_NAME
    limit = c["resources"]["limits"]["memory"]
    nthreads = int(c["args"][c["args"].index("--nthreads") + 1])
    assert p["nthreads"] == nthreads >= 1
    assert p["memory_limit"] == str(quantity_bytes(limit))
    # Dask's own reading of the flag equals the container's memory limit: it spills and pauses before the OOM kill.
    parsed = parse_memory_limit(p["memory_limit"], p["nthreads"], logger=logging.getLogger(__name__))
    assert parsed == quantity_bytes(limit)
    assert p["dashboard_address"] == f":{WORKER_DASHBOARD_PORT}"
    assert p["dashboard"] is True
    assert p["local_directory"] == SCRATCH_DIR
    assert {"name": "dask-scratch", "mountPath": SCRATCH_DIR} in c["volumeMounts"]
    assert p["nanny"] is True  # the nanny restarts a worker that dies


def test_worker_finds_its_scheduler_in_the_environment_the_operator_sets() -> None:
    import dask.config

    # dask worker refuses to start without a positional, --scheduler-file or the `scheduler-address` config.
    collected = dask.config.collect(paths=[], env={"DASK_SCHEDULER_ADDRESS": "tcp://lsdb-dev-scheduler:8786"})
    assert dask.config.get("scheduler-address", config=collected) == "tcp://lsdb-dev-scheduler:8786"
    assert dask.config.get("scheduler-address", None, config=dask.config.collect(paths=[], env={})) is None


# --- negative: what the guide's manifest runs, and what a typo does ----------------------------------


def test_the_guides_entry_points_do_not_exist_in_the_locked_environment() -> None:
    scripts = {ep.name for ep in metadata.entry_points(group="console_scripts")}
    assert "dask" in scripts  # positive control: the lookup does see console scripts
    for args in (GUIDE_WORKER_ARGS, GUIDE_SCHEDULER_ARGS):
        assert args[0] not in scripts
        assert shutil.which(args[0], path=str(BIN)) is None
    assert "dask-worker" not in dask_subcommands() and "dask-scheduler" not in dask_subcommands()


def test_a_bogus_flag_is_rejected_or_caught() -> None:
    base = ["dask", "worker", "--name", WORKER_NAME, "--local-directory", SCRATCH_DIR]
    with pytest.raises(click.UsageError):
        parse([*base, "--nthreadz", "2"])  # misspelt flag with a value: the value is an extra argument
    with pytest.raises(click.NoSuchOption):
        parse(["dask", "scheduler", "--port", "8786", "--dashbord-address", ":8787"])
    # A value-less unknown flag is accepted by click (ignore_unknown_options) as the scheduler address:
    # exactly what the `scheduler is None` assertion above catches.
    assert parse([*base, "--no-such-flag"]).params["scheduler"] == "--no-such-flag"
    with pytest.raises(KeyError):
        parse(["dask", "dask-worker"])  # the guide's spelling is not a subcommand either
