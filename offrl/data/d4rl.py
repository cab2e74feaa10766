"""D4RL hdf5 files -> Datasets, read with h5py. The `d4rl` package is never imported: it needs mujoco-py and
MuJoCo 2.1, which no longer install on current Python.

This module owns D4RL's facts: dataset names, file names, reference scores (`REF_SCORES`, from D4RL's
`infos.py`), where D4RL keeps its files, and how a file becomes transitions:

- `terminals` (no bootstrap from s') and `timeouts` (episode ends by time limit) stay separate.
- The file's `next_observations` are used when present (gym-mujoco v1/v2 store the true s', timeouts
  included). When absent (antmaze, adroit, kitchen, maze2d), s'[i] = s[i+1] within a recorded trajectory.
  A row with no successor in its trajectory (a timeout, the file's last row) is dropped: it cannot be
  bootstrapped. A terminal row is kept (its reward and flag are the signal, and a terminal is never
  bootstrapped); if it ends its trajectory its next observation is a copy of its own. The row before a
  dropped timeout row gets the timeout, so that episodes stay apart (returns, return-to-go).
- Antmaze trajectories end on timeouts only: `terminals` mark "near the goal" and the recorded trajectory goes
  on after them (clusters of terminal rows, D4RL#199), so splitting on them would drop every rewarded row.
- A file with no `timeouts` (kitchen) gets them from the task's max_episode_steps, else none.
- Every `infos/*` array with one row per transition (infos/qpos, infos/qvel, infos/goal) becomes an extra
  field of that name, with the same rows kept.

Evaluation environments are Gymnasium's: Hopper-v5, HalfCheetah-v5 and Walker2d-v5 have D4RL's observation
sizes, and Ant-v4 with `use_contact_forces=True` has D4RL's 111 (qpos[2:], qvel, clipped cfrc_ext; Ant-v5
gives 105, or 27 without contact forces). The simulator is MuJoCo 3 through the `mujoco` bindings, not
mujoco-py with MuJoCo 2.x, so dynamics differ slightly and evaluated scores are indicative, not directly
comparable with published D4RL numbers. Antmaze, adroit, kitchen and maze2d have no environment here: their
datasets train, and evaluation raises OfflineRLError naming what would be needed.
"""
from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Callable, NamedTuple

import h5py
import numpy as np

from offrl.data.dataset import Dataset, from_arrays
from offrl.atomic import file_sha256
from offrl.errors import OfflineRLError

Log = Callable[[str], None]


class RefScore(NamedTuple):
    min: float  # REF_MIN_SCORE: a random policy's return
    max: float  # REF_MAX_SCORE: an expert's return
    max_episode_steps: int | None


# D4RL's infos.py; keys are the task: the env for gym-mujoco and adroit, env + maze for antmaze/maze2d.
REF_SCORES: dict[str, RefScore] = {
    "hopper": RefScore(-20.272305, 3234.3, 1000),
    "halfcheetah": RefScore(-280.178953, 12135.0, 1000),
    "walker2d": RefScore(1.629008, 4592.3, 1000),
    "ant": RefScore(-325.6, 3879.7, 1000),
    "antmaze-umaze": RefScore(0.0, 1.0, 700),
    "antmaze-umaze-diverse": RefScore(0.0, 1.0, 700),
    "antmaze-medium-play": RefScore(0.0, 1.0, 1000),
    "antmaze-medium-diverse": RefScore(0.0, 1.0, 1000),
    "antmaze-large-play": RefScore(0.0, 1.0, 1000),
    "antmaze-large-diverse": RefScore(0.0, 1.0, 1000),
    "pen": RefScore(96.262799, 3076.8331017826877, 100),
    "hammer": RefScore(-274.856578, 12794.134825156867, 200),
    "door": RefScore(-56.512833, 2880.5693087298737, 200),
    "relocate": RefScore(-6.425911, 4233.877797728884, 200),
    "kitchen": RefScore(0.0, 4.0, 280),
    # maze2d files carry their own timeouts; our spec does not record the env's episode length.
    "maze2d-umaze": RefScore(23.85, 161.86, None),
    "maze2d-medium": RefScore(13.13, 277.39, None),
    "maze2d-large": RefScore(6.7, 273.99, None),
    "maze2d-umaze-dense": RefScore(68.537689, 193.66285642381482, None),
    "maze2d-medium-dense": RefScore(44.264742, 297.4552547777125, None),
    "maze2d-large-dense": RefScore(30.569041, 303.4857382709002, None),
}

