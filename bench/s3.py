#!/usr/bin/env python3
"""Benchmarks of S3 sources against a real S3 server (moto's standalone server on 127.0.0.1),
with `curl` fetching the same object from the same server in the same run as the limit.

1. A 1 GiB object → a layout (`pack`, a fresh layout and a fresh digest cache every run) vs
   `curl` GET of the same object by a pre-signed URL to /dev/null and to a file (the bytes
   the server can send, and the same plus the disk write the layout also does). Time and
   peak RSS. The same GET piped through `tee` to a file and `openssl dgst -sha256` is the
   limit of what a pack does (read, store and hash every byte). Also 4 ranged `curl` GETs at
   once: whether parallel ranges would be faster. The same object → a Distribution registry
   (a new repository every run): time and peak RSS.
2. A prefix of 50 objects (4 KiB to 200 KiB) → a layout: objects/s, vs 50 `curl` GETs of
   the same objects in one process (`curl --parallel`, 4 at a time like the pack).
3. Re-pack of the unchanged 1 GiB object into the same layout (HEAD only).

Prints figures and ratios; asserts nothing.
Usage: python3 bench/s3.py [--runs N]
Needs: a release build (built here), curl, and the venv of scripts/test (moto, boto3).
"""
import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import BIN, GiB, ROOT, median_runs  # noqa: E402
from registry import start_registry  # noqa: E402

PY = os.path.join(ROOT, ".venv", "bin", "python")
MOTO = os.path.join(ROOT, ".venv", "bin", "moto_server")
KEY_ID, SECRET = "AKIABENCHBENCHBENCH0", "bench-secret"

