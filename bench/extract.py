#!/usr/bin/env python3
"""Benchmarks of the read side, against the physical limit measured in the same run.

1. `extract --unpack` of an image whose one layer is a 1 GiB tar+zstd archive (real, mixed
   content from /usr), against `tar --zstd -xf` of the same file: both read the archive,
   decompress it and create the same files; ours also reads it out of the layout, verifies
   its digest and writes the config and a pack.yaml. A fresh output directory every run.
2. `copy --unpack` of that image into a fresh layout: the blob stored and the layer
   extracted beside it, against `cp` of the blob plus `tar --zstd -xf`.
3. `delete` of an entry of 10,000 blobs in a layout (each run on a fresh copy), against
   `rm -rf` of the same blob files (unlinking is the floor of any collection).

Prints figures and ratios; asserts nothing. Usage: python3 bench/extract.py [--runs N]
Needs: a release build (built here), GNU tar and zstd (Debian packages).
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

from common import BIN, GiB, ROOT, median_runs, write_small_files

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from layout import copy_tree_upto  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="oci-packer-bench-", dir=os.environ.get("BENCH_DIR"))
    try:
        run_all(work, args.runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_all(work, runs):
    tree = os.path.join(work, "tree")
    os.mkdir(tree)
    total = copy_tree_upto(tree, GiB)
    layer = os.path.join(work, "layer.tar.zst")
    subprocess.run(["tar", "--zstd", "-cf", layer, "-C", tree, "."], check=True)
    shutil.rmtree(tree)
    with open(os.path.join(work, "cfg.json"), "w") as f:
        f.write('{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}')
    with open(os.path.join(work, "image.yaml"), "w") as f:
        f.write("config: {from: file://cfg.json, type: application/vnd.oci.image.config.v1+json}\n"
                "items:\n- from: file://layer.tar.zst\n")
    subprocess.run([BIN, "pack", "-f", "image.yaml", "oci://img:v1"], cwd=work, check=True,
                   stdout=subprocess.DEVNULL)
    size = os.path.getsize(layer)
    print(f"1. extract --unpack of a {size / 2**20:.0f} MiB tar+zstd layer ({total / 2**20:.0f} MiB of files from /usr)")
    out = lambda i: os.path.join(work, f"out{i}")  # noqa: E731
    clean = lambda i: shutil.rmtree(out(i), ignore_errors=True)  # noqa: E731
    ours = median_runs("oci-packer extract --unpack", lambda i: [BIN, "extract", "oci://img:v1", out(i), "--unpack"],
                       runs, cleanup=clean, cwd=work)
    tar = median_runs("tar --zstd -xf (same file)", lambda i: ["sh", "-c", f"mkdir {out(i)} && tar --zstd -xf {layer} -C {out(i)}"],
                      runs, cleanup=clean, cwd=work)
    print(f"  ratio: {ours.ratio(tar)} the time of tar --zstd -xf (goal <= 1.2x)\n")

    print("2. copy --unpack of that image into a fresh layout")
    dst = lambda i: os.path.join(work, f"dst{i}")  # noqa: E731
    ours = median_runs("oci-packer copy --unpack", lambda i: [BIN, "copy", "--unpack", "oci://img:v1", f"oci://{dst(i)}:v1"],
                       runs, cleanup=lambda i: shutil.rmtree(dst(i), ignore_errors=True), cwd=work)
    floor = median_runs("cp of the blob + tar --zstd -xf",
                        lambda i: ["sh", "-c", f"mkdir -p {dst(i)}/x && cp {layer} {dst(i)}/blob && tar --zstd -xf {layer} -C {dst(i)}/x"],
                        runs, cleanup=lambda i: shutil.rmtree(dst(i), ignore_errors=True), cwd=work)
    print(f"  ratio: {ours.ratio(floor)} the time of cp + tar\n")

    print("3. delete of an entry of 10,000 blobs (plus one kept entry)")
    files = os.path.join(work, "small")
    write_small_files(files)
    with open(os.path.join(work, "small.yaml"), "w") as f:
        f.write("items:\n- from: dir://small/\n")
    subprocess.run([BIN, "pack", "-f", "small.yaml", "oci://many:big"], cwd=work, check=True, stdout=subprocess.DEVNULL)
    subprocess.run([BIN, "pack", "-f", "image.yaml", "oci://many:kept"], cwd=work, check=True, stdout=subprocess.DEVNULL)
    blobs = len(os.listdir(os.path.join(work, "many", "blobs", "sha256")))
    print(f"  layout of {blobs} blobs")
    fresh = lambda i: subprocess.run(["cp", "-a", os.path.join(work, "many"), os.path.join(work, f"many{i}")], check=True)  # noqa: E731
    for i in range(runs):
        fresh(i)
    ours = median_runs("oci-packer delete oci://DIR:big", lambda i: [BIN, "delete", f"oci://many{i}:big"], runs,
                       cleanup=lambda i: shutil.rmtree(os.path.join(work, f"many{i}"), ignore_errors=True), cwd=work)
    for i in range(runs):
        fresh(i)
    rm = median_runs("rm -rf of the blobs directory (floor)",
                     lambda i: ["rm", "-rf", os.path.join(work, f"many{i}", "blobs")], runs,
                     cleanup=lambda i: shutil.rmtree(os.path.join(work, f"many{i}"), ignore_errors=True), cwd=work)
    print(f"  ratio: {ours.ratio(rm)} the time of rm -rf (goal: under 1 s)")
    gc = median_runs("oci-packer gc (nothing to remove)", lambda i: [BIN, "gc", "oci://many"], runs, cwd=work)
    del gc


if __name__ == "__main__":
    main()
