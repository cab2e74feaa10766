"""D4RL-style datasets on Gymnasium MuJoCo v5 (Hopper, HalfCheetah, Walker2d, Ant), regenerated from the
behaviour policies shipped in envs/policies/<family>/ (trained with stable-baselines3 PPO: envs/behaviour.py).

Levels, as D4RL names them:
    random          uniform random actions in the action box
    medium          the `medium` snapshot (about a third of the expert's return), stochastic actions
    expert          the best snapshot of the training run, stochastic actions
    medium-replay   the snapshots from the start of training up to `medium` (replay_00 ... replay_K), the
                    transitions split evenly over them in training order, like the replay buffer of a run
                    stopped at medium level
    medium-expert   half medium, half expert: exactly the medium and the expert dataset of half the size

A level is one segment per policy. A segment is rolled out in chunks of CHUNK transitions (the split depends
on the size only), each chunk in its own 32 envs with one batched policy call per step. Chunk c of the
segment of policy `name` takes its episode seeds and action noise from SeedSequence(dataset seed, name, c):
the chunks are independent jobs, run in a pool of processes, and the data is the same whatever the number
of workers. Keying by the policy's name, not the segment's position, is what makes medium-expert the
concatenation of medium and expert. Episodes are kept in the order they started, so the result does not
depend on which one ends first. Each chunk has exactly its size in steps: its last episode is cut and
marked truncated (shorter than the time limit, which tells it from a time-limit truncation).

These are not D4RL's data (D4RL used SAC policies on mujoco-py v2 envs); scores are not comparable with
published D4RL numbers.
"""
from __future__ import annotations

import contextlib
import functools
import json
from typing import Callable

import numpy as np

from offrl.atomic import file_sha256
from offrl.data.recipes import Recipe
from offrl.envs.behaviour import (FAMILIES, REFERENCE_EPISODES, REFERENCE_SEED, BehaviourPolicy, UniformPolicy,
                                  env_id_of, evaluate, family_of, policy_dir)
from offrl.envs.rollout import run_episodes
from offrl.gymenv import make_env
from offrl.machine import usable_cores

LEVELS = ("random", "medium", "expert", "medium-replay", "medium-expert")
# D4RL's sizes: 1M transitions for random/medium/expert, 2M for medium-expert, and for medium-replay the
# counts of D4RL's own *-medium-replay-v2 files (their SAC replay buffers): these are D4RL's counts.
D4RL_MEDIUM_REPLAY_SIZE = {"hopper": 402_000, "halfcheetah": 202_000, "walker2d": 302_000, "ant": 302_000}
# Transitions per rollout job: 10 jobs for a 1M dataset, enough to keep a few cores busy, while each chunk's
# tail (the envs still running when its last episode is cut) stays a small share of its steps. The chunks are
# part of the data (each ends in a cut episode, each has its own seeds): a change needs a new recipe version.
CHUNK = 100_000
# Dataset versions, part of every Minari id (offrl/<family>/<level>-v<N>): a change of the data -- rollout scheme
# or shipped policies -- gets a new version, so a dataset built before the change is never taken for the new one.
# 1: chunked rollouts seeded by policy name (0 seeded them by segment position). halfcheetah 2: policies
# retrained to 1M PPO steps (1 used the 300k-step run). hopper/walker2d/ant 2, halfcheetah 3: the policies act
# with CPU-independent arithmetic (envs/behaviour.py); before, torch's float32 matmul gave other data on another
# CPU, so a dataset rebuilt on a new machine could not resume a run.
RECIPE_VERSIONS = {"hopper": "2", "halfcheetah": "3", "walker2d": "2", "ant": "2"}


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


