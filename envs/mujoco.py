"""D4RL-style datasets on Gymnasium MuJoCo v5 (Hopper, HalfCheetah, Walker2d, Ant), regenerated from the
behaviour policies shipped in envs/policies/<family>/ (trained with stable-baselines3 PPO: envs/behaviour.py).

Levels, as D4RL names them:
    random          uniform random actions in the action box
    medium          the `medium` snapshot (about a third of the expert's return), stochastic actions
    expert          the best snapshot of the training run, stochastic actions
    medium-replay   the snapshots from the start of training up to `medium` (replay_00 ... replay_K), the
                    transitions split evenly over them in training order, like the replay buffer of a run
                    stopped at medium level
    medium-expert   half medium, half expert

Rollouts run in a gymnasium SyncVectorEnv with one batched policy call per step. Episode k of a segment starts
from an env seed derived from (dataset seed, segment, k); the action noise comes from one Generator per
segment; episodes are kept in the order they started, so the result does not depend on which one ends first.
Exactly `transitions` steps are returned: the last episode is cut and marked truncated.

These are not D4RL's data (D4RL used SAC policies on mujoco-py v2 envs); scores are not comparable with
published D4RL numbers.
"""
from __future__ import annotations

import contextlib
import functools
import json
import warnings
from typing import Callable

import gymnasium as gym
import numpy as np

from offrl.atomic import file_sha256
from offrl.envs.behaviour import (FAMILIES, REFERENCE_EPISODES, REFERENCE_SEED, BehaviourPolicy, UniformPolicy,
                                  env_id_of, evaluate, family_of, policy_dir)

LEVELS = ("random", "medium", "expert", "medium-replay", "medium-expert")
# D4RL's sizes: 1M transitions for random/medium/expert, 2M for medium-expert, and for medium-replay the
# counts of D4RL's own *-medium-replay-v2 files (their SAC replay buffers): these are D4RL's counts.
D4RL_MEDIUM_REPLAY_SIZE = {"hopper": 402_000, "halfcheetah": 202_000, "walker2d": 302_000, "ant": 302_000}
NUM_ENVS = 32


class _NoInfo(gym.Wrapper):
    """Drops the step infos (the datasets do not keep them); saves SyncVectorEnv the work of batching them."""

    def reset(self, **kwargs):
        return self.env.reset(**kwargs)[0], {}

    def step(self, action):
        obs, rew, term, trunc, _ = self.env.step(action)
        return obs, rew, term, trunc, {}


@contextlib.contextmanager
def _quiet_settotalmass():
    """gymnasium's half_cheetah.xml uses `settotalmass`, and mujoco 3.17 warns about it on every model load
    (to stderr and MUJOCO_LOG.TXT in the working directory): harmless, and 32 copies per build. Drop that
    one message while the envs are made; any other MuJoCo warning becomes a Python warning."""
    import mujoco

    prev = mujoco.get_mju_user_warning()
    mujoco.set_mju_user_warning(lambda msg: None if "settotalmass" in msg else warnings.warn(f"MuJoCo: {msg}"))
    try:
        yield
    finally:
        mujoco.set_mju_user_warning(prev)


def make_vector_env(env_id: str, n: int) -> gym.vector.SyncVectorEnv:
    """n envs in a SyncVectorEnv with autoreset disabled (run_episodes resets each with its episode seed)."""
    with _quiet_settotalmass():
        return gym.vector.SyncVectorEnv([lambda: _NoInfo(gym.make(env_id)) for _ in range(n)],
                                        autoreset_mode=gym.vector.AutoresetMode.DISABLED)


