"""What the Python tests share: the modules they need, and a counting check.

CI installs numpy and torch, so there a missing one is a broken setup and the
test fails; elsewhere it is skipped (exit 77, which CTest reports as skipped).
"""
import importlib
import os
import sys


def require(test, *modules):
    """The modules, imported; exits 1 under CI=true or 77 when one is missing."""
    out = []
    for name in modules:
        try:
            out.append(importlib.import_module(name))
        except ImportError:
            if os.environ.get("CI") == "true":
                print(f"{test}: {name} is not installed, and CI=true needs it")
                sys.exit(1)
            print(f"{test}: {name} is not installed; skipped")
            sys.exit(77)
    return out[0] if len(out) == 1 else out


class Checks:
    """check(ok, what): counts the checks and prints each failure."""

    def __init__(self):
        self.count = 0
        self.failed = 0

    def __call__(self, ok, what):
        self.count += 1
        if not ok:
            self.failed += 1
            print("FAILED:", what)
