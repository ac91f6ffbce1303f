#!/usr/bin/env python3
"""Writes the flow-heavy benchmark input: every Ethernet pcap among the shared captures,
replayed ROUNDS times one after another, each round with its IPv4 addresses shifted (the
last two bytes of both addresses XORed with the round number), so that every round's
conversations are new flows. About 35 k packets and 11 k flows per round (3.2 packets per
flow: scans, floods, DNS), the traffic on which per-flow work dominates.

    benches/flow_heavy.py ROUNDS OUT.pcap [CAPTURES_DIR]

Gaps between packets longer than 60 s are shortened to 60 s, and rounds follow each other
with 1 ms between them, so that the capture clock only moves forward.
"""
import glob
import struct
import sys


def frames(captures_dir):
    """(time offset in microseconds, wire length, bytes) of every frame, captures in order."""
    out, base = [], 0
    for path in sorted(glob.glob(f"{captures_dir}/*/*.pcap")):
        data = open(path, "rb").read()
        if len(data) < 24:
            continue
        endian, nanos = {
            b"\xd4\xc3\xb2\xa1": ("<", False),
            b"\xa1\xb2\xc3\xd4": (">", False),
            b"\x4d\x3c\xb2\xa1": ("<", True),
            b"\xa1\xb2\x3c\x4d": (">", True),
        }.get(data[:4], (None, None))
        if endian is None or struct.unpack(endian + "I", data[20:24])[0] != 1:
            continue  # not a classic pcap, or not Ethernet
        off, prev, acc = 24, None, 0
        while off + 16 <= len(data):
            secs, frac, incl, orig = struct.unpack(endian + "IIII", data[off : off + 16])
            frame = data[off + 16 : off + 16 + incl]
            off += 16 + incl
            if len(frame) < incl:
                break
            t = secs * 1_000_000 + (frac // 1000 if nanos else frac)
            if prev is not None:
                acc += min(max(t - prev, 0), 60_000_000)
            prev = t
            out.append((base + acc, orig, frame))
        if out:
            base = out[-1][0] + 1000
    return out


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    rounds, path = int(sys.argv[1]), sys.argv[2]
    captures = sys.argv[3] if len(sys.argv) > 3 else "../shared/data/captures"
    fs = frames(captures)
    if not fs:
        sys.exit(f"no Ethernet pcap under {captures}")
    span = fs[-1][0] + 1000
    n = 0
    with open(path, "wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for r in range(rounds):
            for dt, orig, frame in fs:
                if len(frame) >= 34 and frame[12:14] == b"\x08\x00":
                    f = bytearray(frame)
                    for i, b in ((26, r >> 8), (27, r), (30, r >> 8), (31, r)):
                        f[i] ^= b & 0xFF
                    frame = bytes(f)
                t = r * span + dt
                out.write(struct.pack("<IIII", t // 1_000_000, t % 1_000_000, len(frame), orig))
                out.write(frame)
                n += 1
    print(f"wrote {path}: {n} packets ({len(fs)} per round, {rounds} rounds)")


if __name__ == "__main__":
    main()
