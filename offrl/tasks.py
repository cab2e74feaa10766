"""Task sets: the several reward functions one reward-free dataset is evaluated on (zero-shot RL).

A multi-task dataset records transitions without rewards; its `TaskSet` says what each task rewards, how to
make an evaluation env that pays that reward, the task's reference returns (for normalised scores), and,
for a goal-reaching task, the goal observation. A task-conditioned agent infers a task vector either from
reward-labelled dataset samples (`Task.reward` relabels any transitions, including extras such as stored
simulator states) or from the goal, then acts on it (offrl/evaluation.py, TaskEvaluator).

This is a leaf of the core: environment packages build task sets and hand them to their recipes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import gymnasium as gym
import numpy as np

from offrl.errors import OfflineRLError

AGGREGATE = "all tasks"  # the task name of a result row that aggregates a seed's tasks (IQM over tasks)


@dataclass(frozen=True)
class Task:
    name: str
    # {"observations", "actions", "next_observations", extras...}: arrays [N, ...] -> rewards float32 [N]
    reward: Callable[[dict], np.ndarray]
    make_env: Callable[[], gym.Env]  # an evaluation env whose reward is this task's
    ref_min_score: float  # reference returns of the task: 0 and 100 on the normalised scale
    ref_max_score: float
    goal: tuple[float, ...] | None = None  # the observation to reach, for goal-based task inference

    def normalized_score(self, returns) -> np.ndarray:
        return 100.0 * (np.asarray(returns, dtype=np.float64) - self.ref_min_score) / (
            self.ref_max_score - self.ref_min_score)


@dataclass(frozen=True)
class TaskSet:
    tasks: tuple[Task, ...]

    def __post_init__(self):
        names = [t.name for t in self.tasks]
        if not names or len(set(names)) != len(names) or AGGREGATE in names:
            raise OfflineRLError(f"a task set needs distinct task names other than {AGGREGATE!r}, got {names}")

    def __iter__(self):
        return iter(self.tasks)

    def __len__(self) -> int:
        return len(self.tasks)

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tasks]
