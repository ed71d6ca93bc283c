"""`python -m bench [NAME ...]`: run every benchmark module of this package (or the named ones)."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import bench


def modules() -> list[str]:
    """The benchmarks: the package's modules with a `main` (the rest are what they share)."""
    names = sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if not m.name.startswith("_"))
    return [n for n in names if callable(getattr(importlib.import_module(f"bench.{n}"), "main", None))]


def main(argv: list[str]) -> int:
    available = modules()
    chosen = argv or available
    unknown = sorted(set(chosen) - set(available))
    if unknown:
        known = ", ".join(available)
        print(f"unknown benchmark(s): {', '.join(unknown)}; available: {known}", file=sys.stderr)
        return 2
    for name in chosen:
        print(f"== bench.{name}", flush=True)
        importlib.import_module(f"bench.{name}").main([])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
