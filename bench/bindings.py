"""Bindings benchmark: the same 1 GiB pack into a fresh layout through every face of the
library — CLI, Python, Go, C — against `oras push --oci-layout` (the peer) and one OpenSSL
SHA-256 pass over the file (the physical limit: a layout write must hash every byte once),
measured in the same run under the same conditions (fresh layout each run, page cache warm,
dirty pages written back between runs). Then the time a cancel takes to stop a 1 GiB pack
(Go context, C handle from a second thread), which the bindings promise within a second.

Needs: a release build (built here) and the C library installed with scripts/install-c
(here into target/c-prefix), Go, a C compiler, openssl, the ORAS CLI (OCI_PACKER_ORAS or
~/go/bin/oras), the Python package in .venv.
Usage: python3 bench/bindings.py [--runs N]
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

from common import BIN, GiB, ROOT, median_runs, write_random

PREFIX = os.path.join(ROOT, "target", "c-prefix")
PY = os.path.join(ROOT, ".venv", "bin", "python")

GO_MAIN = """package main

import (
\t"context"
\t"fmt"
\t"os"
\t"time"

\tocipacker "github.com/oci-packer/oci-packer/bindings/go"
)

func main() {
\tif len(os.Args) > 2 && os.Args[2] == "cancel" {
\t\tctx, cancel := context.WithCancel(context.Background())
\t\tflowing := make(chan struct{}, 1)
\t\tdone := make(chan time.Time, 1)
\t\tgo func() {
\t\t\tocipacker.PackContext(ctx, "pack.yaml", os.Args[1], ocipacker.WithProgress(func(e ocipacker.ProgressEvent) {
\t\t\t\tif e.Bytes > 0 {
\t\t\t\t\tselect {
\t\t\t\t\tcase flowing <- struct{}{}:
\t\t\t\t\tdefault:
\t\t\t\t\t}
\t\t\t\t}
\t\t\t}))
\t\t\tdone <- time.Now()
\t\t}()
\t\t<-flowing
\t\tat := time.Now()
\t\tcancel()
\t\tfmt.Printf("%.4f\\n", (<-done).Sub(at).Seconds())
\t\treturn
\t}
\tif _, err := ocipacker.Pack("pack.yaml", os.Args[1]); err != nil {
\t\tfmt.Fprintln(os.Stderr, err)
\t\tos.Exit(1)
\t}
}
"""

C_MAIN = r"""#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include "oci_packer.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int flowing = 0;
static oci_packer_cancel *cancel;
static struct timespec fired;

