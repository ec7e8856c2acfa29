"""Offline render: `python -m tools.render --stack dev --out DIR` (docs/development.md, "Offline render").

Runs the real `__main__.py` under Pulumi's mock runtime (`tools.mock_runtime.run_program`) and writes each
Kubernetes object as `NN-<kind>-<name>.yaml` in apply order, a Patch resource last as `NN-<kind>patch-<name>.yaml`
(a Server-Side Apply patch, its header says how), and `summary.yaml` (every other registration, the
StackReferences' outputs, the exports). Nothing secret is written. Imports stay light: no lsdb, dask or pandas.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from components.lock import PROJECT_DIR
from tools.mock_runtime import MOCK_ORGANIZATION, SECRET_SIG, SECRET_VALUE, integral

REDACTED = "<redacted>"
SUMMARY_FILE = "summary.yaml"
OBJECT_FILE = re.compile(r"^\d\d+-[a-z0-9]+-.+\.yaml$")
STACK_REF = re.compile(r"^[A-Za-z0-9_.-]+/([A-Za-z0-9_.-]+)/([A-Za-z0-9_.-]+)$")

# Apply order: what others live in or bind to comes first.
KIND_ORDER = {
    "Namespace": 0,
    "CustomResourceDefinition": 1,
    "PersistentVolume": 2,
    "PersistentVolumeClaim": 3,
    "Secret": 4,
    # everything else: 5
    "DaskCluster": 6,
    "DaskWorkerGroup": 7,
    "DaskJob": 7,
    "DaskAutoscaler": 8,
}
OTHER_KIND = 5
PATCH_RANK = 9  # a patch applies to an object that exists, and this program's only one waits for the verification
TOP_KEYS = ("apiVersion", "kind", "metadata", "type", "spec", "data", "stringData")
METADATA_KEYS = ("name", "namespace", "labels", "annotations")


class RenderError(Exception):
    """A problem that `pulumi up` would also report before deploying anything (unknown stack, bad stack file)."""


@dataclass
class Rendered:
    stack: str
    objects: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (file name, manifest)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def patch_files(self) -> set[str]:
        return {e["file"] for e in self.summary.get("objects", []) if e.get("patch")}

    def live_objects(self) -> list[dict[str, Any]]:
        """The objects with every patch applied (see `apply_patches`)."""
        patches = self.patch_files
        return apply_patches(
            [obj for name, obj in self.objects if name not in patches],
            [obj for name, obj in self.objects if name in patches],
        )


def object_key(obj: Mapping[str, Any]) -> tuple[str, str, str, str]:
    meta = obj.get("metadata") or {}
    return (str(obj.get("apiVersion")), str(obj.get("kind")), str(meta.get("namespace") or ""), str(meta.get("name")))


def merge_patch(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """`target` with `patch` merged in: maps merge, anything else replaces."""
    out = dict(target)
    for key, value in patch.items():
        old = out.get(key)
        out[key] = merge_patch(old, value) if isinstance(value, Mapping) and isinstance(old, Mapping) else value
    return out


def apply_patches(objects: list[dict[str, Any]], patches: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`objects` as the API server holds them once each Server-Side Apply patch (same apiVersion, kind, namespace and
    name) is applied: maps merge, anything else the patch sets replaces. That is SSA's result for what this program
    patches (a selector the object leaves unset). A patch's metadata is not merged: it names the object, and its
    annotations are instructions to Pulumi (field manager, force)."""
    live = {object_key(obj): obj for obj in objects}
    for patch in patches:
        key = object_key(patch)
        if key not in live:
            raise RenderError(f"a patch of {'/'.join(key)}, which is not among the rendered objects")
        body = {k: v for k, v in patch.items() if k != "metadata"}
        live[key] = merge_patch(live[key], body)
    return list(live.values())


def load_yaml(text: str) -> Any:
    """`yaml.safe_load` on libyaml's parser (PyYAML's wheels have it): the same objects, the pure-Python parser took
    three times as long (1 s of CPU for the dev stack's files, the operator's CRDs among them)."""
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def load_live_objects(out: Path) -> list[dict[str, Any]]:
    """The objects of a render directory (`write_render`), patches applied."""
    summary = load_yaml((out / SUMMARY_FILE).read_text())
    objects = [(e["file"], load_yaml((out / e["file"]).read_text())) for e in summary["objects"]]
    return Rendered(summary["stack"], objects, summary).live_objects()


# --- stack file -> config as Pulumi hands it to the program ---------------------------------------------------


def project_name(project_dir: Path = PROJECT_DIR) -> str:
    return str(yaml.safe_load((project_dir / "Pulumi.yaml").read_text())["name"])


