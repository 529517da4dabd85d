#!/usr/bin/env python3
"""plot-decentral.py OUT.png RUN.json[=LABEL] ... - the per-round test
accuracy of `enclaveml decentral --json` runs side by side: the mean over
nodes as a line (the 1st, 3rd, ... runs wide, the others thin on top, so
that a baseline and its enclave twin both show where they coincide), the
min..max band shaded, one colour per run, on a shared round axis.  Standard library only (zlib for the PNG), so it runs wherever
python3 does; the text is a built-in 5x7 pixel font.
"""
import json
import struct
import sys
import zlib

GLYPHS = {  # 5x7, rows top to bottom, bit 4 = leftmost pixel
    "0": [14, 17, 19, 21, 25, 17, 14], "1": [4, 12, 4, 4, 4, 4, 14],
    "2": [14, 17, 1, 2, 4, 8, 31], "3": [30, 1, 1, 14, 1, 1, 30],
    "4": [2, 6, 10, 18, 31, 2, 2], "5": [31, 16, 30, 1, 1, 17, 14],
    "6": [6, 8, 16, 30, 17, 17, 14], "7": [31, 1, 2, 4, 8, 8, 8],
    "8": [14, 17, 17, 14, 17, 17, 14], "9": [14, 17, 17, 15, 1, 2, 12],
    "a": [0, 0, 14, 1, 15, 17, 15], "b": [16, 16, 30, 17, 17, 17, 30],
    "c": [0, 0, 14, 16, 16, 17, 14], "d": [1, 1, 15, 17, 17, 17, 15],
    "e": [0, 0, 14, 17, 31, 16, 14], "f": [6, 8, 28, 8, 8, 8, 8],
    "g": [0, 15, 17, 17, 15, 1, 14], "h": [16, 16, 30, 17, 17, 17, 17],
    "i": [4, 0, 12, 4, 4, 4, 14], "j": [2, 0, 6, 2, 2, 18, 12],
    "k": [16, 16, 18, 20, 24, 20, 18], "l": [12, 4, 4, 4, 4, 4, 14],
    "m": [0, 0, 26, 21, 21, 21, 21], "n": [0, 0, 30, 17, 17, 17, 17],
    "o": [0, 0, 14, 17, 17, 17, 14], "p": [0, 0, 30, 17, 30, 16, 16],
    "q": [0, 0, 15, 17, 15, 1, 1], "r": [0, 0, 22, 25, 16, 16, 16],
    "s": [0, 0, 15, 16, 14, 1, 30], "t": [8, 8, 28, 8, 8, 9, 6],
    "u": [0, 0, 17, 17, 17, 19, 13], "v": [0, 0, 17, 17, 17, 10, 4],
    "w": [0, 0, 17, 17, 21, 21, 10], "x": [0, 0, 17, 10, 4, 10, 17],
    "y": [0, 0, 17, 17, 15, 1, 14], "z": [0, 0, 31, 2, 4, 8, 31],
    ".": [0, 0, 0, 0, 0, 12, 12], ":": [0, 12, 12, 0, 12, 12, 0],
    ",": [0, 0, 0, 0, 12, 4, 8], "-": [0, 0, 0, 31, 0, 0, 0],
    "(": [2, 4, 8, 8, 8, 4, 2], ")": [8, 4, 2, 2, 2, 4, 8],
    "%": [24, 25, 2, 4, 8, 19, 3], "/": [1, 1, 2, 4, 8, 16, 16],
    "=": [0, 0, 31, 0, 31, 0, 0], " ": [0] * 7,
}
COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189),
           (255, 127, 14), (23, 190, 207)]
W, H, L, R, T, B = 820, 480, 70, 20, 30, 60


