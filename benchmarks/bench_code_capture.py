"""Code capture and provenance cost per run: a generated 50-file project.

Run: ``.venv/bin/python benchmarks/bench_code_capture.py [--files 50] [--repeat 20]``

Prints the time to analyse the imports of a strategy reaching every file of the project
(cold, then warm as in a sweep), to capture it into a filesystem artifact store (first
capture writes every file, later ones deduplicate), to find the code again when no file
changed (the cached plan, validated by one ``os.stat`` per file and folder it depends on),
and to collect provenance inside a git repository (cold, then with the per-process caches
warm).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from quantrack.adapters.filesystem import FilesystemArtifactStore
from quantrack.services.code_capture import capture_code, find_code
from quantrack.services.provenance import clear_provenance_cache, collect_provenance


def make_project(root: Path, files: int) -> Path:
    """A project of ``files`` modules in 5 packages, chained so the entry reaches them all."""
    packages = 5
    # Captured: the entry, one __init__.py per package, and the modules spread evenly.
    modules = max(packages, files - packages - 1)
    (root / "pyproject.toml").write_text("[project]\nname = 'bench'\n")
    imports = []
    for p in range(packages):
        package = root / f"pkg{p}"
        package.mkdir()
        (package / "__init__.py").write_text("")
        count = modules // packages + (1 if p < modules % packages else 0)
        for m in range(count):
            following = f"from . import mod{m + 1}\n" if m + 1 < count else ""
            body = "import math\nimport json\n" + following
            body += "".join(f"\ndef f{i}(x):\n    return math.sqrt(x) + {i}\n" for i in range(40))
            (package / f"mod{m}.py").write_text(body)
        imports.append(f"from pkg{p} import mod0\n")
    entry = root / "strategy.py"
    entry.write_text("import numpy\nimport pandas\n" + "".join(imports) + "class S:\n    pass\n")
    return entry


def date(paths: list[Path], ns: int) -> None:
    """Set the modification time of ``paths``."""
    for path in paths:
        os.utime(path, ns=(ns, ns))


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """(first call, median of the next ``repeat``) in milliseconds."""
    start = time.perf_counter()
    fn()
    first = (time.perf_counter() - start) * 1000
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - start) * 1000)
    return first, statistics.median(runs)


def main() -> None:
    """Build the project, time each step, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "project"
        root.mkdir()
        entry = make_project(root, args.files)
        subprocess.run(["git", "init", "-q", str(root)], check=True)
        # A timestamp in the future is never trusted (see code_capture's racy rule), so
        # every call below redoes the import analysis: the cost when a file changed.
        date([entry], time.time_ns() + 3_600_000_000_000)
        plan = find_code(entry)
        print(f"project: {len(plan.files)} files captured, packages {list(plan.packages)}")
        first, analysed = timed(lambda: find_code(entry), args.repeat)
        print(f"find_code:     first {first:7.2f} ms   warm median {analysed:7.2f} ms")
        store = FilesystemArtifactStore(Path(folder) / "artifacts")
        first, warm = timed(lambda: capture_code(store, entry), args.repeat)
        print(f"capture_code:  first {first:7.2f} ms   warm median {warm:7.2f} ms (dedup)")
        # A research loop reruns code saved well before the run: date the project a minute
        # back, and the plan is reused while every file and folder keeps its signature.
        date([root, *root.rglob("*")], time.time_ns() - 60_000_000_000)
        _, cached = timed(lambda: find_code(entry), args.repeat * 50)
        print(
            f"find_code, unchanged files (cached): median {cached * 1000:7.1f} us "
            f"vs {analysed * 1000:7.1f} us uncached (warm)"
        )
        clear_provenance_cache()
        first, warm = timed(
            lambda: collect_provenance(cwd=root, modules=plan.packages), args.repeat
        )
        print(f"provenance:    first {first:7.2f} ms   cached median {warm:7.2f} ms")
        first, uncached = timed(
            lambda: collect_provenance(cwd=root, modules=plan.packages, git_cache_seconds=0),
            args.repeat,
        )
        print(f"provenance, git re-read every call: median {uncached:7.2f} ms")
    print(f"python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
