"""The Dataset every reader returns and every agent trains on: flat float32 transition arrays plus what a
run needs to evaluate and report (spec, reference scores, evaluation env, provenance)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import gymnasium as gym
import numpy as np

from offrl.errors import OfflineRLError

FIELDS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")


@dataclass(frozen=True)
class DatasetSpec:
    """What an agent needs to know to build its networks."""
    obs_dim: int
    act_dim: int
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]


@dataclass
class Dataset:
    """Transitions (s, a, r, s', terminal, timeout), flat, float32 (terminals/timeouts bool).

    `terminals` marks true ends (no bootstrap from s'); `timeouts` marks episode ends by time limit only.
    `family` names the environment family ("hopper", "pointmass") for per-family agent defaults.
    """
    name: str
    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray
    family: str
    source: str  # "offrl" (generated), "d4rl" or "minari"
    version: str
    ref_min_score: float | None = None
    ref_max_score: float | None = None
    env_factory: Callable[[], gym.Env] | None = None
    provenance: dict = field(default_factory=dict)

    def __post_init__(self):
        self.validate()

    def __len__(self) -> int:
        return len(self.rewards)

    @property
    def spec(self) -> DatasetSpec:
        low = self.provenance.get("action_low")
        high = self.provenance.get("action_high")
        if low is None or high is None:
            low = np.minimum(self.actions.min(0), -1.0)
            high = np.maximum(self.actions.max(0), 1.0)
        return DatasetSpec(self.observations.shape[1], self.actions.shape[1],
                           tuple(float(x) for x in low), tuple(float(x) for x in high))

    def validate(self) -> None:
        """Shapes agree, values are finite: else one clear error naming the dataset and the field."""
        n = len(self.rewards)
        for key in FIELDS:
            arr = getattr(self, key)
            if not isinstance(arr, np.ndarray):
                raise OfflineRLError(f"dataset {self.name}: {key} is not an array")
            if arr.shape[0] != n:
                raise OfflineRLError(f"dataset {self.name}: {key} has {arr.shape[0]} rows, rewards has {n}")
        if n == 0:
            raise OfflineRLError(f"dataset {self.name} is empty")
        if self.observations.ndim != 2 or self.actions.ndim != 2 or self.rewards.ndim != 1:
            raise OfflineRLError(f"dataset {self.name}: expected observations [N, d], actions [N, d], rewards [N], "
                                 f"got {self.observations.shape}, {self.actions.shape}, {self.rewards.shape}")
        if self.next_observations.shape != self.observations.shape:
            raise OfflineRLError(f"dataset {self.name}: next_observations {self.next_observations.shape} "
                                 f"!= observations {self.observations.shape}")
        for key in ("observations", "actions", "rewards", "next_observations"):
            arr = getattr(self, key)
            if not np.isfinite(arr).all():
                bad = int((~np.isfinite(arr)).reshape(n, -1).any(1).sum())
                raise OfflineRLError(f"dataset {self.name}: {key} has NaN or inf values in {bad} rows")

    def normalized_score(self, returns):
        """100 * (return - ref_min) / (ref_max - ref_min); an error naming the dataset if refs are missing."""
        if self.ref_min_score is None or self.ref_max_score is None:
            raise OfflineRLError(f"dataset {self.name} has no reference scores (ref_min_score/ref_max_score): "
                                 "a normalised score cannot be computed")
        return 100.0 * (np.asarray(returns, dtype=np.float64) - self.ref_min_score) / (
            self.ref_max_score - self.ref_min_score)

    @property
    def has_reference_scores(self) -> bool:
        return self.ref_min_score is not None and self.ref_max_score is not None

    def episode_returns(self) -> np.ndarray:
        """Undiscounted returns of the episodes, split at terminals or timeouts (a trailing partial one too)."""
        ends = np.flatnonzero(self.terminals | self.timeouts)
        if len(ends) == 0 or ends[-1] != len(self) - 1:
            ends = np.append(ends, len(self) - 1)
        sums = np.add.reduceat(self.rewards.astype(np.float64), np.r_[0, ends[:-1] + 1])
        return sums

    def make_env(self) -> gym.Env:
        if self.env_factory is None:
            raise OfflineRLError(f"dataset {self.name} has no evaluation environment")
        return self.env_factory()

    def check_spec(self, spec: DatasetSpec) -> None:
        """An agent built for `spec` can train on this dataset: else a clear error on the mismatch."""
        mine = self.spec
        if (mine.obs_dim, mine.act_dim) != (spec.obs_dim, spec.act_dim):
            raise OfflineRLError(f"shape mismatch: agent expects observations of {spec.obs_dim} and actions of "
                                 f"{spec.act_dim} dims, dataset {self.name} has {mine.obs_dim} and {mine.act_dim}")


def from_arrays(name: str, arrays: dict, **meta) -> Dataset:
    """Build a Dataset from a dict of arrays, casting to the canonical dtypes."""
    cast = {}
    for key in FIELDS:
        if key not in arrays:
            raise OfflineRLError(f"dataset {name}: missing field {key}")
        dtype = bool if key in ("terminals", "timeouts") else np.float32
        cast[key] = np.asarray(arrays[key]).astype(dtype, copy=False)
    cast["rewards"] = cast["rewards"].reshape(-1)
    cast["terminals"] = cast["terminals"].reshape(-1)
    cast["timeouts"] = cast["timeouts"].reshape(-1)
    return Dataset(name=name, **cast, **meta)
