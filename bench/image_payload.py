"""What the image's Python payload weighs: docker/requirements.lock next to the guide's unpinned package set.

    .venv/bin/python bench/image_payload.py [--keep DIR] [--no-compress] [--json OUT]

Installs, for this interpreter's Python and platform (the image's when they match `image.pythonVersion`
and linux/amd64), into two temporary targets:

  lock   exactly what docker/Dockerfile installs: `pip install --no-deps --only-binary=:all: -r requirements.lock`
  guide  the guide's Dockerfile set, resolved by pip today: `pip install lsdb dask[complete] distributed`

and reports each payload's size on disk (and gzip-compressed, roughly what a registry stores for the layer),
its distribution count, their ratio, and which distributions only one side has, largest first.
It also runs `pip check` over the lock's target in a fresh venv, proving the lock is a closed set
(the same check the Dockerfile runs). Needs PyPI; downloads a few hundred MB; takes a few minutes.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import venv
from collections import defaultdict
from email import message_from_string
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


from components.lock import LOCK_PATH, canonical, read_lock, requirement_closure  # noqa: E402

REQUIREMENTS_IN = ROOT / "docker" / "requirements.in"

GUIDE_SET = ["lsdb", "dask[complete]", "distributed"]  # the guide's `RUN pip install --no-cache-dir ...`


def pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed (exit {res.returncode}):\n{res.stderr[-4000:]}")


def tree_bytes(path: Path) -> int:
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() or p.is_symlink())


def gzip_bytes(path: Path) -> int:
    """Size of a gzip'd tar of `path` (level 6, like `docker push`'s layer compression)."""

    class Counter:
        n = 0

        def write(self, b: bytes) -> int:
            self.n += len(b)
            return len(b)

        def flush(self) -> None:
            pass

    sink = Counter()
    with (
        gzip.GzipFile(fileobj=sink, mode="wb", compresslevel=6, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w") as tar,
    ):
        tar.add(str(path), arcname=".")
    return sink.n


def requires(target: Path) -> dict[str, list[str]]:
    """Canonical name -> its Requires-Dist lines, read from the target's own metadata."""
    out: dict[str, list[str]] = {}
    for info in target.glob("*.dist-info"):
        meta = message_from_string((info / "METADATA").read_text(encoding="utf-8", errors="replace"))
        out[canonical(meta["Name"])] = meta.get_all("Requires-Dist") or []
    return out


def closure(reqs: dict[str, list[str]], roots: list[str]) -> set[str]:
    """Everything `roots` pull in (extras followed, markers evaluated for this interpreter)."""
    return set(requirement_closure(reqs, roots))


def root_costs(target: Path, sizes: dict[str, tuple[str, int]]) -> list[tuple[str, int, int]]:
    """For each root of docker/requirements.in: (root, distributions, bytes) that only it brings into the image."""
    reqs = requires(target)
    roots = [r for r in (line.split("#", 1)[0].strip() for line in REQUIREMENTS_IN.read_text().splitlines()) if r]
    rows = []
    for root in roots:
        only = closure(reqs, roots) - closure(reqs, [r for r in roots if r != root])
        rows.append((root, len(only), sum(sizes[n][1] for n in only if n in sizes)))
    return sorted(rows, key=lambda t: -t[2])


def per_distribution(target: Path) -> dict[str, tuple[str, int]]:
    """Canonical name -> (version, bytes of the files its RECORD lists)."""
    out: dict[str, tuple[str, int]] = {}
    for info in target.glob("*.dist-info"):
        meta = (info / "METADATA").read_text(encoding="utf-8", errors="replace")
        fields = dict(
            line.split(": ", 1) for line in meta.split("\n\n", 1)[0].splitlines() if ": " in line and line[0] != " "
        )
        size = 0
        record = info / "RECORD"
        if record.exists():
            for row in record.read_text().splitlines():
                rel = row.split(",", 1)[0]
                f = (target / rel).resolve()
                if f.is_file():
                    size += f.stat().st_size
        out[canonical(fields["Name"])] = (fields["Version"], size)
    return out


def install_lock(target: Path) -> float:
    start = time.monotonic()
    pip("install", "--quiet", "--no-cache-dir", "--no-deps", "--only-binary=:all:", "--target", str(target),
        "--requirement", str(LOCK_PATH))  # fmt: skip
    return time.monotonic() - start


def install_guide(target: Path) -> float:
    start = time.monotonic()
    pip("install", "--quiet", "--no-cache-dir", "--target", str(target), *GUIDE_SET)
    return time.monotonic() - start


