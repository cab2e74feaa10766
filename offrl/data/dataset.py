"""The Dataset every reader returns and every agent trains on: flat float32 transition arrays plus what a
run needs to evaluate and report (spec, reference scores, evaluation env, provenance).

Beside the fixed arrays a Dataset carries optional named per-transition arrays, `extras`: what a file records
per step (D4RL's `infos/qpos`, a Minari dataset's `infos/cost`), and what is computed from the transitions
(`mc_return`, the discounted return-to-go, offrl.data.returns). An agent names the extras it reads
(`Agent.extras`); `extras_for` gives them, computing and memoising what is computed, and a name the dataset
does not have is one error naming the dataset, the field and what it has.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable, Iterable

import gymnasium as gym
import numpy as np

from offrl.data import returns
from offrl.errors import OfflineRLError
from offrl.tasks import TaskSet

FIELDS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")
# Extras computed from the transitions: each is a Dataset method of that name whose keyword arguments are its
# parameters (read from an agent config's fields of the same names, see Dataset.extras_for).
COMPUTED_EXTRAS = ("mc_return",)


@dataclass(frozen=True)
class DatasetSpec:
    """What an agent needs to know to build its networks.

    A discrete space (gymnasium Discrete(n)) is stored as the index, a float32 column of width 1 (obs_dim or
    act_dim 1), and `n_observations` / `n_actions` say how many values it has (None: a Box). An agent one-hots
    the index where it needs to (offrl.nets.one_hot); a discrete action comes back from `act` as the index in
    a [..., 1] float tensor.
    """
    obs_dim: int
    act_dim: int
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]
    n_observations: int | None = None
    n_actions: int | None = None

    @property
    def discrete_actions(self) -> bool:
        return self.n_actions is not None


def space_provenance(observation_space, action_space) -> dict:
    """The provenance keys Dataset.spec reads, from an env's spaces: the action box, or the numbers of values
    of discrete spaces."""
    out = {}
    if isinstance(action_space, gym.spaces.Discrete):
        out.update(n_actions=int(action_space.n), action_low=[0.0], action_high=[float(action_space.n - 1)])
    elif isinstance(action_space, gym.spaces.Box):
        out.update(action_low=action_space.low.tolist(), action_high=action_space.high.tolist())
    else:
        raise OfflineRLError(f"offrl handles Box and Discrete action spaces, not {action_space}")
    if isinstance(observation_space, gym.spaces.Discrete):
        out["n_observations"] = int(observation_space.n)
    return out


@dataclass
class Dataset:
    """Transitions (s, a, r, s', terminal, timeout), flat, float32 (terminals/timeouts bool).

    `terminals` marks true ends (no bootstrap from s'); `timeouts` marks episode ends by time limit only.
    `family` names the environment family ("hopper", "pointmass") for per-family agent defaults.
    `extras` holds the per-transition arrays a file recorded beyond these (leading axis N, any dtype).
    A reward-free dataset (`reward_free`) has a task set instead of reference scores: each task carries its
    own reward function and reference returns.
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
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    # A tabular env's exact policy evaluation (Recipe.policy_metrics): the Evaluator adds its columns.
    policy_metrics: Callable[..., dict] | None = None
    # The reward functions a multi-task dataset is evaluated on (offrl/tasks.py); None: its own reward only.
    tasks: TaskSet | None = None
    # True when the rewards array holds no rewards (zeros): only reward-free agents may train on it.
    reward_free: bool = False
    # Computed extras, keyed by (name, parameters): computed once per dataset and parameters.
    _computed: dict = field(default_factory=dict, init=False, repr=False, compare=False)

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
        n_obs, n_act = self.provenance.get("n_observations"), self.provenance.get("n_actions")
        return DatasetSpec(self.observations.shape[1], self.actions.shape[1],
                           tuple(float(x) for x in low), tuple(float(x) for x in high),
                           None if n_obs is None else int(n_obs), None if n_act is None else int(n_act))

    def validate(self) -> None:
        """Shapes agree, values are finite: else one clear error naming the dataset and the field."""
        n = len(self.rewards)
        for key in FIELDS:
            arr = getattr(self, key)
            if not isinstance(arr, np.ndarray):
                raise OfflineRLError(f"dataset {self.name}: {key} is not an array")
            if arr.shape[0] != n:
                raise OfflineRLError(f"dataset {self.name}: {key} has {arr.shape[0]} rows, rewards has {n}")
        for key, arr in self.extras.items():
            if key in FIELDS or key in COMPUTED_EXTRAS:
                raise OfflineRLError(f"dataset {self.name}: extra field {key!r} shadows a built-in field")
            if not isinstance(arr, np.ndarray) or arr.ndim == 0 or arr.shape[0] != n:
                raise OfflineRLError(f"dataset {self.name}: extra field {key} has shape "
                                     f"{getattr(arr, 'shape', None)}, rewards has {n} rows")
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

    def mc_return(self, discount: float, reward_scale: float = 1.0, reward_shift: float = 0.0,
                  failure_reward: float | None = None, bootstrap_tail: bool = False) -> np.ndarray:
        """Discounted return-to-go of every transition, float32 [N], computed once per parameters.

        Episodes end at terminals, timeouts and the dataset's last row. A truncated episode (a timeout, or the
        dataset's cut end) sums only its recorded rewards, as the official Cal-QL code does for AntMaze and
        Adroit; `bootstrap_tail=True` continues it with its last reward forever (Cal-QL on Kitchen). Rewards
        are transformed first (reward_scale·r + reward_shift), and an episode whose every reward equals
        `failure_reward` gets r'_fail / (1 − γ) everywhere (Cal-QL's sparse-reward rule): offrl.data.returns.
        """
        key = ("mc_return", float(discount), float(reward_scale), float(reward_shift),
               None if failure_reward is None else float(failure_reward), bool(bootstrap_tail))
        if key not in self._computed:
            g = returns.return_to_go(self.rewards, self.terminals, self.timeouts, discount,
                                     reward_scale=reward_scale, reward_shift=reward_shift,
                                     failure_reward=failure_reward, bootstrap_tail=bootstrap_tail)
            g.flags.writeable = False  # shared by every buffer built from this dataset
            self._computed[key] = g
        return self._computed[key]

    def extra(self, name: str, **params) -> np.ndarray:
        """The extra per-transition array `name` ([N, ...]): a recorded one, or a computed one with `params`."""
        if name in COMPUTED_EXTRAS:
            return getattr(self, name)(**params)
        if name not in self.extras:
            has = ", ".join(sorted(self.extras) + sorted(COMPUTED_EXTRAS))
            raise OfflineRLError(f"dataset {self.name} has no extra field {name!r} (it has {has})")
        return self.extras[name]

    def extras_for(self, names: Iterable[str], config=None) -> dict[str, np.ndarray]:
        """{name: array} for the extras an agent declares. A computed extra reads its parameters from the
        agent config's fields of the same names (mc_return: `discount`, and `reward_scale`, `reward_shift`,
        `failure_reward`, `bootstrap_tail` where the config has them), so the returns are in the units of
        the agent's own backup."""
        out = {}
        for name in names:
            params = {}
            if name in COMPUTED_EXTRAS:
                wanted = inspect.signature(getattr(self, name)).parameters
                params = {k: getattr(config, k) for k in wanted if hasattr(config, k)}
                missing = [k for k, p in wanted.items() if p.default is p.empty and k not in params]
                if missing:
                    raise OfflineRLError(f"extra field {name} of dataset {self.name} needs "
                                         f"{', '.join(missing)}, which the agent config does not have")
            out[name] = self.extra(name, **params)
        return out

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
    """Build a Dataset from a dict of arrays, casting to the canonical dtypes; any key beyond FIELDS is an
    extra per-transition array (floats become float32, integers and booleans keep their dtype)."""
    extras = {}
    for key, value in arrays.items():
        if key not in FIELDS:
            value = np.asarray(value)
            extras[key] = value.astype(np.float32, copy=False) if value.dtype.kind == "f" else value
    cast = {}
    for key in FIELDS:
        if key not in arrays:
            raise OfflineRLError(f"dataset {name}: missing field {key}")
        dtype = bool if key in ("terminals", "timeouts") else np.float32
        cast[key] = np.asarray(arrays[key]).astype(dtype, copy=False)
    cast["rewards"] = cast["rewards"].reshape(-1)
    cast["terminals"] = cast["terminals"].reshape(-1)
    cast["timeouts"] = cast["timeouts"].reshape(-1)
    return Dataset(name=name, **cast, extras=extras, **meta)
