"""Ensemble critics: E Q-functions (or V-functions) per seed as one stacked network, with target copies.

Q(s, a) for all members is one batched matmul chain over weights [S, E, in, out]. Inputs are [S, B, d]
(the same batch for every member) or [S, E, B, d] (a batch per member). Outputs are [S, E, B].
Reducers combine members: min (TD3, SAC, CQL), mean, or the min over a random subset drawn without
replacement (REDQ) or with it (WSRL).
"""
from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import nn

from offrl.nets import MLP, init_seeded, soft_update
from offrl.rng import SeedStreams


class EnsembleCritic(nn.Module):
    """E members per seed. `act_dim=0` makes it a state-value ensemble V(s)."""

    def __init__(self, seeds: Sequence[int], obs_dim: int, act_dim: int, hidden: Sequence[int],
                 num_members: int = 2, activation: str = "relu", layer_norm: bool = False, tag: str = "critic",
                 net: nn.Module | None = None):
        """`net`: a network [S, E, B, obs_dim + act_dim] -> [S, E, B, 1] to use instead of the MLP (COCOA's
        transductive one, which splits its input itself)."""
        super().__init__()
        self.num_members = num_members
        self.net = net if net is not None else init_seeded(
            MLP((len(seeds), num_members), obs_dim + act_dim, hidden, 1, activation=activation,
                layer_norm=layer_norm), seeds, tag)

    def forward(self, obs: torch.Tensor, action: torch.Tensor | None = None) -> torch.Tensor:
        x = obs if action is None else torch.cat([obs, action], dim=-1)
        if x.dim() == 3:  # [S, B, d] -> the same batch for every member
            x = x.unsqueeze(1)
        return self.net(x).squeeze(-1)  # [S, E, B]

    def frozen(self, obs: torch.Tensor, action: torch.Tensor | None = None, member: int | None = None) -> torch.Tensor:
        """Q for an actor's loss: gradients reach `action` (and obs), never the critic's parameters, so the
        backward pass skips every weight gradient the critic's own step would throw away. `member` picks
        one member ([S, 1, B]; TD3's Q_1) and skips the others' work too."""
        params = {k: v.detach() if member is None else v.detach()[:, member:member + 1]
                  for k, v in self.net.named_parameters()}
        x = obs if action is None else torch.cat([obs, action], dim=-1)
        if x.dim() == 3:
            x = x.unsqueeze(1)
        return torch.func.functional_call(self.net, params, (x,)).squeeze(-1)


class CriticWithTarget(nn.Module):
    """A critic and its Polyak-averaged target copy (the target takes no gradients)."""

    def __init__(self, critic: EnsembleCritic):
        super().__init__()
        self.online = critic
        self.target = copy.deepcopy(critic).requires_grad_(False)

    def forward(self, obs, action=None):
        return self.online(obs, action)

    def update_target(self, tau: float) -> None:
        soft_update(self.target, self.online, tau)


def reduce_members(q: torch.Tensor, how: str = "min", subset: int | None = None,
                   streams: SeedStreams | None = None, replace: bool = False) -> torch.Tensor:
    """Combine the member axis of q [S, E, ...] into [S, ...].

    how: "min", "mean", or "subset_min": the min over `subset` members drawn per seed and call from
    `streams`, without replacement (REDQ: a random permutation's first `subset`) or, with `replace=True`,
    with replacement (WSRL's `jax.random.randint` draw, where one member may be picked twice).
    """
    if how == "min":
        return q.min(dim=1).values
    if how == "mean":
        return q.mean(dim=1)
    if how == "subset_min":
        if streams is None or subset is None:
            raise ValueError("subset_min needs `subset` and `streams`")
        if replace:
            picks = streams.randint(q.shape[1], subset)  # [S, subset]
        else:  # argsort of uniform keys is a random permutation per seed
            picks = streams.uniform(q.shape[1]).argsort(dim=1)[:, :subset]
        picks = picks.view(*picks.shape, *([1] * (q.dim() - 2))).expand(-1, -1, *q.shape[2:])
        return torch.gather(q, 1, picks).min(dim=1).values
    raise ValueError(f"unknown reducer {how!r}: use min, mean or subset_min")
