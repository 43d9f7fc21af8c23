"""The same stratified split as `kiln train` (tools/kiln/table.c), so the
PyTorch scripts train and test on exactly the rows kiln does for a seed."""
import math
import re

MASK = (1 << 64) - 1
MISSING = {"", "?", "NA", "N/A", "na", "n/a", "NaN", "nan", "null", "NULL", "None"}
_NUM = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def is_missing(s):
    return s.strip(" \t") in MISSING


def parse_number(s):
    t = s.strip(" \t")
    if not _NUM.match(t):
        return None
    v = float(t)
    return v if math.isfinite(v) else None


class Rng:
    """splitmix64, as rng_next in table.c."""

    def __init__(self, state):
        self.state = state & MASK

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def shuffle(self, a):
        for i in range(len(a) - 1, 0, -1):
            j = self.next() % (i + 1)
            a[i], a[j] = a[j], a[i]


def class_order(names):
    import functools

    def cmp(s, t):
        x, y = parse_number(s), parse_number(t)
        if x is not None and y is not None and x != y:
            return -1 if x < y else 1
        return (s > t) - (s < t)

    return sorted(names, key=functools.cmp_to_key(cmp))


def stratified_split(rows, y, k, test_frac, val_frac, seed):
    """rows: data-row indices with a target; y: their class codes."""
    rng = Rng(seed ^ 0x6B696C6E2D73706C)
    train, val, test = [], [], []
    for c in range(k):
        buf = [r for r, t in zip(rows, y) if t == c]
        rng.shuffle(buf)
        m = len(buf)
        nt = math.floor(m * test_frac + 0.5)
        nv = math.floor(m * val_frac + 0.5)
        while nv > 0 and m - nt - nv < 1:
            nv -= 1
        while nt > 0 and m - nt - nv < 1:
            nt -= 1
        test += buf[:nt]
        val += buf[nt:nt + nv]
        train += buf[nt + nv:]
    rng.shuffle(test)
    rng.shuffle(val)
    rng.shuffle(train)
    return train, val, test


def target_codes(cells):
    """(rows with a target, their codes, class names) from the target column."""
    rows = [i for i, v in enumerate(cells) if not is_missing(v)]
    names = class_order(sorted({cells[i].strip(" \t") for i in rows}))
    code = {n: i for i, n in enumerate(names)}
    return rows, [code[cells[i].strip(" \t")] for i in rows], names
