#!/usr/bin/env python3
"""Benchmarks of packing into an OCI layout (issue 2), against peers measured in the same run.

Prints figures and ratios; asserts nothing. Usage: python3 bench/layout.py [--runs N]
Needs: a release build (built here), openssl, dd, tar and zstd (Debian packages).
Data goes to $BENCH_DIR (default: a temp dir), removed afterwards.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

from common import BIN, CREATE_FLOOR, GiB, ROOT, median_runs, write_random, write_small_files


def copy_tree_upto(dst, limit):
    """Fills dst with regular files from /usr until `limit` bytes: real, mixed content."""
    total = 0
    for top in ("/usr/lib", "/usr/share", "/usr/bin"):
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            for name in sorted(filenames):
                src = os.path.join(dirpath, name)
                if os.path.islink(src) or not os.path.isfile(src):
                    continue
                try:
                    size = os.path.getsize(src)
                    if size == 0 or total + size > limit:
                        continue
                    rel = os.path.relpath(src, "/usr")
                    os.makedirs(os.path.join(dst, os.path.dirname(rel)), exist_ok=True)
                    shutil.copyfile(src, os.path.join(dst, rel))
                    total += size
                except OSError:
                    continue
                if total >= limit * 0.99:
                    return total
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--locked", "--quiet"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="oci-packer-bench-", dir=os.environ.get("BENCH_DIR"))
    try:
        bench(work, args.runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def bench(work, runs):
    print(f"oci-packer layout benchmarks, {os.cpu_count()} cores, {runs} runs each, data in {work}")

    # 1. One 1 GiB file -> layout, against one OpenSSL SHA-256 pass and a plain copy.
    big = os.path.join(work, "big.bin")
    write_random(big, GiB)
    with open(os.path.join(work, "file.yaml"), "w") as f:
        f.write("items:\n  - from: file://big.bin\n")
    print("\n1 GiB file -> layout")
    rm = lambda i: shutil.rmtree(os.path.join(work, f"l{i}"), ignore_errors=True)
    ssl = median_runs("openssl dgst -sha256 (one hash pass)", lambda i: ["openssl", "dgst", "-sha256", big], runs)
    dd = median_runs("dd bs=1M (one read + one write)",
                     lambda i: ["dd", f"if={big}", f"of={work}/copy{i}", "bs=1M", "status=none"], runs,
                     cleanup=lambda i: os.remove(f"{work}/copy{i}"))
    ours = median_runs("oci-packer pack", lambda i: [BIN, "pack", "-f", "file.yaml", f"oci://l{i}:v1"], runs,
                       cleanup=rm, cwd=work)
    print(f"  => {ours.ratio(ssl)} OpenSSL's hash time (goal <= 1.3x); {ours.ratio(dd)} dd's copy; "
          f"peak RSS {ours.rss:.1f} MiB (goal <= 64)")
    dds = median_runs("dd conv=fdatasync",
                      lambda i: ["dd", f"if={big}", f"of={work}/copy{i}", "bs=1M", "conv=fdatasync", "status=none"],
                      runs, cleanup=lambda i: os.remove(f"{work}/copy{i}"))
    synced = median_runs("oci-packer --fsync pack",
                         lambda i: [BIN, "--fsync", "pack", "-f", "file.yaml", f"oci://l{i}:v1"], runs,
                         cleanup=rm, cwd=work)
    print(f"  => --fsync: {synced.ratio(dds)} dd conv=fdatasync (goal <= 1.1x)")
    os.remove(big)

    # 2. 10,000 files of 4 KiB via dir:// -> layout.
    small = os.path.join(work, "small")
    write_small_files(small)
    with open(os.path.join(work, "dir.yaml"), "w") as f:
        f.write("items:\n  - from: dir://small\n")
    print("\n10,000 files of 4 KiB via dir:// -> layout (one layer per file)")
    cp = median_runs("cp -r (copy only, no hashing)", lambda i: ["cp", "-r", small, f"{work}/cp{i}"], runs,
                     cleanup=lambda i: shutil.rmtree(f"{work}/cp{i}"))
    floor = median_runs("floor: create+write+rename 10,000 files (python)",
                        lambda i: [sys.executable, "-c", CREATE_FLOOR, f"{work}/floor{i}"], runs,
                        cleanup=lambda i: shutil.rmtree(f"{work}/floor{i}"))
    t = median_runs("oci-packer pack", lambda i: [BIN, "pack", "-f", "dir.yaml", f"oci://l{i}:v1"], runs, cwd=work)
    again = median_runs("oci-packer pack again (all blobs present)",
                        lambda i: [BIN, "pack", "-f", "dir.yaml", f"oci://l{i}:v1"], runs, cleanup=rm, cwd=work)
    print(f"  => {10_000 / t.median:,.0f} files/s (best {10_000 / t.best:,.0f}; goal >= 5,000); this file system "
          f"creates {10_000 / floor.median:,.0f} files/s at best: {t.ratio(floor)} that floor, {t.ratio(cp)} cp -r; "
          f"re-pack {10_000 / again.median:,.0f} files/s; peak RSS {t.rss:.1f} MiB")
    shutil.rmtree(small)

    # 3. A 1 GiB directory (files from /usr) as one tar+zstd layer.
    tree = os.path.join(work, "tree")
    size = copy_tree_upto(tree, GiB)
    with open(os.path.join(work, "zstd.yaml"), "w") as f:
        f.write("items:\n  - from: dir://tree\n    archive: tar+zstd\n")
    print(f"\n{size / 1e6:,.0f} MB directory (files from /usr) -> one tar+zstd layer")
    peer = median_runs("tar -c | zstd -3 -T0 (peer)",
                       lambda i: f"tar -C {work} -cf - tree | zstd -q -3 -T0 > {work}/t{i}.tzst",
                       runs, cleanup=lambda i: os.remove(f"{work}/t{i}.tzst"), shell=True)
    t = median_runs("oci-packer pack (archive: tar+zstd)",
                    lambda i: [BIN, "pack", "-f", "zstd.yaml", f"oci://l{i}:v1"], runs, cwd=work)
    layer = max((os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(f"{work}/l0/blobs") for f in fs))
    for i in range(runs):
        rm(i)
    print(f"  => {size / t.median / 1e6:,.0f} MB/s ({t.ratio(peer)} the peer's time), compression ratio "
          f"{size / layer:.2f}, peak RSS {t.rss:.1f} MiB")


if __name__ == "__main__":
    main()
