#!/usr/bin/env python3
# The receiving end of systemd's readiness protocol, for the tests: bind
# the AF_UNIX datagram socket SOCKET ('@' first: the abstract namespace),
# create the file READY once it is bound, then print each datagram on a
# line of its own until one is STOPPING=1 or TIMEOUT seconds pass.
import os
import socket
import sys

path, ready, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
addr = "\0" + path[1:] if path.startswith("@") else path
if not path.startswith("@") and os.path.exists(path):
    os.unlink(path)
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(addr)
s.settimeout(timeout)
open(ready, "w").close()
try:
    while True:
        msg = s.recv(4096).decode(errors="replace")
        print(msg, flush=True)
        if msg == "STOPPING=1":
            break
except socket.timeout:
    print("timeout", flush=True)
