"""PointGoals: a point in the plane with four goal-reaching tasks, for zero-shot RL (FB, VC-FB, MC-FB) on CPU.

State: the position p in [-1, 1]^2 (the observation; no goal in it, the task is inferred). Action a in
[-1, 1]^2 moves the point: p' = clip(p + 0.1 a, -1, 1). Episodes last 50 steps and never terminate.
Tasks: reach_top_left, reach_top_right, reach_bottom_left, reach_bottom_right, goals at (±0.6, ±0.6). A
task pays, for every step, dm_control's Gaussian `tolerance` of the distance to its goal: 1 within 0.1,
falling to 0.1 at 0.3 beyond that (0.4 from the goal) and to nearly 0 further out. The URLB point-mass maze
pays 1 only inside the goal's radius; that sparse reward was tried here first and scores a policy that stops
0.11 from the goal like one that never comes near (FB's d-dimensional B resolves the goal to about 0.1, so
its policies stop 0.05-0.15 away): the tolerance keeps the task a goal-reaching task (a policy must come
and stay) while scoring how close it stays. Evaluation episodes start uniform in [-0.2, 0.2]^2.

The optimal policy of every task is known: a* = clip((g - p) / 0.1, -1, 1) brings each coordinate to the
goal as fast as the action box allows and then stays, so each step's distance is the smallest any policy
can reach at that step. Its mean return is a task's reference maximum; the uniform-random policy's is its
minimum.

Datasets are reward-free (rewards stored as zeros) and their episodes start uniform over the whole plane:
random (uniform actions: every action seen everywhere) and narrow (a low-coverage behaviour: small actions
a ~ clip(N(0, 0.2²)), so actions beyond |a_i| > 0.6 are out of the data; the conservative variants are
built for this case).
"""
from __future__ import annotations

import functools

import gymnasium as gym
import numpy as np

from offrl.gymenv import make_env
from offrl.tasks import Task, TaskSet

STEP = 0.1
GOAL_RADIUS = 0.1  # full reward within this distance of the goal
GOAL_MARGIN = 0.3  # beyond the radius the reward falls to 0.1 over this distance (Gaussian, as dm_control's)
MAX_STEPS = 50
START_HALF_WIDTH = 0.2  # evaluation starts: uniform in [-0.2, 0.2]^2
NARROW_STD = 0.2  # the narrow behaviour's action std
ENV_ID = "offrl/PointGoals-v0"
GOALS = {"reach_top_left": (-0.6, 0.6), "reach_top_right": (0.6, 0.6),
         "reach_bottom_left": (-0.6, -0.6), "reach_bottom_right": (0.6, -0.6)}
LEVELS = ("random", "narrow")


def step_batch(pos: np.ndarray, action: np.ndarray) -> np.ndarray:
    return np.clip(pos + STEP * np.clip(action, -1.0, 1.0), -1.0, 1.0).astype(np.float32)


def goal_reward(next_pos: np.ndarray, goal) -> np.ndarray:
    """dm_control.utils.rewards.tolerance(distance, bounds=(0, GOAL_RADIUS), margin=GOAL_MARGIN, gaussian)."""
    distance = np.linalg.norm(next_pos - np.asarray(goal, np.float32), axis=-1)
    beyond = np.maximum(distance - GOAL_RADIUS, 0.0) / GOAL_MARGIN
    return np.power(0.1, beyond ** 2).astype(np.float32)


def optimal_action(pos: np.ndarray, goal) -> np.ndarray:
    return np.clip((np.asarray(goal, np.float32) - pos) / STEP, -1.0, 1.0).astype(np.float32)


class PointGoalsEnv(gym.Env):
    """The gymnasium face of step_batch; `task` names the reward it pays (None: reward-free, always 0)."""
    metadata = {"render_modes": []}

    def __init__(self, task: str | None = None):
        self.goal = None if task is None else GOALS[task]
        self.observation_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self._pos = np.zeros(2, np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._pos = self.np_random.uniform(-START_HALF_WIDTH, START_HALF_WIDTH, 2).astype(np.float32)
        return self._pos.copy(), {}

    def step(self, action):
        self._pos = step_batch(self._pos[None], np.asarray(action, np.float32)[None])[0]
        reward = 0.0 if self.goal is None else float(goal_reward(self._pos, self.goal))
        return self._pos.copy(), reward, False, False, {}


if ENV_ID not in gym.registry:
    gym.register(ENV_ID, entry_point="offrl.envs.pointgoals:PointGoalsEnv", max_episode_steps=MAX_STEPS)


def behaviour_action(rng: np.random.Generator, n: int, level: str) -> np.ndarray:
    if level == "random":
        return rng.uniform(-1.0, 1.0, size=(n, 2)).astype(np.float32)
    return np.clip(rng.normal(0.0, NARROW_STD, size=(n, 2)), -1.0, 1.0).astype(np.float32)


def build_episodes(level: str, transitions: int, seed: int) -> list[dict]:
    """Reward-free episodes of the level's behaviour, starting uniform over the plane, until `transitions`."""
    if level not in LEVELS:
        raise KeyError(level)
    rng = np.random.default_rng(seed)
    n = -(-transitions // MAX_STEPS)
    pos = rng.uniform(-1.0, 1.0, size=(n, 2)).astype(np.float32)
    traj, acts = [pos], []
    for _ in range(MAX_STEPS):
        act = behaviour_action(rng, n, level)
        pos = step_batch(pos, act)
        traj.append(pos), acts.append(act)
    O, A = np.stack(traj, 1), np.stack(acts, 1)
    episodes, left = [], transitions
    for i in range(n):
        T = min(MAX_STEPS, left)
        left -= T
        episodes.append(dict(observations=O[i, :T + 1], actions=A[i, :T], rewards=np.zeros(T),
                             terminations=np.zeros(T, bool), truncations=np.r_[np.zeros(T - 1, bool), True]))
    return episodes


def policy_return(goal, policy, episodes: int = 100, seed: int = 12345) -> float:
    """Mean return of `policy(pos, rng)` from the evaluation starts."""
    rng = np.random.default_rng(seed)
    pos = rng.uniform(-START_HALF_WIDTH, START_HALF_WIDTH, size=(episodes, 2)).astype(np.float32)
    total = np.zeros(episodes)
    for _ in range(MAX_STEPS):
        pos = step_batch(pos, policy(pos, rng))
        total += goal_reward(pos, goal)
    return float(total.mean())


def goal_task(name: str) -> Task:
    goal = GOALS[name]
    ref_min = policy_return(goal, lambda p, rng: rng.uniform(-1.0, 1.0, size=p.shape).astype(np.float32))
    ref_max = policy_return(goal, lambda p, rng: optimal_action(p, goal))
    return Task(name=name, reward=lambda batch: goal_reward(batch["next_observations"], goal),
                make_env=functools.partial(make_env, ENV_ID, task=name),
                ref_min_score=ref_min, ref_max_score=ref_max, goal=goal)


@functools.cache
def task_set() -> TaskSet:
    return TaskSet(tuple(goal_task(name) for name in GOALS))