def stack_file(stack: str, project_dir: Path = PROJECT_DIR) -> Path:
    path = project_dir / f"Pulumi.{stack}.yaml"
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", stack) or not path.is_file():
        known = sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in project_dir.glob("Pulumi.*.yaml"))
        raise RenderError(
            f"no stack named '{stack}' found: there is no Pulumi.{stack}.yaml in {project_dir} "
            f"(stacks here: {', '.join(known) or 'none'})"
        )
    return path


def _redact_secure(value: Any) -> Any:
    """Each `{secure: <ciphertext>}` replaced by the placeholder (it cannot be decrypted offline)."""
    if isinstance(value, Mapping):
        return REDACTED if set(value) == {"secure"} else {k: _redact_secure(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_secure(v) for v in value]
    return value


def _as_config_string(value: Any) -> str:
    """Pulumi passes every config value as a string: objects and lists as JSON, booleans as true/false."""
    if isinstance(value, Mapping | list):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def stack_config(stack: str, project_dir: Path = PROJECT_DIR) -> tuple[dict[str, str], list[str]]:
    """`<project>:<key>` -> value string, and the keys that hold a `secure:` value (project defaults applied)."""
    path = stack_file(stack, project_dir)
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise RenderError(f"could not read {path.name}: {exc}") from None
    if not isinstance(doc, Mapping) or not isinstance(doc.get("config") or {}, Mapping):
        raise RenderError(f"{path.name}: `config:` must be a mapping of keys to values")

    project_doc = yaml.safe_load((project_dir / "Pulumi.yaml").read_text()) or {}
    project = project_doc["name"]

    def full(key: str) -> str:
        return key if ":" in key else f"{project}:{key}"

    config: dict[str, str] = {}
    secret: list[str] = []
    # Project-level defaults (Pulumi.yaml `config:`), then the stack file on top.
    for key, spec in (project_doc.get("config") or {}).items():
        default = spec.get("default", spec.get("value")) if isinstance(spec, Mapping) else spec
        if default is not None:
            config[full(key)] = _as_config_string(default)
    for key, raw in (doc.get("config") or {}).items():
        if raw is None:
            continue
        value = _redact_secure(raw)
        config[full(key)] = _as_config_string(value)
        if value != raw:  # a secure value inside: the top-level key is secret, as Pulumi marks it
            secret.append(full(key))
    return config, secret


def _referenced_stacks(config: Mapping[str, str], project: str) -> set[str]:
    """The stack `operator.fromStack` names (the config's one StackReference), if it is a stack of this project."""
    try:
        ref = json.loads(config.get(f"{project}:operator", "{}")).get("fromStack")
    except (json.JSONDecodeError, AttributeError):
        return set()
    if isinstance(ref, str) and "/" not in ref:  # `<stack>`: of this organization and project
        ref = f"{MOCK_ORGANIZATION}/{project}/{ref}"
    match = STACK_REF.match(ref) if isinstance(ref, str) else None
    return {ref} if match and match.group(1) == project else set()


# --- program run -> manifests ------------------------------------------------------------------------------


def _clean(value: Any) -> Any:
    """Plain data from serialized inputs: secrets -> placeholder, whole numbers back to int (protobuf has doubles)."""
    if isinstance(value, Mapping):
        if value.get(SECRET_SIG) == SECRET_VALUE:
            return REDACTED
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return integral(value)


def _first(names: tuple[str, ...]) -> Any:
    """A sort key: `names` in their order, then every other key by name."""
    return lambda k: (names.index(k) if k in names else len(names), k)


def _ordered(obj: dict[str, Any]) -> dict[str, Any]:
    """apiVersion, kind, metadata first; everything else sorted, so renders diff cleanly."""

    def sort(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: sort(value[k]) for k in sorted(value)}
        if isinstance(value, list):
            return [sort(v) for v in value]
        return value

    out = {k: sort(obj[k]) for k in sorted(obj, key=_first(TOP_KEYS))}
    meta = out.get("metadata")
    if isinstance(meta, dict):
        out["metadata"] = {k: meta[k] for k in sorted(meta, key=_first(METADATA_KEYS))}
    return out


def _redact_secret_object(obj: dict[str, Any], inputs: Mapping[str, Any]) -> dict[str, Any]:
    """A Secret keeps its keys; every value becomes the placeholder (whether or not the program marked it secret)."""
    for section in ("data", "stringData"):
        if section not in obj:
            continue
        values = inputs.get(section)  # secrets already unwrapped by the recorder: the keys are the Secret's keys
        obj[section] = dict.fromkeys(values, REDACTED) if isinstance(values, Mapping) else REDACTED
    return obj


def is_patch(typ: str) -> bool:
    """A pulumi-kubernetes Patch resource (`kubernetes:core/v1:ServicePatch`): a Server-Side Apply of some fields."""
    return typ.startswith("kubernetes:") and typ.endswith("Patch")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.-]+", "-", text.lower()).strip("-") or "unnamed"


