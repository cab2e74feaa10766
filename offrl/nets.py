"""Networks with a leading parameter axis: one set of weights per seed, and per ensemble member inside a seed.

A layer's weight has shape [*lead, in, out] with lead = (S,) or (S, E); inputs are [*lead, B, in]. One
batched matmul then trains S seeds (and E members) at once, which is what makes seed batching pay
(docs/design.md §4). Initialisation draws each seed's slice from a generator keyed by (seed, parameter name),
so a seed's initial weights do not depend on which other seeds share the process.

LayerNorm is stacked the same way (`StackedLayerNorm`): each row is normalised on its own and the affine
parameters are [*lead, 1, d], so no seed or member shares a scale or shift with another.

Heads: deterministic tanh (TD3), tanh-Gaussian (SAC, CQL) and Gaussian with a state-independent std (IQL).
"""
from __future__ import annotations

import math
import zlib
from typing import Sequence

import torch
from torch import nn


class StackedLinear(nn.Module):
    """y = x @ W + b with W: [*lead, in, out]; x: [*lead, B, in] (or broadcastable to it)."""

    def __init__(self, lead: Sequence[int], in_features: int, out_features: int):
        super().__init__()
        self.lead = tuple(lead)
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(*self.lead, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(*self.lead, 1, out_features))

    def reset_seed(self, seed_index: int, generator: torch.Generator) -> None:
        """Draw the weights of one seed (all its ensemble members, in order) from `generator`.

        nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias alike.
        """
        bound = 1.0 / math.sqrt(self.in_features)
        for p in (self.weight, self.bias):
            members = p.data.view(self.lead[0], -1, *p.shape[-2:])[seed_index]
            members.copy_((torch.rand(members.shape, generator=generator) * 2 - 1) * bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = self.weight.shape[:-2]
        if x.shape[:-2] == lead:  # one fused batched GEMM with the bias as its addend
            n, b = self.weight.shape[-2:], x.shape[-2]
            y = torch.baddbmm(self.bias.reshape(-1, 1, n[1]), x.reshape(-1, b, n[0]), self.weight.reshape(-1, *n))
            return y.view(*lead, b, n[1])
        return torch.matmul(x, self.weight) + self.bias  # x broadcasts over some lead axes (ensemble members)


class StackedLayerNorm(nn.Module):
    """LayerNorm over the last axis with an affine pair per seed and member: weight, bias [*lead, 1, d].

    nn.LayerNorm(d) would hold one pair for every seed and member: seeds trained together would then share
    it and no longer equal seeds trained alone (docs/design.md §4).
    """

    def __init__(self, lead: Sequence[int], features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(*tuple(lead), 1, features))
        self.bias = nn.Parameter(torch.zeros(*tuple(lead), 1, features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.layer_norm(x, x.shape[-1:], eps=self.eps)
        return torch.addcmul(self.bias, x, self.weight)


ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU, "swish": nn.SiLU, "tanh": nn.Tanh, "elu": nn.ELU}


class MLP(nn.Module):
    """Stacked MLP: [*lead, B, in] -> [*lead, B, out]. `layer_norm` adds a StackedLayerNorm after each hidden
    layer's Linear, before its activation (WSRL's order: Dense -> LayerNorm -> activation)."""

    def __init__(self, lead: Sequence[int], in_dim: int, hidden: Sequence[int], out_dim: int,
                 activation: str = "relu", layer_norm: bool = False):
        super().__init__()
        dims = [in_dim, *hidden, out_dim]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(StackedLinear(lead, a, b))
            if i < len(dims) - 2:
                if layer_norm:
                    layers.append(StackedLayerNorm(lead, b))
                layers.append(ACTIVATIONS[activation]())
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def init_seeded(module: nn.Module, seeds: Sequence[int], tag: str) -> nn.Module:
    """Initialise every StackedLinear in `module`: the slice of seed s from a generator keyed by (s, tag, name).

    `tag` names the network inside its agent ("actor", "critic"), so two networks of the same shape start
    from different weights, and the same network of the same seed always starts from the same weights.
    """
    for name, sub in module.named_modules():
        if isinstance(sub, StackedLinear):
            for si, seed in enumerate(seeds):
                key = zlib.crc32(f"{tag}/{name}".encode())
                sub.reset_seed(si, torch.Generator().manual_seed(seed * 1_000_003 + key))
    return module


class ActionScaler(nn.Module):
    """Maps tanh outputs in [-1, 1] to the action box [low, high]."""

    def __init__(self, low, high):
        super().__init__()
        low = torch.as_tensor(low, dtype=torch.float32)
        high = torch.as_tensor(high, dtype=torch.float32)
        self.register_buffer("scale", (high - low) / 2)
        self.register_buffer("center", (high + low) / 2)

    def forward(self, unit_action: torch.Tensor) -> torch.Tensor:
        return unit_action * self.scale + self.center

    def to_unit(self, action: torch.Tensor) -> torch.Tensor:
        return (action - self.center) / self.scale


class DeterministicActor(nn.Module):
    """a = scale(tanh(MLP(s))): TD3's actor."""

    def __init__(self, seeds, obs_dim, act_dim, hidden, low, high, tag="actor"):
        super().__init__()
        self.net = init_seeded(MLP((len(seeds),), obs_dim, hidden, act_dim), seeds, tag)
        self.scaler = ActionScaler(low, high)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.scaler(torch.tanh(self.net(obs)))


class TanhGaussianActor(nn.Module):
    """SAC's squashed Gaussian: u ~ N(mu(s), sigma(s)), a = scale(tanh(u)), with the tanh log-det correction.

    log sigma is clamped to [log_std_min, log_std_max]: [-20, 2] as CORL's SAC and CQL, [-5, 2] as the EDAC
    paper, CORL's SAC-N/EDAC and OfflineRL-Kit (MOPO, MOBILE, COCOA).
    """

    def __init__(self, seeds, obs_dim, act_dim, hidden, low, high, log_std_min=-20.0, log_std_max=2.0,
                 tag="actor", layer_norm: bool = False, net: nn.Module | None = None):
        """`net`: a network [S, B, in] -> [S, B, 2 |A|] to use instead of the MLP (COCOA's transductive one)."""
        super().__init__()
        self.net = net if net is not None else init_seeded(
            MLP((len(seeds),), obs_dim, hidden, 2 * act_dim, layer_norm=layer_norm), seeds, tag)
        self.scaler = ActionScaler(low, high)
        self.log_std_min, self.log_std_max = log_std_min, log_std_max

    def forward(self, obs: torch.Tensor, noise: torch.Tensor | None):
        """Returns (action, log_prob). noise: standard normal of the action's shape, or None for the mode."""
        mu, log_std = self.net(obs).chunk(2, dim=-1)
        if noise is None:
            return self.scaler(torch.tanh(mu)), None
        log_std = log_std.clamp(self.log_std_min, self.log_std_max)
        u = mu + noise * log_std.exp()
        log_prob = (-0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        # log|d tanh(u)/du| = 2 (log 2 - u - softplus(-2u)), numerically stable; plus the box scaling.
        log_prob = log_prob - (2 * (math.log(2) - u - nn.functional.softplus(-2 * u))).sum(-1)
        log_prob = log_prob - torch.log(self.scaler.scale).sum()
        return self.scaler(torch.tanh(u)), log_prob

    def log_prob(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """log pi(a|s) of given actions (clipped inside the box so atanh stays finite)."""
        mu, log_std = self.net(obs).chunk(2, dim=-1)
        log_std = log_std.clamp(self.log_std_min, self.log_std_max)
        y = self.scaler.to_unit(action).clamp(-1 + 1e-6, 1 - 1e-6)
        u = torch.atanh(y)
        z = (u - mu) / log_std.exp()
        log_prob = (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_prob = log_prob - (2 * (math.log(2) - u - nn.functional.softplus(-2 * u))).sum(-1)
        return log_prob - torch.log(self.scaler.scale).sum()


class GaussianActor(nn.Module):
    """IQL's policy: N(scale(tanh(MLP(s))), exp(log_std)) with a state-independent log_std per seed."""

    def __init__(self, seeds, obs_dim, act_dim, hidden, low, high, log_std_min=-5.0, log_std_max=2.0,
                 tag="actor", net: nn.Module | None = None):
        """`net`: a network [S, B, in] -> [S, B, |A|] to use instead of the MLP (COCOA's transductive one)."""
        super().__init__()
        self.net = net if net is not None else init_seeded(MLP((len(seeds),), obs_dim, hidden, act_dim), seeds, tag)
        self.log_std = nn.Parameter(torch.zeros(len(seeds), 1, act_dim))
        self.scaler = ActionScaler(low, high)
        self.log_std_min, self.log_std_max = log_std_min, log_std_max

    def mean(self, obs: torch.Tensor) -> torch.Tensor:
        return self.scaler(torch.tanh(self.net(obs)))

    def log_prob(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        mu = self.mean(obs)
        log_std = self.log_std.clamp(self.log_std_min, self.log_std_max)
        z = (action - mu) / log_std.exp()
        return (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


class ObsNormalizer(nn.Module):
    """(s - mean) / std with statistics of the dataset's observations, shared by all seeds."""

    def __init__(self, obs_dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(obs_dim))
        self.register_buffer("std", torch.ones(obs_dim))

    def fit(self, observations, eps: float = 1e-3) -> "ObsNormalizer":
        obs = torch.as_tensor(observations, dtype=torch.float32)
        self.mean.copy_(obs.mean(0))
        self.std.copy_(obs.std(0) + eps)
        return self

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs - self.mean) / self.std


def one_hot(index: torch.Tensor, n: int) -> torch.Tensor:
    """A discrete space's index column [..., 1] (float, DatasetSpec) -> one-hot [..., n] float32."""
    return nn.functional.one_hot(index[..., 0].long(), n).float()


def encode_observations(obs: torch.Tensor, n_observations: int | None) -> torch.Tensor:
    """What a network reads: the one-hot of a discrete observation, a Box observation as it is."""
    return obs if n_observations is None else one_hot(obs, n_observations)


def per_action_mlp(spec, seeds, hidden, tag: str) -> "MLP":
    """A per-seed ReLU MLP from what encode_observations gives (the one-hot of a discrete observation, else the
    observation) to one output per discrete action: a policy's logits or Q(s, ·)."""
    in_dim = spec.n_observations or spec.obs_dim
    return init_seeded(MLP((len(seeds),), in_dim, hidden, spec.n_actions, "relu"), seeds, tag)


def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging, target <- (1 - tau) target + tau source, as one fused foreach op."""
    with torch.no_grad():
        t = [p for p in target.parameters()]
        s = [p for p in source.parameters()]
        torch._foreach_lerp_(t, s, tau)


__all__ = ["StackedLinear", "StackedLayerNorm", "MLP", "init_seeded", "ActionScaler", "DeterministicActor",
           "TanhGaussianActor", "GaussianActor", "ObsNormalizer", "one_hot", "encode_observations", "per_action_mlp",
           "soft_update"]
