#!/usr/bin/env python3
"""Benchmarks of `proxy`, against nginx serving the same bytes from disk (the physical limit
of an HTTP file server here) and against the registry's own blob GET, in the same run.

1. A 4 KiB file, 64 connections, 10 s of `wrk`: requests/s and p99 latency — the proxy
   from a layout vs nginx; the proxy from a Distribution registry vs the registry's blob GET.
2. A 1 GiB file, one `curl` download to /dev/null: throughput — the same pairs.
3. 32 concurrent 1 GiB downloads from a layout: the proxy's peak RSS (VmHWM).

Both sides run with their access logs off. Prints figures and ratios; asserts nothing.
Usage: python3 bench/proxy.py [--runs N]
Needs: a release build (built here), nginx-light and wrk (Debian), docker-registry (Debian).
"""
import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import BIN, GiB, ROOT, write_random  # noqa: E402
from registry import start_registry  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port):
    for _ in range(400):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.1):
                return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


def start_proxy(work, upstream, extra=()):
    port = free_port()
    proc = subprocess.Popen([BIN, "-q", *extra, "proxy", "--addr", f"127.0.0.1:{port}", upstream], cwd=work,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return proc, f"http://127.0.0.1:{port}"


def start_nginx(work, root):
    port = free_port()
    conf = os.path.join(work, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""daemon off;
worker_processes 2;
user root;
pid {work}/nginx.pid;
error_log {work}/nginx.err;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  client_body_temp_path {work}/nginx-tmp;
  proxy_temp_path {work}/nginx-tmp;
  fastcgi_temp_path {work}/nginx-tmp;
  uwsgi_temp_path {work}/nginx-tmp;
  scgi_temp_path {work}/nginx-tmp;
  server {{
    listen 127.0.0.1:{port};
    root {root};
  }}
}}
""")
    proc = subprocess.Popen(["nginx", "-c", conf, "-p", work], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return proc, f"http://127.0.0.1:{port}"


def wrk(url):
    """(requests/s, p99 ms) of 10 s at 64 connections, 2 threads."""
    out = subprocess.run(["wrk", "-t2", "-c64", "-d10s", "--latency", url], capture_output=True, text=True,
                         check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    p99 = float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        sys.exit(f"{url}: {errors.group(1)} failed requests")
    return rps, p99


def download(url, runs):
    """Median and best seconds of `curl -o /dev/null` of `url`."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(["curl", "-sSf", "-o", "/dev/null", url], check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def compare_small(label, ours, peer, peer_name):
    (r1, l1), (r2, l2) = wrk(ours), wrk(peer)
    print(f"  {label}: {r1:9.0f} req/s, p99 {l1:6.2f} ms   {peer_name}: {r2:9.0f} req/s, p99 {l2:6.2f} ms"
          f"   -> {r1 / r2:.2f}x the requests/s")


def compare_big(label, ours, peer, peer_name, runs):
    (m1, b1), (m2, b2) = download(ours, runs), download(peer, runs)
    print(f"  {label}: {GiB / m1 / 2**20:7.0f} MiB/s (best {GiB / b1 / 2**20:.0f})   {peer_name}: "
          f"{GiB / m2 / 2**20:7.0f} MiB/s (best {GiB / b2 / 2**20:.0f})   -> {m2 / m1:.2f}x the throughput")


def peak_rss(proc, url, n):
    procs = [subprocess.Popen(["curl", "-sSf", "-o", "/dev/null", url]) for _ in range(n)]
    for p in procs:
        if p.wait() != 0:
            sys.exit("a concurrent download failed")
    with open(f"/proc/{proc.pid}/status") as f:
        hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    return hwm / 1024


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    for tool in ("nginx", "wrk", "docker-registry"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found: apt-get install nginx-light wrk docker-registry")
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="oci-packer-bench-", dir=os.environ.get("BENCH_DIR"))
    procs = []
    try:
        files = os.path.join(work, "files")
        os.makedirs(os.path.join(work, "nginx-tmp"))
        os.makedirs(files)
        write_random(os.path.join(files, "small.bin"), 4096)
        write_random(os.path.join(files, "big.bin"), GiB)
        with open(os.path.join(work, "p.yaml"), "w") as f:
            f.write("items:\n- from: file://files/small.bin\n- from: file://files/big.bin\n")
        subprocess.run([BIN, "-q", "pack", "-f", "p.yaml", "oci://lay:bench:v1"], cwd=work, check=True,
                       stdout=subprocess.DEVNULL)
        reg, host, _ = start_registry(work)
        procs.append(reg)
        subprocess.run([BIN, "-q", "--plain-http", "pack", "-f", "p.yaml", f"{host}/bench:v1"], cwd=work, check=True,
                       stdout=subprocess.DEVNULL)
        nginx, nginx_url = start_nginx(work, files)
        procs.append(nginx)
        layout_proxy, lp = start_proxy(work, "oci://lay")
        procs.append(layout_proxy)
        registry_proxy, rp = start_proxy(work, host, ["--plain-http"])
        procs.append(registry_proxy)
        digest = lambda name: subprocess.run(  # noqa: E731
            ["sha256sum", os.path.join(files, name)], capture_output=True, text=True, check=True).stdout.split()[0]
        blob = lambda name: f"http://{host}/v2/bench/blobs/sha256:{digest(name)}"  # noqa: E731
        print(f"oci-packer proxy vs nginx (from disk) and the registry's blob GET; {os.cpu_count()} cores")
        print("1. a 4 KiB file, wrk -t2 -c64 -d10s")
        compare_small("proxy from a layout   ", f"{lp}/bench/v1?title=small.bin", f"{nginx_url}/small.bin", "nginx")
        compare_small("proxy from a registry ", f"{rp}/bench/v1?title=small.bin", blob("small.bin"), "registry GET")
        print(f"2. a 1 GiB file, one curl download, median of {args.runs}")
        compare_big("proxy from a layout   ", f"{lp}/bench/v1?title=big.bin", f"{nginx_url}/big.bin", "nginx",
                    args.runs)
        compare_big("proxy from a registry ", f"{rp}/bench/v1?title=big.bin", blob("big.bin"), "registry GET",
                    args.runs)
        print("3. 32 concurrent 1 GiB downloads from a layout")
        fresh, fp = start_proxy(work, "oci://lay")
        procs.append(fresh)
        print(f"  proxy peak RSS: {peak_rss(fresh, f'{fp}/bench/v1?title=big.bin', 32):.1f} MiB")
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
