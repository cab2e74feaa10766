"""The base every agent extends: holds spec, config and seeds, and collects state for checkpoints.

An agent implements `update(batch, step) -> dict[str, Tensor]` (a tensor program: no .item(), no prints,
no host copies), `act(obs, deterministic=True) -> Tensor` on [S, N, obs_dim] observations, and optionally
`prepare(dataset, cache)` for pre-training stages and dataset statistics. Its modules, buffers and
optimisers are found by attribute, so checkpoints need no per-agent code.
"""
from __future__ import annotations

import torch
from torch import nn

from offrl.errors import OfflineRLError
from offrl.nets import ObsNormalizer
from offrl.rng import SeedStreams


class Agent(nn.Module):
    # False for a method whose update cannot be batched over seeds: the trainer then runs seeds one by one.
    seed_axis = True
    # Per-transition arrays beyond the fixed batch keys that update() reads, by name (Dataset.extras_for):
    # recorded ones ("infos/qpos") or computed ones ("mc_return", with the config's discount).
    extras: tuple[str, ...] = ()
    # The action space the agent takes: "continuous" (a Box) or "discrete" (an index, DatasetSpec.n_actions).
    action_space = "continuous"
    # True for an agent whose update never reads rewards: it may train on a reward-free dataset.
    reward_free = False
    # True for an agent that acts on a task vector: `infer_task(samples, goal) -> [S, d]` (samples: dataset
    # next_observations [N, obs_dim] with one task's rewards [N]; goal: an observation or None), then
    # `act(obs, deterministic, task=z)`. It is evaluated on every task of the dataset's task set.
    task_conditioned = False

    def __init__(self, spec, config, seeds, device="cpu"):
        super().__init__()
        self.spec, self.config, self.seeds = spec, config, list(seeds)
        self.num_seeds = len(self.seeds)
        # Noise inside update() (target smoothing, policy samples) comes from per-seed streams.
        self.noise = SeedStreams(self.seeds, "agent")
        # The run's update budget, set by the trainer before prepare(): for learning-rate schedules.
        self.total_steps = 1_000_000

    def build_obs_encoder(self) -> nn.Module:
        """What the networks read instead of a raw state (applied once per update to the batch's observations
        and next observations, and in act): the dataset-standardised state (identity unless fitted). Agents that
        read states through it call it before building their networks; one that changes what they read
        overrides it (COCOA's anchors)."""
        return ObsNormalizer(self.spec.obs_dim)

    def prepare(self, dataset, cache=None) -> None:
        """Dataset statistics and pre-training stages; called when a run starts and again on resume (the
        trainer then loads the checkpoint over the result, and cached stages make the second call cheap)."""

    def update(self, batch: dict, step) -> dict:
        raise NotImplementedError

    def set_phase(self, phase: str) -> None:
        """Called by the trainer as the online phase begins (and on resuming in it), before any online update:
        an agent whose losses differ online (WSRL drops CQL's term) switches here. Modules, targets and
        optimiser states stay as they are."""

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


def check_action_space(name: str, agent_cls, dataset) -> None:
    """One line if agent `name` cannot act in `dataset`'s action space."""
    has = "discrete" if dataset.spec.discrete_actions else "continuous"
    if agent_cls.action_space != has:
        raise OfflineRLError(f"agent {name} takes {agent_cls.action_space} actions, but dataset {dataset.name} has "
                             f"{has} actions: pick a {has}-action agent (offrl agents)")


def per_seed_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean over every axis but the leading seed axis: [S, ...] -> [S]."""
    return x.reshape(x.shape[0], -1).mean(-1)


class SeedsOneByOne(Agent):
    """An agent class with `seed_axis = False`, trained for several seeds: one single-seed agent per seed.

    `update` gives member i the [1, B] slice of the [S, B] batch. The buffer draws every seed's indices from
    that seed's own stream, so the slice is exactly the batch a run of seed i alone draws, and each member's
    own streams are those of its seed: seeds trained together equal seeds trained alone. `act` splits the
    observations by seed. Checkpoints hold the members' modules and optimisers like any agent's.
    """

    def __init__(self, agent_cls, spec, config, seeds, device="cpu"):
        self.members = []  # until the ModuleList below: Agent.__init__ sets total_steps through the property
        super().__init__(spec, config, seeds, device)
        self.members = nn.ModuleList(agent_cls(spec, config, [seed], device) for seed in self.seeds)

    @property
    def total_steps(self) -> int:
        return self._total_steps

    @total_steps.setter
    def total_steps(self, steps: int) -> None:
        self._total_steps = steps
        for member in self.members:
            member.total_steps = steps

    def prepare(self, dataset, cache=None) -> None:
        for member in self.members:
            member.prepare(dataset, cache=cache)

    def update(self, batch: dict, step) -> dict:
        outs = [member.update({k: v[i:i + 1] for k, v in batch.items()}, step)
                for i, member in enumerate(self.members)]
        return {key: torch.cat([out[key].reshape(1, *out[key].shape[1:]) if out[key].dim() else out[key].reshape(1)
                                for out in outs]) for key in outs[0]}

    def set_phase(self, phase: str) -> None:
        for member in self.members:
            member.set_phase(phase)

    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        return torch.cat([member.act(obs[i:i + 1], deterministic) for i, member in enumerate(self.members)])

    @property
    def model_metrics(self):
        """The members' `model_metrics` (offrl/evaluation.py), seed by seed; None if the agent has none."""
        if not self.members or not hasattr(self.members[0], "model_metrics"):
            return None

        def metrics(actions: torch.Tensor) -> dict:
            outs = [member.model_metrics(actions[i:i + 1]) for i, member in enumerate(self.members)]
            return {key: torch.cat([out[key] for out in outs]) for key in outs[0]}
        return metrics

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {f"{i}.{name}": opt for i, member in enumerate(self.members) for name, opt in member.optimizers().items()}
