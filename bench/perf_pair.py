"""Two trees' CPU figures side by side: `bench.perf` against this checkout's services and, at the
same time on the same cores, against another checkout's, then each process's change.

`python -m bench.perf_pair --base-python ../base/.venv/bin/python [--rounds N] [bench.perf options]`

On a shared machine two runs of `bench.perf` one after the other differ by up to 20 % in CPU per
turn; two stacks started together see the same load, and their ratio resolves ~1 % (the same tree
against itself). The base is another checkout with its own environment, made for example with
`git worktree add --detach ../base <rev> && (cd ../base && uv sync --all-packages --frozen)`. Both
stacks are driven by this checkout's `bench.perf` (the same load generator and measurements; the
base's `parley run` and services via `--stack-python`), each writing its figures with `--json`.
The options not named above go to both runs, e.g.
`--sessions 100 --turns 30 --levels 0 --idle 0 --iterations 100 --warmup 10 --verify-iterations 20
--idle-hold 0` for the CPU per turn (docs/performance.md, "The seventh round").

Two stacks opening sessions at once are each at saturation, and which one the kernel runs first
moves their CPU per opening by more than most changes. `--one-after-the-other` runs the two trees
in turn instead, the base first in odd rounds and second in even ones (an even number of rounds
cancels a machine that drifts), e.g. `--rounds 2 --one-after-the-other --sessions 10 --turns 2
--levels 0 --idle 3000 --open-rate 500 --idle-hold 0` for an opening (docs/performance.md, "The
twenty-eighth round").
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench.perf_report import Figures, compare

ROOT = Path(__file__).resolve().parents[1]


def _order(round_no: int, one_after_the_other: bool) -> list[list[str]]:
    """The runs of a round, in groups started together: both at once, or (`--one-after-the-other`)
    one then the other, the base first in odd rounds and second in even ones, so that a machine
    slowing down or speeding up through the rounds favours neither."""
    if not one_after_the_other:
        return [["base", "this"]]
    return [["base"], ["this"]] if round_no % 2 else [["this"], ["base"]]


def _run_both(
    base_python: str, perf_args: list[str], where: Path, round_no: int, one_after_the_other: bool = False
) -> tuple[Figures, Figures]:
    """Run both trees' `bench.perf` (`_order`), wait for both, return (base, this tree)'s figures."""
    failed = []
    for group in _order(round_no, one_after_the_other):
        runs: dict[str, subprocess.Popen[bytes]] = {}
        for tree in group:
            figures = where / f"{tree}-{round_no}.json"
            cmd = [sys.executable, "-m", "bench.perf", *perf_args, "--json", str(figures)]
            if tree == "base":
                cmd += ["--stack-python", base_python]
            with (where / f"{tree}-{round_no}.log").open("wb") as log:
                runs[tree] = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        for tree, proc in runs.items():
            if proc.wait() != 0:
                failed.append(f"{tree}: exit {proc.returncode}, see {where / f'{tree}-{round_no}.log'}")
    if failed:
        raise SystemExit("bench.perf failed: " + "; ".join(failed))
    base, this = (json.loads((where / f"{t}-{round_no}.json").read_text()) for t in ("base", "this"))
    return base, this


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.perf_pair", description=__doc__.splitlines()[0])
    parser.add_argument("--base-python", metavar="PATH", help="the base checkout's .venv/bin/python")
    parser.add_argument("--rounds", type=int, default=1, help="pairs to run, one after the other")
    parser.add_argument("--keep", metavar="DIR", help="keep both runs' reports and figures here")
    parser.add_argument(
        "--one-after-the-other",
        action="store_true",
        help="run the two trees one after the other (alternating which goes first), not at once:"
        " for phases that saturate the cores, such as admission",
    )
    args, perf_args = parser.parse_known_args(list(argv) if argv is not None else None)
    if not args.base_python:
        # `make bench` runs every module with no options: there is no base to compare with.
        print("bench.perf_pair: skipped (give --base-python, the base checkout's .venv/bin/python)")
        return
    if not Path(args.base_python).is_file():
        parser.error(f"--base-python {args.base_python}: no such interpreter")
    with tempfile.TemporaryDirectory(prefix="parley-bench-pair-") as tmp:
        where = Path(args.keep) if args.keep else Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        for round_no in range(1, args.rounds + 1):
            base, this = _run_both(args.base_python, perf_args, where, round_no, args.one_after_the_other)
            how = " (one after the other)" if args.one_after_the_other else ""
            print(f"=== round {round_no} of {args.rounds}{how}: base {args.base_python}, this tree {ROOT}")
            compare(base, this, sys.stdout)
            print()


if __name__ == "__main__":
    main(sys.argv[1:])
