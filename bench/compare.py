#!/usr/bin/env python3
"""Regression check: this build against another oci-packer binary, interleaved run by run
under the same conditions (a fresh digest cache and a fresh layout for every run).

Usage: python3 bench/compare.py --old PATH/TO/oci-packer [--runs N]
Cases: one 1 GiB file -> layout (P1), 10,000 files of 4 KiB -> layout (P3), and the re-pack
of those 10,000 files into the layout that has them. Prints figures; asserts nothing.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import tempfile

from common import BIN, GiB, ROOT, run, settle, write_random, write_small_files


def series(label, binaries, make_cmd, runs, cwd, cleanup):
    times = {name: [] for name in binaries}
    rss = {name: [] for name in binaries}
    for i in range(runs):
        for name, binary in binaries.items():
            settle()
            t, r = run(make_cmd(binary, f"{name}{i}"), cwd=cwd)
            times[name].append(t)
            rss[name].append(r)
            cleanup(f"{name}{i}")
    med = {n: statistics.median(ts) for n, ts in times.items()}
    for n in binaries:
        print(f"  {label:<34} {n:<4} median {med[n]:7.3f} s  best {min(times[n]):6.3f} s  "
              f"peak RSS {max(rss[n]):6.1f} MiB  (runs: {', '.join(f'{t:.2f}' for t in times[n])})")
    print(f"  => new/old: median {med['new'] / med['old']:.2f}x, best "
          f"{min(times['new']) / min(times['old']):.2f}x")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--old", required=True)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--locked", "--quiet"], cwd=ROOT, check=True)
    binaries = {"old": os.path.abspath(args.old), "new": BIN}
    work = tempfile.mkdtemp(prefix="oci-packer-compare-", dir=os.environ.get("BENCH_DIR"))
    try:
        def cmd(yaml, extra=()):
            def make(binary, tag):
                cache = os.path.join(work, f"cache-{tag}")
                return ["env", f"XDG_CACHE_HOME={cache}", binary, *extra, "pack", "-f", yaml, f"oci://l-{tag}:v1"]
            return make

        def clean(tag):
            shutil.rmtree(os.path.join(work, f"l-{tag}"), ignore_errors=True)
            shutil.rmtree(os.path.join(work, f"cache-{tag}"), ignore_errors=True)

        big = os.path.join(work, "big.bin")
        write_random(big, GiB)
        with open(os.path.join(work, "file.yaml"), "w") as f:
            f.write("items:\n  - from: file://big.bin\n")
        print(f"old: {binaries['old']}\nnew: {binaries['new']}\n\n1 GiB file -> layout")
        series("pack", binaries, cmd("file.yaml"), args.runs, work, clean)
        os.remove(big)

        small = os.path.join(work, "small")
        write_small_files(small)
        with open(os.path.join(work, "dir.yaml"), "w") as f:
            f.write("items:\n  - from: dir://small\n")
        print("\n10,000 files of 4 KiB -> layout")
        series("pack", binaries, cmd("dir.yaml"), args.runs, work, lambda tag: None)
        print("\nre-pack of the 10,000 files (all blobs present)")
        series("pack again", binaries, cmd("dir.yaml"), args.runs, work, clean)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
