"""Run the real Pulumi program offline under Pulumi's own mock runtime and record what it registers.

Used by the offline render (`python -m components.render`) and by the tests. Nothing here fakes the
program: `__main__.py` runs inside a real `Stack`, with the stack's config, against `MockMonitor`,
which only stands in for the engine (no cloud calls). The recorder keeps each registration's raw
inputs too, so tests can prove secrets stay wrapped as secrets.
"""

from __future__ import annotations

import hashlib
import runpy
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from google.protobuf import json_format
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc, settings
from pulumi.runtime.config import set_all_config
from pulumi.runtime.settings import get_root_resource
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from components.lock import PROJECT_DIR

SECRET_SIG = rpc._special_sig_key  # "4dabf18193072939515e22adb298388d"
SECRET_VALUE = rpc._special_secret_sig


@dataclass
class Registered:
    """One resource registration as the engine would receive it."""

    urn: str
    type: str
    name: str
    inputs: dict[str, Any]
    raw_inputs: dict[str, Any]  # protobuf as JSON: secrets still wrapped in their signature
    parent: str
    dependencies: list[str]
    provider: str
    custom: bool


@dataclass
class ProgramRun:
    resources: list[Registered] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)

    def of_type(self, typ: str) -> list[Registered]:
        return [r for r in self.resources if r.type == typ]

    def one(self, typ: str) -> Registered:
        found = self.of_type(typ)
        if len(found) != 1:
            raise AssertionError(f"expected one {typ}, found {[r.name for r in found]}")
        return found[0]

    def by_urn(self, urn: str) -> Registered:
        return next(r for r in self.resources if r.urn == urn)


def fake_digest(image_name: str) -> str:
    return "sha256:" + hashlib.sha256(image_name.encode()).hexdigest()


class EngineMocks(pulumi.runtime.Mocks):
    """Stand-in for the engine: echoes inputs as outputs, plus the few computed outputs the program reads."""

    def __init__(self, stack_outputs: dict[str, dict[str, Any]] | None = None) -> None:
        self.stack_outputs = stack_outputs or {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict]:
        state = dict(args.inputs)
        if args.typ == "docker:index/image:Image":
            repository = args.inputs["imageName"].rsplit(":", 1)[0]
            state["repoDigest"] = f"{repository}@{fake_digest(args.inputs['imageName'])}"
        if args.typ == "pulumi:pulumi:StackReference":
            state["outputs"] = self.stack_outputs.get(args.inputs.get("name", args.name), {})
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict, list[tuple[str, str]] | None]:
        return {}, None


class RecordingMonitor(pulumi_mocks.MockMonitor):
    def __init__(self, mocks: pulumi.runtime.Mocks, run: ProgramRun) -> None:
        super().__init__(mocks)
        self.run = run

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            self.run.resources.append(
                Registered(
                    urn=response.urn,
                    type=request.type,
                    name=request.name,
                    inputs=unwrap_secrets(rpc.deserialize_properties(request.object)),
                    raw_inputs=json_format.MessageToDict(request.object),
                    parent=request.parent,
                    dependencies=list(request.dependencies),
                    provider=request.provider,
                    custom=request.custom,
                )
            )
        return response


def run_program(
    config: dict[str, Any],
    secret_keys: list[str] | None = None,
    stack: str = "dev",
    project: str = "lsdb-k8s",
    stack_outputs: dict[str, dict[str, Any]] | None = None,
    program: Path = PROJECT_DIR / "__main__.py",
    run: ProgramRun | None = None,
) -> ProgramRun:
    """Run `__main__.py` with `config` (`<project>:<key>` -> value) and return every registration and export.

    Exceptions from the program (such as ConfigError) propagate unchanged; pass `run` to see what was
    registered before one.
    """
    run = run if run is not None else ProgramRun()
    mocks = EngineMocks(stack_outputs)
    # set_mocks reuses an existing root Stack (with the previous run's exports and URN): start fresh.
    settings.ROOT.set(None)
    pulumi.runtime.set_mocks(mocks, project=project, stack=stack, preview=False, monitor=RecordingMonitor(mocks, run))
    set_all_config({k: v for k, v in config.items()}, [*(secret_keys or [])])
    settings.SETTINGS.rpc_manager.clear()
    settings.SETTINGS.outputs.clear()
    sys.path.insert(0, str(program.parent))
    try:
        # Same wrapper as the SDK entry point: run, then wait for every outstanding registration.
        _sync_await(run_pulumi_func(lambda: runpy.run_path(str(program), run_name="__main__")))
        root = get_root_resource()
        run.outputs = _sync_await(pulumi.Output.from_input(dict(root.outputs)).future()) or {}
    finally:
        sys.path.remove(str(program.parent))
    return run


def unwrap_secrets(value: Any) -> Any:
    """Inputs as the provider would apply them: secret wrappers replaced by their values."""
    if isinstance(value, dict):
        if value.get(SECRET_SIG) == SECRET_VALUE:
            return unwrap_secrets(value.get("value"))
        return {k: unwrap_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap_secrets(v) for v in value]
    return value


def has_plaintext(raw: Any, needle: str) -> bool:
    """True if `needle` appears in `raw` anywhere outside a Pulumi secret wrapper."""
    if isinstance(raw, dict):
        if raw.get(SECRET_SIG) == SECRET_VALUE:
            return False
        return any(has_plaintext(v, needle) for v in raw.values())
    if isinstance(raw, list):
        return any(has_plaintext(v, needle) for v in raw)
    return isinstance(raw, str) and needle in raw
