#!/usr/bin/env python3
"""Pack-file reading: `oci-packer validate` on large and hostile pack files, against
PyYAML's C loader (libyaml through yaml.CSafeLoader: a fast parser that checks nothing) and
against reading the file (`cat`, the limit). Each run is a fresh process; medians of N.

Usage: python3 bench/packfile.py [--runs N]   (needs a release build and python3-yaml)
Cases: 100,000 annotation keys; 20,000 items; the nested-alias bomb (9 levels of 10: it
must be refused at once, in bounded memory — PyYAML shares aliased nodes instead of
expanding them, so its figure is for scale only).
"""
import argparse
import os
import sys
import tempfile

from common import BIN, median_runs

LOAD = "import sys, yaml; yaml.load(open(sys.argv[1], 'rb'), Loader=yaml.CSafeLoader)"


def cases(d):
    annotations = os.path.join(d, "annotations.yaml")
    with open(annotations, "w") as f:
        f.write("items:\n  - from: file://a.txt\n    annotations:\n")
        for i in range(100_000):
            f.write(f"      org.example.key{i}: value-{i}\n")
    items = os.path.join(d, "items.yaml")
    with open(items, "w") as f:
        f.write("items:\n")
        for i in range(20_000):
            f.write(f"  - from: file://a.txt\n    type: text/plain\n    annotations: {{n: \"{i}\"}}\n")
    bomb = os.path.join(d, "bomb.yaml")
    with open(bomb, "w") as f:
        f.write("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n")
        for level in range(1, 9):
            f.write(f"a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * 10)}]\n")
        f.write("items: *a8\n")
    with open(os.path.join(d, "a.txt"), "w") as f:
        f.write("a")
    return [("100,000 annotation keys", annotations, (0,)), ("20,000 items", items, (0,)),
            ("alias bomb (533 bytes, 10^9 nodes)", bomb, (2,))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    if not os.path.exists(BIN):
        sys.exit(f"{BIN} missing: cargo build --release first")
    with tempfile.TemporaryDirectory() as d:
        for label, path, ok in cases(d):
            size = os.path.getsize(path)
            print(f"{label}: {size / 1e6:.2f} MB")
            ours = median_runs("oci-packer validate", lambda i: [BIN, "validate", "-f", path],
                               args.runs, cwd=d, ok=ok)
            peer = median_runs("PyYAML CSafeLoader (no checks)",
                               lambda i: [sys.executable, "-c", LOAD, path], args.runs, cwd=d)
            limit = median_runs("cat (reading the file)", lambda i: ["cat", path], args.runs, cwd=d)
            print(f"  => oci-packer / PyYAML: {ours.ratio(peer)}; oci-packer / cat: {ours.ratio(limit)}")


if __name__ == "__main__":
    main()
