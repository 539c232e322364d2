#!/usr/bin/env python3
"""A point-to-point link between two network namespaces that delays every packet.

For kernels without sch_netem: two TUN devices, one in each namespace, and this
process between them, which writes each packet out of the other device DELAY_MS
after it read it (both ways, order kept). The devices exist while this process
runs and vanish with it. Used by testnet/natlab.sh --latency.

    delaylink.py NS_A DEV_A NS_B DEV_B DELAY_MS

Bounded: at most QUEUE_CAP packets wait per direction; beyond that a packet is
dropped, as a full router queue would.
"""

import collections
import ctypes
import fcntl
import os
import select
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
CLONE_NEWNET = 0x40000000
QUEUE_CAP = 4096
MAX_PACKET = 65535
READS_PER_WAKE = 64

libc = ctypes.CDLL(None, use_errno=True)


def enter(ns):
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {ns}: {os.strerror(err)}")
    finally:
        os.close(fd)


def tun(ns, name):
    """A TUN device called `name` in namespace `ns` (created in the netns this
    process is in when it asks for it)."""
    enter(ns)
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def main():
    if len(sys.argv) != 6:
        sys.exit(__doc__)
    ns_a, dev_a, ns_b, dev_b, delay_ms = sys.argv[1:]
    delay = float(delay_ms) / 1000.0
    if not 0 <= delay <= 10:
        sys.exit("DELAY_MS must be between 0 and 10000")
    a = tun(ns_a, dev_a)
    b = tun(ns_b, dev_b)
    # Packets read from a key wait in its queue, then go out of the other device.
    out = {a: b, b: a}
    queues = {a: collections.deque(), b: collections.deque()}
    print("ready", flush=True)
    while True:
        now = time.monotonic()
        for src, q in queues.items():
            while q and q[0][0] <= now:
                _, pkt = q.popleft()
                try:
                    os.write(out[src], pkt)
                except OSError:
                    pass  # the device's queue is full or it is down: dropped
        due = [q[0][0] for q in queues.values() if q]
        timeout = max(0.0, min(due) - now) if due else None
        readable, _, _ = select.select([a, b], [], [], timeout)
        arrived = time.monotonic()
        for src in readable:
            # A bounded drain, so that a flood one way does not hold up the
            # packets due the other way.
            for _ in range(READS_PER_WAKE):
                try:
                    pkt = os.read(src, MAX_PACKET)
                except BlockingIOError:
                    break
                if len(queues[src]) < QUEUE_CAP:
                    queues[src].append((arrived + delay, pkt))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
