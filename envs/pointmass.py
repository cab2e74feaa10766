"""PointMass: a point in the plane that must reach a goal. Small, fast, deterministic, and its optimum is known.

State: position p and goal g in [-1, 1]^2 (both drawn at reset); observation [p, g]. Action a in [-1, 1]^2
moves the point: p' = clip(p + 0.1 a, -2, 2). Reward -|p' - g| per step. The episode terminates when the
point is within 0.05 of the goal and is truncated after 50 steps.

The optimal policy is known in closed form: a* = clip((g - p) / 0.1, -1, 1). Each coordinate's gap then
shrinks as fast as the action box allows, so every step's distance is the smallest any policy can reach
at that step; the greedy policy is optimal for any reward that decreases with the distance. Its mean
return is the reference maximum of the suite's pointmass datasets.

Datasets (D4RL's naming): random (uniform actions), medium (a* blended with heavy noise), expert (a* with
small noise), medium-replay (the noise level annealed from random to medium, as a training run's replay
buffer would be), medium-expert (medium + expert).
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np

from offrl.data.recipes import collect_transitions

STEP = 0.1
GOAL_RADIUS = 0.05
MAX_STEPS = 50
ENV_ID = "offrl/PointMass-v0"


def reset_batch(rng: np.random.Generator, n: int) -> np.ndarray:
    """n initial observations [p, g]."""
    return rng.uniform(-1.0, 1.0, size=(n, 4)).astype(np.float32)


def step_batch(obs: np.ndarray, action: np.ndarray):
    """Vectorised dynamics: returns (next_obs, reward, terminated)."""
    a = np.clip(action, -1.0, 1.0)
    p = np.clip(obs[:, :2] + STEP * a, -2.0, 2.0)
    dist = np.linalg.norm(p - obs[:, 2:], axis=1)
    nxt = np.concatenate([p, obs[:, 2:]], axis=1).astype(np.float32)
    return nxt, (-dist).astype(np.float32), dist < GOAL_RADIUS


def optimal_action(obs: np.ndarray) -> np.ndarray:
    return np.clip((obs[:, 2:] - obs[:, :2]) / STEP, -1.0, 1.0).astype(np.float32)


class PointMassEnv(gym.Env):
    """The gymnasium face of step_batch, for evaluation with vector envs.

    `reset(options={"start_shift": d})` moves each start coordinate d outward (p + d·sign(p), within the
    arena): with d >= 1 every start lies outside the [-1, 1] box the datasets' episodes start in, while the
    goals stay inside it. Robustness evaluation (offrl.evaluation.Perturbation) uses it."""
    metadata = {"render_modes": []}
    supports_start_shift = True

    def __init__(self):
        self.observation_space = gym.spaces.Box(-2.0, 2.0, shape=(4,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self._obs = np.zeros(4, np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._obs = reset_batch(self.np_random, 1)[0]
        shift = float((options or {}).get("start_shift", 0.0))
        if shift:
            p = self._obs[:2]
            self._obs[:2] = np.clip(p + shift * np.sign(p), -2.0, 2.0)
        return self._obs.copy(), {}

    def step(self, action):
        nxt, r, term = step_batch(self._obs[None], np.asarray(action, np.float32)[None])
        self._obs = nxt[0]
        return self._obs.copy(), float(r[0]), bool(term[0]), False, {}


if ENV_ID not in gym.registry:
    gym.register(ENV_ID, entry_point="offrl.envs.pointmass:PointMassEnv", max_episode_steps=MAX_STEPS)


# ---- behaviour policies: the noise level sets the quality. mix=1 is a*, mix=0 is uniform random.
def behaviour_action(rng: np.random.Generator, obs: np.ndarray, mix: float, noise: float) -> np.ndarray:
    n = len(obs)
    rand = rng.uniform(-1, 1, size=(n, 2))
    a = mix * optimal_action(obs) + (1 - mix) * rand + noise * rng.normal(size=(n, 2))
    return np.clip(a, -1, 1).astype(np.float32)


LEVELS = {  # level -> (mix, noise) of the behaviour policy
    "random": (0.0, 0.0),
    "medium": (0.2, 0.5),
    "expert": (1.0, 0.1),
}


def run_batch(rng: np.random.Generator, n: int, policy, progress: float = 0.0):
    """n episodes of `policy(obs, rng, progress)` in parallel, as Minari-style episode dicts
    (observations with T+1 rows, actions, rewards, terminations, truncations)."""
    obs = reset_batch(rng, n)
    traj_obs, traj_act, traj_rew = [obs], [], []
    alive = np.ones(n, bool)
    ends = np.full(n, MAX_STEPS)
    terminated = np.zeros(n, bool)
    for t in range(MAX_STEPS):
        act = policy(obs, rng, progress)
        obs, rew, term = step_batch(obs, act)
        traj_obs.append(obs), traj_act.append(act), traj_rew.append(rew)
        newly = alive & term
        ends[newly] = t + 1
        terminated |= newly
        alive &= ~term
        if not alive.any():
            break
    O, A, R = np.stack(traj_obs, 1), np.stack(traj_act, 1), np.stack(traj_rew, 1)
    episodes = []
    for i in range(n):
        T = int(ends[i])
        term, trunc = np.zeros(T, bool), np.zeros(T, bool)
        (term if terminated[i] else trunc)[-1] = True
        episodes.append(dict(observations=O[i, :T + 1], actions=A[i, :T], rewards=R[i, :T],
                             terminations=term, truncations=trunc))
    return episodes


def rollout_episodes(rng: np.random.Generator, transitions: int, policy, parallel: int | None = None):
    """Episodes of `policy` until exactly `transitions` steps; the last episode is cut short (truncated).

    Episodes run in batches of `parallel`; a policy sees the share of the budget used so far (`progress`),
    so batches must be small against the budget for medium-replay's annealing to take effect: the
    default makes about 50 batches whatever the size."""
    parallel = parallel or int(np.clip(transitions // (50 * MAX_STEPS // 2), 1, 1000))
    return collect_transitions(lambda total: run_batch(rng, parallel, policy, total / transitions), transitions)


def policy_for(level: str):
    if level in LEVELS:
        mix, noise = LEVELS[level]
        return lambda obs, rng, progress: behaviour_action(rng, obs, mix, noise)
    if level == "medium-replay":
        mix_m, noise_m = LEVELS["medium"]
        # The replay buffer of a run that improves from random to medium: quality grows with progress.
        return lambda obs, rng, progress: behaviour_action(rng, obs, mix_m * progress, noise_m * progress)
    raise KeyError(level)


def build_episodes(level: str, transitions: int, seed: int):
    rng = np.random.default_rng(seed)
    if level == "medium-expert":
        half = transitions // 2
        return (rollout_episodes(rng, half, policy_for("medium"))
                + rollout_episodes(rng, transitions - half, policy_for("expert")))
    return rollout_episodes(rng, transitions, policy_for(level))


def reference_returns(episodes: int = 100, seed: int = 12345) -> tuple[float, float]:
    """(mean return of the uniform-random policy, mean return of the optimal policy) over `episodes`."""
    policies = (lambda o, r, p: behaviour_action(r, o, 0.0, 0.0), lambda o, r, p: optimal_action(o))
    return tuple(float(np.mean([e["rewards"].sum() for e in run_batch(np.random.default_rng(seed), episodes, pi)]))
                 for pi in policies)
