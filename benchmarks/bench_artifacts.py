"""Filesystem artifact store throughput: small puts, deduplicated puts, reads, a large file.

Run: ``.venv/bin/python benchmarks/bench_artifacts.py [--count 500] [--large-mb 64]``
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from quantrack.adapters.filesystem import FilesystemArtifactStore


def main() -> None:
    """Time each operation on a fresh store in a temporary folder and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--large-mb", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        store = FilesystemArtifactStore(Path(folder) / "artifacts")
        blobs = [os.urandom(4096) for _ in range(args.count)]

        start = time.perf_counter()
        refs = [store.put(blob) for blob in blobs]
        new = time.perf_counter() - start
        start = time.perf_counter()
        for blob in blobs:
            store.put(blob)
        dedup = time.perf_counter() - start
        start = time.perf_counter()
        for ref in refs:
            store.get(ref.id, verify=True)
        read = time.perf_counter() - start
        print(f"{args.count} new 4 KiB puts:  {new / args.count * 1e3:7.3f} ms each")
        print(f"{args.count} repeated puts:   {dedup / args.count * 1e3:7.3f} ms each (dedup)")
        print(f"{args.count} verified gets:   {read / args.count * 1e3:7.3f} ms each")

        large = Path(folder) / "large.bin"
        with large.open("wb") as handle:
            for _ in range(args.large_mb):
                handle.write(os.urandom(1 << 20))
        start = time.perf_counter()
        ref = store.put_file(large)
        put_seconds = time.perf_counter() - start
        start = time.perf_counter()
        store.verify(ref.id)
        verify_seconds = time.perf_counter() - start
        print(f"put_file {args.large_mb} MiB:       {args.large_mb / put_seconds:7.1f} MiB/s")
        print(f"verify {args.large_mb} MiB:         {args.large_mb / verify_seconds:7.1f} MiB/s")


if __name__ == "__main__":
    main()