_GYM_DATASETS = ("random", "medium", "expert", "medium-replay", "full-replay", "medium-expert")
_ANTMAZE_DATASETS = ("umaze", "umaze-diverse", "medium-play", "medium-diverse", "large-play", "large-diverse")


class _Domain(NamedTuple):
    envs: tuple[str, ...]
    datasets: tuple[str, ...]
    versions: tuple[str, ...]  # versions D4RL defines (reference scores apply to all of them)
    default_version: str  # what a name without -vN means


DOMAINS = {
    "gym_mujoco": _Domain(("hopper", "halfcheetah", "walker2d", "ant"), _GYM_DATASETS, ("v0", "v1", "v2"), "v2"),
    "antmaze": _Domain(("antmaze",), _ANTMAZE_DATASETS, ("v0", "v1", "v2"), "v2"),
    "adroit": _Domain(("pen", "hammer", "door", "relocate"), ("human", "cloned", "expert"), ("v0", "v1"), "v1"),
    "kitchen": _Domain(("kitchen",), ("complete", "partial", "mixed"), ("v0",), "v0"),
    "maze2d": _Domain(("maze2d",), ("umaze", "medium", "large", "umaze-dense", "medium-dense", "large-dense"),
                      ("v1",), "v1"),
}

# Gymnasium stand-ins for D4RL's gym-mujoco envs: (id, make kwargs), each with D4RL's observation size.
GYM_ENVS = {
    "hopper": ("Hopper-v5", {}),
    "halfcheetah": ("HalfCheetah-v5", {}),
    "walker2d": ("Walker2d-v5", {}),
    "ant": ("Ant-v4", {"use_contact_forces": True}),  # 111 dims; Ant-v5 has no option giving 111
}
ANT_CONTACT_START = 27  # ant observations: qpos[2:] (13), qvel (14), then 84 clipped contact forces

# What evaluating the other domains would take (none of it installs with MuJoCo 3).
MISSING_ENVS = {
    "antmaze": "D4RL's AntMaze environments (the d4rl package with mujoco-py and MuJoCo 2.1)",
    "adroit": "D4RL's Adroit environments (d4rl with mjrl/mj_envs, mujoco-py and MuJoCo 2.1)",
    "kitchen": "D4RL's Franka Kitchen environments (d4rl with its adept_envs, mujoco-py and MuJoCo 2.1)",
    "maze2d": "D4RL's Maze2D environments (the d4rl package with mujoco-py and MuJoCo 2.1)",
}


class D4RLName(NamedTuple):
    domain: str  # "gym_mujoco", "antmaze", "adroit", "kitchen", "maze2d"
    env: str  # "hopper", "antmaze", "pen", ...
    dataset: str  # "medium-replay", "umaze-diverse", "human", ...
    version: str  # "v2"

    @property
    def full(self) -> str:
        return f"{self.env}-{self.dataset}-{self.version}"

    @property
    def task(self) -> str:
        """The key of REF_SCORES."""
        return f"{self.env}-{self.dataset}" if self.domain in ("antmaze", "maze2d") else self.env


