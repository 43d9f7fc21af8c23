"""Makes camera.pgm from scikit-image's camera.png (see SOURCE.md).

    python3 make_pgm.py /usr/lib/python3/dist-packages/skimage/data/camera.png camera.pgm

Decodes the 512 x 512 8-bit grayscale PNG (every filter type; no interlace),
averages each 2 x 2 block, rounding halves up, and writes a binary PGM (P5)
of 256 x 256. Needs numpy only."""
import struct
import sys
import zlib

import numpy as np


def read_gray_png(path):
    data = open(path, 'rb').read()
    if data[:8] != b'\x89PNG\r\n\x1a\n':
        raise ValueError(f'{path}: not a PNG file')
    pos, idat, size = 8, b'', None
    while pos < len(data):
        (n,) = struct.unpack('>I', data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        if zlib.crc32(kind + body) != struct.unpack('>I', data[pos + 8 + n:pos + 12 + n])[0]:
            raise ValueError(f'{path}: bad CRC in chunk {kind!r}')
        if kind == b'IHDR':
            w, h, depth, color, _, _, interlace = struct.unpack('>IIBBBBB', body)
            if (depth, color, interlace) != (8, 0, 0):
                raise ValueError(f'{path}: not 8-bit grayscale without interlace')
            size = (h, w)
        elif kind == b'IDAT':
            idat += body
        pos += 12 + n
    h, w = size
    raw = zlib.decompress(idat)
    if len(raw) != h * (w + 1):
        raise ValueError(f'{path}: {len(raw)} bytes of pixel data, want {h * (w + 1)}')
    img = np.zeros((h, w), np.int64)
    prev = np.zeros(w, np.int64)
    for r in range(h):
        kind, line = raw[r * (w + 1)], raw[r * (w + 1) + 1:(r + 1) * (w + 1)]
        out = np.zeros(w, np.int64)
        for x in range(w):
            a = out[x - 1] if x else 0
            b = prev[x]
            c = prev[x - 1] if x else 0
            if kind == 0:
                pred = 0
            elif kind == 1:
                pred = a
            elif kind == 2:
                pred = b
            elif kind == 3:
                pred = (a + b) // 2
            elif kind == 4:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
            else:
                raise ValueError(f'{path}: row {r} has filter type {kind}')
            out[x] = (line[x] + pred) & 255
        img[r], prev = out, out
    return img


def main():
    src, dst = sys.argv[1], sys.argv[2]
    img = read_gray_png(src)
    if img.shape[0] % 2 or img.shape[1] % 2:
        raise ValueError(f'{src}: {img.shape} is not of even sides')
    small = (img[0::2, 0::2] + img[0::2, 1::2] + img[1::2, 0::2] + img[1::2, 1::2] + 2) // 4
    with open(dst, 'wb') as f:
        f.write(b'P5\n%d %d\n255\n' % (small.shape[1], small.shape[0]))
        f.write(small.astype(np.uint8).tobytes())


if __name__ == '__main__':
    main()