def pip_check(target: Path, scratch: Path) -> str:
    """`pip check` over the target alone (a fresh venv: only pip and setuptools besides it, like the base image)."""
    env_dir = scratch / "check-venv"
    venv.create(env_dir, with_pip=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "VIRTUAL_ENV")} | {"PYTHONPATH": str(target)}
    res = subprocess.run(
        [str(env_dir / "bin" / "python"), "-m", "pip", "check"], env=env, capture_output=True, text=True
    )
    return (res.stdout + res.stderr).strip() + f" (exit {res.returncode})"


def mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", type=Path, help="install into DIR/lock and DIR/guide and keep them")
    ap.add_argument("--no-compress", action="store_true", help="skip the gzip estimate (saves ~1 min)")
    ap.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="image-payload-") as tmp:
        base = args.keep or Path(tmp)
        lock_dir, guide_dir = base / "lock", base / "guide"
        for d in (lock_dir, guide_dir):
            shutil.rmtree(d, ignore_errors=True)
        print(f"python {sys.version.split()[0]} on {sys.platform}; installing into {base}", flush=True)
        t_lock = install_lock(lock_dir)
        print(f"lock installed in {t_lock:.0f}s", flush=True)
        t_guide = install_guide(guide_dir)
        print(f"guide set installed in {t_guide:.0f}s", flush=True)
        check = pip_check(lock_dir, Path(tmp))

        sides = {"lock": lock_dir, "guide": guide_dir}
        size = {k: tree_bytes(p) for k, p in sides.items()}
        gz = {k: (None if args.no_compress else gzip_bytes(p)) for k, p in sides.items()}
        dists = {k: per_distribution(p) for k, p in sides.items()}
        costs = root_costs(lock_dir, dists["lock"])

    lock_pins = read_lock()
    installed_lock = {n: v for n, (v, _) in dists["lock"].items()}
    assert installed_lock == lock_pins, "the lock target differs from docker/requirements.lock"

    print()
    print(f"{'payload':<8} {'distributions':>13} {'on disk':>14} {'gzip tar':>14}")
    for k in sides:
        z = "-" if gz[k] is None else mib(gz[k])
        print(f"{k:<8} {len(dists[k]):>13} {mib(size[k]):>14} {z:>14}")
    ratio = size["lock"] / size["guide"]
    print(f"ratio lock/guide on disk: {ratio:.2f}", end="")
    if gz["lock"] and gz["guide"]:
        print(f"; gzip: {gz['lock'] / gz['guide']:.2f}", end="")
    print()
    print(f"pip check over the lock alone: {check}")

    only: dict[str, list[tuple[str, str, int]]] = defaultdict(list)
    for side, other in (("lock", "guide"), ("guide", "lock")):
        for n, (v, b) in dists[side].items():
            if n not in dists[other]:
                only[side].append((n, v, b))
        only[side].sort(key=lambda t: -t[2])
        total = sum(b for *_, b in only[side])
        print(f"\nonly in {side} ({len(only[side])} distributions, {mib(total)}):")
        for n, v, b in only[side]:
            print(f"  {n + '==' + v:<44} {mib(b):>12}")
    differing = sorted(
        (n, dists["lock"][n][0], dists["guide"][n][0])
        for n in dists["lock"].keys() & dists["guide"].keys()
        if dists["lock"][n][0] != dists["guide"][n][0]
    )
    if differing:
        print("\nin both, other version (lock vs guide's resolution today):")
        for n, a, b in differing:
            print(f"  {n}: {a} vs {b}")
    print("\nwhat each root of docker/requirements.in alone brings into the image (drop it and this goes):")
    for root, count, b in costs:
        print(f"  {root:<20} {count:>4} distributions {mib(b):>12}")
    largest = sorted(dists["lock"].items(), key=lambda kv: -kv[1][1])[:15]
    print("\nlargest in the lock:")
    for n, (v, b) in largest:
        print(f"  {n + '==' + v:<44} {mib(b):>12}")

    if args.json:
        figures = {
            "python": sys.version.split()[0],
            "bytes": size,
            "gzip_bytes": gz,
            "distributions": {k: len(v) for k, v in dists.items()},
            "ratio_on_disk": ratio,
            "pip_check": check,
            "only": {k: [{"name": n, "version": v, "bytes": b} for n, v, b in rows] for k, rows in only.items()},
            "root_costs": [{"root": r, "distributions": c, "bytes": b} for r, c, b in costs],
            "seconds": {"lock": t_lock, "guide": t_guide},
        }
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
