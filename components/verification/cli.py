"""`python -m components.verification`: the check from a shell. Exit 0 when it passes, 1 when it fails (the
stage message on stderr; with `--json` the failure as JSON on stdout), 2 on a usage error. The dynamic provider
runs exactly this command in a child process.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic.alias_generators import to_camel, to_snake
from pydantic.fields import FieldInfo

from components.verification.check import (
    DEFAULT_STAGE_TIMEOUTS,
    VerificationError,
    WaitHook,
    client_security,
    verify_catalog_query,
)
from components.verification.diagnostics import Fixes
from components.verification.kube import Kr8sReader, SchedulerPortForward, StuckPods
from components.verification.query import (
    CONNECT_MODES,
    DIRECT,
    GATE,
    PORT_FORWARD,
    ClusterRef,
    ConeConfig,
    VerificationQuery,
    VerificationResult,
    parse_storage_options,
)

# The query's flags are its fields (`--min-rows`, the cone's flat: `--ra`), but for these older names; `connect`
# and the storage options have flags of their own (`--connect`/`--port-forward`, repeatable `--storage-option`).
FLAG_NAMES = {"catalog_path": "--catalog", "timeout_seconds": "--timeout"}
OWN_FLAGS = {"enabled", "connect", "storage_options"}
# Required unless `--query` has them: the command line has no default catalog or cone (the gate needs neither).
REQUIRED = ("catalog_path", "ra", "dec", "radius_arcsec")
# The flags after the query's: (flag, argparse's keywords).
OTHER_FLAGS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("--json", dict(action="store_true", help="print the result (or the failure) as JSON on stdout")),
    ("--namespace", dict(help="Kubernetes namespace (names the real objects in error messages)")),
    ("--cluster-name", dict(help="DaskCluster name (names the real objects in error messages)")),
    ("--kube-context", dict(help="kube context for --port-forward and messages (default: the current one)")),
    ("--tls-ca-file", dict(help="CA certificate (PEM) of a TLS cluster: `clientTls.ca` of the stack")),
    ("--tls-cert-file", dict(help="client certificate (PEM): `clientTls.cert`")),
    ("--tls-key-file", dict(help="client private key (PEM): `clientTls.key`")),
    ("--port-forward", dict(
        action="store_true",
        help="port-forward svc/<cluster-name>-scheduler in --namespace with kr8s instead of --scheduler",
    )),
    ("--connect", dict(
        choices=CONNECT_MODES,
        help="the stack's verify.connect: portForward (same as --port-forward) or direct (needs --scheduler)",
    )),
    ("--storage-option", dict(
        action="append", default=[], metavar="KEY=VALUE",
        help="passed to lsdb.open_catalog(storage_options=...) on the worker, repeatable; VALUE is JSON where it"
        " parses (anon=false) and a string otherwise (the stack's catalogStorageOptions export)",
    )),
    ("--lock-json", dict(type=Path, help="JSON object of pinned versions (default: docker/requirements.lock)")),
)  # fmt: skip


def flag_of(name: str) -> str:
    return FLAG_NAMES.get(name, "--" + name.replace("_", "-"))


def query_flags() -> list[tuple[bool, str, FieldInfo]]:
    """(in the cone?, field name, field) for every query field that has a flag of its own."""
    flags = [(True, name, field) for name, field in ConeConfig.model_fields.items()]
    flags += [(False, n, f) for n, f in VerificationQuery.model_fields.items() if n not in OWN_FLAGS | {"cone"}]
    return flags


def format_summary(result: VerificationResult) -> str:
    """The success report, with the sample rows as a small table."""
    lines = [
        f"LSDB verification passed in {result.elapsed_seconds:.2f} s",
        f"  scheduler  {result.scheduler} ({result.workers} worker{'s' if result.workers != 1 else ''})",
        "  groups     " + (", ".join(f"{g} {n}" for g, n in result.workers_by_group.items()) or "unknown"),
    ]
    if result.catalog_path is not None:  # a gate ran no query
        lines += [
            f"  catalog    {result.catalog_path}: {result.rows} row(s) in {result.partitions} partition(s)",
            "  versions   " + ", ".join(f"{k} {v}" for k, v in result.versions.items()),
        ]
    lines += ["  stages     " + ", ".join(f"{k} {v:.2f}s" for k, v in result.stage_seconds.items())]
    lines += [f"  warning    {w}" for w in result.warnings]
    if result.sample:
        cols = list(result.sample[0])
        table = [cols, *([_cell(row.get(c)) for c in cols] for row in result.sample)]  # the header, then the rows
        widths = [max(len(r[i]) for r in table) for i in range(len(cols))]
        lines.append(f"  first {len(result.sample)} row(s):")
        lines += ["    " + "  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in table]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m components.verification",
        description="Verify a Dask cluster end to end with an LSDB cone query (exit 0 on success, 1 on failure).",
    )
    p.add_argument("--scheduler", help="scheduler address, e.g. tcp://localhost:8786 (or use --port-forward)")
    p.add_argument(
        "--query",
        metavar="JSON",
        help="the whole query as one JSON object, keys as in the stack's verify section (catalogPath, cone, ...,"
        " storageOptions, sampleRows); the query's flags override its keys",
    )
    for _, name, field in query_flags():
        default = field.get_default(call_default_factory=True)
        shown = "" if name in REQUIRED or default in (None, []) else f" (default {default})"
        kind: Any = field.annotation if field.annotation in (int, float) else None  # else the model parses the text
        metavar = flag_of(name)[2:].upper().replace("-", "_")
        p.add_argument(flag_of(name), dest=name, type=kind, metavar=metavar, help=f"{field.description}{shown}")
    for flag, options in OTHER_FLAGS:
        p.add_argument(flag, **options)
    return p


def query_document(p: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, Any]:
    """The query as one JSON object: `--query`, overridden by the query's flags (exit 2 when one is missing)."""
    try:
        document = json.loads(args.query) if args.query else {}
    except ValueError as exc:
        p.error(f"--query is not JSON: {exc}")
    if not isinstance(document, dict):
        p.error("--query must be a JSON object")
    cone = dict(document.get("cone") or {})
    for in_cone, name, _ in query_flags():
        if getattr(args, name) is not None:
            (cone if in_cone else document)[to_camel(name)] = getattr(args, name)
    missing = [
        flag_of(name)
        for name in REQUIRED
        if to_camel(name) not in (cone if name in ConeConfig.model_fields else document)
        and document.get("stages") != GATE
    ]
    if missing:
        p.error(f"the following arguments are required: {', '.join(missing)}")
    try:
        if args.storage_option:
            document["storageOptions"] = parse_storage_options(args.storage_option)
    except ValueError as exc:
        p.error(str(exc))
    return {**document, "cone": cone}


