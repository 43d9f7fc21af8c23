"""`kiln train --plot` and the --json history, read back as a user's program
would, with nothing but the standard library: the PNG is decoded here (its
signature, every chunk's CRC, IHDR, the zlib stream inflated and the row
filters undone), the SVG parsed as XML, and both checked against the --json
output of the same run (the epochs, the test confusion matrix). A resumed run
carries the history from the checkpoint; one from a checkpoint without it says
where its history starts.

    test_plot.py KILN_BINARY SOURCE_DIR
"""
import csv
import json
import math
import os
import random
import struct
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
import zlib

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
from kt_python import Checks  # noqa: E402

check = Checks()
SVG = "{http://www.w3.org/2000/svg}"
EPOCHS = 12


def kiln(binary, *args):
    r = subprocess.run([binary, *args], capture_output=True, text=True, env=dict(os.environ, KILN_DEVICE="cpu"))
    return r.returncode, r.stdout, r.stderr


def train_json(binary, *args):
    rc, out, err = kiln(binary, "train", *args, "--json")
    check(rc == 0, f"kiln train {' '.join(args)}: exit {rc}: {err}")
    try:
        return json.loads(out)
    except ValueError:
        check(False, f"--json output is one JSON object: {out[:200]!r}")
        return {}


# ---- PNG ------------------------------------------------------------------------------
def paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else b if pb <= pc else c


