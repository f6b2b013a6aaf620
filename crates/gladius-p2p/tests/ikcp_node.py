#!/usr/bin/env python3
"""A gladius peer built on the reference C ikcp (PyPI `kcp` 0.1.6), written
from docs/wire-format.md alone, for the node-level interop test.

  ikcp_node.py NODE_HOST NODE_PORT

Opens a session to the node (random conv, Hello frame first), sends one
"interop.hello" message, then answers every "interop.ping" message with an
"interop.pong" carrying the same body. Prints one line per event on stdout:
"READY <port>", "HELLO <advertised>", "PING <body>", "BADCRC". Exits after
5 s without traffic, 60 s in all, or when stdin closes.
"""

import os
import random
import select
import socket
import struct
import sys
import time

import kcp


def crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


TABLE = crc32c_table()


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def frame(kind, payload):
    return struct.pack("<IB", 1 + len(payload), kind) + payload


INSTANCE = random.getrandbits(64)


def hello(advertised):
    a = advertised.encode()
    return frame(1, b"GLAD" + bytes([1]) + struct.pack("<Q", INSTANCE) + bytes([len(a)]) + a)


def message(sender, mtype, body):
    s, t = sender.encode(), mtype.encode()
    enc = bytes([len(s)]) + s + bytes([len(t)]) + t + struct.pack("<I", len(body)) + body
    return frame(2, enc + struct.pack("<I", crc32c(enc)))


def parse_message(p):
    """(sender, type, body) of a message payload, or None on a bad checksum."""
    sl = p[0]
    sender = p[1 : 1 + sl].decode()
    i = 1 + sl
    tl = p[i]
    mtype = p[i + 1 : i + 1 + tl].decode()
    i += 1 + tl
    (bl,) = struct.unpack_from("<I", p, i)
    body = p[i + 4 : i + 4 + bl]
    (crc,) = struct.unpack_from("<I", p, i + 4 + bl)
    if crc != crc32c(p[: i + 4 + bl]):
        return None
    return sender, mtype, body


def main():
    node = (sys.argv[1], int(sys.argv[2]))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    me = "127.0.0.1:%d" % sock.getsockname()[1]
    print("READY", sock.getsockname()[1], flush=True)

    k = kcp.KCP(
        # The binding declares conv_id as a C int, so stay below 2**31.
        conv_id=random.randint(1, 2**31 - 1),
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
        sock.sendto(data, node)

    k.enqueue(hello(me))
    k.enqueue(message(me, "interop.hello", b"from the reference ikcp"))
    k.flush()

    stream = b""
    start = last = time.monotonic()
    while True:
        now = time.monotonic()
        if now - start > 60 or now - last > 5:
            return
        readable, _, _ = select.select([sock, sys.stdin], [], [], 0.002)
        if sys.stdin in readable and not os.read(sys.stdin.fileno(), 1):
            return
        while True:
            try:
                data, _ = sock.recvfrom(65536)
            except BlockingIOError:
                break
            last = time.monotonic()
            k.receive(data)
        for chunk in k.get_all_received():
            stream += bytes(chunk)
        while len(stream) >= 5:
            (n,) = struct.unpack_from("<I", stream, 0)
            if len(stream) < 4 + n:
                break
            kind, payload = stream[4], stream[5 : 4 + n]
            stream = stream[4 + n :]
            if kind == 1:
                print("HELLO", payload[14:].decode(), flush=True)
            elif kind == 2:
                m = parse_message(payload)
                if m is None:
                    print("BADCRC", flush=True)
                elif m[1] == "interop.ping":
                    print("PING", m[2].decode(), flush=True)
                    k.enqueue(message(me, "interop.pong", m[2]))
        k.update()


if __name__ == "__main__":
    main()
