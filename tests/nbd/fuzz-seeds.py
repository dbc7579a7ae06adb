#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Seed inputs for examples/nbd/fuzz-nbd: usage fuzz-seeds.py DIR.

Byte 0 of an input chooses the backend (bit 0: file) and the mode (bit 1:
no handshake, as the kernel speaks); byte 1 the size of each read.  The
rest is what a client sends: valid sessions, which the fuzzer mutates.
"""
import os
import struct
import sys

IHAVEOPT = 0x49484156454F5054
REQ = 0x25609513


def opt(o, data=b""):
    return struct.pack(">QII", IHAVEOPT, o, len(data)) + data


def go(name=b"", infos=(3,)):
    d = struct.pack(">I", len(name)) + name + struct.pack(">H", len(infos))
    return opt(7, d + b"".join(struct.pack(">H", i) for i in infos))


def req(cmd, off, ln, flags=0, payload=b""):
    return struct.pack(">IHHQQI", REQ, flags, cmd, 1, off, ln) + payload


session = (req(1, 4096, 512, 0, b"\xab" * 512) + req(0, 0, 8192) +
           req(1, 1 << 20, 1000, 1, b"\x11" * 1000) + req(3, 0, 0) +
           req(4, 8192, 65536) + req(6, 0, 4096, 2) + req(6, 0, 4096, 16) +
           req(0, 4000, 300, 4) + req(2, 0, 0))
hello = struct.pack(">I", 3)
seeds = {
    "go-simple": b"\x00\x00" + hello + opt(3) + go(b"fuzz") + session,
    "go-structured": b"\x00\x07" + hello + opt(8) + opt(6, b"\0\0\0\0\0\0") + go() + session,
    "export-name": b"\x01\x10" + struct.pack(">I", 1) + opt(1) + session,
    "kernel-file": b"\x03\x00" + session,
    "kernel-memory": b"\x02\x1c" + session,
    "abort": b"\x00\x00" + hello + opt(99, b"x") + opt(5) + opt(2),
}
os.makedirs(sys.argv[1], exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(sys.argv[1], name), "wb") as f:
        f.write(data)