def decode_png(data):
    """(width, height, rows of (r, g, b) tuples); raises ValueError on any defect."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("no PNG signature")
    pos, chunks = 8, []
    while pos < len(data):
        if pos + 12 > len(data):
            raise ValueError(f"a chunk cut short at byte {pos}")
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        (crc,) = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])
        if len(body) != n or zlib.crc32(kind + body) != crc:
            raise ValueError(f"chunk {kind!r} at byte {pos}: bad CRC or length")
        chunks.append((kind, body))
        pos += 12 + n
    if not chunks or chunks[0][0] != b"IHDR" or chunks[-1][0] != b"IEND":
        raise ValueError("IHDR first and IEND last")
    w, h, depth, ctype, comp, filt, inter = struct.unpack(">IIBBBBB", chunks[0][1])
    if depth != 8 or ctype not in (2, 3) or comp or filt or inter:
        raise ValueError(f"unexpected IHDR: depth {depth}, colour type {ctype}")
    palette = [tuple(b[i:i + 3]) for kind, b in chunks if kind == b"PLTE" for i in range(0, len(b), 3)]
    if ctype == 3 and not palette:
        raise ValueError("a palette image without PLTE")
    raw = zlib.decompress(b"".join(b for kind, b in chunks if kind == b"IDAT"))
    bpp = 1 if ctype == 3 else 3
    stride = w * bpp
    if len(raw) != h * (stride + 1):
        raise ValueError(f"image data of {len(raw)} bytes, {w}x{h} needs {h * (stride + 1)}")
    rows, prev = [], bytearray(stride)
    for y in range(h):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                line[i] = (line[i] + paeth(a, b, c)) & 255
            elif f != 0:
                raise ValueError(f"row {y}: filter type {f}")
        if ctype == 3:
            if max(line) >= len(palette):
                raise ValueError(f"row {y}: a palette index past the palette")
            rows.append([palette[v] for v in line])
        else:
            rows.append([tuple(line[i:i + 3]) for i in range(0, stride, 3)])
        prev = line
    return w, h, rows


def hex_rgb(s):
    s = (s or "").lstrip("#")
    return tuple(int(s[i:i + 2], 16) for i in (0, 2, 4)) if len(s) == 6 else None


# ---- SVG ------------------------------------------------------------------------------
def polylines(root):
    """{class: [(x, y), ...]} of the curves, and their stroke colours."""
    curves, strokes = {}, {}
    for e in root.iter(SVG + "polyline"):
        cls = (e.get("class") or "").split()
        if "curve" not in cls:
            continue
        name = [c for c in cls if c != "curve"][0]
        curves[name] = [tuple(float(v) for v in p.split(",")) for p in e.get("points", "").split()]
        strokes[name] = hex_rgb(e.get("stroke"))
    return curves, strokes


def luminance(rgb):
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def check_history(j, what, regression=False):
    hist, epochs = j.get("history"), j.get("training", {}).get("epochs")
    check(isinstance(hist, list) and len(hist) == epochs, f"{what}: one history entry per epoch trained ({epochs})")
    if not hist:
        return
    check([h["epoch"] for h in hist] == list(range(1, epochs + 1)), f"{what}: epochs 1..{epochs} in order")
    keys = ("train_loss", "val_loss", "val_r2", "val_rmse") if regression else \
        ("train_loss", "train_accuracy", "val_loss", "val_accuracy")
    check(all(isinstance(h.get(k), (int, float)) and math.isfinite(h[k]) for h in hist for k in keys),
          f"{what}: {', '.join(keys)} finite in every epoch")
    check(all(h["lr"] > 0 for h in hist), f"{what}: a positive learning rate in every epoch")
    secs = [h["seconds"] for h in hist]
    check(all(b >= a for a, b in zip(secs, secs[1:])) and secs[0] >= 0, f"{what}: elapsed seconds never go back")
    check(j.get("history_from") == 1, f"{what}: history_from 1: {j.get('history_from')}")
    if not regression:
        accs = [h[k] for h in hist for k in ("train_accuracy", "val_accuracy")]
        check(all(0 <= a <= 1 for a in accs), f"{what}: accuracies between 0 and 1")


def check_svg_curves(root, hist, names, what):
    curves, strokes = polylines(root)
    for n in names:
        pts = curves.get(n, [])
        check(len(pts) == len(hist), f"{what}: curve {n} has {len(pts)} points for {len(hist)} epochs")
        xs = [p[0] for p in pts]
        check(all(b > a for a, b in zip(xs, xs[1:])), f"{what}: curve {n} runs left to right, one point an epoch")
    # The loss curve's shape is the history's: the lowest point is the epoch of the lowest loss.
    if "train-loss" in names and curves.get("train-loss") and len(curves["train-loss"]) == len(hist):
        ys = [p[1] for p in curves["train-loss"]]
        losses = [h["train_loss"] for h in hist]
        check(ys.index(max(ys)) == losses.index(min(losses)), f"{what}: the train-loss curve's lowest point is "
              "the epoch of the lowest train loss")
    texts = [(t.text or "") for t in root.iter(SVG + "text")]
    check(any(t == "epoch" for t in texts) and any(t == "validation" for t in texts), f"{what}: axis title, legend")
    return strokes


def main():
    if len(sys.argv) != 3:
        print("usage: test_plot.py KILN_BINARY SOURCE_DIR")
        return 2
    binary, src = sys.argv[1], sys.argv[2]
    car = os.path.join(src, "data", "car", "car.csv")
    with tempfile.TemporaryDirectory() as d:
        png_path, svg_path = os.path.join(d, "car.png"), os.path.join(d, "car.svg")
        common = [car, "--target", "class", "--epochs", str(EPOCHS), "--seed", "1"]
        jp = train_json(binary, *common, "--plot", png_path)
        js = train_json(binary, *common, "--plot", svg_path)
        check_history(jp, "car --json")
        check(jp.get("history") == [dict(h, seconds=h2["seconds"]) for h, h2 in zip(js.get("history", []),
              jp.get("history", []))], "the same seed gives the same history (seconds aside)")
        hist = jp.get("history", [])
        classes = [c["name"] for c in jp.get("test", {}).get("classes", [])]
        cm = jp.get("test", {}).get("confusion_matrix", [])

        # The SVG: well-formed XML with the four curves and the k^2 matrix cells.
        strokes = {}
        try:
            root = ET.parse(svg_path).getroot()
            check(root.tag == SVG + "svg", f"an SVG document: {root.tag}")
            strokes = check_svg_curves(root, hist, ["train-loss", "val-loss", "train-accuracy", "val-accuracy"],
                                       "car.svg")
            cells = [e for e in root.iter(SVG + "rect") if e.get("class") == "cell"]
            k = len(classes)
            check(k == 4 and len(cells) == k * k, f"car.svg: {len(cells)} confusion-matrix cells for {k} classes")
            # Each cell names its classes and count (the tooltip), as the --json matrix has them.
            got = {}
            for e in cells:
                t = e.find(SVG + "title")
                words = (t.text if t is not None else "").replace(",", "").replace(":", "").split()
                if len(words) >= 5:
                    got[(words[1], words[3])] = int(words[4])
            want = {(classes[i], classes[j]): cm[i][j] for i in range(k) for j in range(k)} if cm else {}
            check(got == want, f"car.svg: the cells' counts are the test confusion matrix: {got} vs {want}")
            # Shading by row: a class's correct cell is darker than an empty cell of its row.
            shade = {}
            for e, key in zip(cells, [(i, j) for i in range(k) for j in range(k)]):
                shade[key] = luminance(hex_rgb(e.get("fill")) or (255, 255, 255))
            rows_ok = all(shade[(i, i)] < shade[(i, j)] for i in range(k) for j in range(k)
                          if cm and cm[i][j] == 0 and cm[i][i] > 0)
            check(rows_ok, "car.svg: a row's diagonal cell is darker than its empty cells")
            names = {(t.text or "") for t in root.iter(SVG + "text")}
            check(all(c in names for c in classes), "car.svg: class names on the axes")
        except ET.ParseError as e:
            check(False, f"car.svg is well-formed XML: {e}")

        # The PNG: decodes, is the size its header says, and shows the curves' colours.
        try:
            with open(png_path, "rb") as f:
                w, h, rows = decode_png(f.read())
            check(len(rows) == h and all(len(r) == w for r in rows) and w >= 400 and h >= 300,
                  f"car.png: {w}x{h} pixels as IHDR says")
            counts = {}
            for r in rows:
                for p in r:
                    counts[p] = counts.get(p, 0) + 1
            check(len(counts) >= 8, f"car.png: {len(counts)} colours (not a blank picture)")
            bg = max(counts, key=counts.get)
            check(counts[bg] < 0.97 * w * h, "car.png: more than a background")
            for name in ("train-loss", "val-loss"):
                rgb = strokes.get(name)
                # A 2-pixel curve across a 500-pixel-wide chart: several hundred pixels at least.
                check(rgb is not None and counts.get(rgb, 0) >= 300,
                      f"car.png: the {name} colour {rgb} (the SVG's) on {counts.get(rgb, 0)} pixels")
        except (OSError, ValueError, zlib.error) as e:
            check(False, f"car.png decodes: {e}")

        # A regression: the loss and the validation R^2, no matrix.
        reg = os.path.join(d, "reg.csv")
        rng = random.Random(7)
        with open(reg, "w", newline="") as f:
            wr = csv.writer(f)
            wr.writerow(["x", "color", "price"])
            for _ in range(400):
                x, c = rng.uniform(-2, 2), rng.choice(["red", "green", "blue"])
                wr.writerow([f"{x:.3f}", c, f"{50 + 10 * x + (5 if c == 'red' else 0) + rng.gauss(0, 1):.2f}"])
        reg_svg = os.path.join(d, "reg.svg")
        jr = train_json(binary, reg, "--target", "price", "--epochs", "8", "--plot", reg_svg)
        check(jr.get("task") == "regression", "the price table is a regression")
        check_history(jr, "regression --json", regression=True)
        try:
            root = ET.parse(reg_svg).getroot()
            check_svg_curves(root, jr.get("history", []), ["train-loss", "val-loss", "val-r2"], "reg.svg")
            check(not [e for e in root.iter(SVG + "rect") if e.get("class") == "cell"], "reg.svg: no matrix")
        except ET.ParseError as e:
            check(False, f"reg.svg is well-formed XML: {e}")

        # Resume: the history comes from the checkpoint, the same as an uninterrupted run's.
        ck = os.path.join(d, "ck")
        ja = train_json(binary, car, "--target", "class", "--seed", "2", "--epochs", "5", "--checkpoint", ck)
        jb = train_json(binary, car, "--target", "class", "--seed", "2", "--epochs", "9", "--resume", ck,
                        "--plot", os.path.join(d, "resumed.svg"))
        jf = train_json(binary, car, "--target", "class", "--seed", "2", "--epochs", "9")
        check(jb.get("training", {}).get("resumed_from_epoch") == 5, "resumed at epoch 5")
        check_history(jb, "resumed --json")
        strip = lambda j: [dict(h, seconds=0) for h in j.get("history", [])]  # noqa: E731
        check(strip(jb)[:5] == strip(ja) and strip(jb) == strip(jf),
              "the resumed run's history: the first run's epochs, then the rest, as one run's")
        try:
            root = ET.parse(os.path.join(d, "resumed.svg")).getroot()
            check_svg_curves(root, jb.get("history", []), ["train-loss", "val-accuracy"], "resumed.svg")
        except ET.ParseError as e:
            check(False, f"resumed.svg is well-formed XML: {e}")

        # A checkpoint without the history (as an older kiln wrote them): the
        # history starts at the resumed epoch, and says so.
        old = os.path.join(d, "old")
        os.mkdir(old)
        with open(os.path.join(ck, "checkpoint.safetensors"), "rb") as f:
            raw = f.read()
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8:8 + n])
        check("extra.history" in header, "the checkpoint holds extra.history")
        if "extra.history" in header:
            shape = header["extra.history"]["shape"]
            check(shape[0] == 9, f"extra.history has a row per epoch: {shape}")
            del header["extra.history"]  # and its bytes: the rest is packed again, without gaps
            rest = raw[8 + n:]
            tensors = sorted((v["data_offsets"][0], v["data_offsets"][1], k) for k, v in header.items()
                             if k != "__metadata__")
            packed, at = bytearray(), 0
            for a, b, k in tensors:
                header[k]["data_offsets"] = [at, at + (b - a)]
                packed += rest[a:b]
                at += b - a
            hb = json.dumps(header).encode()
            hb += b" " * (-len(hb) % 8)
            with open(os.path.join(old, "checkpoint.safetensors"), "wb") as f:
                f.write(struct.pack("<Q", len(hb)) + hb + bytes(packed))
            jo = train_json(binary, car, "--target", "class", "--seed", "2", "--epochs", "12", "--resume", old)
            ho = jo.get("history", [])
            check(jo.get("history_from") == 10 and [h["epoch"] for h in ho] == [10, 11, 12],
                  f"no history in the checkpoint: history_from 10, epochs 10-12: {jo.get('history_from')}, "
                  f"{[h['epoch'] for h in ho]}")

        # What is refused before training, in one line.
        for bad, words in ((os.path.join(d, "x.jpg"), ".png or .svg"), (d, ".png or .svg")):
            rc, out, err = kiln(binary, "train", car, "--target", "class", "--plot", bad)
            check(rc == 2 and err.count("\n") == 1 and words in err and not out,
                  f"--plot {bad}: refused before training: exit {rc}, {err!r}")
    print(f"plot_files: {check.count} checks, {check.failed} failed")
    print(f"plot_files: {'FAILED' if check.failed else 'passed'}")
    return 1 if check.failed or check.count == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
