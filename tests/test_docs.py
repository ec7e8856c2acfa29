"""What README.md and docs/ claim is checked: config keys exist, links resolve, commands name real things.

Also the claim the stack files make by their shape: each holds only what differs from the model's defaults.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from components.config import ConfigError, StackConfig, parse_stack_config
from components.lock import PROJECT_DIR
from tools.render import stack_config

PROJECT = "lsdb-k8s"
STACKS = sorted(p.name.split(".")[1] for p in PROJECT_DIR.glob("Pulumi.*.yaml"))


# --- stack files hold only what differs from the defaults ---------------------------------------------


def _stack_raw(stack: str) -> tuple[dict[str, Any], frozenset[str]]:
    config, secret = stack_config(stack)
    prefix = f"{PROJECT}:"
    raw = {k.removeprefix(prefix): v for k, v in config.items() if k.startswith(prefix)}
    return raw, frozenset(k.removeprefix(prefix) for k in secret)


def _as_value(text: Any) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def _leaf_paths(value: Any, path: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    if isinstance(value, dict) and value:
        for key, inner in value.items():
            yield from _leaf_paths(inner, (*path, key))
    else:
        yield path  # a scalar or a list: one value as a user sets it


def _without(raw: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    out = dict(raw)
    top, rest = path[0], path[1:]
    if not rest:
        del out[top]
        return out
    section = json.loads(json.dumps(_as_value(out[top])))
    node = section
    for key in rest[:-1]:
        node = node[key]
    del node[rest[-1]]
    out[top] = json.dumps(section)
    return out


def _parsed(raw: dict[str, Any], secret: frozenset[str]) -> StackConfig | str:
    try:
        return parse_stack_config(raw, secret)
    except ConfigError as error:  # without the key the config is invalid: the key matters
        return str(error)


@pytest.mark.parametrize("stack", STACKS)
def test_stack_files_hold_only_what_differs_from_the_defaults(stack: str) -> None:
    # A key whose default follows another key (cluster.size presets) counts as restating it only when
    # leaving it out gives the same model, which is what comparing the parsed models decides.
    raw, secret = _stack_raw(stack)
    whole = _parsed(raw, secret)
    assert isinstance(whole, StackConfig), whole
    restated = [
        ".".join(path)
        for top, value in raw.items()
        for path in _leaf_paths(_as_value(value), (top,))
        if _parsed(_without(raw, path), secret) == whole
    ]
    assert restated == [], f"Pulumi.{stack}.yaml restates defaults: remove {restated}"


# --- every claim in README.md and docs/ points at something real ---------------------------------------

DOCUMENTS = [PROJECT_DIR / "README.md", *sorted((PROJECT_DIR / "docs").glob("*.md"))]
SCHEMA_FILE = PROJECT_DIR / "schema" / "pulumi-stack.schema.json"
SECTIONS = "|".join(info.alias or name for name, info in StackConfig.model_fields.items())
# A dotted key (`storage.kind`, `<cluster.name>`), not a host (`svc.cluster.local`), path or file (`image.py`).
KEY = re.compile(rf"(?<![\w./-])((?:{SECTIONS})\.[A-Za-z0-9_.]*[A-Za-z0-9_])")
# The configuration reference's error example misspells a key on purpose (tests/test_readme.py checks its output).
MISSPELT_ON_PURPOSE = {"storage.accesMode"}
FILE_SUFFIX = re.compile(r"\.(py|ya?ml|json|md|txt|lock|toml|in)$")
FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```", re.S | re.M)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
SHELL = {"bash", "sh", "shell", "console"}
REPO_PATH = re.compile(
    r"(?<![\w/.$<-])((?:scripts|deploy|docker|tools|components|tests|bench|schema|docs|policy|\.github)/[\w./-]*\w"
    r"|Pulumi\.[a-z]+\.yaml)"
)


def _prose(text: str) -> str:
    return FENCE.sub("", text)


def _code_spans(text: str) -> list[str]:
    return re.findall(r"`([^`\n]+)`", _prose(text))


def _shell_blocks(text: str) -> list[str]:
    return [body for lang, body in FENCE.findall(text) if lang in SHELL]


def named_keys(text: str) -> set[str]:
    """Config keys named in backticks in prose, and after `--path` in shell blocks."""
    spans = _code_spans(text) + [
        m for block in _shell_blocks(text) for m in re.findall(r"--path\s+'?([\w.\[\]]+)", block)
    ]
    return {key for span in spans for key in KEY.findall(re.sub(r"\[\d+\]", "", span)) if not FILE_SUFFIX.search(key)}


def _schema_node(schema: dict[str, Any], node: dict[str, Any]) -> list[dict[str, Any]]:
    """The object schemas a node stands for ($ref, anyOf and oneOf resolved: storage.kind is a oneOf per kind)."""
    if "$ref" in node:
        return _schema_node(schema, schema["$defs"][node["$ref"].rsplit("/", 1)[1]])
    for union in ("anyOf", "oneOf"):
        if union in node:
            return [n for branch in node[union] for n in _schema_node(schema, branch)]
    return [node]


def key_exists(key: str, schema: dict[str, Any]) -> bool:
    top, *rest = key.split(".")
    nodes = _schema_node(schema, schema["properties"]["config"]["properties"].get(f"{PROJECT}:{top}", {"not": {}}))
    for part in rest:
        inner: list[dict[str, Any]] = []
        for node in nodes:
            if part in node.get("properties", {}):
                inner += _schema_node(schema, node["properties"][part])
            elif isinstance(node.get("additionalProperties"), dict):  # a map: any name is a key of it
                inner += _schema_node(schema, node["additionalProperties"])
            else:  # a map whose names follow a pattern (catalogs.<DNS label>)
                patterns = node.get("patternProperties", {}).items()
                inner += [n for p, sub in patterns if re.match(p, part) for n in _schema_node(schema, sub)]
        nodes = inner
    return bool(nodes) and "not" not in nodes[0]


def github_slugs(text: str) -> set[str]:
    """The anchors GitHub gives a document's headings (lowercase, punctuation dropped, spaces to '-', -N)."""
    slugs: set[str] = set()
    for line in _prose(text).splitlines():
        match = re.match(r"#{1,6} (.*)", line)
        if not match:
            continue
        title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", match.group(1)).replace("`", "")
        slug = re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
        unique, n = slug, 0
        while unique in slugs:
            n += 1
            unique = f"{slug}-{n}"
        slugs.add(unique)
    return slugs


def broken_links(path: Path) -> list[str]:
    broken = []
    for target in LINK.findall(_prose(path.read_text())):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:: not checked offline
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{target}: no file {file_part}")
        elif anchor and linked.suffix == ".md" and anchor not in github_slugs(linked.read_text()):
            broken.append(f"{target}: no heading #{anchor} in {linked.name}")
    return broken


def make_targets() -> set[str]:
    text = (PROJECT_DIR / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z0-9_-]+)\s*:(?!=)", text, re.M))


def missing_commands(text: str) -> list[str]:
    """`make` targets, `python -m` modules and repository paths in shell blocks (and inline commands) that do not
    exist."""
    targets = make_targets()
    missing = []
    lines = [line for block in _shell_blocks(text) for line in block.splitlines()]
    lines += [span for span in _code_spans(text) if re.match(r"(make|(\S*/)?python3? -m) ", span)]
    for line in lines:
        command = line.split(" # ", 1)[0]
        if command.lstrip().startswith("#"):
            continue
        missing += [f"make {t}" for t in re.findall(r"(?<![\w-])make ([a-z][\w-]*)", command) if t not in targets]
        for module in re.findall(r"python3? -m (\w+(?:\.\w+)*)(?![.\w])", command):
            local = PROJECT_DIR / module.replace(".", "/")
            if (PROJECT_DIR / module.split(".")[0]).is_dir():  # this repository's: the file must exist
                found = local.with_suffix(".py").is_file() or (local / "__main__.py").is_file()
            else:  # an installed tool (pip, pytest)
                found = importlib.util.find_spec(module) is not None
            if not found:
                missing.append(f"python -m {module}")
        missing += [p for p in REPO_PATH.findall(command) if not (PROJECT_DIR / p).exists()]
    return missing


def test_the_documents_are_there_and_the_readme_is_short() -> None:
    assert {p.name for p in DOCUMENTS} >= {"README.md", "configuration.md", "lifecycle.md", "troubleshooting.md"}
    assert len((PROJECT_DIR / "README.md").read_text().splitlines()) <= 300


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.name)
def test_every_config_key_named_exists(path: Path) -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    keys = named_keys(path.read_text())
    assert sorted(k for k in keys - MISSPELT_ON_PURPOSE if not key_exists(k, schema)) == []


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.name)
def test_every_relative_link_and_anchor_resolves(path: Path) -> None:
    assert broken_links(path) == []


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.name)
def test_every_make_target_module_and_path_in_a_shell_block_exists(path: Path) -> None:
    assert missing_commands(path.read_text()) == []


def test_the_checks_see_what_they_check() -> None:
    # Each check finds real things in the documents (an empty scan would pass anything).
    text = "\n".join(p.read_text() for p in DOCUMENTS)
    assert {"storage.kind", "security.egressCidrs", "cluster.name", "image.registry.password"} <= named_keys(text)
    assert len(LINK.findall(text)) > 30
    assert "make up" in "\n".join(_shell_blocks(text))
    schema = json.loads(SCHEMA_FILE.read_text())
    assert key_exists("cluster.workerGroups.highmem.memory", schema)  # a map's entries
    assert not key_exists("security.egressCIDRs", schema) and not key_exists("cluster.workers.replica", schema)
    assert github_slugs("# A `b` c\n## 4. The TLS bundle\n## A b c\n") == {"a-b-c", "4-the-tls-bundle", "a-b-c-1"}