class Canvas:
    def __init__(self):
        self.px = bytearray(b"\xff" * (W * H * 3))

    def dot(self, x, y, c, alpha=1.0):
        if 0 <= x < W and 0 <= y < H:
            i = (y * W + x) * 3
            for k in range(3):
                self.px[i + k] = int(self.px[i + k] * (1 - alpha) + c[k] * alpha)

    def line(self, x0, y0, x1, y1, c, width=2):
        n = max(abs(x1 - x0), abs(y1 - y0), 1)
        for s in range(n + 1):
            x = round(x0 + (x1 - x0) * s / n)
            y = round(y0 + (y1 - y0) * s / n)
            for dx in range(width):
                for dy in range(width):
                    self.dot(x + dx, y + dy, c)

    def text(self, x, y, s, c=(0, 0, 0), scale=2):
        for ch in s.lower():
            rows = GLYPHS.get(ch, GLYPHS[" "])
            for r, bits in enumerate(rows):
                for col in range(5):
                    if bits >> (4 - col) & 1:
                        for a in range(scale):
                            for b in range(scale):
                                self.dot(x + col * scale + a, y + r * scale + b, c)
            x += 6 * scale

    def png(self, path):
        raw = b"".join(b"\x00" + bytes(self.px[y * W * 3:(y + 1) * W * 3])
                       for y in range(H))

        def chunk(kind, data):
            c = kind + data
            return struct.pack(">I", len(data)) + c + struct.pack(
                ">I", zlib.crc32(c) & 0xffffffff)
        with open(path, "wb") as f:
            f.write(b"\x89PNG\r\n\x1a\n")
            f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", W, H, 8, 2, 0, 0, 0)))
            f.write(chunk(b"IDAT", zlib.compress(raw, 9)))
            f.write(chunk(b"IEND", b""))


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    runs = []
    for arg in sys.argv[2:]:
        path, _, label = arg.partition("=")
        with open(path) as f:
            j = json.load(f)
        runs.append((label or path, j["rounds"]))
    rmax = max(len(r) for _, r in runs)
    lo = min(x["min_accuracy"] for _, r in runs for x in r)
    hi = max(x["max_accuracy"] for _, r in runs for x in r)
    lo, hi = max(0.0, int(lo * 10) / 10), min(1.0, int(hi * 10 + 1) / 10)
    cv = Canvas()
    px = lambda r: L + (r - 1) * (W - L - R) / max(rmax - 1, 1)
    py = lambda a: T + (hi - a) * (H - T - B) / (hi - lo)
    for k in range(11):  # grid and axis labels
        a = lo + (hi - lo) * k / 10
        y = round(py(a))
        cv.line(L, y, W - R, y, (225, 225, 225), 1)
        cv.text(8, y - 6, "%.2f" % a)
    for r in range(1, rmax + 1, max(1, rmax // 10)):
        cv.text(round(px(r)) - 6, H - B + 8, str(r))
    cv.text(W // 2 - 30, H - 22, "round")
    cv.text(L, 6, "test accuracy: mean over nodes, min..max shaded")
    for i, (label, rounds) in enumerate(runs):
        c = COLOURS[i % len(COLOURS)]
        for x in rounds:  # the band
            xr = round(px(x["round"]))
            for y in range(round(py(x["max_accuracy"])), round(py(x["min_accuracy"])) + 1):
                for dx in range(-3, 4):
                    cv.dot(xr + dx, y, c, 0.18)
        pts = [(round(px(x["round"])), round(py(x["mean_accuracy"]))) for x in rounds]
        # runs drawn in pairs (a baseline, then its enclave twin): the
        # first of a pair wide, the second thin on top, so that curves
        # that coincide both show
        for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
            cv.line(x0, y0, x1, y1, c, 5 if i % 2 == 0 else 2)
        ly = H - B - 24 - 20 * (len(runs) - 1 - i)
        cv.line(W - R - 300, ly + 6, W - R - 270, ly + 6, c, 3)
        cv.text(W - R - 262, ly, label[:40])
    cv.png(sys.argv[1])


if __name__ == "__main__":
    main()