def parse_name(name: str) -> D4RLName:
    """`hopper-medium-replay-v2`, `antmaze-umaze-diverse-v2`, `pen-human-v1`; without -vN, the domain's
    latest version (bare `hopper-medium` is v2). Anything else raises OfflineRLError."""
    match = re.fullmatch(r"(?P<env>[a-z0-9]+)-(?P<dataset>[a-z0-9-]+?)(?:-(?P<version>v\d+))?", name.strip().lower())
    if match is None:
        raise OfflineRLError(f"{name!r} is not a D4RL dataset name (like hopper-medium-v2 or antmaze-umaze-v2)")
    env, dataset, version = match["env"], match["dataset"], match["version"]
    for domain, spec in DOMAINS.items():
        if env not in spec.envs:
            continue
        if dataset not in spec.datasets:
            raise OfflineRLError(f"{name!r} is not a D4RL dataset: {env} has datasets {', '.join(spec.datasets)}")
        version = version or spec.default_version
        if version not in spec.versions:
            raise OfflineRLError(f"{name!r} is not a D4RL dataset: {env} has versions {', '.join(spec.versions)}")
        return D4RLName(domain, env, dataset, version)
    known = ", ".join(e for spec in DOMAINS.values() for e in spec.envs)
    raise OfflineRLError(f"{name!r} is not a D4RL dataset name: D4RL's environments are {known}")


def reference_scores(name: str) -> tuple[float, float]:
    """(REF_MIN_SCORE, REF_MAX_SCORE) of a D4RL dataset name."""
    ref = REF_SCORES[parse_name(name).task]
    return ref.min, ref.max


def d4rl_dir() -> Path:
    """Where D4RL caches its files: $D4RL_DATASET_DIR, else ~/.d4rl/datasets."""
    return Path(os.environ.get("D4RL_DATASET_DIR") or Path.home() / ".d4rl" / "datasets").expanduser()


_MAZE_FILES = {"umaze": "u-maze", "medium": "big-maze", "large": "hardest-maze"}
_KITCHEN_FILES = {"complete": "mini_kitchen_microwave_kettle_light_slider-v0.hdf5",
                  "partial": "kitchen_microwave_kettle_light_slider-v0.hdf5",
                  "mixed": "kitchen_microwave_kettle_bottomburner_light-v0.hdf5"}


def file_name(name: str) -> str:
    """The basename of the dataset's D4RL URL, which is the name D4RL caches it under."""
    n = parse_name(name)
    if n.domain == "gym_mujoco":
        if n.version in ("v1", "v2"):
            return f"{n.env}_{n.dataset.replace('-', '_')}-{n.version}.hdf5"
        if n.dataset == "full-replay":  # full-replay appeared with v1
            raise OfflineRLError(f"{name!r}: D4RL has no full-replay dataset in v0")
        stem = {"medium-replay": "mixed", "medium-expert": "medium_expert"}.get(n.dataset, n.dataset)
        env = "walker" if (n.env, n.dataset) == ("walker2d", "medium-replay") else n.env
        return f"{env}_{stem}.hdf5"
    if n.domain == "antmaze":
        maze, _, kind = n.dataset.partition("-")
        if n.version not in ("v0", "v2"):
            raise OfflineRLError(f"{name!r}: offrl knows the file names of antmaze v0 and v2 only")
        # umaze: one start, one goal; *-play: many starts, one goal; *-diverse: many starts, many goals.
        stem = (f"Ant_maze_{_MAZE_FILES[maze]}_noisy_multistart_{kind != ''}_multigoal_{kind == 'diverse'}"
                f"_sparse")
        return stem + ("_fixed.hdf5" if n.version == "v2" else ".hdf5")
    if n.domain == "adroit":
        if n.version != "v1":
            raise OfflineRLError(f"{name!r}: offrl knows the file names of adroit v1 only")
        return f"{n.env}-{n.dataset}-v1.hdf5"
    if n.domain == "kitchen":
        return _KITCHEN_FILES[n.dataset]
    maze, _, dense = n.dataset.partition("-")  # maze2d
    return f"maze2d-{maze}-{'dense' if dense else 'sparse'}-v1.hdf5"


REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals")
ROW_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts", "next_observations")


