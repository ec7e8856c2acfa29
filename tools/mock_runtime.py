"""Run the real Pulumi program offline under Pulumi's public mock API and record what it registers.

For the offline render (`python -m tools.render`) and the tests. `components.program.main` (what `__main__.py` runs)
executes inside a real root `Stack` with the stack's config, against `MockMonitor`, which stands in for the engine
only (no cloud calls), with the SDK's public testing API (`reset_options`, `set_mocks`, `set_all_config`, `test`,
`get_root_resource`). Each registration's raw inputs are kept as sent on the wire, so tests can prove secrets stay
wrapped.
"""

from __future__ import annotations

import asyncio
import hashlib
import runpy
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from google.protobuf import json_format
from pulumi.runtime.mocks import MockMonitor

# Pulumi's wire protocol marks a secret value as {SECRET_SIG: SECRET_VALUE, "value": ...}
# (sdk/proto: "special signature" keys; pulumi.runtime.rpc._special_sig_key / _special_secret_sig).
SECRET_SIG = "4dabf18193072939515e22adb298388d"
SECRET_VALUE = "1b47061264138c4ac30d75fd1eb44270"
# What a self-managed backend (file://, s3://) calls every organization; `pulumi.get_organization()` returns it.
MOCK_ORGANIZATION = "organization"


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
    options: dict[str, Any] = field(default_factory=dict)  # retainOnDelete, protect, deleteBeforeReplace, ...


@dataclass
class ProgramRun:
    resources: list[Registered] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    secret_outputs: set[str] = field(default_factory=set)

    def of_type(self, typ: str) -> list[Registered]:
        return [r for r in self.resources if r.type == typ]

    def one(self, typ: str) -> Registered:
        found = self.of_type(typ)
        if len(found) != 1:
            raise AssertionError(f"expected one {typ}, found {[r.name for r in found]}")
        return found[0]

    def by_urn(self, urn: str) -> Registered:
        return next(r for r in self.resources if r.urn == urn)

    def named(self, name: str) -> Registered:
        return next(r for r in self.resources if r.name == name)


def fake_digest(image_name: str) -> str:
    return "sha256:" + hashlib.sha256(image_name.encode()).hexdigest()


TLS_OUTPUTS = {
    "tls:index/privateKey:PrivateKey": "privateKeyPem",
    "tls:index/selfSignedCert:SelfSignedCert": "certPem",
    "tls:index/certRequest:CertRequest": "certRequestPem",
    "tls:index/locallySignedCert:LocallySignedCert": "certPem",
}


