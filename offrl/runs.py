"""Where the run folders under a folder stand, for `offrl runs`: which finished, which a process is training
now, and which stopped (killed, or cut off at the end of a session) and wait for `offrl run --resume`.

Read from each folder's own files, never written: run.yaml (agent, dataset, seeds, budget), checkpoint.pt
(the step it resumes from; memory-mapped, so only the few bytes of the step are read), eval.csv (the last
evaluation) and result.json (finished). A folder whose lock (offrl/lock.py) another process holds is
running (offrl.lock.held_by: a read-only probe).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from offrl.lock import held_by


@dataclass
class RunStatus:
    path: Path
    agent: str
    dataset: str
    seeds: list[int]
    steps: int                  # the run's budget
    step: int                   # the step its checkpoint holds (what a resume starts from)
    last_eval_step: int | None
    last_score: float | None    # mean normalised score over the seeds at last_eval_step
    state: str                  # finished, running, stopped, or unreadable
    holder: str = ""            # for a running run: who holds its folder
    wall_clock: float = 0.0     # seconds spent on it up to the checkpoint, all sessions (evaluation included)

    @property
    def seconds_left(self) -> float | None:
        """Wall-clock to the end of the budget at the pace so far (None before the first checkpoint)."""
        if self.state == "finished" or self.step <= 0 or self.wall_clock <= 0:
            return None
        return (self.steps - self.step) * self.wall_clock / self.step


def run_status(run_dir: str | Path) -> RunStatus:
    run_dir = Path(run_dir)
    try:
        spec = yaml.safe_load((run_dir / "run.yaml").read_text())
        agent, dataset, seeds, steps = spec["agent"], spec["dataset"], list(spec["seeds"]), spec["train"]["steps"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return RunStatus(run_dir, "?", "?", [], 0, 0, None, None, "unreadable")
    step, wall_clock = 0, 0.0
    if (run_dir / "checkpoint.pt").exists():
        try:
            state = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False, mmap=True)
            step, wall_clock = int(state["step"]), float(state.get("wall_clock", 0.0))
        except Exception:  # a checkpoint that does not load: the resume will say so
            step, wall_clock = 0, 0.0
    last_step, last_score = _last_evaluation(run_dir / "eval.csv")
    status = RunStatus(run_dir, agent, dataset, seeds, steps, step, last_step, last_score, "stopped",
                       wall_clock=wall_clock)
    if (run_dir / "result.json").exists():
        status.state, status.step = "finished", steps
    else:
        holder = held_by(run_dir / ".lock")
        if holder is not None:
            status.state, status.holder = "running", holder
    return status


def _last_evaluation(path: Path) -> tuple[int | None, float | None]:
    """(step, mean score over seeds) of eval.csv's last evaluation; (None, None) if none can be read."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows:
            return None, None
        last = int(rows[-1]["step"])
        return last, float(np.mean([float(r["normalized_score"]) for r in rows if int(r["step"]) == last]))
    except (OSError, KeyError, TypeError, ValueError):  # missing, or not an eval.csv offrl wrote
        return None, None


def list_runs(folder: str | Path) -> list[RunStatus]:
    """Every run folder (a folder with a run.yaml) directly under `folder`, by name."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return [run_status(p) for p in sorted(folder.iterdir()) if (p / "run.yaml").exists()]
