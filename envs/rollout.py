"""Rolling out a batch policy in a set of Gymnasium envs: the episodes of a dataset, or an evaluation.

Both the MuJoCo recipes (envs/mujoco.py) and the behaviour-policy training (envs/behaviour.py, which
evaluates its snapshots) run policies this way, so it lives here, below both of them.
"""
from __future__ import annotations

from typing import Callable

import gymnasium as gym
import numpy as np

from offrl.gymenv import make_env

NUM_ENVS = 32


def make_envs(env_id: str, n: int) -> list[gym.Env]:
    """n envs that run_episodes steps one by one: a vector env would also step the idle ones."""
    return [make_env(env_id) for _ in range(n)]


def run_episodes(env_id: str, policy, *, episodes: int | None = None, transitions: int | None = None,
                 episode_seeds: Callable[[int], int], rng: np.random.Generator, deterministic: bool = False,
                 num_envs: int = NUM_ENVS, progress: bool = True, desc: str = "") -> list[dict]:
    """Run `policy` (an object with .act(obs [n, d], rng, deterministic)) in `num_envs` envs at once.

    Give `episodes` (that many whole episodes) or `transitions` (exactly that many steps; the last episode is
    cut and marked truncated). Episode k (in start order) is reset with env seed episode_seeds(k). Returns
    Minari-style episode dicts: observations [T+1, d], actions [T, a], rewards [T], terminations [T],
    truncations [T]; a natural episode end is a termination (the env's `terminated`) or else a truncation
    (the 1000-step time limit).

    The policy acts on every slot at each step, idle ones included, so the noise each episode gets does not
    depend on when the others end; only the slots holding a wanted episode step. Once no more episodes need
    to start, an episode that can only start past the cut (the lengths so far of those before it already
    reach `transitions`) is dropped, and its slot idles."""
    from tqdm import tqdm

    if (episodes is None) == (transitions is None):
        raise ValueError("give exactly one of episodes, transitions")
    if transitions is not None and transitions <= 0:
        return []
    n = min(num_envs, episodes) if episodes is not None else num_envs
    envs = make_envs(env_id, n)
    slot_ep = np.arange(n)  # episode index held by each slot, -1 when the slot idles
    next_ep = n
    first = [env.reset(seed=episode_seeds(k))[0] for k, env in enumerate(envs)]
    obs = np.stack(first)
    bufs: dict[int, tuple[list, list, list]] = {k: ([first[k]], [], []) for k in range(n)}  # obs, actions, rewards
    ends: dict[int, tuple[bool, bool]] = {}  # finished episode -> (terminated, truncated)
    started_len = 0  # steps in all started episodes so far
    prefix, prefix_len = 0, 0  # episodes 0..prefix-1 are finished, prefix_len steps in all
    bar = tqdm(total=episodes if episodes is not None else transitions, unit="ep" if episodes else "step",
               desc=desc or env_id, disable=not progress, mininterval=1.0, leave=False)

    def need_more() -> bool:
        return next_ep < episodes if episodes is not None else started_len < transitions

    def first_past_cut() -> int:
        total = prefix_len
        for k in range(prefix, next_ep):
            if total >= transitions:
                return k
            total += len(bufs[k][1])
        return next_ep

    try:
        while True:
            act = policy.act(obs, rng, deterministic)
            active = np.flatnonzero(slot_ep >= 0)
            done = []
            for i in active:
                o2, rew, term, trunc, _ = envs[i].step(act[i])
                o, a, r = bufs[slot_ep[i]]
                o.append(o2), a.append(act[i]), r.append(rew)
                obs[i] = o2
                if term or trunc:
                    ends[int(slot_ep[i])] = (bool(term), bool(trunc) and not term)
                    done.append(i)
            started_len += len(active)
            if transitions is not None and bar.n < transitions:
                bar.update(min(len(active), transitions - bar.n))
            for i in done:
                if episodes is not None:
                    bar.update(1)
                if need_more():
                    slot_ep[i] = next_ep
                    obs[i] = envs[i].reset(seed=episode_seeds(next_ep))[0]
                    bufs[next_ep] = ([obs[i].copy()], [], [])
                    next_ep += 1
                else:
                    slot_ep[i] = -1
            while prefix in ends:
                prefix_len += len(bufs[prefix][1])
                prefix += 1
            if episodes is not None:
                if prefix >= episodes:
                    break
            elif prefix_len >= transitions or (prefix in bufs and prefix_len + len(bufs[prefix][1]) >= transitions):
                break
            elif not need_more():
                slot_ep[slot_ep >= first_past_cut()] = -1
    finally:
        bar.close()
        for env in envs:
            env.close()

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
