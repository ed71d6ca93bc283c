"""Source files stay small enough to read: a Python file over 450 lines says at its top why it is
one piece (`# One piece (N lines): …` in its first lines), as issue 14 asks. Files git tracks only.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 450
HEAD_LINES = 5


def tracked_python_files() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "*.py"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    return [ROOT / line for line in out.splitlines() if line]


def test_every_long_source_file_says_why_it_is_one_piece() -> None:
    files = tracked_python_files()
    assert len(files) > 100, "git ls-files found too few files; is this a checkout?"
    unexplained = []
    for path in files:
        lines = path.read_text(encoding="utf-8").splitlines()
        if len(lines) <= LIMIT:
            continue
        head = "\n".join(lines[:HEAD_LINES]).lower()
        if "one piece" not in head:
            unexplained.append(f"{path.relative_to(ROOT)} ({len(lines)} lines)")
    assert not unexplained, "over 450 lines without a '# One piece' comment at the top: " + ", ".join(
        unexplained
    )