static void on_progress(const oci_packer_progress *e, void *u) {
    (void)u;
    if (e->bytes == 0) return;
    pthread_mutex_lock(&lock); flowing = 1; pthread_cond_signal(&cond); pthread_mutex_unlock(&lock);
}
static void *firer(void *u) {
    (void)u;
    pthread_mutex_lock(&lock); while (!flowing) pthread_cond_wait(&cond, &lock); pthread_mutex_unlock(&lock);
    clock_gettime(CLOCK_MONOTONIC, &fired);
    oci_packer_cancel_fire(cancel);
    return NULL;
}
int main(int argc, char **argv) {
    char *result = NULL;
    oci_packer_error *err = NULL;
    oci_packer_options *o = oci_packer_options_new();
    if (argc > 2 && strcmp(argv[2], "cancel") == 0) {
        cancel = oci_packer_cancel_new();
        oci_packer_options_set_cancel(o, cancel, NULL);
        oci_packer_options_set_progress(o, on_progress, NULL, NULL);
        pthread_t t;
        pthread_create(&t, NULL, firer, NULL);
        oci_packer_pack_file("pack.yaml", argv[1], o, &result, &err);
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        pthread_join(t, NULL);
        printf("%.4f\n", (now.tv_sec - fired.tv_sec) + (now.tv_nsec - fired.tv_nsec) / 1e9);
        oci_packer_error_free(err);
        oci_packer_cancel_free(cancel);
        oci_packer_options_free(o);
        return 0;
    }
    oci_packer_status st = oci_packer_pack_file("pack.yaml", argv[1], o, &result, &err);
    if (st) { fprintf(stderr, "%s\n", oci_packer_error_message(err)); return 1; }
    oci_packer_string_free(result);
    oci_packer_options_free(o);
    return 0;
}
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--locked", "--quiet", "--release", "--bin", "oci-packer"], cwd=ROOT, check=True)
    subprocess.run(["bash", "scripts/install-c", PREFIX], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    env = dict(os.environ, PKG_CONFIG_PATH=os.path.join(PREFIX, "lib", "pkgconfig"))
    oras = os.environ.get("OCI_PACKER_ORAS") or os.path.expanduser("~/go/bin/oras")
    with tempfile.TemporaryDirectory(prefix="bench-bindings-") as work:
        big = os.path.join(work, "big.bin")
        write_random(big, GiB)
        with open(os.path.join(work, "pack.yaml"), "w") as f:
            f.write("items:\n  - from: file://big.bin\n")
        gomod = os.path.join(work, "gobench")
        os.mkdir(gomod)
        with open(os.path.join(gomod, "main.go"), "w") as f:
            f.write(GO_MAIN)
        with open(os.path.join(gomod, "go.mod"), "w") as f:
            f.write("module example.com/gobench\n\ngo 1.22\n\nrequire github.com/oci-packer/oci-packer/bindings/go v0.0.0\n\n"
                    f"replace github.com/oci-packer/oci-packer/bindings/go => {ROOT}/bindings/go\n")
        gobin = os.path.join(work, "gobench.bin")
        subprocess.run(["go", "build", "-mod=mod", "-o", gobin, "."], cwd=gomod, env=env, check=True)
        with open(os.path.join(work, "cbench.c"), "w") as f:
            f.write(C_MAIN)
        cflags = subprocess.run(["pkg-config", "--cflags", "--libs", "oci_packer"], env=env, check=True,
                                capture_output=True, text=True).stdout.split()
        cbin = os.path.join(work, "cbench")
        subprocess.run(["cc", "-O2", "-o", cbin, os.path.join(work, "cbench.c")] + cflags + ["-lpthread"], check=True)
        pyscript = "import sys, oci_packer; oci_packer.pack('pack.yaml', sys.argv[1])"

        def layout(i):
            return os.path.join(work, f"out{i}")

        def clean(i):
            shutil.rmtree(layout(i), ignore_errors=True)

        print(f"1 GiB of random bytes into a fresh OCI layout, {args.runs} runs each")
        ssl = median_runs("openssl dgst -sha256 (one hash pass)", lambda i: ["openssl", "dgst", "-sha256", big], args.runs,
                          cwd=work)
        faces = {
            "CLI": lambda i: [BIN, "-q", "pack", "-f", "pack.yaml", f"oci://{layout(i)}:v1"],
            "Python": lambda i: [PY, "-c", pyscript, f"oci://{layout(i)}:v1"],
            "Go": lambda i: [gobin, f"oci://{layout(i)}:v1"],
            "C": lambda i: [cbin, f"oci://{layout(i)}:v1"],
        }
        figures = {name: median_runs(f"oci-packer through {name}", make, args.runs, cleanup=clean, cwd=work)
                   for name, make in faces.items()}
        peer = median_runs("oras push --oci-layout (peer)",
                           lambda i: [oras, "push", "--oci-layout", f"{layout(i)}:v1", "big.bin"], args.runs,
                           cleanup=clean, cwd=work)
        print("ratios (time; lower is faster):")
        for name, fig in figures.items():
            print(f"  {name:<7} vs openssl {fig.ratio(ssl)}   vs oras {fig.ratio(peer)}   vs CLI {fig.ratio(figures['CLI'])}")
        print("cancel: seconds from firing to the call's return (1 GiB pack, hashing under way)")
        for name, cmd in (("Go context", gobin), ("C handle, 2nd thread", cbin)):
            lat = []
            for i in range(args.runs):
                out = subprocess.run([cmd, f"oci://{layout(i)}:v1", "cancel"], cwd=work, env=env, check=True,
                                     capture_output=True, text=True).stdout
                lat.append(float(out.strip()))
                left = [n for n in os.listdir(layout(i)) if n.startswith(".oci-packer-") and n != ".oci-packer.lock"] \
                    if os.path.isdir(layout(i)) else []
                if left:
                    sys.exit(f"{name}: temp files left after a cancel: {left}")
                clean(i)
            print(f"  {name:<22} median {sorted(lat)[len(lat) // 2]:.4f} s  max {max(lat):.4f} s  (runs: "
                  f"{', '.join(f'{x:.4f}' for x in lat)}); no temp file left")


if __name__ == "__main__":
    main()
