"""Where the run folders under a folder stand, for `offrl runs`: which finished, which a process is training
now, which stopped (killed, or cut off at the end of a session) and wait for `offrl run --resume`, which
trained all their steps but have no recorded result (`offrl runs --finish`), and which diverged.

Read from each folder's own files, never written: run.yaml (agent, dataset, seeds, budget), checkpoint.pt
(the step it resumes from; memory-mapped, so only the few bytes of the step are read; loaded as data only,
since a run folder may come from anyone), eval.csv (the last evaluation), diverged.txt and result.json
(finished). A folder whose lock (offrl/lock.py) another process holds is running (offrl.lock.held_by: a
read-only probe).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from offrl.errors import OfflineRLError
from offrl.lock import held_by
from offrl.run_folder import RunFolder, load_weights


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
    state: str                  # finished, running, stopped, trained (to finish), diverged, or unreadable
    holder: str = ""            # for a running run: who holds its folder
    wall_clock: float = 0.0     # seconds spent on it up to the checkpoint, all sessions (evaluation included)

    @property
    def seconds_left(self) -> float | None:
        """Wall-clock to the end of the budget at the pace so far (None before the first checkpoint)."""
        if self.state in ("finished", "diverged") or self.step <= 0 or self.wall_clock <= 0:
            return None
        return (self.steps - self.step) * self.wall_clock / self.step


def run_status(run_dir: str | Path) -> RunStatus:
    folder = RunFolder(run_dir)
    try:
        spec = folder.read_spec()
        steps = int(spec.train["steps"])
    except (OfflineRLError, KeyError, TypeError, ValueError):
        return RunStatus(folder.path, "?", "?", [], 0, 0, None, None, "unreadable")
    step, wall_clock = 0, 0.0
    if folder.checkpoint_path.exists():
        try:
            state = load_weights(folder.checkpoint_path, mmap=True)
            step, wall_clock = int(state["step"]), float(state.get("wall_clock", 0.0))
        except Exception:  # a checkpoint that does not load: the resume will say so
            step, wall_clock = 0, 0.0
    last_step, last_score = _last_evaluation(folder.path / "eval.csv")
    status = RunStatus(folder.path, spec.agent, spec.dataset, list(spec.seeds), steps, step, last_step, last_score,
                       "stopped", wall_clock=wall_clock)
    if folder.finished():
        status.state, status.step = "finished", steps
    elif (holder := held_by(folder.path / ".lock")) is not None:
        status.state, status.holder = "running", holder
    elif folder.divergence() is not None:
        status.state = "diverged"
    elif step >= steps > 0:
        status.state = "trained"  # all steps done, the result not recorded: offrl runs --finish
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
