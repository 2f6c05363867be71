#!/usr/bin/env python3
"""Write the starting inputs for the `decode` target into seeds/decode/ (docs/FUZZING.md).

One valid datagram (header + body + 16-byte tag) and one bare body per packet type, following
docs/protocol/02-wire.md, so AFL starts from inputs that reach every decoder's deep paths.
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "seeds", "decode")


def header(ptype, shard=0, session=0x1122334455667788, seq=7, ts=1000):
    return struct.pack("<BBBBQQI", 1, ptype, shard, 0, session, (shard << 56) | seq, ts)


BODIES = {
    "data": (1, struct.pack("<IQ", 3, 1 << 20) + bytes(range(40))),
    "nak": (2, struct.pack("<H", 2) + struct.pack("<QQ", 0, 1400) + struct.pack("<QQ", 4200, 9800)),
    "feedback": (3, struct.pack("<QIIIII", 1 << 30, 1000, 20, 50000, 50100, 64)),
    "window": (4, struct.pack("<QQ", 1 << 20, 1 << 24)),
    "filedone": (5, struct.pack("<IQ", 3, 123456789) + bytes(range(32))),
    "fileack": (6, struct.pack("<IB", 3, 1)),
    "complete": (7, b""),
    "abort": (8, struct.pack("<H", 5)),
    "keepalive": (9, b""),
}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, (ptype, body) in BODIES.items():
        with open(os.path.join(OUT, f"{name}.datagram"), "wb") as f:
            f.write(header(ptype) + body + b"\xaa" * 16)
        with open(os.path.join(OUT, f"{name}.body"), "wb") as f:
            f.write(body)


if __name__ == "__main__":
    main()


def receive_seeds():
    """Inputs for the `receive` target: suite byte, then records `kind ‖ len ‖ bytes` (odd kind:
    sealed with the peer's keys around `bytes[1:]` as a body of type `bytes[0]`)."""
    out = os.path.join(HERE, "seeds", "receive")
    os.makedirs(out, exist_ok=True)

    def rec(kind, body):
        return bytes([kind, len(body)]) + body

    def data(offset, n):
        return bytes([1]) + struct.pack("<IQ", 0, offset) + bytes(range(n))

    seeds = {
        "in_order": bytes([0]) + b"".join(rec(1, data(o, 200)) for o in range(0, 1400, 200)),
        "reordered_short_write": bytes([1]) + rec(0xC1, data(400, 200)) + rec(1, data(0, 200)),
        "filedone_complete": bytes([2]) + rec(1, bytes([5]) + struct.pack("<IQ", 1, 5) + bytes(32))
        + rec(1, bytes([7])),
        "abort_and_junk": bytes([0]) + rec(0, bytes(range(60))) + rec(1, bytes([8]) + struct.pack("<H", 5)),
        "disk_full": bytes([0]) + rec(0xE1, data(0, 100)) + rec(1, data(100, 100)),
    }
    for name, blob in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(blob)


if __name__ == "__main__":
    receive_seeds()
