#!/usr/bin/env python3
"""Benchmarks of pushing and copying against a local Distribution registry, with ORAS and
skopeo measured in the same run: a 1 GiB push to a new repository, the same push when the
registry holds the blob in another repository (both tools' caches warmed the same way),
an unchanged re-push, and a copy between repositories. Prints figures; asserts nothing.

Usage: python3 bench/registry.py [--runs N]
Needs: a release build (built here), docker-registry and skopeo (Debian), oras (go install,
found on PATH, in $OCI_PACKER_ORAS or ~/go/bin).
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from common import BIN, GiB, ROOT, median_runs, write_random


CLEAR_SKOPEO_CACHE = ("rm -f /var/lib/containers/cache/blob-info-cache-v1.* "
                      "$HOME/.local/share/containers/cache/blob-info-cache-v1.*")


def oras_bin():
    for c in (os.environ.get("OCI_PACKER_ORAS"), shutil.which("oras"), os.path.expanduser("~/go/bin/oras")):
        if c and os.path.isfile(c):
            return c
    sys.exit("oras not found: run scripts/test once (it installs it) or set OCI_PACKER_ORAS")


def start_registry(work, storage=None):
    """A Distribution registry on 127.0.0.1 storing in `storage` (default: work/registry),
    its log in work/registry.log; returns (process, host:port, log path)."""
    storage = storage or os.path.join(work, "registry")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = os.path.join(work, "registry.yml")
    with open(cfg, "w") as f:
        f.write(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {storage}\n"
                f"  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n")
    log = open(os.path.join(work, "registry.log"), "w")
    proc = subprocess.Popen(["docker-registry", "serve", cfg], stdout=log, stderr=log)
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.1):
                return proc, f"127.0.0.1:{port}", os.path.join(work, "registry.log")
        except OSError:
            time.sleep(0.05)
    sys.exit("registry did not start")


def requests_during(log, fn):
    """Runs fn and counts the registry's access-log lines it caused, by method."""
    start = os.path.getsize(log)
    fn()
    time.sleep(0.2)
    with open(log) as f:
        f.seek(start)
        lines = [l for l in f if '"GET ' in l or '"HEAD ' in l or '"PUT ' in l or '"POST ' in l or '"PATCH ' in l]
    counts = {}
    for l in lines:
        m = l.split('"')[1].split()[0]
        counts[m] = counts.get(m, 0) + 1
    return counts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--locked", "--quiet"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="oci-packer-bench-", dir=os.environ.get("BENCH_DIR"))
    proc = None
    try:
        proc, host, log = start_registry(work)
        bench(work, host, log, args.runs)
    finally:
        if proc:
            proc.kill()
        shutil.rmtree(work, ignore_errors=True)


