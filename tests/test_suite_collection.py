"""The suite's own command collects every test file: a folder it skips is a folder CI never runs."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_test_command_collects_every_test_file():
    # Before: pytest's default norecursedirs holds "build", so tests/build (the static page's structure and its
    # runs in Chromium, 24 tests) was silently left out of every CI run.
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    collected = {line.split("::")[0] for line in out.stdout.splitlines() if "::" in line}
    files = {p.relative_to(REPO).as_posix() for p in (REPO / "tests").rglob("test_*.py")}
    assert files - collected == set(), f"never collected: {sorted(files - collected)}"
