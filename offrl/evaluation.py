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

A task-conditioned agent (zero-shot RL) is evaluated by TaskEvaluator: on every task of the dataset's task
set (offrl/tasks.py), each on the same seeds and episodes, after inferring the task's vector.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

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


class _TaskPolicy:
    """An agent acting on one task vector z, with the face Evaluator.run expects (act, training, eval, train)."""

    def __init__(self, agent, task: torch.Tensor):
        self.agent, self.task = agent, task

    @property
    def training(self) -> bool:
        return self.agent.training

    def eval(self):
        self.agent.eval()

    def train(self, mode: bool = True):
        self.agent.train(mode)

    def act(self, obs, deterministic: bool = True):
        return self.agent.act(obs, deterministic, task=self.task)


class TaskEvaluator:
    """A task-conditioned agent on every task of the dataset's task set, on the same seeds and episodes.

    Per task: the agent infers its task vector (agent.infer_task) from `inference_samples` dataset
    transitions relabelled with the task's reward (drawn once, with eval_seed, the same for every seed and
    evaluation) or from the task's goal, then plays the task's env like Evaluator. run() -> {task: [S, N]}.
    """

    def __init__(self, dataset, num_seeds: int, episodes: int, eval_seed: int = 10_000, device="cpu",
                 inference_samples: int = 10_000, perturbation: Perturbation | None = None):
        if dataset.tasks is None:
            raise OfflineRLError(f"dataset {dataset.name} has no task set: a task-conditioned agent cannot be "
                                 "evaluated on it")
        self.tasks, self.device = dataset.tasks, device
        self.evaluators = {task.name: Evaluator(SimpleNamespace(make_env=task.make_env), num_seeds, episodes,
                                                eval_seed, device, perturbation) for task in self.tasks}
        rows = np.sort(np.random.default_rng(eval_seed).choice(len(dataset), min(inference_samples, len(dataset)),
                                                               replace=False))
        samples = {key: getattr(dataset, key)[rows] for key in ("observations", "actions", "next_observations")}
        samples.update({key: value[rows] for key, value in dataset.extras.items()})
        self.next_observations = torch.as_tensor(samples["next_observations"], device=device)
        self.rewards = {task.name: torch.as_tensor(np.asarray(task.reward(samples), np.float32), device=device)
                        for task in self.tasks}

    def run(self, agent) -> dict[str, np.ndarray]:
        out = {}
        for task in self.tasks:
            goal = None if task.goal is None else torch.tensor(task.goal, dtype=torch.float32, device=self.device)
            z = agent.infer_task({"next_observations": self.next_observations, "rewards": self.rewards[task.name]},
                                 goal)
            out[task.name] = self.evaluators[task.name].run(_TaskPolicy(agent, z))
        return out

    def close(self):
        for evaluator in self.evaluators.values():
            evaluator.close()