def run_episodes(env_id: str, policy, *, episodes: int | None = None, transitions: int | None = None,
                 episode_seeds: Callable[[int], int], rng: np.random.Generator, deterministic: bool = False,
                 num_envs: int = NUM_ENVS, progress: bool = True, desc: str = "") -> list[dict]:
    """Run `policy` (an object with .act(obs [n, d], rng, deterministic)) in a SyncVectorEnv.

    Give `episodes` (that many whole episodes) or `transitions` (exactly that many steps; the last episode is
    cut and marked truncated). Episode k (in start order) is reset with env seed episode_seeds(k). Returns
    Minari-style episode dicts: observations [T+1, d], actions [T, a], rewards [T], terminations [T],
    truncations [T]; a natural episode end is a termination (the env's `terminated`) or else a truncation
    (the 1000-step time limit)."""
    from tqdm import tqdm

    if (episodes is None) == (transitions is None):
        raise ValueError("give exactly one of episodes, transitions")
    if transitions is not None and transitions <= 0:
        return []
    n = min(num_envs, episodes) if episodes is not None else num_envs
    venv = make_vector_env(env_id, n)
    slot_ep = np.arange(n)  # episode index held by each slot, -1 when the slot idles
    next_ep = n
    obs, _ = venv.reset(seed=[episode_seeds(k) for k in range(n)])
    bufs: dict[int, tuple[list, list, list]] = {k: ([obs[k]], [], []) for k in range(n)}  # obs, actions, rewards
    ends: dict[int, tuple[bool, bool]] = {}  # finished episode -> (terminated, truncated)
    started_len = 0  # steps in all started episodes so far
    prefix, prefix_len = 0, 0  # episodes 0..prefix-1 are finished, prefix_len steps in all
    bar = tqdm(total=episodes if episodes is not None else transitions, unit="ep" if episodes else "step",
               desc=desc or env_id, disable=not progress, mininterval=1.0, leave=False)

    def need_more() -> bool:
        return next_ep < episodes if episodes is not None else started_len < transitions

    try:
        while True:
            act = policy.act(obs, rng, deterministic)
            obs2, rew, term, trunc, _ = venv.step(act)
            done = term | trunc
            active = np.flatnonzero(slot_ep >= 0)
            for i in active:
                o, a, r = bufs[slot_ep[i]]
                o.append(obs2[i]), a.append(act[i]), r.append(rew[i])
            started_len += len(active)
            if transitions is not None and bar.n < transitions:
                bar.update(min(len(active), transitions - bar.n))
            if done.any():
                seeds: list = [None] * n
                for i in np.flatnonzero(done):
                    if slot_ep[i] >= 0:
                        ends[int(slot_ep[i])] = (bool(term[i]), bool(trunc[i]) and not term[i])
                        if episodes is not None:
                            bar.update(1)
                    if need_more():
                        slot_ep[i], seeds[i] = next_ep, episode_seeds(next_ep)
                        next_ep += 1
                    else:
                        slot_ep[i] = -1
                obs2, _ = venv.reset(seed=seeds, options={"reset_mask": done})
                for i in np.flatnonzero(done & (slot_ep >= 0)):
                    bufs[int(slot_ep[i])] = ([obs2[i]], [], [])
            obs = obs2
            while prefix in ends:
                prefix_len += len(bufs[prefix][1])
                prefix += 1
            if episodes is not None:
                if prefix >= episodes:
                    break
            elif prefix_len >= transitions or (prefix in bufs and prefix_len + len(bufs[prefix][1]) >= transitions):
                break
    finally:
        bar.close()
        venv.close()

    out, total = [], 0
    for k in range(next_ep):
        if (episodes is not None and k >= episodes) or (transitions is not None and total >= transitions):
            break
        o, a, r = bufs.pop(k)
        T = len(a)
        term, trunc = np.zeros(T, bool), np.zeros(T, bool)
        if transitions is not None and total + T >= transitions and (total + T > transitions or k not in ends):
            T = transitions - total
            o, a, r = o[:T + 1], a[:T], r[:T]
            term, trunc = np.zeros(T, bool), np.zeros(T, bool)
            trunc[-1] = True
        else:
            term[-1], trunc[-1] = ends[k]
        out.append(dict(observations=np.asarray(o, np.float32), actions=np.asarray(a, np.float32),
                        rewards=np.asarray(r, np.float64), terminations=term, truncations=trunc))
        total += T
    return out


# ---------------------------------------------------------------------------------------------------------
# Shipped policies
# ---------------------------------------------------------------------------------------------------------
def has_policies(env_name: str) -> bool:
    d = policy_dir(env_name)
    return all((d / f).exists() for f in ("behaviour.json", "expert.pt", "medium.pt", "replay_00.pt"))


@functools.lru_cache(maxsize=None)
def behaviour_record(env_name: str) -> dict:
    return json.loads((policy_dir(env_name) / "behaviour.json").read_text())


def load_policy(env_name: str, name: str) -> BehaviourPolicy:
    """A shipped policy file (expert.pt, medium.pt, replay_03.pt, ...), checked against behaviour.json."""
    path = policy_dir(env_name) / name
    want = behaviour_record(env_name)["files"][name]["sha256"]
    if file_sha256(path) != want:
        from offrl.errors import OfflineRLError
        raise OfflineRLError(f"{path} does not match the sha256 in behaviour.json: retrain or restore the policies")
    return BehaviourPolicy.load(path)