CLIENT = r"""
import sys, boto3
endpoint, op = sys.argv[1:3]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id="AKIABENCHBENCHBENCH0", aws_secret_access_key="bench-secret")
if op == "bucket":
    s3.create_bucket(Bucket=sys.argv[3])
elif op == "put":
    for key, path in zip(sys.argv[4::2], sys.argv[5::2]):
        s3.upload_file(path, sys.argv[3], key)
elif op == "presign":
    for key in sys.argv[4:]:
        print(s3.generate_presigned_url("get_object", Params={"Bucket": sys.argv[3], "Key": key}, ExpiresIn=3600))
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client(endpoint, *args):
    out = subprocess.run([PY, "-c", CLIENT, endpoint, *args], check=True, capture_output=True, text=True)
    return out.stdout


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "oci-packer"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="bench-s3-")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([MOTO, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env={**os.environ, "NO_COLOR": "1"})
    try:
        for _ in range(400):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        client(endpoint, "bucket", "bench")
        big = os.path.join(work, "big.bin")
        with open(big, "wb") as f:
            for _ in range(1024):
                f.write(os.urandom(1 << 20))
        files = []
        for i in range(50):
            path = os.path.join(work, "tree", f"d{i % 5}", f"f{i:02}.bin")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(os.urandom(4096 + i * 4096))
            files += [f"tree/d{i % 5}/f{i:02}.bin", path]
        client(endpoint, "put", "bench", "large/big.bin", big, *files)
        os.remove(big)
        url = client(endpoint, "presign", "bench", "large/big.bin").strip()
        small_urls = client(endpoint, "presign", "bench", *files[0::2]).split()
        env = {**os.environ, "AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET,
               "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": "/nonexistent",
               "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}
        os.environ.update(env)
        with open(os.path.join(work, "big.yaml"), "w") as f:
            f.write(f"items:\n  - from: s3+{endpoint}/bench/large/big.bin\n")
        with open(os.path.join(work, "tree.yaml"), "w") as f:
            f.write(f"items:\n  - from: s3+{endpoint}/bench/tree/\n")

        def fresh(i):
            shutil.rmtree(os.path.join(work, "out"), ignore_errors=True)
            shutil.rmtree(os.path.join(work, "cache"), ignore_errors=True)
            return None

        os.environ["XDG_CACHE_HOME"] = os.path.join(work, "cache")
        print(f"1. a 1 GiB object from {endpoint}, median of {args.runs}")
        fresh(0)
        ours = median_runs("oci-packer pack s3 → layout", lambda i: [BIN, "-q", "pack", "-f", "big.yaml", "oci://out:v1"],
                           args.runs, cleanup=fresh, cwd=work)
        null = median_runs("curl GET → /dev/null", lambda i: ["curl", "-sf", "-o", "/dev/null", url], args.runs, cwd=work)
        disk = median_runs("curl GET → file", lambda i: ["curl", "-sf", "-o", os.path.join(work, "curl.bin"), url],
                           args.runs, cleanup=lambda i: os.remove(os.path.join(work, "curl.bin")), cwd=work)
        out_file = os.path.join(work, "curl.bin")
        same = median_runs("curl GET | tee file | openssl sha256",
                           lambda i: f"curl -sf '{url}' | tee {out_file} | openssl dgst -sha256 >/dev/null",
                           args.runs, cleanup=lambda i: os.remove(out_file), cwd=work, shell=True)
        quarter = GiB // 4
        ranged = " & ".join(f"curl -sf -r {i * quarter}-{(i + 1) * quarter - 1} -o /dev/null '{url}'" for i in range(4))
        par = median_runs("4 ranged curl GETs at once → /dev/null", lambda i: ranged + " & wait", args.runs,
                          cwd=work, shell=True)
        print(f"  pack / curl→/dev/null = {ours.ratio(null)}, pack / curl→file = {ours.ratio(disk)}, "
              f"pack / (curl | tee file | openssl sha256) = {ours.ratio(same)}  "
              f"({GiB / ours.median / 2**20:.0f} MiB/s vs {GiB / disk.median / 2**20:.0f} MiB/s); "
              f"4 ranges at once / one GET = {par.ratio(null)} (below 1: ranged GETs would pay here)")

        registry, reg_addr, _ = start_registry(work)
        try:
            fresh(0)
            pushed = median_runs("oci-packer pack s3 → registry (new repository)",
                                 lambda i: [BIN, "-q", "--plain-http", "pack", "-f", "big.yaml",
                                            f"{reg_addr}/bench/big{i}:v1"], args.runs, cleanup=fresh, cwd=work)
            print(f"  pack → registry / curl→/dev/null = {pushed.ratio(null)}; peak RSS {pushed.rss:.1f} MiB")
        finally:
            registry.kill()
            registry.wait()

        print(f"2. a prefix of 50 objects (4–200 KiB), median of {args.runs}")
        fresh(0)
        tree = median_runs("oci-packer pack s3 prefix → layout",
                           lambda i: [BIN, "-q", "pack", "-f", "tree.yaml", "oci://out:v1"],
                           args.runs, cleanup=fresh, cwd=work)
        curl_args = ["curl", "-sf", "--parallel", "--parallel-max", "4"]
        for i, u in enumerate(small_urls):
            curl_args += ["-o", os.path.join(work, f"c{i}"), u]
        many = median_runs("curl --parallel 50 GETs → files", lambda i: curl_args, args.runs, cwd=work)
        print(f"  pack: {50 / tree.median:.0f} objects/s; curl: {50 / many.median:.0f} objects/s; "
              f"pack / curl = {tree.ratio(many)}")

        print(f"3. re-pack of the unchanged 1 GiB object, median of {args.runs}")
        fresh(0)
        subprocess.run([BIN, "-q", "pack", "-f", "big.yaml", "oci://out:v1"], cwd=work, check=True)
        again = median_runs("oci-packer pack again (HEAD only)",
                            lambda i: [BIN, "-q", "pack", "-f", "big.yaml", f"oci://out:v{i + 2}"], args.runs, cwd=work)
        print(f"  {again.median * 1000:.0f} ms, {null.median / again.median:.0f}× faster than one GET of the object")
    finally:
        server.kill()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