def _connect_mode(p: argparse.ArgumentParser, args: argparse.Namespace, document: dict[str, Any]) -> str:
    """--connect, the query's `connect`, or which of --port-forward / --scheduler was given."""
    connect: str = args.connect or document.get("connect") or (PORT_FORWARD if args.port_forward else DIRECT)
    port_forward = connect == PORT_FORWARD
    if args.port_forward and not port_forward:
        p.error("--port-forward contradicts --connect direct")
    if bool(args.scheduler) == port_forward:
        p.error("give exactly one of --scheduler ADDR or --port-forward")
    if port_forward and not (args.namespace and args.cluster_name):
        p.error("--port-forward needs --namespace and --cluster-name")
    return connect


def config_problem(error: ValidationError) -> str:
    """The query's problems, for the check's `config` stage: `cone.dec=95.0: Input should be ...; ...`."""
    return "; ".join(
        f"{'.'.join(to_snake(str(part)) for part in e['loc']) or 'query'}={e['input']!r}: {e['msg']}"
        for e in error.errors()
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    document = query_document(p, args)
    document["connect"] = _connect_mode(p, args, document)
    port_forward = document["connect"] == PORT_FORWARD
    tls_files = (args.tls_ca_file, args.tls_cert_file, args.tls_key_file)
    if any(tls_files) and not all(tls_files):
        p.error("give all of --tls-ca-file, --tls-cert-file and --tls-key-file, or none")
    security = client_security(*tls_files) if all(tls_files) else None
    # The failure message says what went wrong; distributed's own reconnect chatter would only bury it. distributed
    # sets its loggers' levels when it is first imported: imported first, so that this level holds.
    importlib.import_module("distributed")
    logging.getLogger("distributed").setLevel(logging.CRITICAL)
    where = ClusterRef(args.namespace, args.cluster_name, args.kube_context)
    locked = json.loads(args.lock_json.read_text()) if args.lock_json else None
    started = time.monotonic()
    # With API access (portForward) the wait reads the cluster's pods and fails early on a stuck one; `direct`
    # has none and retries the connection until the budget.
    wait_hook: WaitHook | None = StuckPods(Kr8sReader(args.kube_context), where) if port_forward else None
    try:
        try:  # before any port-forward: the config stage comes first
            query = VerificationQuery.model_validate(document)
        except ValidationError as exc:
            raise VerificationError("config", config_problem(exc), Fixes(where)("config")) from None
        # The port-forward waits for the Service within the connect stage's budget.
        connect_budget = min(DEFAULT_STAGE_TIMEOUTS["connect"], query.timeout_seconds)
        address: contextlib.AbstractContextManager[str] = (
            SchedulerPortForward(where, timeout=connect_budget, wait_hook=wait_hook)
            if port_forward
            else contextlib.nullcontext(args.scheduler)
        )
        with address as scheduler:
            # What the port-forward took comes off the overall deadline and the connect stage's budget.
            spent = time.monotonic() - started
            remaining = max(query.timeout_seconds - spent, 0.001)
            result = verify_catalog_query(
                scheduler,
                query.model_copy(update={"timeout_seconds": remaining}),
                where=where,
                locked_versions=locked,
                wait_hook=wait_hook,
                security=security,
                stage_timeouts={"connect": max(connect_budget - spent, 1.0)},
            )
    except VerificationError as exc:
        if args.json:
            print(json.dumps(exc.to_dict()))
        print(str(exc), file=sys.stderr)
        return 1
    print(json.dumps({"ok": True, **result.model_dump()}) if args.json else format_summary(result))
    return 0
