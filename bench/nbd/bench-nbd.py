#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""ioflusher-nbd side by side with nbdkit and qemu-nbd (make bench-nbd).

The same fio jobs (ioengine=nbd, libnbd over a unix socket) against:
  ours           ioflusher-nbd --memory (sparse memory, --best-effort)
  nbdkit         nbdkit memory (sparse array)
  nbdkit_mlock   nbdkit memory allocator=malloc,mlock=true (pinned, as ours)
  qemu_nbd       qemu-nbd on a raw file in /dev/shm
and nbdcopy with 4 connections in both directions (out to its null:
sink, so that what is timed is the server).  Beside the 4k queue-depth-1
cell, in each run, the floor: echo-floor's server that only answers, over
a unix socketpair, the least server CPU a request can cost here (sleeping
for it or spinning through the client's round trip, whichever is less).  For each workload:
IOPS or MB/s, p99 completion latency, and the server's CPU time per IO,
from /proc/PID/stat (utime + stime), since fio shares the machine's cores.
Each cell is the median of --runs runs (default 3).  All servers run at
once, filled with the same data; each workload runs on each server in
turn, the order rotated from one run to the next, so that the machine's
drift falls on all of them alike rather than on whichever ran last.

Usage: bench-nbd.py [--runs N] [--runtime S] [--quick]
Environment: NBD_DAEMON (default examples/nbd/ioflusher-nbd), NBD_FLOOR
(default bench/nbd/echo-floor).
"""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

SIZE = 1 << 30
HZ = os.sysconf("SC_CLK_TCK")

WORKLOADS = [
    # name, fio args, metric
    ("4k-randrw-qd1", dict(rw="randrw", bs="4k", iodepth=1, numjobs=1), "iops"),
    ("4k-randrw-qd32x2", dict(rw="randrw", bs="4k", iodepth=32, numjobs=2), "iops"),
    ("64k-randrw-qd8", dict(rw="randrw", bs="64k", iodepth=8, numjobs=1), "iops"),
    ("256k-seqread-qd8", dict(rw="read", bs="256k", iodepth=8, numjobs=1), "mbs"),
    ("256k-seqwrite-qd8", dict(rw="write", bs="256k", iodepth=8, numjobs=1), "mbs"),
    ("nbdcopy-4conn-in", None, "mbs"),
    ("nbdcopy-4conn-out", None, "mbs"),
]


def cpu_ticks(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime


def wait_socket(path, proc, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server exited: %s" % proc.args)
        if os.path.exists(path):
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(path)
                s.close()
                return
            except OSError:
                pass
        time.sleep(0.05)
    raise RuntimeError("server did not listen: %s" % proc.args)


class Server:
    def __init__(self, name, tmp, daemon):
        self.name = name
        self.sock = os.path.join(tmp, name + ".sock")
        if name == "ours":
            cmd = [daemon, "--best-effort", "--socket", self.sock, "--memory", "1G"]
        elif name == "nbdkit":
            cmd = ["nbdkit", "-f", "-U", self.sock, "memory", "1G"]
        elif name == "nbdkit_mlock":
            cmd = ["nbdkit", "-f", "-U", self.sock, "memory", "1G",
                   "allocator=malloc,mlock=true"]
        else:
            self.img = "/dev/shm/ioflusher-bench-%d.img" % os.getpid()
            with open(self.img, "wb") as f:
                f.truncate(SIZE)
            cmd = ["qemu-nbd", "-f", "raw", "-k", self.sock, "--shared=16",
                   "-t", self.img]
        if os.path.exists(self.sock):
            os.unlink(self.sock)  # nbdkit refuses a path that exists
        self.err = open(os.path.join(tmp, name + ".err"), "w")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                     stderr=self.err)
        wait_socket(self.sock, self.proc)
        self.uri = "nbd+unix:///?socket=" + self.sock

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.err.close()
        if os.path.exists(self.sock):
            os.unlink(self.sock)
        if self.name == "qemu_nbd":
            os.unlink(self.img)


def run_fio(uri, args, runtime):
    cmd = ["fio", "--output-format=json", "--name=bench", "--ioengine=nbd",
           "--uri=" + uri, "--size=256M", "--offset_increment=256M",
           # No --ramp_time: its IOs are not counted, but the server's CPU
           # for them would be.  The servers are warm already (filled).
           "--time_based", "--runtime=%d" % runtime,
           "--group_reporting", "--randrepeat=0"]
    cmd += ["--%s=%s" % (k, v) for k, v in args.items()]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=runtime + 60)
    if out.returncode:
        raise RuntimeError("fio failed: %s" % out.stderr[-500:])
    job = json.loads(out.stdout[out.stdout.index("{"):])["jobs"][0]
    ios = iops = mbs = 0.0
    p99 = 0.0
    for d in ("read", "write"):
        st = job[d]
        ios += st["total_ios"]
        iops += st["iops"]
        mbs += st["bw_bytes"] / 1e6
        pct = st.get("clat_ns", {}).get("percentile", {})
        if st["total_ios"] and "99.000000" in pct:
            p99 = max(p99, pct["99.000000"] / 1000.0)
    return dict(iops=iops, mbs=mbs, p99=p99, ios=ios)


COPIES = 4  # nbdcopy passes per measurement: a second or so, not 0.2 s


def run_copy(uri, src, direction):
    if direction == "in":
        cmd = ["nbdcopy", "--connections=4", src, uri]
    else:
        # Out to nbdcopy's null: sink, not a file, whose writes would be
        # most of what is timed (tmpfs: 0.6 to 1.4 GB/s from one pass to
        # the next for the same server).
        cmd = ["nbdcopy", "--connections=4", uri, "null:"]
    t = time.time()
    for _ in range(COPIES):
        subprocess.run(cmd, check=True, timeout=300)
    dt = time.time() - t
    nbytes = os.path.getsize(src) * COPIES  # the size of an export
    # nbdcopy moves 256 KiB requests by default.
    return dict(iops=0.0, mbs=nbytes / dt / 1e6, p99=0.0, ios=nbytes / (256 << 10))


def run_floor(prog):
    out = subprocess.run([prog], capture_output=True, text=True, check=True,
                         timeout=120).stdout
    return {k: float(v) for k, v in (f.split("=") for f in out.split())}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--runtime", type=int, default=4)
    ap.add_argument("--quick", action="store_true", help="1 run of 2 s: a smoke test")
    a = ap.parse_args()
    if a.quick:
        a.runs, a.runtime = 1, 2
    for tool in ("fio", "nbdkit", "qemu-nbd", "nbdcopy"):
        if not shutil.which(tool):
            sys.exit("bench-nbd: %s is missing (see scripts/packages)" % tool)
    daemon = os.environ.get("NBD_DAEMON", "examples/nbd/ioflusher-nbd")
    floor_prog = os.environ.get("NBD_FLOOR", "bench/nbd/echo-floor")
    servers = ["ours", "nbdkit", "nbdkit_mlock", "qemu_nbd"]
    tmp = tempfile.mkdtemp(prefix="ioflusher-bench-")
    src = os.path.join("/dev/shm", "ioflusher-bench-src-%d" % os.getpid())
    # The size of the exports: filled whole, none has holes, and every
    # server sends nbdcopy out the same bytes (nbdkit and qemu-nbd tell
    # it their holes by block status, which ioflusher-nbd lacks).
    with open(src, "wb") as f:
        for _ in range(SIZE >> 20):
            f.write(os.urandom(1 << 20))
    res = {}  # (workload, server) -> list of dicts
    live = []
    try:
        for name in servers:
            srv = Server(name, tmp, daemon)
            live.append(srv)
            # Data everywhere the jobs read: no server reads holes.
            subprocess.run(["nbdcopy", "--connections=4", src, srv.uri],
                           check=True, timeout=300)
        for run in range(a.runs):
            order = live[run % len(live):] + live[:run % len(live)]
            for wl, fio_args, _ in WORKLOADS:
                for srv in order:
                    before = cpu_ticks(srv.proc.pid)
                    if fio_args is None:
                        r = run_copy(srv.uri, src, wl.rsplit("-", 1)[1])
                    else:
                        r = run_fio(srv.uri, fio_args, a.runtime)
                    ticks = cpu_ticks(srv.proc.pid) - before
                    r["cpu_us_per_io"] = ticks * 1e6 / HZ / max(r["ios"], 1)
                    res.setdefault((wl, srv.name), []).append(r)
                    print("# run %d %-13s %-18s iops=%.0f MB/s=%.0f p99=%.0fus cpu/io=%.2fus"
                          % (run + 1, srv.name, wl, r["iops"], r["mbs"], r["p99"],
                             r["cpu_us_per_io"]), flush=True)
                if wl == "4k-randrw-qd1":
                    f = run_floor(floor_prog)
                    res.setdefault("floor", []).append(f)
                    print("# run %d floor: sleeping %.2fus, spinning %.2fus of CPU per request"
                          % (run + 1, f["sleep_cpu_us"], f["spin_cpu_us"]), flush=True)
    finally:
        for srv in live:
            srv.stop()
        if os.path.exists(src):
            os.unlink(src)
        shutil.rmtree(tmp, ignore_errors=True)

    def med(wl, name, key):
        return statistics.median(r[key] for r in res[(wl, name)])

    print()
    print("Medians of %d runs, %d s each; fio ioengine=nbd over a unix socket; "
          "CPU = server utime+stime per IO." % (a.runs, a.runtime))
    hdr = "%-18s %-6s" % ("workload", "metric") + "".join("%14s" % s for s in servers)
    hdr += "%12s%12s%12s" % ("vs nbdkit", "p99 ratio", "CPU ratio")
    print(hdr)
    print("-" * len(hdr))
    lines = []
    for wl, _, metric in WORKLOADS:
        unit = "IOPS" if metric == "iops" else "MB/s"
        v = {s: med(wl, s, metric) for s in servers}
        p99 = {s: med(wl, s, "p99") for s in servers}
        cpu = {s: med(wl, s, "cpu_us_per_io") for s in servers}
        ratio = v["ours"] / v["nbdkit"] if v["nbdkit"] else 0
        p99r = p99["ours"] / p99["nbdkit"] if p99["nbdkit"] else 0
        cpur = cpu["ours"] / cpu["nbdkit"] if cpu["nbdkit"] else 0
        print("%-18s %-6s" % (wl, unit) + "".join("%14.0f" % v[s] for s in servers)
              + "%11.2fx%12s%11.2fx" % (ratio, ("%.2fx" % p99r) if p99r else "-", cpur))
        print("%-18s %-6s" % ("", "p99us") + "".join(
            ("%14.0f" % p99[s]) if p99[s] else "%14s" % "-" for s in servers))
        print("%-18s %-6s" % ("", "cpu/IO") + "".join("%13.2fus" % cpu[s] for s in servers))
        lines.append("workload=%s ours=%.0f nbdkit=%.0f qemu_nbd=%.0f ratio_vs_nbdkit=%.2f"
                     % (wl, v["ours"], v["nbdkit"], v["qemu_nbd"], ratio))
    fs = statistics.median(f["sleep_cpu_us"] for f in res["floor"])
    fp = statistics.median(f["spin_cpu_us"] for f in res["floor"])
    nk = med("4k-randrw-qd1", "nbdkit", "cpu_us_per_io")
    ours = med("4k-randrw-qd1", "ours", "cpu_us_per_io")
    floor = min(fs, fp)
    print()
    print("Floor at 4k qd1: a server that only answers (echo-floor) spends %.2fus of CPU"
          % fs)
    print("per request sleeping for it, %.2fus spinning: %.2fx nbdkit's CPU per IO"
          % (fp, floor / nk if nk else 0))
    print("(ours %.2fx, %.2f times the floor). A server spends less only with a client"
          % (ours / nk if nk else 0, ours / floor if floor else 0))
    print("quicker to answer than echo-floor's, which does nothing else.")
    print()
    for line in lines:
        print(line)
    print("floor_cpu_us=%.2f floor_vs_nbdkit_cpu=%.2f" % (floor, floor / nk if nk else 0))


if __name__ == "__main__":
    main()