def _short(urn: str) -> str:
    """`urn:pulumi:dev::lsdb-k8s::a$b::name` -> `b::name` (the parent as type::name)."""
    parts = urn.split("::", 3)
    if len(parts) != 4:
        return urn
    return f"{parts[2].rsplit('$', 1)[-1]}::{parts[3]}"


def _resource_summary(reg: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": reg.type, "name": reg.name}
    if reg.parent:
        entry["parent"] = _short(reg.parent)
    inputs = {k: v for k, v in _clean(reg.raw_inputs).items() if not k.startswith("__")}
    if inputs:
        entry["inputs"] = _ordered(inputs)
    if reg.dependencies:
        entry["dependsOn"] = [_short(d) for d in reg.dependencies]
    return entry


def _referenced_outputs(
    stack: str,
    config: Mapping[str, str],
    project_dir: Path,
    given: Mapping[str, Mapping[str, Any]] | None,
    program: Path | None,
    seen: tuple[str, ...],
    assumptions: list[str],
) -> dict[str, dict[str, Any]]:
    """Outputs for each StackReference: given on the command line, or another stack of this checkout rendered."""
    outputs: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (given or {}).items()}
    for ref in sorted(_referenced_stacks(config, project_name(project_dir))):
        if ref in outputs:
            assumptions.append(f"StackReference {ref}: outputs given on the command line")
            continue
        other = STACK_REF.match(ref).group(2)  # type: ignore[union-attr]
        if other == stack or other in seen or not (project_dir / f"Pulumi.{other}.yaml").is_file():
            continue
        outputs[ref] = render_stack(other, project_dir, given, program, (*seen, stack)).summary["exports"]
        assumptions.append(f"StackReference {ref}: outputs of Pulumi.{other}.yaml rendered from this checkout")
    return outputs


def render_stack(
    stack: str,
    project_dir: Path = PROJECT_DIR,
    stack_outputs: Mapping[str, Mapping[str, Any]] | None = None,
    program: Path | None = None,
    _seen: tuple[str, ...] = (),
) -> Rendered:
    """Run the program (default: this checkout's `__main__.py`) for `stack` offline and return its Kubernetes
    objects and summary (nothing written).

    Raises RenderError for an unknown stack or unreadable stack file; ConfigError (and any other program
    error) propagates as `pulumi up` would report it.
    """
    from tools.mock_runtime import run_program

    project = project_name(project_dir)
    config, secret_keys = stack_config(stack, project_dir)
    assumptions: list[str] = [
        "image digest: computed by the mock engine; the real digest is known after `pulumi up` pushes the image"
    ]
    outputs = _referenced_outputs(stack, config, project_dir, stack_outputs, program, _seen, assumptions)

    saved_env = os.environ.pop("PULUMI_CONFIG", None)  # the render reads the stack file only
    try:
        run = run_program(config, secret_keys, stack=stack, project=project, stack_outputs=outputs, program=program)
        secret_exports = run.secret_outputs
    finally:
        if saved_env is not None:
            os.environ["PULUMI_CONFIG"] = saved_env
    exports = {k: REDACTED if k in secret_exports else _clean(v) for k, v in run.outputs.items()}

    dynamic = sorted({r.type for r in run.resources if r.type.startswith("pulumi-python:dynamic")})
    if dynamic:
        assumptions.append(
            f"{', '.join(dynamic)}: dynamic providers run only during `pulumi up`; their outputs are empty here"
        )
    objects: list[tuple[tuple[Any, ...], Any, dict[str, Any]]] = []
    others: list[dict[str, Any]] = []
    for reg in run.resources:
        if reg.type.startswith("kubernetes:") and "apiVersion" in reg.inputs and "kind" in reg.inputs:
            obj = _clean(reg.raw_inputs)
            if obj.get("kind") == "Secret":
                obj = _redact_secret_object(obj, reg.inputs)
            meta = obj.get("metadata") or {}
            rank = PATCH_RANK if is_patch(reg.type) else KIND_ORDER.get(obj["kind"], OTHER_KIND)
            key = (rank, obj["kind"], meta.get("namespace") or "", meta.get("name"))
            objects.append((key, reg, _ordered(obj)))
        else:
            others.append(_resource_summary(reg))
    # Registration order depends on async scheduling: sort by kind rank, then name, so renders are stable.
    objects.sort(key=lambda t: t[0])

    rendered = Rendered(stack)
    index_entries = []
    width = max(2, len(str(len(objects))))
    for n, (_, reg, obj) in enumerate(objects, start=1):
        meta = obj.get("metadata") or {}
        name = meta.get("name") or reg.name
        kind = _slug(obj["kind"]) + ("patch" if is_patch(reg.type) else "")
        file_name = f"{n:0{width}d}-{kind}-{_slug(name)}.yaml"
        rendered.objects.append((file_name, obj))
        entry = {"file": file_name, "apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": name}
        if is_patch(reg.type):
            entry["patch"] = True
        if meta.get("namespace"):
            entry["namespace"] = meta["namespace"]
        entry["pulumi"] = {"type": reg.type, "name": reg.name, "parent": _short(reg.parent)}
        if reg.dependencies:
            entry["pulumi"]["dependsOn"] = [_short(d) for d in reg.dependencies]
        index_entries.append(entry)

    rendered.summary = {
        "stack": stack,
        "project": project,
        "stackFile": f"Pulumi.{stack}.yaml",
        "secretConfigKeys": sorted(secret_keys),
        "assumptions": assumptions,
        "objects": index_entries,
        "resources": others,
        # StackReferences are reads, not registrations: the outputs the program was given for each.
        "stackReferences": {ref: _clean(values) for ref, values in sorted(outputs.items())},
        "exports": exports,
    }
    return rendered