def segments(env_name: str, level: str, transitions: int) -> list[tuple[str, int]]:
    """(policy name, transitions) of each segment of `level`, in order: "random" or a shipped file's stem."""
    if level in ("random", "medium", "expert"):
        return [(level, transitions)]
    if level == "medium-expert":
        half = transitions // 2
        return [("medium", half), ("expert", transitions - half)]
    if level == "medium-replay":
        names = [f[:-3] for f in replay_files(env_name)]
        return [(name, transitions // len(names) + (j < transitions % len(names))) for j, name in enumerate(names)]
    raise KeyError(f"unknown level {level!r}: use one of {', '.join(LEVELS)}")


def parts(env_name: str, level: str, transitions: int) -> list[tuple[str, int]] | None:
    """The (level, size) datasets whose episodes, in order, are exactly this one's (same seed): medium-expert's
    segments are the medium and the expert dataset of their sizes. None for the other levels."""
    return segments(env_name, level, transitions) if level == "medium-expert" else None


def segment_policy(env_name: str, name: str):
    """The policy a segment name stands for: uniform random actions, or a shipped file (hash-checked)."""
    if name != "random":
        return load_policy(env_name, f"{name}.pt")
    space = make_env(env_id_of(env_name)).action_space
    return UniformPolicy(space.low, space.high)


def chunk_sizes(transitions: int) -> list[int]:
    return [CHUNK] * (transitions // CHUNK) + ([transitions % CHUNK] if transitions % CHUNK else [])


def chunk_seeds(seed: int, name: str, chunk: int) -> tuple[Callable[[int], int], np.random.Generator]:
    """(episode k -> env seed, action-noise Generator) of chunk `chunk` of the segment of policy `name`."""
    episodes, actions = np.random.SeedSequence([seed, int.from_bytes(name.encode(), "little"), chunk]).spawn(2)

    def episode_seed(k: int) -> int:
        child = np.random.SeedSequence(episodes.entropy, spawn_key=(*episodes.spawn_key, k))
        return int(child.generate_state(1)[0] % (2 ** 31))
    return episode_seed, np.random.default_rng(actions)


def roll_chunk(env_name: str, name: str, transitions: int, seed: int, chunk: int) -> list[dict]:
    """One rollout job, run by a pool worker or by this process. It loads the policy itself: a job then pickles
    a few strings and numbers, not a policy's tensors."""
    episode_seed, rng = chunk_seeds(seed, name, chunk)
    return run_episodes(env_id_of(env_name), segment_policy(env_name, name), transitions=transitions,
                        episode_seeds=episode_seed, rng=rng, progress=False)


@contextlib.contextmanager
def _one_torch_thread():
    """The policy's matmuls on one thread, as in the pool's workers: a float sum's order may depend on the
    thread count, and the data must not depend on the number of workers."""
    import torch

    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def _init_worker() -> None:
    """One torch thread (see _one_torch_thread). Ctrl-C reaches the whole process group: the parent alone
    handles it and terminates the pool. tqdm (run_episodes makes a disabled bar) would make a multiprocessing
    semaphore here, which a terminated worker leaves behind with a leak warning: a thread lock will do."""
    import signal
    import threading

    import torch
    from tqdm import tqdm

    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    tqdm.set_lock(threading.RLock())


def _roll_job(indexed: tuple[int, tuple]) -> tuple[int, list[dict]]:
    j, job = indexed
    return j, roll_chunk(*job)


def _roll_all(jobs: list[tuple], workers: int, bar) -> list[list[dict]]:
    """Each job's episodes, in job order. One worker runs them here; more run in a pool of "spawn" processes
    (fresh interpreters: a forked copy of torch's or OpenMP's thread state can deadlock)."""
    if workers == 1:
        out = []
        with _one_torch_thread():
            for job in jobs:
                out.append(roll_chunk(*job))
                bar.update(job[2])
        return out
    import multiprocessing

    out = [None] * len(jobs)
    with multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker) as pool:  # exit terminates
        for j, episodes in pool.imap_unordered(_roll_job, enumerate(jobs)):
            out[j] = episodes
            bar.update(jobs[j][2])
    return out


def build_episodes(env_name: str, level: str, transitions: int, seed: int, workers: int | None = None,
                   progress: bool = True) -> list[dict]:
    """Minari-style episodes of `level` on the env, exactly `transitions` steps, deterministic in the arguments
    and the same for any `workers` (processes rolling out chunks; default: the usable cores)."""
    from tqdm import tqdm

    jobs = [(env_name, name, n, seed, c) for name, size in segments(env_name, level, transitions)
            for c, n in enumerate(chunk_sizes(size))]
    workers = max(1, min(workers or usable_cores(), len(jobs)))
    with tqdm(total=transitions, unit="step", desc=f"{env_id_of(env_name)} {level}", disable=not progress,
              mininterval=1.0, leave=False) as bar:
        return [ep for chunk in _roll_all(jobs, workers, bar) for ep in chunk]


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


def make_recipe(family: str) -> Recipe:
    rec = behaviour_record(family)
    env_id = FAMILIES[family]
    return Recipe(
        family=family, env_id=env_id, levels=LEVELS, default_size=default_sizes(family),
        build_episodes=functools.partial(build_episodes, family), parallel=True,
        parts=functools.partial(parts, family),
        reference_returns=functools.partial(reference_returns, family),
        version=RECIPE_VERSIONS.get(family, "1"),
        description=(f"{env_id} (Gymnasium MuJoCo) in the D4RL style, from {rec.get('algorithm', 'stable-baselines3')} "
                     f"behaviour policies shipped in envs/policies/{family} (not D4RL's data; scores are not "
                     f"comparable with D4RL's)"),
        provenance=dict(behaviour_algorithm=rec.get("algorithm"), behaviour_steps_trained=rec.get("steps_trained"),
                        behaviour_seed=rec.get("seed"), behaviour_versions=rec.get("versions"),
                        behaviour_picked=rec.get("picked"),
                        behaviour_policies={n: f["sha256"] for n, f in rec["files"].items()}),
    )


def available_families() -> list[str]:
    return [f for f in FAMILIES if has_policies(f)]