def bench(work, host, log, runs):
    oras = oras_bin()
    print(f"oci-packer registry benchmarks, {os.cpu_count()} cores, {runs} runs each, registry {host}")
    big = os.path.join(work, "big.bin")
    write_random(big, GiB)
    with open(os.path.join(work, "file.yaml"), "w") as f:
        f.write("items:\n  - from: file://big.bin\n")
    subprocess.run([BIN, "pack", "-f", "file.yaml", "oci://layout:v1"], cwd=work, check=True, stdout=subprocess.DEVNULL)

    print("\npush of one 1 GiB blob (a new repository each run)")
    # A fresh cache directory per run: the first push of a file, with no remembered digest.
    ours = median_runs("oci-packer pack", lambda i: f"XDG_CACHE_HOME={work}/cache{i} {BIN} --plain-http pack -f "
                                                    f"file.yaml {host}/ours{i}/big:v1", runs, cwd=work, shell=True)
    oras_t = median_runs("oras push", lambda i: [oras, "push", "--plain-http", f"{host}/oras{i}/big:v1", "big.bin"], runs,
                         cwd=work)
    # skopeo's blob-info cache (root: /var/lib/containers/cache, users: ~/.local/share) would
    # make it mount the blob it pushed the run before instead of uploading it: clear it.
    skopeo = median_runs("skopeo copy oci:layout -> registry",
                         lambda i: f"{CLEAR_SKOPEO_CACHE}; skopeo copy --quiet --dest-tls-verify=false "
                                   f"oci:layout:v1 docker://{host}/skopeo{i}/big:v1", runs, cwd=work, shell=True)
    cached = median_runs("oci-packer pack, file digest remembered, no location",
                         lambda i: f"rm -rf {work}/cache0/oci-packer/locations && XDG_CACHE_HOME={work}/cache0 "
                                   f"{BIN} --plain-http pack -f file.yaml {host}/cached{i}/big:v1",
                         runs, cwd=work, shell=True)
    print(f"  => throughput {GiB / ours.median / 2**20:,.0f} MiB/s; {ours.ratio_of(oras_t)} ORAS's throughput "
          f"(goal >= 1.2x), {ours.ratio_of(skopeo)} skopeo's; remembered digest: {cached.median:.2f} s; "
          f"peak RSS {ours.rss:.1f} MiB (goal <= 64), ORAS {oras_t.rss:.1f} MiB, skopeo {skopeo.rss:.1f} MiB")

    print("\npush of the 1 GiB blob the registry already holds in another repository, to a new one")
    # Both tools' caches are warm the same way: each pushed the blob to a repository of this
    # registry once (its last run above), so each knows where the blob is.
    subprocess.run(f"XDG_CACHE_HOME={work}/cache0 {BIN} --plain-http pack -f file.yaml {host}/seed/big:v1",
                   shell=True, cwd=work, check=True, stdout=subprocess.DEVNULL)
    mounted = {}

    def ours_mount(i):
        mounted[i] = requests_during(log, lambda: subprocess.run(
            f"XDG_CACHE_HOME={work}/cache0 {BIN} --plain-http pack -f file.yaml {host}/mount-ours{i}/big:v1",
            shell=True, cwd=work, check=True, stdout=subprocess.DEVNULL))
    ours_m = median_runs("oci-packer pack (known location: mount)",
                         lambda i: f"XDG_CACHE_HOME={work}/cache0 {BIN} --plain-http pack -f file.yaml "
                                   f"{host}/mount-ours{i}/big:v1", runs, cwd=work, shell=True)
    ours_mount("probe")
    sk_m = median_runs("skopeo copy (its blob-info cache warm: mount)",
                       lambda i: f"skopeo copy --quiet --dest-tls-verify=false oci:layout:v1 "
                                 f"docker://{host}/mount-skopeo{i}/big:v1", runs, cwd=work, shell=True)
    print(f"  => oci-packer {ours_m.median:.3f} s vs skopeo {sk_m.median:.3f} s: {ours_m.ratio(sk_m)} skopeo's time "
          f"(goal <= 1x); oci-packer's requests {json.dumps(mounted['probe'], sort_keys=True)} "
          f"(no PATCH: 0 layer bytes uploaded)")

    print("\nre-push of an unchanged 100-blob artifact")
    d = os.path.join(work, "hundred")
    os.makedirs(d)
    for i in range(100):
        with open(os.path.join(d, f"f{i:03d}.bin"), "wb") as f:
            f.write(os.urandom(64 * 1024))
    with open(os.path.join(work, "hundred.yaml"), "w") as f:
        f.write("items:\n  - from: dir://hundred\n")
    target = f"{host}/hundred/art:v1"
    subprocess.run([BIN, "--plain-http", "pack", "-f", "hundred.yaml", target], cwd=work, check=True, stdout=subprocess.DEVNULL)
    counts = requests_during(log, lambda: subprocess.run([BIN, "--plain-http", "pack", "-f", "hundred.yaml", target],
                                                         cwd=work, check=True, stdout=subprocess.DEVNULL))
    again = median_runs("oci-packer pack (unchanged)", lambda i: [BIN, "--plain-http", "pack", "-f", "hundred.yaml", target],
                        runs, cwd=work)
    print(f"  => requests: {json.dumps(counts, sort_keys=True)}; {again.median:.3f} s (goal: HEADs only, < 0.5 s)")

    print("\ncopy of a 1 GiB artifact between two repositories of one registry")
    src = f"{host}/ours0/big:v1"
    moved = {}

    def ours_copy(i):
        out = subprocess.run([BIN, "--plain-http", "--format", "json", "copy", src, f"{host}/copy-ours{i}/big:v1"],
                             cwd=work, check=True, capture_output=True)
        moved[i] = json.loads(out.stdout)
    counts = requests_during(log, lambda: ours_copy("probe"))
    print(f"  oci-packer copy: blobs mounted {moved['probe']['stats']['mounted']}, bytes uploaded "
          f"{moved['probe']['stats']['bytes']} (manifests only), requests {json.dumps(counts, sort_keys=True)}")
    ours = median_runs("oci-packer copy", lambda i: [BIN, "--plain-http", "copy", src, f"{host}/copy-ours{i}/big:v1"],
                       runs, cwd=work)
    sk = median_runs("skopeo copy", lambda i: f"{CLEAR_SKOPEO_CACHE}; skopeo copy --quiet "
                                              f"--src-tls-verify=false --dest-tls-verify=false docker://{src} "
                                              f"docker://{host}/copy-skopeo{i}/big:v1", runs, cwd=work, shell=True)
    oc = median_runs("oras cp", lambda i: [oras, "cp", "--from-plain-http", "--to-plain-http", src,
                                           f"{host}/copy-oras{i}/big:v1"], runs, cwd=work)
    print(f"  => {sk.median / ours.median:.1f}x faster than skopeo, {oc.median / ours.median:.1f}x faster than oras cp")


if __name__ == "__main__":
    main()
