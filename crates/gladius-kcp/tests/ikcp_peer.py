#!/usr/bin/env python3
"""A reference-ikcp peer for gladius-kcp's interop test.

Uses the PyPI package `kcp` (0.1.6), which wraps the reference C ikcp.
Binds UDP on 127.0.0.1:0, prints "PORT <n>" on stdout, then serves:

  ikcp_peer.py CONV echo          echo every received chunk back
  ikcp_peer.py CONV source N      after the first received chunk, send N bytes
                                  (byte i = (i * 7 + 3) % 256) in 3000-byte
                                  messages, which ikcp fragments (frg > 0)

The peer stays in ikcp's default message mode on purpose: gladius-kcp must
read a fragmenting peer as a byte stream. It exits after 5 s without traffic,
after 60 s in total, or when stdin closes (the parent died).
"""

import os
import select
import socket
import sys
import time

import kcp


def pattern(n):
    return bytes((i * 7 + 3) % 256 for i in range(n))


def main():
    conv = int(sys.argv[1])
    mode = sys.argv[2]
    total = int(sys.argv[3]) if mode == "source" else 0

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    print("PORT", sock.getsockname()[1], flush=True)

    peer = [None]
    k = kcp.KCP(
        conv_id=conv,
        max_transmission=1400,
        no_delay=True,
        update_interval=10,
        resend_count=2,
        no_congestion_control=True,
        send_window_size=128,
        receive_window_size=128,
    )

    @k.outbound_handler
    def send(_k, data):
        if peer[0] is not None:
            sock.sendto(data, peer[0])

    started = False
    start = time.monotonic()
    last_traffic = start
    while True:
        now = time.monotonic()
        if now - start > 60 or now - last_traffic > 5:
            return
        readable, _, _ = select.select([sock, sys.stdin], [], [], 0.002)
        if sys.stdin in readable and not os.read(sys.stdin.fileno(), 1):
            return  # parent closed our stdin: it is gone
        while True:
            try:
                data, addr = sock.recvfrom(65536)
            except BlockingIOError:
                break
            peer[0] = addr
            last_traffic = time.monotonic()
            k.receive(data)
        for chunk in k.get_all_received():
            if mode == "echo":
                k.enqueue(bytes(chunk))
            elif not started:
                started = True
                data = pattern(total)
                for i in range(0, total, 3000):
                    k.enqueue(data[i : i + 3000])
        k.update()


if __name__ == "__main__":
    main()
