"""Evaluation: every seed's policy on the same fixed set of episodes, all stepped as one vector env.

S seeds × N episodes run as S·N gymnasium envs in one SyncVectorEnv (in-process: for MuJoCo-sized steps,
process-based vector envs cost more in inter-process communication than they save). Each step the
agent acts on all of them in one batched call: observations [S, N, d] -> actions [S, N, a]. Episode k of
every seed is reset with seed `eval_seed + k`, so seeds are compared on the same starts, and a run's
evaluation never touches the training random streams.

Robustness evaluation (`Perturbation`) evaluates any agent under a changed test condition: Gaussian noise
added to every action (a fraction of the action box's half-width, clipped to the box), or start states
shifted outward, for envs that define such a shift (the toy task's starts outside the data's region).
The noise of episode k and step t is the same for every seed, so seeds still see the same episodes.

Discrete actions (DatasetSpec.n_actions) come from the agent as indices in a [..., 1] column and are stepped
as integers; they take no action noise. A tabular env's dataset can evaluate a policy exactly
(`Dataset.policy_metrics`): `policy_metrics` then asks the agent for its evaluation action in every state and
returns the exact columns (true survival on ICU-Sepsis...; "expected_return", the exact value of the policy,
which the trainer scores instead of the sampled episodes' mean), plus an agent's own `model_metrics` of that
policy (what its learned model believes) where the agent has them.
"""
from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch

from offrl.errors import OfflineRLError


@dataclass(frozen=True)
class Perturbation:
    action_noise: float = 0.0  # σ of Gaussian noise on every action, as a fraction of the box's half-width
    start_shift: float = 0.0  # how far starts move out of the data's region (the env defines the shift)

    def label(self) -> str:
        """How a result row names the evaluation: "none", "action_noise=0.3", "start_shift=1,action_noise=0.3"."""
        parts = [f"{name}={value:g}" for name, value in (("start_shift", self.start_shift),
                                                          ("action_noise", self.action_noise)) if value]
        return ",".join(parts) or "none"

    def check(self, env: gym.Env) -> None:
        """One line if `env` cannot be evaluated under this perturbation."""
        if self.action_noise < 0 or self.start_shift < 0:
            raise OfflineRLError(f"evaluation perturbations are non-negative, got {self.label()}")
        if self.action_noise and not isinstance(env.action_space, gym.spaces.Box):
            raise OfflineRLError("--eval-action-noise needs continuous actions; this env's are "
                                 f"{type(env.action_space).__name__}")
        if self.start_shift and not getattr(env.unwrapped, "supports_start_shift", False):
            raise OfflineRLError(f"--eval-start-shift needs an env that defines shifted starts (the toy task "
                                 f"pointmass does); {env.spec.id if env.spec else type(env).__name__} does not")

    def reset_options(self) -> dict | None:
        return {"start_shift": self.start_shift} if self.start_shift else None

    def noise_source(self, eval_seed: int) -> np.random.Generator | None:
        """The generator of an evaluation's action noise: the same draws at every evaluation of a run."""
        return np.random.default_rng([eval_seed, 1]) if self.action_noise else None

    def perturb(self, action: np.ndarray, rng: np.random.Generator | None, space: gym.spaces.Box,
                num_seeds: int) -> np.ndarray:
        """Actions [S·N, a] with noise: one draw per episode, repeated for every seed, clipped to the box."""
        if rng is None:
            return action
        low, high = space.low, space.high
        noise = rng.standard_normal((action.shape[0] // num_seeds, action.shape[1]))
        noise = np.tile(noise, (num_seeds, 1)) * self.action_noise * (high - low) / 2
        return np.clip(action + noise, low, high).astype(action.dtype)


class Evaluator:
    def __init__(self, dataset, num_seeds: int, episodes: int, eval_seed: int = 10_000, device="cpu",
                 perturbation: Perturbation | None = None):
        self.dataset, self.num_seeds, self.episodes = dataset, num_seeds, episodes
        self.eval_seed, self.device = eval_seed, device
        self.envs = gym.vector.SyncVectorEnv([dataset.make_env for _ in range(num_seeds * episodes)])
        self.perturbation = perturbation or Perturbation()
        self.perturbation.check(self.envs.envs[0])
        self.discrete_actions = isinstance(self.envs.single_action_space, gym.spaces.Discrete)

    def run(self, agent) -> np.ndarray:
        """Undiscounted returns of the first episode of every env: [S, N]."""
        S, N = self.num_seeds, self.episodes
        seeds = [self.eval_seed + k for _ in range(S) for k in range(N)]
        obs, _ = self.envs.reset(seed=seeds, options=self.perturbation.reset_options())
        noise = self.perturbation.noise_source(self.eval_seed)
        returns = np.zeros(S * N)
        running = np.ones(S * N, dtype=bool)
        was_training = agent.training
        agent.eval()
        while running.any():
            with torch.no_grad():
                o = torch.as_tensor(obs, dtype=torch.float32, device=self.device).reshape(S, N, -1)
                action = agent.act(o, deterministic=True).reshape(S * N, -1).cpu().numpy()
            if self.discrete_actions:
                action = np.rint(action[:, 0]).astype(np.int64)
            else:
                action = self.perturbation.perturb(action, noise, self.envs.single_action_space, S)
            obs, reward, terminated, truncated, _ = self.envs.step(action)
            returns += np.where(running, reward, 0.0)
            running &= ~(terminated | truncated)
        agent.train(was_training)
        return returns.reshape(S, N)

    def policy_metrics(self, agent) -> dict[str, list[float]]:
        """Per-seed exact metrics of the agent's evaluation policy (its deterministic action in every state) on
        a tabular env, with the agent's `model_metrics` of that policy; {} for other datasets."""
        spec, metrics_of = self.dataset.spec, self.dataset.policy_metrics
        if metrics_of is None or spec.n_observations is None or spec.n_actions is None:
            return {}
        S, n = self.num_seeds, spec.n_observations
        states = torch.arange(n, dtype=torch.float32, device=self.device).reshape(1, n, 1).expand(S, n, 1)
        was_training = agent.training
        agent.eval()
        with torch.no_grad():
            actions = torch.round(agent.act(states, deterministic=True).reshape(S, n)).long()
            metrics = dict(metrics_of(actions.cpu().numpy()))
            model_metrics = getattr(agent, "model_metrics", None)
            if callable(model_metrics):
                metrics.update({k: v.cpu().numpy() for k, v in model_metrics(actions).items()})
        agent.train(was_training)
        return {name: [float(x) for x in np.asarray(values).reshape(S)] for name, values in metrics.items()}

    def close(self):
        self.envs.close()
