#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""A hostile NBD client for ioflusher-nbd's tests (stdlib only).

Usage: nbd-malformed.py SOCKET MODE [FILE]
  MODE is memory, file, readonly or blockdev; FILE is the file (or, with
  blockdev, the block device) the daemon exports, read behind the daemon's
  back to prove that nothing was written where it should not be.  MODE
  wberror, wbfua and wbfinal run only writeback error checks (FLUSH, FUA,
  the daemon's exit): FILE is then the file under the loop device the
  daemon exports.  MODE full checks a file on a file system too small for
  it (ENOSPC), FILE being that file.  MODE handshake checks
  --handshake-timeout (the daemon started with --max-connections 2
  --handshake-timeout 3).  MODE shutdown sends SIGTERM to the daemon, whose
  pid is then the third argument, and checks what connected clients see.

Prints TAP lines, unnumbered.  Every case speaks the protocol byte by byte, sends what a
correct client never would, and checks the server's answer: the error the
NBD protocol asks for, or a clean disconnect; and after each case that the
daemon still serves a well-behaved connection.
"""
import ctypes
import os
import select
import signal
import socket
import struct
import sys
import time

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REPMAGIC = 0x3E889045565A9
REQ_MAGIC = 0x25609513
SIMPLE_MAGIC = 0x67446698
STRUCT_MAGIC = 0x668E33EF

OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_STARTTLS = 1, 2, 3, 5
OPT_INFO, OPT_GO, OPT_STRUCTURED = 6, 7, 8
OPT_LIST_META, OPT_SET_META = 9, 10
REP_ACK, REP_SERVER, REP_INFO = 1, 2, 3
ERR_UNSUP, ERR_POLICY, ERR_INVALID = 2**31 + 1, 2**31 + 2, 2**31 + 3
ERR_UNKNOWN, ERR_SHUTDOWN, ERR_TOO_BIG = 2**31 + 6, 2**31 + 7, 2**31 + 9
CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH, CMD_TRIM = 0, 1, 2, 3, 4
CMD_WRITE_ZEROES = 6
F_FUA, F_NO_HOLE, F_DF, F_FAST_ZERO = 1, 2, 4, 16
EPERM, EIO, EINVAL, ENOSPC, ENOTSUP, ESHUTDOWN = 1, 5, 22, 28, 95, 108
TYPE_NONE, TYPE_DATA, TYPE_HOLE, TYPE_ERROR = 0, 1, 2, 0x8001
MAX_PAYLOAD = 32 << 20

SOCK, MODE = sys.argv[1], sys.argv[2]
FILE = sys.argv[3] if len(sys.argv) > 3 else None

results = []


def check(desc, cond, diag=""):
    """Printed at once: a client killed by its timeout keeps what it found."""
    results.append((bool(cond), desc, diag))
    print("%s - %s" % ("ok" if cond else "not ok", desc))
    if diag and not cond:
        print("# " + diag)
    sys.stdout.flush()


class Closed(Exception):
    pass


class Conn:
    def __init__(self):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(10)
        self.s.connect(SOCK)
        self.cookie = 0

    def recv(self, n):
        b = b""
        while len(b) < n:
            chunk = self.s.recv(n - len(b))
            if not chunk:
                raise Closed()
            b += chunk
        return b

    def send(self, b):
        self.s.sendall(b)

    def closed(self, timeout=5):
        """True when the server hung up (end of stream, or reset) within
        timeout seconds."""
        try:
            self.s.settimeout(timeout)
            return self.s.recv(1) == b""
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    def close(self):
        self.s.close()

    # -- handshake
    def greet(self, cflags=1):
        magic, opt, hflags = struct.unpack(">QQH", self.recv(18))
        assert magic == NBDMAGIC and opt == IHAVEOPT, "bad greeting"
        self.send(struct.pack(">I", cflags))
        return hflags

    def opt(self, opt, data=b""):
        self.send(struct.pack(">QII", IHAVEOPT, opt, len(data)) + data)

    def reply(self):
        magic, opt, rtype, ln = struct.unpack(">QIII", self.recv(20))
        assert magic == REPMAGIC, "bad option reply magic"
        return opt, rtype, self.recv(ln)

    def replies(self):
        """Replies up to the final one (ACK or error)."""
        out = []
        while True:
            r = self.reply()
            out.append(r)
            if r[1] == REP_ACK or r[1] & 0x80000000:
                return out

    def go(self, name=b"", structured=False):
        if structured:
            self.opt(OPT_STRUCTURED)
            assert self.reply()[1] == REP_ACK
        self.structured = structured
        self.opt(OPT_GO, struct.pack(">I", len(name)) + name + struct.pack(">H", 0))
        reps = self.replies()
        assert reps[-1][1] == REP_ACK, "GO refused: %r" % (reps,)
        for _, t, d in reps:
            if t == REP_INFO and struct.unpack(">H", d[:2])[0] == 0:
                self.size, self.tflags = struct.unpack(">QH", d[2:12])

    # -- transmission
    def packed(self, cmd, off, ln, flags=0, payload=b"", magic=REQ_MAGIC):
        """A request's bytes, under the next cookie, not sent."""
        self.cookie += 1
        return struct.pack(">IHHQQI", magic, flags, cmd, self.cookie, off, ln) + payload

    def request(self, cmd, off, ln, flags=0, payload=b"", magic=REQ_MAGIC):
        self.send(self.packed(cmd, off, ln, flags, payload, magic))
        return self.cookie

    def simple(self):
        magic, err, cookie = struct.unpack(">IIQ", self.recv(16))
        assert magic == SIMPLE_MAGIC, "not a simple reply: %x" % magic
        return err, cookie

    def chunks(self):
        """A structured reply: list of (type, payload), error of the first error chunk."""
        out, err = [], 0
        while True:
            magic, flags, typ, cookie, ln = struct.unpack(">IHHQI", self.recv(20))
            assert magic == STRUCT_MAGIC, "not a chunk: %x" % magic
            payload = self.recv(ln)
            if typ & 0x8000 and not err:
                err = struct.unpack(">I", payload[:4])[0]
            out.append((typ, payload))
            if flags & 1:
                return out, err, cookie

    def status(self):
        """Error code of a reply without data, simple or structured."""
        magic = struct.unpack(">I", self.recv(4))[0]
        if magic == SIMPLE_MAGIC:
            err, cookie = struct.unpack(">IQ", self.recv(12))
            return err
        assert magic == STRUCT_MAGIC
        flags, typ, cookie, ln = struct.unpack(">HHQI", self.recv(16))
        payload = self.recv(ln)
        assert flags & 1
        return struct.unpack(">I", payload[:4])[0] if typ & 0x8000 else 0

    def read(self, off, ln, flags=0):
        self.request(CMD_READ, off, ln, flags)
        if not self.structured:
            err, _ = self.simple()
            return err, (self.recv(ln) if err == 0 else b"")
        chunks, err, _ = self.chunks()
        data = bytearray(ln)
        for typ, p in chunks:
            if typ == TYPE_DATA:
                o = struct.unpack(">Q", p[:8])[0] - off
                data[o:o + len(p) - 8] = p[8:]
        return err, bytes(data)

    def write(self, off, data, flags=0):
        self.request(CMD_WRITE, off, len(data), flags, data)
        return self.status()


def fresh(structured=False):
    c = Conn()
    c.greet()
    c.go(structured=structured)
    return c


def alive(desc):
    """The daemon still serves a correct client."""
    try:
        c = fresh()
        err, data = c.read(0, 512)
        c.request(CMD_DISC, 0, 0)
        c.close()
        check(desc, err == 0 and len(data) == 512)
    except Exception as e:  # noqa: BLE001 - any failure is the test's
        check(desc, False, repr(e))


def hung_up(c, timeout):
    """The server initiated a hard disconnect: both directions of the
    socket are shut (POLLHUP), seen without reading what is queued."""
    p = select.poll()
    p.register(c.s, select.POLLHUP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for _, ev in p.poll(500):
            if ev & select.POLLHUP:
                return True
    return False


def send_failures():
    """A reply that cannot be sent ends the connection; a client that
    reads no replies stalls nobody else, and is dropped in the end."""
    # "the server MUST immediately initiate a hard disconnect": a client
    # that shut its reading side cannot be answered, and must not be kept
    # connected with its requests read and dropped.
    c = fresh()
    c.s.shutdown(socket.SHUT_RD)
    c.request(CMD_READ, 0, 4096)
    check("a reply that cannot be sent: the server hangs up", hung_up(c, 20))
    c.close()

    # A client that sends large reads and reads none of the replies: one
    # reply fills the socket, workers and buffers must not wait on it.
    a = fresh()
    ln = min(a.size, MAX_PAYLOAD)
    for i in range(8):
        a.request(CMD_READ, 0, ln)
    time.sleep(0.5)
    try:
        b = fresh()
        b.s.settimeout(30)
        ok = True
        for i in range(16):
            off = (i % 8) << 20
            if MODE != "readonly":
                pat = bytes([i]) * (1 << 20)
                ok = ok and b.write(off, pat) == 0
                err, data = b.read(off, 1 << 20)
                ok = ok and err == 0 and data == pat
            else:
                ok = ok and b.read(off, 1 << 20)[0] == 0
        b.request(CMD_DISC, 0, 0)
        b.close()
        check("a client reading no replies to %d MiB of reads: another is "
              "served meanwhile" % (8 * ln >> 20), ok)
    except Exception as e:  # noqa: BLE001 - a stall is the failure
        check("a client reading no replies: another is served meanwhile",
              False, repr(e))
    check("... and the one reading nothing is disconnected (--send-timeout)",
          hung_up(a, 60))
    a.close()

    if MODE == "file":
        stalled_writes()


def stalled_writes():
    """Clients that stop in the middle of a write's data hold the file
    backend's buffers (the queue depth's, 64, and two of the largest
    requests: 320 of 256 KiB) while the daemon reads it: five writes of
    the whole 16 MiB export take them all.  They are cut off after
    --send-timeout, and another client is served."""
    before = on_disk(0, 4096)
    stalled = []
    for i in range(5):
        s = fresh()
        ln = min(s.size, MAX_PAYLOAD)
        s.send(struct.pack(">IHHQQI", REQ_MAGIC, 0, CMD_WRITE, 1, 0, ln)
               + b"\x5a" * 1000)
        stalled.append(s)
    time.sleep(0.5)
    try:
        b = fresh()
        b.s.settimeout(60)
        err, _ = b.read(0, 4096)
        b.request(CMD_DISC, 0, 0)
        b.close()
        check("five clients stalled mid-write holding every buffer: another "
              "is served", err == 0)
    except Exception as e:  # noqa: BLE001 - a stall is the failure
        check("five clients stalled mid-write holding every buffer: another "
              "is served", False, repr(e))
    check("... and the stalled ones are disconnected (--send-timeout)",
          all(hung_up(s, 60) for s in stalled))
    for s in stalled:
        s.close()
    check("... and none of their partial writes was applied",
          on_disk(0, 4096) == before)


def on_disk(off, ln):
    with open(FILE, "rb") as f:
        f.seek(off)
        return f.read(ln)


def consistent(c, off, ln):
    """The export's map of holes agrees with its bytes: a structured read
    (holes as OFFSET_HOLE chunks) and a DF read (the bytes themselves)
    give the same data."""
    err1, holes = c.read(off, ln)
    err2, raw = c.read(off, ln, flags=F_DF)
    return err1 == 0 and err2 == 0 and holes == raw


def memory_bitmap_races():
    """A write of more than 32 KiB is read from the socket straight into
    the export; a write zeroes from another connection while its payload
    is still arriving must not leave bytes in grains the export says are
    holes (they would read as zeroes, and come back with a later write)."""
    n = 256 << 10
    c2 = fresh(structured=True)
    for i in range(3):
        off = (8 << 20) + i * (1 << 20)
        c1 = fresh()
        c1.send(struct.pack(">IHHQQI", REQ_MAGIC, 0, CMD_WRITE, 1, off, n) +
                b"\xaa" * (n // 2))
        # Time for c1's thread to take up the write and wait for the rest:
        # without it the race is merely less likely, the test still sound.
        time.sleep(0.3)
        c2.request(CMD_WRITE_ZEROES, off, n)
        zerr = c2.status()
        c1.send(b"\xbb" * (n // 2))
        werr = c1.status()
        c1.close()
        ok = zerr == 0 and werr == 0 and consistent(c2, off, n)
        if not ok:
            break
    check("a write zeroes during a large write's payload: holes "
          "and bytes agree", ok, "zero %d, write %d" % (zerr, werr))

    # The client gone in the middle of such a payload: what landed is
    # data, and must not be reported as a hole.
    off = 12 << 20
    c1 = fresh()
    c1.send(struct.pack(">IHHQQI", REQ_MAGIC, 0, CMD_WRITE, 1, off, n) +
            b"\xcc" * (200 << 10))
    time.sleep(0.3)
    c1.close()
    # c1's thread may still be storing what it had when the reads come:
    # a passing mismatch; one that stays for 5 s is the failure.
    deadline = time.monotonic() + 5
    ok = consistent(c2, off, n)
    while not ok and time.monotonic() < deadline:
        time.sleep(0.1)
        ok = consistent(c2, off, n)
    check("a large write cut short: holes and bytes agree", ok)
    c2.close()


def write_zeroes_max_bytes(path):
    rdev = os.stat(path).st_rdev
    attr = "/sys/dev/block/%d:%d/queue/write_zeroes_max_bytes" % (
        os.major(rdev), os.minor(rdev))
    with open(attr) as f:
        return int(f.read())


def blockdev_fast_zero():
    """On a block device, fallocate(ZERO_RANGE) writes zero pages when the
    device has no write zeroes: no faster than a write, so a FAST_ZERO
    request must fail with ENOTSUP, without changing the data."""
    fast = write_zeroes_max_bytes(FILE) > 0
    kind = "with" if fast else "without"
    c = fresh(structured=True)
    n = 64 << 10
    pat = b"\x5a" * n
    off = 1 << 20
    for flags, name in ((F_FAST_ZERO, "FAST_ZERO"),
                        (F_FAST_ZERO | F_NO_HOLE, "FAST_ZERO|NO_HOLE")):
        c.write(off, pat)
        c.request(CMD_WRITE_ZEROES, off, n, flags=flags)
        err = c.status()
        _, data = c.read(off, n)
        zeroed = err == 0 and data == bytes(n)
        if not fast:
            check("device %s write zeroes: %s: ENOTSUP, nothing changed" %
                  (kind, name), err == ENOTSUP and data == pat,
                  "error %d" % err)
        elif flags & F_NO_HOLE:
            # ZERO_RANGE: fast if the device's write zeroes works without
            # unmapping (a loop over tmpfs refuses that, and the kernel
            # then stops offering write zeroes).
            check("device %s write zeroes: %s: done, or ENOTSUP with "
                  "nothing changed" % (kind, name),
                  zeroed or (err == ENOTSUP and data == pat),
                  "error %d" % err)
        else:
            check("device %s write zeroes: %s: done" % (kind, name), zeroed,
                  "error %d" % err)
    for flags, name in ((0, "write zeroes"), (F_NO_HOLE, "NO_HOLE")):
        c.write(off, pat)
        c.request(CMD_WRITE_ZEROES, off, n, flags=flags)
        err = c.status()
        _, data = c.read(off, n)
        check("device %s write zeroes: %s without FAST_ZERO: done" %
              (kind, name), err == 0 and data == bytes(n), "error %d" % err)
    check("... and the device reads zeroes there too",
          on_disk(off, n) == bytes(n))
    c.request(CMD_DISC, 0, 0)
    c.close()


def punch(path, off, ln):
    """Give a file's blocks back to its filesystem (FALLOC_FL_PUNCH_HOLE)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long,
                               ctypes.c_long]
    fd = os.open(path, os.O_RDWR)
    try:
        if libc.fallocate(fd, 0x02 | 0x01, off, ln) < 0:
            raise OSError(ctypes.get_errno(), "fallocate")
    finally:
        os.close(fd)


def writeback_error():
    """The daemon exports a loop device over a file (FILE) on a tmpfs too
    small for it: writes land in the page cache, and their writeback fails.
    Linux reports that to fdatasync once per open file, then forgets it;
    the daemon must not: every later FLUSH and FUA fails, and so does every
    write, even once the storage has room again."""
    c = fresh(structured=True)
    chunk = os.urandom(1 << 20)
    ok = all(c.write(i << 20, chunk) == 0 for i in range(8))
    check("8 MiB written to a device with 4 MiB of storage: accepted "
          "(page cache)", ok)
    c.request(CMD_FLUSH, 0, 0)
    err = c.status()
    check("FLUSH: the writeback error is reported", err != 0,
          "error %d" % err)
    errs = []
    for i in range(8):
        c.request(CMD_FLUSH, 0, 0)
        errs.append(c.status())
    check("FLUSH 8 times more: EIO every time (Linux told it only once)",
          errs == [EIO] * 8, repr(errs))
    # Room again: a write could now be stored, but what was lost is lost.
    punch(FILE, 0, 16 << 20)
    err = c.write(9 << 20, b"\x11" * 4096, flags=F_FUA)
    check("a FUA write, though the storage has room again: EIO", err == EIO,
          "error %d" % err)
    err = c.write(9 << 20, b"\x11" * 4096)
    check("a plain write: EIO", err == EIO, "error %d" % err)
    c.request(CMD_TRIM, 0, 4096)
    err1 = c.status()
    c.request(CMD_WRITE_ZEROES, 0, 4096)
    err2 = c.status()
    check("trim and write zeroes: EIO", (err1, err2) == (EIO, EIO),
          repr((err1, err2)))
    err, _ = c.read(10 << 20, 4096)
    check("reads are still served", err == 0, "error %d" % err)
    c.request(CMD_DISC, 0, 0)
    c.close()
    c = fresh()
    c.request(CMD_FLUSH, 0, 0)
    err = c.status()
    check("a new connection's FLUSH: EIO too", err == EIO, "error %d" % err)
    c.request(CMD_DISC, 0, 0)
    c.close()


def writeback_error_fua():
    """The same, the error reported to the fdatasync of a FUA write rather
    than to a FLUSH: with one worker (--threads 1), the later
    FLUSH goes through the same open file, where Linux reports nothing
    more."""
    c = fresh(structured=True)
    chunk = os.urandom(1 << 20)
    errs = [c.write(i << 20, chunk, flags=F_FUA) for i in range(8)]
    first = next((i for i, e in enumerate(errs) if e), None)
    check("FUA writes of 8 MiB to 4 MiB of storage: the first ones done, "
          "then an error", first is not None and first > 0 and
          all(e == 0 for e in errs[:first]), repr(errs))
    c.request(CMD_FLUSH, 0, 0)
    err = c.status()
    check("FLUSH after the failed FUA write: EIO", err == EIO,
          "error %d" % err)
    c.request(CMD_DISC, 0, 0)
    c.close()


def full_filesystem():
    """The daemon exports a sparse file (FILE) larger than the tmpfs it
    is on.  A write that finds the file system full fails with ENOSPC,
    with FUA or not, and loses nothing accepted before: it is no writeback
    error, and once a trim has made room, writes, FUA writes and FLUSH
    succeed again."""
    c = fresh(structured=True)
    chunk = os.urandom(1 << 20)
    errs = [c.write(i << 20, chunk) for i in range(4)]
    check("writes of 4 MiB to 2 MiB of file system: ENOSPC once full",
          errs[0] == 0 and ENOSPC in errs and
          all(e in (0, ENOSPC) for e in errs), repr(errs))
    data = os.urandom(4096)
    err = c.write(6 << 20, data, flags=F_FUA)
    check("a FUA write to the full file system: ENOSPC", err == ENOSPC,
          "error %d" % err)
    c.request(CMD_TRIM, 0, 1 << 20)
    err = c.status()
    check("a trim of the first MiB: done", err == 0, "error %d" % err)
    err = c.write(6 << 20, data, flags=F_FUA)
    check("the FUA write again, with room: done", err == 0,
          "error %d" % err)
    err = c.write(6 << 20, data)
    check("a plain write: done", err == 0, "error %d" % err)
    c.request(CMD_FLUSH, 0, 0)
    err = c.status()
    check("FLUSH: done, no writeback error was seen", err == 0,
          "error %d" % err)
    err, got = c.read(6 << 20, 4096)
    check("the written block reads back", err == 0 and got == data)
    with open(FILE, "rb") as f:
        f.seek(6 << 20)
        check("and is in the file", f.read(4096) == data)
    c.request(CMD_DISC, 0, 0)
    c.close()


def greet(c):
    c.greet()
    return c


def greeted(connect):
    """connect(), retried for 5 s while the server refuses: the threads of
    connections just cut give their slots back a moment after hanging up,
    each on its own."""
    for _ in range(50):
        try:
            return connect()
        except (Closed, ConnectionResetError, BrokenPipeError):
            time.sleep(0.1)
    return None


def handshake_timeout():
    """The daemon runs with --max-connections 2 --handshake-timeout 3.
    Clients that never finish their handshake hold the two connections
    and lock everyone else out, but only for 3 s: then they are
    disconnected, a client that sends a byte now and then as well, and
    a client that finished its handshake may stay idle far longer.
    (3 s, not less: the third client must be turned away while the
    first two still hold their slots, on a machine that may stall.)"""
    idle = [Conn(), Conn()]
    for c in idle:
        c.greet()
    third = Conn()
    check("two silent handshakes hold both connections: a third is "
          "refused", third.closed())
    third.close()
    check("after --handshake-timeout, each silent client is disconnected",
          all(c.closed(10) for c in idle))
    for c in idle:
        c.close()
    served = greeted(fresh)
    check("then a new client is served", served is not None)
    if served is None:
        return
    slow = greeted(lambda: greet(Conn()))
    check("and so is a second one, which then sends its option slowly",
          slow is not None)
    if slow is None:
        return
    cut = False
    header = struct.pack(">QII", IHAVEOPT, OPT_GO, 6) + b"\0" * 6
    start = time.monotonic()
    try:
        for b in header:
            slow.send(bytes([b]))
            time.sleep(0.25)
            if time.monotonic() - start > 8:
                break
    except (BrokenPipeError, ConnectionResetError):
        cut = True
    check("a client that sends a byte every 250 ms is disconnected too",
          cut or slow.closed(), "its %d bytes took %.1f s" %
          (len(header), time.monotonic() - start))
    slow.close()
    time.sleep(4)
    err, _ = served.read(0, 4096)
    check("a client idle for 4 s more after its handshake is still served",
          err == 0, "error %d" % err)
    served.request(CMD_DISC, 0, 0)
    served.close()


def writeback_unflushed():
    """Writes the daemon accepts and no client flushes: their writeback
    error comes out at the daemon's final fdatasync, at exit."""
    c = fresh()
    chunk = os.urandom(1 << 20)
    ok = all(c.write(i << 20, chunk) == 0 for i in range(8))
    check("8 MiB written to 4 MiB of storage, no FLUSH: accepted", ok)
    c.request(CMD_DISC, 0, 0)
    c.close()


def shutdown(pid):
    """SIGTERM with clients connected.  Requests read after it get
    NBD_ESHUTDOWN, a write's payload read past; options get
    NBD_REP_ERR_SHUTDOWN (NBD_OPT_ABORT still its ACK); a client that then
    disconnects is let go, one that stays idle is hard-disconnected after
    the grace period."""
    c1 = fresh(structured=True)
    c2 = Conn()
    c2.greet()
    c3 = fresh()
    check("before SIGTERM: a read is served", c1.read(0, 4096)[0] == 0)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    err = 0
    while err == 0 and time.monotonic() < deadline:
        err = c1.read(0, 4096)[0]
        if err == 0:
            time.sleep(0.05)
    check("after SIGTERM: a read gets ESHUTDOWN", err == ESHUTDOWN,
          "error %d" % err)
    err = c1.write(0, b"\x77" * (256 << 10))
    check("a write gets ESHUTDOWN", err == ESHUTDOWN, "error %d" % err)
    err = c1.read(0, 4096)[0]
    check("... its payload read past: the next request gets ESHUTDOWN too",
          err == ESHUTDOWN, "error %d" % err)
    c1.request(CMD_DISC, 0, 0)
    check("NBD_CMD_DISC, as the client then MUST: the server closes",
          c1.closed())
    c1.close()
    c2.opt(OPT_LIST)
    r1 = c2.reply()[1]
    c2.opt(OPT_GO, struct.pack(">IH", 0, 0))
    r2 = c2.reply()[1]
    check("in the handshake: options get NBD_REP_ERR_SHUTDOWN",
          (r1, r2) == (ERR_SHUTDOWN, ERR_SHUTDOWN), repr((r1, r2)))
    c2.opt(OPT_ABORT)
    check("... and NBD_OPT_ABORT its ACK", c2.reply()[1] == REP_ACK)
    c2.close()
    check("a client that stays idle is disconnected after the grace period",
          hung_up(c3, 40))
    c3.close()


def main():
    if MODE == "shutdown":
        shutdown(int(FILE))
        return
    if MODE == "wberror":
        writeback_error()
        return
    if MODE == "wbfua":
        writeback_error_fua()
        return
    if MODE == "wbfinal":
        writeback_unflushed()
        return
    if MODE == "full":
        full_filesystem()
        return
    if MODE == "handshake":
        handshake_timeout()
        return
    if MODE == "blockdev":
        blockdev_fast_zero()

    c = Conn()
    c.greet(cflags=1 | 0x80)
    check("unknown client flags: the server hangs up", c.closed())
    c.close()

    c = Conn()
    c.greet()
    c.send(struct.pack(">QII", 0x1122334455667788, OPT_GO, 0))
    check("bad option magic: the server hangs up", c.closed())
    c.close()

    c = Conn()
    c.greet()
    c.opt(99, b"xyz")
    check("unknown option: NBD_REP_ERR_UNSUP", c.reply()[1] == ERR_UNSUP)
    c.opt(99, b"x" * (1 << 20))
    check("unknown option with 1 MiB of data: skipped, NBD_REP_ERR_UNSUP",
          c.reply()[1] == ERR_UNSUP)
    # Options for ever are a denial of service, where the protocol lets
    # the server hang up: after 1024 of them, each answered.
    m = Conn()
    m.greet()
    m.send(struct.pack(">QII", IHAVEOPT, 99, 0) * 1025)
    answered = 0
    try:
        while m.reply()[1] == ERR_UNSUP:
            answered += 1
    except (Closed, ConnectionResetError):
        pass
    m.close()
    check("1025 options: 1024 answered, then the server hangs up",
          answered == 1024, "%d answered" % answered)
    # The metadata contexts (9 and 10 in the protocol) are not served.
    query = b"base:allocation"
    meta = struct.pack(">III", 0, 1, len(query)) + query
    for o, name in ((OPT_LIST_META, "LIST_META_CONTEXT"),
                    (OPT_SET_META, "SET_META_CONTEXT")):
        c.opt(o, meta)
        r = c.reply()
        check("NBD_OPT_%s (%d): NBD_REP_ERR_UNSUP" % (name, o),
              r[0] == o and r[1] == ERR_UNSUP)
    c.opt(OPT_STARTTLS)
    check("STARTTLS: NBD_REP_ERR_POLICY (no TLS here)", c.reply()[1] == ERR_POLICY)
    c.opt(OPT_LIST, b"junk")
    check("LIST with data: NBD_REP_ERR_INVALID", c.reply()[1] == ERR_INVALID)
    c.opt(OPT_LIST, b"x" * (1 << 20))
    check("LIST with 1 MiB of data: skipped, NBD_REP_ERR_INVALID",
          c.reply()[1] == ERR_INVALID)
    c.opt(OPT_LIST)
    reps = c.replies()
    check("LIST: one export then ACK",
          [r[1] for r in reps] == [REP_SERVER, REP_ACK])
    c.opt(OPT_GO, b"\0\0\0\xff\0\0")
    check("GO with a name longer than the option: NBD_REP_ERR_INVALID",
          c.reply()[1] == ERR_INVALID)
    c.opt(OPT_GO, b"\0\0\0\0\0\x05\0\0")
    check("GO with too few info requests: NBD_REP_ERR_INVALID",
          c.reply()[1] == ERR_INVALID)
    c.opt(OPT_GO, struct.pack(">I", 4) + b"nope" + b"\0\0")
    check("GO for an unknown export: NBD_REP_ERR_UNKNOWN", c.reply()[1] == ERR_UNKNOWN)
    c.opt(OPT_INFO, b"\0\0")
    check("INFO shorter than its header: NBD_REP_ERR_INVALID",
          c.reply()[1] == ERR_INVALID)
    c.opt(OPT_GO, b"x" * (1 << 20))
    check("a 1 MiB option: skipped, NBD_REP_ERR_TOO_BIG", c.reply()[1] == ERR_TOO_BIG)
    c.opt(OPT_INFO, b"\0\0\0\0\0\x01\0\x03")
    reps = c.replies()
    bs = [struct.unpack(">HIII", d) for _, t, d in reps if t == REP_INFO and len(d) == 14]
    check("INFO after all that: block sizes 1/4096/32M, then ACK",
          reps[-1][1] == REP_ACK and bs and bs[0][1:] == (1, 4096, MAX_PAYLOAD))
    # NAME and BLOCK_SIZE asked for twice (which a client must not do):
    # each information is still sent once.
    c.opt(OPT_INFO, struct.pack(">IHHHHH", 0, 4, 1, 1, 3, 3))
    reps = c.replies()
    kinds = [struct.unpack(">H", d[:2])[0] for _, t, d in reps if t == REP_INFO]
    check("INFO with requests repeated: each information sent once",
          reps[-1][1] == REP_ACK and sorted(kinds) == [0, 1, 3], repr(kinds))
    c.go()
    check("GO after all that: the export is served", c.read(0, 16)[0] == 0)
    c.close()

    c = Conn()
    c.greet()
    c.opt(OPT_EXPORT_NAME, b"no-such-export")
    check("EXPORT_NAME of an unknown export: the server hangs up", c.closed())
    c.close()

    c = Conn()
    c.greet()
    c.opt(OPT_ABORT)
    try:
        ack = c.reply()[1] == REP_ACK
    except Closed:
        ack = False
    check("ABORT: ACK, then the server hangs up", ack and c.closed())
    c.close()

    # "a server SHOULD ignore any data sent by the client" with ABORT.
    c = Conn()
    c.greet()
    c.opt(OPT_ABORT, b"x" * (1 << 20))
    try:
        ack = c.reply()[1] == REP_ACK
    except Closed:
        ack = False
    check("ABORT with 1 MiB of data: skipped, ACK, then the server hangs up",
          ack and c.closed())
    c.close()

    c = Conn()
    c.greet()
    c.send(struct.pack(">QI", IHAVEOPT, OPT_GO)[:7])
    c.close()
    alive("a handshake cut short: the daemon goes on")

    # ------------------------------------------------------------ transmission
    for structured in (False, True):
        kind = "structured" if structured else "simple"
        c = fresh(structured)
        size = c.size
        writable = MODE != "readonly"

        err, _ = c.read(size - 512, 1024)
        check("%s: read past the end: EINVAL" % kind, err == EINVAL)
        err, _ = c.read(2**64 - 512, 1024)
        check("%s: read whose end overflows 64 bits: EINVAL" % kind, err == EINVAL)
        err, _ = c.read(0, MAX_PAYLOAD + 1)
        check("%s: read longer than the maximum block size: EINVAL" % kind,
              err == EINVAL)
        if structured:
            err, _ = c.read(0, MAX_PAYLOAD + 1, flags=F_DF)
            check("structured: DF read longer than the maximum block size: "
                  "EINVAL", err == EINVAL)
        c.request(CMD_READ, 0, 512, flags=0x100)
        check("%s: read with an unknown flag: EINVAL" % kind, c.status() == EINVAL)
        c.request(77, 0, 0)
        check("%s: unknown command: EINVAL" % kind, c.status() == EINVAL)
        c.request(CMD_FLUSH, 4096, 0)
        check("%s: flush with an offset: EINVAL" % kind, c.status() == EINVAL)

        tail = on_disk(size - 4096, 4096) if FILE else None
        seen = c.read(size - 4096, 4096)[1]
        err = c.write(size - 100, b"\xee" * 200)
        check("%s: write past the end: %s, the payload skipped" %
              (kind, "EPERM" if not writable else "ENOSPC"),
              err == (ENOSPC if writable else EPERM))
        # Whatever the backend: the 100 bytes inside the export are not
        # written either, as the export reads them.
        check("%s: ... and nothing of it was written" % kind,
              c.read(size - 4096, 4096)[1] == seen)
        if FILE:
            check("%s: ... nor reached the file" % kind,
                  on_disk(size - 4096, 4096) == tail)
        err = c.write(0, b"\xcc" * (MAX_PAYLOAD + 4096))
        check("%s: write longer than the maximum block size: %s, payload skipped" %
              (kind, "EPERM" if not writable else "EINVAL"),
              err == (EINVAL if writable else EPERM))
        c.request(CMD_TRIM, size - 4096, 8192)
        check("%s: trim past the end: %s" %
              (kind, "EINVAL" if writable else "EPERM"),
              c.status() == (EINVAL if writable else EPERM))
        c.request(CMD_WRITE_ZEROES, size - 4096, 8192)
        check("%s: write zeroes past the end: %s" %
              (kind, "ENOSPC" if writable else "EPERM"),
              c.status() == (ENOSPC if writable else EPERM))
        c.request(CMD_TRIM, 0, 4096)
        check("%s: trim %s" % (kind, "succeeds" if writable else "on a read-only export: EPERM"),
              c.status() == (0 if writable else EPERM))

        if writable:
            pat = bytes(range(256)) * 16
            check("%s: write at the very end succeeds" % kind,
                  c.write(size - 4096, pat) == 0)
            err, data = c.read(size - 4096, 4096)
            check("%s: and reads back" % kind, err == 0 and data == pat)
            if FILE:
                check("%s: and is in the file" % kind, on_disk(size - 4096, 4096) == pat)
            c.request(CMD_WRITE_ZEROES, size - 4096, 4096, flags=F_NO_HOLE | F_FAST_ZERO)
            err = c.status()
            _, data = c.read(size - 4096, 4096)
            check("%s: fast zero: done, or ENOTSUP with nothing changed" % kind,
                  (err == 0 and data == bytes(4096)) or (err == ENOTSUP and data == pat),
                  "error %d" % err)
            c.request(CMD_WRITE_ZEROES, size - 4096, 4096, flags=F_FUA)
            err = c.status()
            _, data = c.read(size - 4096, 4096)
            check("%s: write zeroes with FUA" % kind, err == 0 and data == bytes(4096))
            c.request(CMD_WRITE_ZEROES, 0, 4096, flags=F_DF)
            check("%s: write zeroes with a read flag: EINVAL" % kind, c.status() == EINVAL)

        # Pipelined: many requests sent before any reply is read.
        n = 64
        cookies = set()
        for i in range(n):
            cookies.add(c.request(CMD_READ, i * 4096, 4096))
        got = set()
        try:
            for i in range(n):
                if structured:
                    _, err, cookie = c.chunks()
                else:
                    err, cookie = c.simple()
                    c.recv(4096)
                if err == 0:
                    got.add(cookie)
        except Exception as e:  # noqa: BLE001
            check("%s: %d pipelined reads" % (kind, n), False, repr(e))
        else:
            check("%s: %d pipelined reads, every cookie answered once" % (kind, n),
                  got == cookies)

        if writable:
            # Pipelined writes of mixed sizes in one send: after a write
            # larger than 32 KiB the daemon reads the next request alone
            # (struct nbd_conn's lean), before and after it with what
            # follows; a request or payload split wrongly shows here.
            sizes = [64 << 10, 4096, 40 << 10, 100, 33 << 10, 1, 128 << 10, 4096]
            base, off, batch, regions = 2 << 20, 0, b"", []
            for ln in sizes:
                data = os.urandom(ln)
                batch += c.packed(CMD_WRITE, base + off, ln, payload=data)
                regions.append((base + off, data))
                off += ln + 512
            batch += c.packed(CMD_FLUSH, 0, 0)
            c.send(batch)
            errs = [c.status() for _ in range(len(sizes) + 1)]
            same = all(c.read(o, len(d)) == (0, d) for o, d in regions)
            check("%s: pipelined writes of 1 B to 128 KiB in one send, "
                  "each where it belongs" % kind, errs == [0] * len(errs) and same,
                  "errors %r" % errs)

        if structured:
            if writable:
                c.request(CMD_TRIM, 1 << 20, 64 << 10)
                c.status()
            c.request(CMD_READ, 1 << 20, 64 << 10, flags=F_DF)
            chunks, err, _ = c.chunks()
            # One OFFSET_DATA chunk, even where the range is a hole (the
            # spec allows a hole chunk; consistent() relies on the data).
            check("structured: DF read of a hole: one OFFSET_DATA chunk",
                  err == 0 and [t for t, _ in chunks if t in (TYPE_DATA, TYPE_HOLE)] == [TYPE_DATA])
            c.request(CMD_READ, size - 512, 1024)
            chunks, err, _ = c.chunks()
            check("structured: an error is an error chunk with a message",
                  err == EINVAL and chunks[0][0] == TYPE_ERROR and len(chunks[0][1]) > 6)
            if MODE == "memory":
                c.request(CMD_READ, 1 << 20, 64 << 10)
                chunks, err, _ = c.chunks()
                check("structured: a trimmed range reads as an OFFSET_HOLE chunk",
                      err == 0 and chunks[0][0] == TYPE_HOLE)
                # NO_HOLE asks that the range stay allocated: written with
                # zeroes, it reads back as data, not as a hole.
                c.request(CMD_WRITE_ZEROES, 1 << 20, 64 << 10, flags=F_NO_HOLE)
                zerr = c.status()
                c.request(CMD_READ, 1 << 20, 64 << 10)
                chunks, err, _ = c.chunks()
                check("structured: a NO_HOLE write zeroes over a hole reads "
                      "back as data",
                      zerr == 0 and err == 0 and
                      [t for t, _ in chunks] == [TYPE_DATA],
                      "chunks %r" % [t for t, _ in chunks])

        c.request(CMD_READ, 0, 512, magic=0xDEADBEEF)
        check("%s: bad request magic: the server hangs up" % kind, c.closed())
        c.close()

    # A write cut short, the client gone in the middle of its payload.
    if MODE != "readonly":
        c = fresh()
        off = 3 << 20
        before = c.read(off - 4096, (16 << 10) + 8192)[1]
        c.close()
        c = fresh()
        c.send(struct.pack(">IHHQQI", REQ_MAGIC, 0, CMD_WRITE, 1, off, 16 << 10) + b"\xaa" * 1000)
        c.s.shutdown(socket.SHUT_WR)
        # The daemon sees the end of the stream and closes its side: only
        # then has it done all it will with the write.
        check("client gone mid-write: the daemon ends the connection",
              c.closed())
        c.close()
        c = fresh()
        after = c.read(off - 4096, (16 << 10) + 8192)[1]
        c.close()
        # Payloads are applied only once whole (up to 32 KiB in memory).
        check("client gone mid-write: nothing of the write was applied", after == before)

    if MODE == "memory":
        memory_bitmap_races()

    send_failures()

    # Truncated requests, and garbage.
    c = fresh()
    c.send(struct.pack(">IHHQ", REQ_MAGIC, 0, CMD_READ, 1)[:10])
    c.close()
    alive("a request header cut short: the daemon goes on")
    c = fresh()
    c.send(os.urandom(4096))
    check("4 KiB of random bytes after GO: the server hangs up", c.closed())
    c.close()
    c = Conn()
    c.send(os.urandom(64))
    c.close()
    alive("random bytes instead of a handshake: the daemon goes on")



try:
    main()
except Exception as e:  # noqa: BLE001 - reported, not raised
    import traceback
    check("no unexpected failure of the client", False,
          traceback.format_exc().replace("\n", "\n# "))

# No plan: the calling script numbers the lines and prints it.
sys.exit(0 if all(r[0] for r in results) else 1)