# --- files -------------------------------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    pass


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str_presenter)


def dump_yaml(doc: Any) -> str:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True, width=120)


def write_render(rendered: Rendered, out: Path) -> list[Path]:
    """Write the objects and summary.yaml into `out`, replacing a previous render there (other files are kept)."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():
        if old.is_file() and (OBJECT_FILE.match(old.name) or old.name == SUMMARY_FILE):
            old.unlink()
    written = []
    for file_name, obj in rendered.objects:
        pulumi_name = next(e["pulumi"] for e in rendered.summary["objects"] if e["file"] == file_name)
        header = f"# Rendered offline from Pulumi.{rendered.stack}.yaml: {pulumi_name['type']} {pulumi_name['name']}\n"
        if file_name in rendered.patch_files:
            header += _patch_header(obj)
        path = out / file_name
        path.write_text(header + dump_yaml(obj))
        written.append(path)
    path = out / SUMMARY_FILE
    path.write_text(
        f"# Offline render of stack {rendered.stack}: everything `pulumi up` registers that is not a Kubernetes "
        "object, the object files in apply order, and the stack exports.\n" + dump_yaml(rendered.summary)
    )
    written.append(path)
    return written


def _patch_header(patch: Mapping[str, Any]) -> str:
    annotations = (patch.get("metadata") or {}).get("annotations") or {}
    manager = annotations.get("pulumi.com/patchFieldManager", "<field manager>")
    force = " --force-conflicts" if annotations.get("pulumi.com/patchForce") == "true" else ""
    return (
        f"# A Server-Side Apply patch of the {patch['kind']} of this name (rendered earlier), not an object:\n"
        f"#   kubectl apply --server-side --field-manager={manager}{force} -f <this file>\n"
    )


def _parse_stack_output(text: str) -> tuple[str, dict[str, Any]]:
    name, sep, value = text.partition("=")
    try:
        outputs = json.loads(value) if sep else None
    except json.JSONDecodeError:
        outputs = None
    if not isinstance(outputs, dict):
        raise argparse.ArgumentTypeError(f"expected ORG/PROJECT/STACK='{{json object}}', got {text!r}")
    return name, outputs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.render",
        description="Render the Kubernetes objects a stack deploys, offline (Pulumi mock runtime, no cluster).",
    )
    parser.add_argument("--stack", required=True, help="stack name: reads Pulumi.<stack>.yaml")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: render/<stack>)")
    parser.add_argument(
        "--stack-output",
        type=_parse_stack_output,
        action="append",
        default=[],
        metavar="ORG/PROJECT/STACK=JSON",
        help="outputs of a referenced stack that is not in this checkout (repeatable)",
    )
    parser.add_argument(
        "--stack-dir",
        type=Path,
        default=PROJECT_DIR,
        help="directory with Pulumi.yaml and the stack files (default: this checkout); the program is this checkout's",
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of a failure")
    args = parser.parse_args(argv)

    from components.config import ConfigError

    out = args.out or PROJECT_DIR / "render" / args.stack
    try:
        with contextlib.redirect_stdout(sys.stderr):  # pulumi.log under mocks prints: keep our output clean
            rendered = render_stack(args.stack, args.stack_dir, stack_outputs=dict(args.stack_output))
    except Exception as exc:
        if args.debug:
            raise
        if isinstance(exc, RenderError | ConfigError):  # what `pulumi up` would print
            print(f"error: {exc}", file=sys.stderr)
        else:
            print(f"error: the program failed for stack {args.stack}: {type(exc).__name__}: {exc}", file=sys.stderr)
            print("(run again with --debug for the traceback)", file=sys.stderr)
        return 1
    written = write_render(rendered, out)
    print(f"rendered stack {args.stack}: {len(rendered.objects)} Kubernetes objects and {SUMMARY_FILE} in {out}")
    for path in written:
        print(f"  {path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