class EngineMocks(pulumi.runtime.Mocks):
    """Stand-in for the engine: echoes inputs as outputs, plus the few computed outputs the program reads."""

    def __init__(self, stack_outputs: dict[str, dict[str, Any]] | None = None) -> None:
        self.stack_outputs = stack_outputs or {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        state = dict(args.inputs)
        if args.typ == "docker:index/image:Image":
            repository = args.inputs["imageName"].rsplit(":", 1)[0]
            state["repoDigest"] = f"{repository}@{fake_digest(args.inputs['imageName'])}"
        if args.typ in TLS_OUTPUTS:  # pulumi-tls computes these; a labelled placeholder stands in (not a real PEM)
            key = TLS_OUTPUTS[args.typ]
            state[key] = f"-----BEGIN MOCK {key}-----\n{args.name}\n-----END MOCK {key}-----\n"
        if args.typ == "pulumi:pulumi:StackReference":
            state["outputs"] = self.stack_outputs.get(args.inputs.get("name", args.name), {})
        if args.typ.startswith("kubernetes:") and not args.typ.endswith("Patch") and "metadata" in state:
            # The API server gives every object a uid; a deterministic one here (same logical name, same uid).
            state["metadata"] = {**state["metadata"], "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, args.name))}
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        return {}, None


_OPTION_FIELDS = ("retainOnDelete", "protect", "deleteBeforeReplace", "replaceOnChanges", "ignoreChanges")


class RecordingMonitor(MockMonitor):
    def __init__(self, mocks: pulumi.runtime.Mocks, run: ProgramRun) -> None:
        super().__init__(mocks)
        self.run = run

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)  # type: ignore[no-untyped-call]  # untyped in the SDK
        if request.type != "pulumi:pulumi:Stack":
            message = json_format.MessageToDict(request, preserving_proto_field_name=False)
            options = {k: message[k] for k in _OPTION_FIELDS if k in message}
            self._record(request, response.urn, request.object, request.custom, options)
        return response

    def ReadResource(self, request: Any) -> Any:
        # Reads (StackReference, get()) look up existing resources: recorded with options {"read": True}.
        response = super().ReadResource(request)  # type: ignore[no-untyped-call]  # untyped in the SDK
        self._record(request, response.urn, request.properties, True, {"read": True})
        return response

    def _record(self, request: Any, urn: str, properties: Any, custom: bool, options: dict[str, Any]) -> None:
        raw = json_format.MessageToDict(properties)
        self.run.resources.append(
            Registered(
                urn=urn,
                type=request.type,
                name=request.name,
                inputs=unwrap_secrets(raw),
                raw_inputs=raw,
                parent=request.parent,
                dependencies=list(request.dependencies),
                provider=request.provider,
                custom=custom,
                options=options,
            )
        )


def _default_entry() -> None:
    from components.program import main

    main()


def run_program(
    config: dict[str, Any],
    secret_keys: list[str] | None = None,
    stack: str = "dev",
    project: str = "lsdb-k8s",
    stack_outputs: dict[str, dict[str, Any]] | None = None,
    program: Path | Callable[[], None] | None = None,
    run: ProgramRun | None = None,
) -> ProgramRun:
    """Run the program with `config` (`<project>:<key>` -> value) and return every registration and export.

    `program` defaults to `components.program.main` (what `__main__.py` runs); a path runs that file instead.
    Exceptions from the program (such as ConfigError) propagate unchanged; pass `run` to see what was
    registered before one.
    """
    run = run if run is not None else ProgramRun()
    _ensure_event_loop()
    mocks = EngineMocks(stack_outputs)
    pulumi.runtime.reset_options(project=project, stack=stack)  # a fresh root Stack: no exports carried over
    monitor = RecordingMonitor(mocks, run)
    pulumi.runtime.set_mocks(
        mocks, project=project, stack=stack, preview=False, monitor=monitor, organization=MOCK_ORGANIZATION
    )
    pulumi.runtime.set_all_config(dict(config), list(secret_keys or []))
    if isinstance(program, Path):
        path = program

        def entry() -> None:
            sys.path.insert(0, str(path.parent))
            try:
                runpy.run_path(str(path), run_name="__main__")
            finally:
                sys.path.remove(str(path.parent))
    else:
        entry = program or _default_entry

    pulumi.runtime.test(entry)()  # type: ignore[no-untyped-call]  # runs it, then waits for every registration
    root = pulumi.runtime.get_root_resource()
    exports: dict[str, Any] = dict(getattr(root, "outputs", {}))

    async def collect() -> None:  # the exports' values, and which are secret
        run.outputs = {k: await pulumi.Output.from_input(v).future() for k, v in exports.items()}
        run.secret_outputs = {k for k, v in exports.items() if await pulumi.Output.from_input(v).is_secret()}

    pulumi.runtime.test(collect)()  # type: ignore[no-untyped-call]  # awaits the coroutine
    return run


def _ensure_event_loop() -> None:
    """`pulumi.runtime.test` runs on the thread's current event loop; an `asyncio.run` earlier in the same thread
    (a Dask probe in another test) leaves none, or a closed one."""
    try:
        loop = asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:
        loop = None
    if loop is None or loop.is_closed():
        asyncio.set_event_loop(asyncio.new_event_loop())


def integral(value: Any) -> Any:
    """Pulumi's wire format carries every number as a double; the provider sends 1000.0 as 1000."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [integral(v) for v in value]
    return value


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
