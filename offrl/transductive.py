"""The transductive network (Netanyahu et al. 2023, as COCOA uses it): what a network reads as (Δ, s̃).

COCOA's actor and critics read a state as an anchor s̃ and a difference Δ = s - s̃ (offrl/anchors.py gives
the input [Δ, s̃]). Two MLPs embed them, f(Δ[, a]) and g(s̃[, a]) — the action, if any, is appended to both
sides — each with ReLU, LayerNorm after every activation and after the output layer, and an output of T·E
read as T vectors of length E (T = the last f/g width, E = `embedding`). The feature is their T inner
products h_t = ⟨f_t, g_t⟩, and an ordinary ReLU MLP (`hidden`, no LayerNorm) maps h to the output.

`TransductiveNet` takes one input row [Δ, s̃, a] (width 2 |S| + |A|) and splits it itself, so it replaces
the MLP inside the core's actors and critics (`net=` of TanhGaussianActor, GaussianActor, EnsembleCritic)
with their interfaces unchanged. Parameters have a leading axis like every core network: (S,) for an actor,
(S, E) for an ensemble critic; LayerNorm's affine pairs are per seed and member (StackedLayerNorm).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from offrl.nets import MLP, StackedLayerNorm, StackedLinear


class EmbeddingMLP(nn.Module):
    """Linear -> ReLU -> LayerNorm per hidden layer, then Linear -> LayerNorm (COCOA's f and g)."""

    def __init__(self, lead: Sequence[int], in_dim: int, hidden: Sequence[int], out_dim: int):
        super().__init__()
        dims = [in_dim, *hidden, out_dim]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(StackedLinear(lead, a, b))
            if i < len(dims) - 2:
                layers.append(nn.ReLU())
            layers.append(StackedLayerNorm(lead, b))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TransductiveNet(nn.Module):
    """[*lead, B, 2 obs_dim + extra_dim] rows [Δ, s̃, a] -> [*lead, B, out_dim] through f, g, ⟨·,·⟩ and the backbone."""

    def __init__(self, lead: Sequence[int], obs_dim: int, extra_dim: int, embed_hidden: Sequence[int],
                 embedding: int, hidden: Sequence[int], out_dim: int):
        super().__init__()
        self.obs_dim, self.extra_dim = obs_dim, extra_dim
        self.terms, self.embedding = embed_hidden[-1], embedding
        width = self.terms * embedding
        self.f = EmbeddingMLP(lead, obs_dim + extra_dim, embed_hidden, width)
        self.g = EmbeddingMLP(lead, obs_dim + extra_dim, embed_hidden, width)
        self.backbone = MLP(lead, self.terms, hidden, out_dim)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """h [*lead, B, T]: the T inner products of f's and g's length-E pieces."""
        d = self.obs_dim
        delta, anchor, extra = x[..., :d], x[..., d:2 * d], x[..., 2 * d:]
        if self.extra_dim:
            delta, anchor = torch.cat([delta, extra], dim=-1), torch.cat([anchor, extra], dim=-1)
        f, g = self.f(delta), self.g(anchor)
        shape = (*f.shape[:-1], self.terms, self.embedding)
        return (f.view(shape) * g.view(shape)).sum(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.features(x))


__all__ = ["EmbeddingMLP", "TransductiveNet"]
