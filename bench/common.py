"""Helpers shared by the benchmarks: timing with peak RSS, medians and best runs."""
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "oci-packer")
GiB = 1 << 30

# The floor of the small-file cases: a bare loop that creates, writes and renames 10,000 files
# of 4 KiB into a new directory (argv[1]), as a layout writer with named temp files must.
CREATE_FLOOR = """
import os, sys
d = sys.argv[1]
os.mkdir(d)
data = b"x" * 4096
for i in range(10000):
    tmp = os.path.join(d, f".tmp{i}")
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    os.write(fd, data)
    os.close(fd)
    os.rename(tmp, os.path.join(d, f"f{i}"))
"""


def run(cmd, cwd=None, shell=False, ok=(0,)):
    """Runs a command under GNU time; returns (seconds, peak RSS in MiB of the command).
    An exit status outside `ok` stops the benchmark.

    (os.wait4's ru_maxrss would count the forked Python before exec.)"""
    if shell:
        cmd = ["sh", "-c", cmd]
    start = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M"] + cmd, cwd=cwd, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    err = proc.stderr.decode().strip().splitlines()
    if proc.returncode not in ok:
        sys.exit(f"failed ({proc.returncode}): {cmd}\n" + "\n".join(err))
    return elapsed, int(err[-1]) / 1024


def settle():
    """Writes back dirty pages so one run's writeback does not bill the next."""
    os.sync()
    time.sleep(1)




def median_runs(label, make_cmd, runs, cleanup=None, cwd=None, shell=False, ok=(0,)):
    times, rss = [], []
    for i in range(runs):
        settle()
        t, r = run(make_cmd(i), cwd=cwd, shell=shell, ok=ok)
        times.append(t)
        rss.append(r)
        if cleanup:
            cleanup(i)
    med = statistics.median(times)
    print(f"  {label:<48} median {med:7.3f} s  best {min(times):6.3f} s  (runs: {', '.join(f'{t:.2f}' for t in times)})"
          f"  peak RSS {max(rss):6.1f} MiB")
    return Figure(med, min(times), max(rss))


class Figure:
    """Median and best time of a series, and its peak RSS."""

    def __init__(self, median, best, rss):
        self.median, self.best, self.rss = median, best, rss

    def ratio(self, other):
        """This time as a multiple of the other's."""
        return f"{self.median / other.median:.2f}x (best {self.best / other.best:.2f}x)"

    def ratio_of(self, other):
        """The other's time as a multiple of this one's (= this throughput over the other's)."""
        return f"{other.median / self.median:.2f}x (best {other.best / self.best:.2f}x)"


def write_random(path, size):
    with open("/dev/urandom", "rb") as src, open(path, "wb") as dst:
        left = size
        while left:
            chunk = src.read(min(left, 16 << 20))
            dst.write(chunk)
            left -= len(chunk)




def write_small_files(root, count=10_000, size=4096):
    """`count` random files of `size` bytes under `root`, 500 to a directory."""
    for i in range(count):
        d = os.path.join(root, f"d{i // 500:02d}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i:05d}.bin"), "wb") as f:
            f.write(os.urandom(size))
