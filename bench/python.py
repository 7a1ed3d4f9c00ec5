#!/usr/bin/env python3
"""The same 1 GiB pack through the Python API and through the CLI, in one run (issue 4).

Usage: .venv/bin/python bench/python.py [--runs N]   (after `pip install .` into that venv)
Prints figures and the ratio; asserts nothing.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from common import BIN, GiB, ROOT, settle, write_random


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    import oci_packer

    subprocess.run(["cargo", "build", "--release", "--locked", "--quiet"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="oci-packer-bench-", dir=os.environ.get("BENCH_DIR"))
    try:
        write_random(os.path.join(work, "big.bin"), GiB)
        with open(os.path.join(work, "p.yaml"), "w") as f:
            f.write("items:\n  - from: file://big.bin\n")
        api, cli = [], []
        for i in range(args.runs):
            # Alternate, each into a new layout with a fresh --tmp-dir (no remembered digest).
            settle()
            t = time.perf_counter()
            os.environ["XDG_CACHE_HOME"] = f"{work}/cache-api{i}"
            oci_packer.pack(os.path.join(work, "p.yaml"), f"oci://{work}/api{i}:v1")
            api.append(time.perf_counter() - t)
            shutil.rmtree(f"{work}/api{i}")
            settle()
            t = time.perf_counter()
            env = dict(os.environ, XDG_CACHE_HOME=f"{work}/cache-cli{i}")
            subprocess.run([BIN, "pack", "-f", "p.yaml", f"oci://cli{i}:v1"], cwd=work, check=True,
                           stdout=subprocess.DEVNULL, env=env)
            cli.append(time.perf_counter() - t)
            shutil.rmtree(f"{work}/cli{i}")
        a, c = statistics.median(api), statistics.median(cli)
        print(f"1 GiB file -> layout, {args.runs} runs each, alternating")
        print(f"  Python API  median {a:.3f} s  best {min(api):.3f} s  (runs: {', '.join(f'{x:.2f}' for x in api)})")
        print(f"  CLI         median {c:.3f} s  best {min(cli):.3f} s  (runs: {', '.join(f'{x:.2f}' for x in cli)})")
        print(f"  => API/CLI {a / c:.3f} median, {min(api) / min(cli):.3f} best (goal: within 3%)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