def replay_files(env_name: str) -> list[str]:
    return sorted(n for n in behaviour_record(env_name)["files"] if n.startswith("replay_"))


# ---------------------------------------------------------------------------------------------------------
# The recipe
# ---------------------------------------------------------------------------------------------------------
def default_sizes(env_name: str) -> dict[str, int]:
    return {"random": 1_000_000, "medium": 1_000_000, "expert": 1_000_000,
            "medium-replay": D4RL_MEDIUM_REPLAY_SIZE[family_of(env_name)], "medium-expert": 2_000_000}


def _segment_seeds(seed: int, segment: int) -> Callable[[int], int]:
    return lambda k: int(np.random.SeedSequence([seed, segment, k]).generate_state(1)[0] % (2 ** 31))


def build_episodes(env_name: str, level: str, transitions: int, seed: int, progress: bool = True) -> list[dict]:
    """Minari-style episodes of `level` on the env, exactly `transitions` steps, deterministic in the arguments."""
    env_id = env_id_of(env_name)
    if level == "random":
        with _quiet_settotalmass():
            space = gym.make(env_id).action_space
        segments = [(UniformPolicy(space.low, space.high), transitions, "random")]
    elif level in ("medium", "expert"):
        segments = [(load_policy(env_name, f"{level}.pt"), transitions, level)]
    elif level == "medium-expert":
        half = transitions // 2
        segments = [(load_policy(env_name, "medium.pt"), half, "medium"),
                    (load_policy(env_name, "expert.pt"), transitions - half, "expert")]
    elif level == "medium-replay":
        names = replay_files(env_name)
        sizes = [transitions // len(names) + (j < transitions % len(names)) for j in range(len(names))]
        segments = [(load_policy(env_name, f), s, f[:-3]) for f, s in zip(names, sizes)]
    else:
        raise KeyError(f"unknown level {level!r}: use one of {', '.join(LEVELS)}")
    episodes = []
    for j, (policy, size, name) in enumerate(segments):
        episodes += run_episodes(env_id, policy, transitions=size, episode_seeds=_segment_seeds(seed, j),
                                 rng=np.random.default_rng([seed, j]), progress=progress,
                                 desc=f"{env_id} {level} ({name})")
    return episodes


def reference_returns(env_name: str) -> tuple[float, float]:
    """(mean return of the uniform-random policy, mean return of the expert policy), 100 episodes each with
    fixed env seeds, stochastic actions as in the datasets. Measured when the policies are trained and cached
    in behaviour.json; measured here only if that record lacks them."""
    ref = behaviour_record(env_name).get("reference_returns")
    if ref:
        return float(ref["random"]), float(ref["expert"])
    env_id = env_id_of(env_name)
    expert = load_policy(env_name, "expert.pt")
    rand = UniformPolicy(expert.low, expert.high)
    return (float(evaluate(rand, env_id, REFERENCE_EPISODES, REFERENCE_SEED, deterministic=False, rng_seed=1).mean()),
            float(evaluate(expert, env_id, REFERENCE_EPISODES, REFERENCE_SEED, deterministic=False, rng_seed=2).mean()))


def make_recipe(family: str):
    from offrl.data.recipes import Recipe

    rec = behaviour_record(family)
    env_id = FAMILIES[family]
    return Recipe(
        family=family, env_id=env_id, levels=LEVELS, default_size=default_sizes(family),
        build_episodes=functools.partial(build_episodes, family),
        reference_returns=functools.partial(reference_returns, family),
        version="0",
        description=(f"{env_id} (Gymnasium MuJoCo) in the D4RL style, from stable-baselines3 PPO behaviour policies "
                     f"shipped in envs/policies/{family} (not D4RL's data; scores are not comparable with D4RL's)"),
        provenance=dict(behaviour_algorithm=rec.get("algorithm"), behaviour_steps_trained=rec.get("steps_trained"),
                        behaviour_seed=rec.get("seed"), behaviour_versions=rec.get("versions"),
                        behaviour_picked=rec.get("picked"),
                        behaviour_policies={n: f["sha256"] for n, f in rec["files"].items()}),
    )


def available_families() -> list[str]:
    return [f for f in FAMILIES if has_policies(f)]
