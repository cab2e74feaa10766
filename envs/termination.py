"""Termination functions for model rollouts of offrl's environments: done = f(obs, act, next_obs).

A learned dynamics model predicts the next state but not whether the episode ends there, so model-based
agents (MOPO, MOBILE, COMBO, COCOA's anchor roll-outs) decide it from the predicted state with the
environment's own health check. Importing this module registers each function in the core's registry
(offrl/termination.py, which says what a function takes and returns), where agents look them up.

Where the checks come from (observation layouts are Gymnasium v5's defaults, which drop the x (and y)
position; D4RL's v2 observations have the same layout):

hopper      Gymnasium Hopper-v5 `is_healthy`: obs[1:] in (-100, 100), z = obs[0] in (0.7, inf),
            angle = obs[1] in (-0.2, 0.2), strict inequalities. MBPO's and OfflineRL-Kit's
            `termination_fn_hopper` (used by D4RL-era model-based code, MOPO, MOBILE, COCOA) is the same check
            plus "all finite".
walker2d    Gymnasium Walker2d-v5: z = obs[0] in (0.8, 2.0), angle = obs[1] in (-1, 1), strict. MBPO /
            OfflineRL-Kit add "every |obs| < 100"; we keep it (with "all finite") as a guard against a
            diverged model state. On real states it never fires: v5 clips the observed velocities to
            [-10, 10] and the positions are small, so the function agrees with the environment.
halfcheetah The environment never terminates. MBPO / OfflineRL-Kit / COCOA end a model rollout when some
            |obs| >= 100 (a divergence guard, not a task rule); we do the same, plus "all finite", so on any
            real state the function is "never".
ant         Gymnasium Ant-v5: all finite and z = obs[0] in [0.2, 1.0] (inclusive). MBPO's D4RL ant function
            (OfflineRL-Kit `termination_fn_ant`) is identical.
pointmass   envs/pointmass.py: the point is within 0.05 of the goal, obs = [px, py, gx, gy].
"""
from __future__ import annotations

import numpy as np
import torch

from offrl.envs.pointmass import GOAL_RADIUS
from offrl.termination import register_termination


def _isfinite(x):
    return torch.isfinite(x) if isinstance(x, torch.Tensor) else np.isfinite(x)


def _norm(x):
    return torch.linalg.vector_norm(x, dim=-1) if isinstance(x, torch.Tensor) else np.linalg.norm(x, axis=-1)


def _bounded(x, limit: float = 100.0):
    """All elements finite and |x| < limit, reduced over the last axis."""
    return _isfinite(x).all(-1) & (abs(x) < limit).all(-1)


def hopper(obs, act, next_obs):
    z, angle = next_obs[..., 0], next_obs[..., 1]
    return ~(_isfinite(next_obs).all(-1) & (abs(next_obs[..., 1:]) < 100).all(-1)
             & (z > 0.7) & (angle > -0.2) & (angle < 0.2))


def walker2d(obs, act, next_obs):
    z, angle = next_obs[..., 0], next_obs[..., 1]
    return ~(_bounded(next_obs) & (z > 0.8) & (z < 2.0) & (angle > -1.0) & (angle < 1.0))


def halfcheetah(obs, act, next_obs):
    return ~_bounded(next_obs)


def ant(obs, act, next_obs):
    z = next_obs[..., 0]
    return ~(_isfinite(next_obs).all(-1) & (z >= 0.2) & (z <= 1.0))


def pointmass(obs, act, next_obs):
    return _norm(next_obs[..., :2] - next_obs[..., 2:4]) < GOAL_RADIUS


for _family, _fn in [("hopper", hopper), ("walker2d", walker2d), ("halfcheetah", halfcheetah), ("ant", ant),
                    ("pointmass", pointmass)]:
    register_termination(_family, _fn)
