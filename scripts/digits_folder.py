#!/usr/bin/env python3
"""Writes the shipped digits data set as a folder of 8x8 grayscale PNGs, one subfolder per
class (DIR/0 ... DIR/9), to try `vkgrad train --data DIR` on an image folder (README, "Your
own data"). Standard library only. Refuses a DIR that already exists."""
import csv, gzip, os, struct, sys, zlib

def png(path, rows):
    """An 8-bit grayscale PNG of `rows` (lists of 0..255)."""
    h, w = len(rows), len(rows[0])
    raw = b"".join(b"\x00" + bytes(r) for r in rows)
    def chunk(kind, data):
        c = kind + data
        return struct.pack(">I", len(data)) + c + struct.pack(">I", zlib.crc32(c) & 0xFFFFFFFF)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))

def main():
    if len(sys.argv) != 2:
        sys.exit("usage: digits_folder.py DIR")
    out = sys.argv[1]
    if os.path.exists(out):
        sys.exit(f"{out} exists; give a new folder")
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "digits.csv.gz")
    with gzip.open(src, "rt") as f:
        for i, row in enumerate(csv.reader(f)):
            if not row:
                continue
            v = [int(float(t)) for t in row]
            pixels = [min(255, p * 16) for p in v[:64]]   # 0..16 -> 0..255 (16 -> 255)
            d = os.path.join(out, str(v[64]))
            os.makedirs(d, exist_ok=True)
            png(os.path.join(d, f"{i:04d}.png"), [pixels[r * 8:(r + 1) * 8] for r in range(8)])
    print(f"{out}: {i + 1} images in 10 class folders")

main()