def read_hdf5(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every dataset in the file, keyed by its path (`infos/qpos`, `metadata/algorithm`), as D4RL reads it:
    scalars through `[()]`, (N, 1) rewards/terminals/timeouts reshaped to (N,), the transition keys checked."""
    path = Path(path)
    data: dict[str, np.ndarray] = {}

    def read(key, obj):
        if isinstance(obj, h5py.Dataset):
            # A scalar (metadata/algorithm) cannot be sliced with [:] (h5py raises ValueError).
            data[key] = obj[()] if obj.shape == () else obj[:]

    try:
        with h5py.File(path, "r") as f:
            f.visititems(read)
    except FileNotFoundError:
        raise OfflineRLError(f"D4RL file {path} does not exist") from None
    except (OSError, RuntimeError, ValueError, KeyError) as exc:  # h5py's errors for a damaged file
        raise OfflineRLError(f"D4RL file {path} is corrupt or not an HDF5 file: {exc}") from None
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise OfflineRLError(f"D4RL file {path} has no {', '.join(missing)} "
                             f"(it holds {', '.join(sorted(data)) or 'no datasets'})")
    for key in ("rewards", "terminals", "timeouts"):
        if key in data and data[key].ndim == 2 and data[key].shape[1] == 1:
            data[key] = data[key].reshape(-1)
    n = len(data["observations"])
    for key in ROW_KEYS:
        if key in data and (data[key].ndim == 0 or len(data[key]) != n):
            raise OfflineRLError(f"D4RL file {path}: {key} has shape {data[key].shape}, "
                                 f"observations has {n} rows")
    for key, ndim in (("observations", 2), ("actions", 2), ("rewards", 1), ("terminals", 1), ("timeouts", 1)):
        if key in data and data[key].ndim != ndim:
            raise OfflineRLError(f"D4RL file {path}: {key} has shape {data[key].shape}, expected {ndim} dims")
    return data


def derive_timeouts(episode_ends: np.ndarray, max_episode_steps: int | None) -> np.ndarray:
    """Timeouts for a file that has none: True on every max_episode_steps-th step of an episode, counting
    from the start of the file and after every episode end (a terminal, or a derived timeout)."""
    n = len(episode_ends)
    if not max_episode_steps:
        return np.zeros(n, dtype=bool)
    index = np.arange(n)
    starts = np.zeros(n, dtype=np.int64)
    starts[1:] = np.where(episode_ends[:-1], index[1:], 0)
    step = index - np.maximum.accumulate(starts)  # steps since the last episode end
    return step % max_episode_steps == max_episode_steps - 1


def to_transitions(data: dict, *, antmaze: bool = False, max_episode_steps: int | None = None
                   ) -> tuple[dict[str, np.ndarray], dict]:
    """(transition arrays, notes for the provenance) from what read_hdf5 returned (see the module docstring)."""
    obs = data["observations"]
    terminals = data["terminals"].astype(bool)  # kitchen stores them as float32
    # A terminal ends a recorded trajectory, except in antmaze where it only marks "near the goal".
    terminal_ends = np.zeros_like(terminals) if antmaze else terminals
    notes = {}
    if "timeouts" in data:
        timeouts = data["timeouts"].astype(bool)
    else:
        timeouts = derive_timeouts(terminal_ends, max_episode_steps)
        notes["timeouts"] = f"derived from max_episode_steps={max_episode_steps}" if max_episode_steps else "none"
    arrays = {"observations": obs, "actions": data["actions"], "rewards": data["rewards"],
              "terminals": terminals, "timeouts": timeouts}
    infos = sorted(k for k in data if k.startswith("infos/"))
    per_row = [k for k in infos if data[k].ndim >= 1 and len(data[k]) == len(obs)]
    arrays.update({k: data[k] for k in per_row})
    if len(per_row) < len(infos):
        notes["infos_not_per_row"] = [k for k in infos if k not in per_row]
    if "next_observations" in data:
        arrays["next_observations"] = data["next_observations"]
        notes["next_observations"] = "file"
        return arrays, notes
    has_next = ~(terminal_ends | timeouts)
    has_next[-1] = False  # the file's last row has no successor
    next_obs = obs.copy()  # the copy stays only on kept terminal rows, which are never bootstrapped
    next_obs[:-1][has_next[:-1]] = obs[1:][has_next[:-1]]
    keep = has_next | terminals
    # A kept row whose successor is dropped ends its trajectory in the dataset: a timeout (bootstrapped).
    arrays["timeouts"] = timeouts.copy()
    arrays["timeouts"][:-1] |= has_next[:-1] & ~keep[1:]
    arrays["next_observations"] = next_obs
    notes.update(next_observations="observations[i+1]", dropped_rows=int((~keep).sum()))
    return {k: v[keep] for k, v in arrays.items()}, notes


def _make_gym_env(env: str, zero_contacts: bool):
    import gymnasium as gym

    from offrl.gymenv import make_env

    env_id, kwargs = GYM_ENVS[env]
    with warnings.catch_warnings():  # Ant-v4 warns that v5 exists; v5 cannot give D4RL's 111 dims
        warnings.simplefilter("ignore", DeprecationWarning)
        made = make_env(env_id, **kwargs)
    if zero_contacts:
        # mujoco-py 2.x left cfrc_ext at zero, so such files hold zeros there; show the policy the same.
        def zero(o):
            o = o.copy()
            o[ANT_CONTACT_START:] = 0.0
            return o
        made = gym.wrappers.TransformObservation(made, zero, made.observation_space)
    return made


def _missing_env(full_name: str, domain: str):
    def factory():
        raise OfflineRLError(f"dataset {full_name}: no evaluation environment here; evaluating it needs "
                             f"{MISSING_ENVS[domain]}. Training works without it.")
    return factory


def resolve_d4rl(name: str, log: Log = print, missing_ok: bool = False) -> Dataset | None:
    """The Dataset of a D4RL file in d4rl_dir(). A missing file (or, with missing_ok, a name that is not a
    D4RL name) gives None when missing_ok, else an OfflineRLError saying what was expected where."""
    try:
        parsed = parse_name(name)
        fname = file_name(name)
    except OfflineRLError:
        if missing_ok:
            return None
        raise
    path = d4rl_dir() / fname
    if not path.is_file():
        if missing_ok:
            return None
        raise OfflineRLError(f"D4RL dataset {parsed.full}: file {fname} not found in {d4rl_dir()} "
                             "(put it there or set D4RL_DATASET_DIR; offrl never downloads)")
    ref = REF_SCORES[parsed.task]
    data = read_hdf5(path)
    arrays, notes = to_transitions(data, antmaze=parsed.domain == "antmaze", max_episode_steps=ref.max_episode_steps)
    obs_dim, act_dim = arrays["observations"].shape[1], arrays["actions"].shape[1]
    low, high = [-1.0] * act_dim, [1.0] * act_dim  # D4RL's envs take actions in [-1, 1]
    provenance = dict(path=str(path), sha256=file_sha256(path), d4rl_name=parsed.full, file_rows=len(data["rewards"]),
                      max_episode_steps=ref.max_episode_steps, action_low=low, action_high=high, **notes)

    if parsed.domain == "gym_mujoco":
        zero_contacts = parsed.env == "ant" and not arrays["observations"][:, ANT_CONTACT_START:].any()
        probe = _make_gym_env(parsed.env, zero_contacts)
        env_id = GYM_ENVS[parsed.env][0]
        env_obs, env_act = probe.observation_space.shape, probe.action_space.shape
        provenance.update(action_low=probe.action_space.low.tolist(), action_high=probe.action_space.high.tolist(),
                          eval_env=env_id, zeroed_contact_forces=zero_contacts)
        probe.close()
        if env_obs != (obs_dim,) or env_act != (act_dim,):
            raise OfflineRLError(f"D4RL file {path}: observations of {obs_dim} and actions of {act_dim} dims, but "
                                 f"the evaluation env {env_id} has {env_obs} and {env_act}")
        env_factory = lambda: _make_gym_env(parsed.env, zero_contacts)  # noqa: E731
    else:
        env_factory = _missing_env(parsed.full, parsed.domain)

    log(f"dataset {name}: D4RL file {path}")
    return from_arrays(parsed.full, arrays, family=parsed.env, source="d4rl", version=parsed.version,
                       ref_min_score=ref.min, ref_max_score=ref.max, env_factory=env_factory,
                       provenance=provenance)
