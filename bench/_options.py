"""What the one-process benchmarks' command lines share: whole-number options with defaults."""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def int_options(doc: str | None, argv: Sequence[str] | None, **defaults: int) -> argparse.Namespace:
    """`--name N` for each of `defaults` (`sessions=5000` is `--sessions`, 5000 unless given), with
    the module's docstring as the help's description."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, default in defaults.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=default)
    return parser.parse_args(argv)
