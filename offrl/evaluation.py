"""Evaluation: every seed's policy on the same fixed set of episodes, all stepped as one vector env.

S seeds × N episodes run as S·N gymnasium envs in one SyncVectorEnv (in-process: for MuJoCo-sized steps,
process-based vector envs cost more in inter-process communication than they save). Each step the
agent acts on all of them in one batched call: observations [S, N, d] -> actions [S, N, a]. Episode k of
every seed is reset with seed `eval_seed + k`, so seeds are compared on the same starts, and a run's
evaluation never touches the training random streams.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch


class Evaluator:
    def __init__(self, dataset, num_seeds: int, episodes: int, eval_seed: int = 10_000, device="cpu"):
        self.dataset, self.num_seeds, self.episodes = dataset, num_seeds, episodes
        self.eval_seed, self.device = eval_seed, device
        self.envs = gym.vector.SyncVectorEnv([dataset.make_env for _ in range(num_seeds * episodes)])

    def run(self, agent) -> np.ndarray:
        """Undiscounted returns of the first episode of every env: [S, N]."""
        S, N = self.num_seeds, self.episodes
        seeds = [self.eval_seed + k for _ in range(S) for k in range(N)]
        obs, _ = self.envs.reset(seed=seeds)
        returns = np.zeros(S * N)
        running = np.ones(S * N, dtype=bool)
        was_training = agent.training
        agent.eval()
        while running.any():
            with torch.no_grad():
                o = torch.as_tensor(obs, dtype=torch.float32, device=self.device).reshape(S, N, -1)
                action = agent.act(o, deterministic=True).reshape(S * N, -1).cpu().numpy()
            obs, reward, terminated, truncated, _ = self.envs.step(action)
            returns += np.where(running, reward, 0.0)
            running &= ~(terminated | truncated)
        agent.train(was_training)
        return returns.reshape(S, N)

    def close(self):
        self.envs.close()
