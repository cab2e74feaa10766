"""The base every agent extends: holds spec, config and seeds, and collects state for checkpoints.

An agent implements `update(batch, step) -> dict[str, Tensor]` (a tensor program: no .item(), no prints,
no host copies), `act(obs, deterministic=True) -> Tensor` on [S, N, obs_dim] observations, and optionally
`prepare(dataset, cache)` for pre-training stages and dataset statistics. Its modules, buffers and
optimisers are found by attribute, so checkpoints need no per-agent code.
"""
from __future__ import annotations

import torch
from torch import nn

from offrl.rng import SeedStreams


class Agent(nn.Module):
    # False for a method whose update cannot be batched over seeds: the trainer then runs seeds one by one.
    seed_axis = True
    # Per-transition arrays beyond the fixed batch keys that update() reads, by name (Dataset.extras_for):
    # recorded ones ("infos/qpos") or computed ones ("mc_return", with the config's discount).
    extras: tuple[str, ...] = ()

    def __init__(self, spec, config, seeds, device="cpu"):
        super().__init__()
        self.spec, self.config, self.seeds = spec, config, list(seeds)
        self.num_seeds = len(self.seeds)
        # Noise inside update() (target smoothing, policy samples) comes from per-seed streams.
        self.noise = SeedStreams(self.seeds, "agent")
        # The run's update budget, set by the trainer before prepare(): for learning-rate schedules.
        self.total_steps = 1_000_000

    def prepare(self, dataset, cache=None) -> None:
        """Dataset statistics and pre-training stages; called when a run starts and again on resume (the
        trainer then loads the checkpoint over the result, and cached stages make the second call cheap)."""

    def update(self, batch: dict, step) -> dict:
        raise NotImplementedError

    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        raise NotImplementedError

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {k: v for k, v in vars(self).items() if isinstance(v, torch.optim.Optimizer)}

    def checkpoint_state(self) -> dict:
        return {"modules": self.state_dict(),
                "optimizers": {k: opt.state_dict() for k, opt in self.optimizers().items()}}

    def load_checkpoint_state(self, state: dict) -> None:
        self.load_state_dict(state["modules"])
        for k, opt in self.optimizers().items():
            opt.load_state_dict(state["optimizers"][k])


def per_seed_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean over every axis but the leading seed axis: [S, ...] -> [S]."""
    return x.reshape(x.shape[0], -1).mean(-1)
