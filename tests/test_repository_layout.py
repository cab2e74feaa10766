"""What git holds: a published board is its tables, README, plots and configs, never run state or scripts."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BOARD_FILES = {".csv", ".md", ".yaml", ".png", ".svg"}


def tracked(under: str) -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", under], cwd=ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [Path(line) for line in out.stdout.splitlines()]


def test_results_hold_only_published_boards():
    files = tracked("results")
    assert files, "results/ should hold at least one published board"
    wrong = [str(f) for f in files if f.suffix not in BOARD_FILES or len(f.parts) < 3]
    assert not wrong, f"not a board's file (checkpoint, script or run state?): {wrong}"


def test_gitignore_keeps_run_state_out():
    ignored = subprocess.run(["git", "check-ignore", "--no-index", "runs/x/checkpoint.pt", "results/b/inflight/a",
                              "some/run/checkpoint.pt", "data/main_data.hdf5", "runs/x/tb/events.out.tfevents.1"],
                             cwd=ROOT, capture_output=True, text=True).stdout.split()
    assert len(ignored) == 5, ignored
