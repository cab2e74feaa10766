"""Anchors: the anchor-seeking policy, the reverse roll-outs it is fitted on, and the state encoder s -> (Δ, s̃).

COCOA (agents/cocoa.py) splits every state s into an anchor s̃ and a difference Δ = s - s̃: s̃ is where H
steps of a learned anchor seeker π̃ lead from s through the forward model, deterministically (the elites'
mean). π̃ is fitted by regression on reverse-model roll-outs that start at dataset states and walk away from
the data, so it learns which action leads from an off-data state back toward the data. Any agent can reuse
these pieces; nothing here knows an RL loss.

Stages (cached per dataset by offrl/cache.py, shared by every base and seed; no seed axis):
  reverse_dynamics  the reverse ensemble (offrl/dynamics.py, `DynamicsConfig.cocoa_reverse()`)
  anchor_seeker     reverse roll-outs of `rollout_length` steps from `rollout_starts` dataset states with the
                    divergent policy (one dataset action d per roll-out, a = clip(0.8 d + N(0, 0.1²))), then
                    π̃ (obs -> 100 -> 100, ReLU then LayerNorm, max_action · tanh) fitted by MSE on the
                    stored (earlier state, action) pairs, Adam 1e-3, batch 256, at most 50 epochs, stopped
                    when the epoch loss changes by < 0.5 % five epochs in a row.
Its key is `SeekerConfig`, which holds the reverse model's config, so another reverse model is another seeker.

Deliberate deviations from the official code (run_anchor_seeker.py): start states are drawn uniformly from
the whole dataset (the official ring buffer keeps only the roll-outs of the dataset's last 300 k states),
and the seeker's minibatches are shuffled every epoch (the official ones come in storage order).

`AnchorEncoder` is the frozen map s -> [Δ, s̃] (width 2 |S|) on raw states; agents apply it once per
update to the batch's states, so repeated states (CQL's candidates) reuse their anchors. No gradient reaches
the seeker or the model.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from offrl.dynamics import DynamicsConfig, EnsembleDynamics, load_or_fit
from offrl.errors import OfflineRLError
from offrl.nets import ActionScaler, StackedLayerNorm, StackedLinear
from offrl.optim import adam
from offrl.rng import SeedStreams

SEEKER_STAGE = "anchor_seeker"


@dataclass
class SeekerConfig:
    """Stage B's settings after the reverse model (official run_anchor_seeker.py defaults); the cache key."""
    reverse: DynamicsConfig = field(default_factory=DynamicsConfig.cocoa_reverse)  # the reverse model's config
    rollout_starts: int = 300_000  # dataset states reverse roll-outs start from (all if the dataset has fewer)
    rollout_length: int = 5  # reverse steps per roll-out (--rollout_length 5)
    scale_coef: float = 0.8  # the divergent policy's a = clip(scale_coef · d + N(0, noise_coef²)) (--scale_coef)
    noise_coef: float = 0.1  # (--noise_coef)
    rollout_chunk: int = 10_000  # roll-outs stepped at a time (memory only; the same numbers)
    hidden: tuple[int, ...] = (100, 100)  # the seeker's widths, ReLU then LayerNorm
    lr: float = 1e-3  # Adam
    batch: int = 256  # minibatch of the regression
    max_epochs: int = 50  # at most this many passes over the roll-outs
    patience: int = 5  # stop after this many epochs in a row whose loss changed by less than `tolerance`
    tolerance: float = 0.005  # relative change of the epoch loss
    seed: int = 0  # start states, directions, policy and model noise, init, shuffles

    def __post_init__(self):
        if isinstance(self.reverse, dict):
            self.reverse = DynamicsConfig(**self.reverse)
        self.hidden = tuple(int(h) for h in self.hidden)
        if self.reverse.direction != "reverse":
            raise OfflineRLError("anchor seeker: its model must be a reverse model")


# ---- the seeker ----------------------------------------------------------------------------------------
class AnchorSeeker(nn.Module):
    """π̃(s) = scale(tanh(MLP(s))) with ReLU then LayerNorm after each hidden layer; no seed axis (lead = ())."""

    def __init__(self, obs_dim: int, act_dim: int, hidden, low, high, seed: int = 0):
        super().__init__()
        dims = [obs_dim, *hidden, act_dim]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(StackedLinear((), a, b))
            if i < len(dims) - 2:
                layers += [nn.ReLU(), StackedLayerNorm((), b)]
        self.net = nn.Sequential(*layers)
        self.scaler = ActionScaler(low, high)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():  # nn.Linear's default: U(±1/sqrt(fan_in)) for weight and bias
            for layer in self.net:
                if isinstance(layer, StackedLinear):
                    bound = 1.0 / math.sqrt(layer.in_features)
                    for p in (layer.weight, layer.bias):
                        p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * bound)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Raw states [..., B, obs_dim] -> actions [..., B, act_dim]."""
        lead = obs.shape[:-1]
        return self.scaler(torch.tanh(self.net(obs.reshape(-1, obs.shape[-1])))).reshape(*lead, -1)


# ---- stage B -------------------------------------------------------------------------------------------
def divergent_policy(directions: torch.Tensor, scale: float, noise: float, low: torch.Tensor, high: torch.Tensor,
                     generator: torch.Generator) -> Callable[[torch.Tensor], torch.Tensor]:
    """The reverse roll-out policy: row i always heads along directions[i] (a dataset action), each step
    a = clip(scale · d + N(0, noise²), low, high). It ignores the state."""
    def act(obs: torch.Tensor) -> torch.Tensor:
        eps = torch.randn(directions.shape, generator=generator, device=directions.device)
        return torch.clamp(scale * directions + noise * eps, low, high)
    return act


@torch.no_grad()
def reverse_rollouts(dataset, reverse_model: EnsembleDynamics, config: SeekerConfig) -> dict[str, torch.Tensor]:
    """Reverse roll-outs from dataset next-states with the divergent policy: observations (the earlier states
    s_-k), actions (leading forward from s_-k to s_-k+1) and next_observations, each [H, N, d]; index k - 1
    of the first axis holds step k back from the data. No termination (a reverse model never terminates)."""
    c = config
    device = reverse_model.input_mean.device
    gen = torch.Generator(device=device).manual_seed(c.seed)
    n = len(dataset)
    starts = torch.randperm(n, generator=gen, device=device)[:min(c.rollout_starts, n)]
    next_obs = torch.as_tensor(dataset.next_observations, device=device)[starts]
    actions = torch.as_tensor(dataset.actions, device=device)
    directions = actions[torch.randint(n, (len(starts),), generator=gen, device=device)]
    low, high = actions.new_tensor(dataset.spec.action_low), actions.new_tensor(dataset.spec.action_high)
    # The model's noise from a stream keyed by the seeker's seed: the roll-outs depend on this config only.
    streams = SeedStreams([c.seed], "anchor_seeker/reverse")
    parts = []
    for i in range(0, len(starts), c.rollout_chunk):
        policy = divergent_policy(directions[i:i + c.rollout_chunk], c.scale_coef, c.noise_coef, low, high, gen)
        parts.append(reverse_model.rollout(policy, next_obs[i:i + c.rollout_chunk], c.rollout_length,
                                           streams=streams))
    return {k: torch.cat([p[k] for p in parts], dim=1) for k in ("observations", "actions", "next_observations")}


def fit_seeker(observations: torch.Tensor, actions: torch.Tensor, config: SeekerConfig, low, high,
               log: Callable[[str], None] = print) -> tuple[AnchorSeeker, dict]:
    """π̃ fitted by MSE regression of actions [M, A] on observations [M, d]; returns it (frozen) and a report."""
    c = config
    t0 = time.perf_counter()
    device = observations.device
    seeker = AnchorSeeker(observations.shape[1], actions.shape[1], c.hidden, low, high, seed=c.seed).to(device)
    opt = adam(seeker.parameters(), c.lr)
    gen = torch.Generator(device=device).manual_seed(c.seed + 1)
    m = len(observations)
    losses: list[float] = []
    calm = 0
    for epoch in range(1, c.max_epochs + 1):
        order = torch.randperm(m, generator=gen, device=device)
        total = torch.zeros((), device=device)
        for start in range(0, m, c.batch):
            idx = order[start:start + c.batch]
            loss = (seeker(observations[idx]) - actions[idx]).pow(2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * len(idx)
        losses.append(float(total) / m)
        if epoch == 1 or epoch % 10 == 0:
            log(f"anchor seeker epoch {epoch}: loss {losses[-1]:.4g}")
        if len(losses) > 1 and abs(losses[-1] - losses[-2]) < c.tolerance * abs(losses[-2]):
            calm += 1
            if calm >= c.patience:
                break
        else:
            calm = 0
    seeker.eval().requires_grad_(False)
    report = dict(epochs=len(losses), losses=losses, transitions=m, wall_s=time.perf_counter() - t0)
    log(f"anchor seeker fitted in {report['wall_s']:.1f}s: {len(losses)} epochs on {m} reverse transitions, "
        f"loss {losses[-1]:.4g}")
    return seeker, report


def load_or_build_seeker(dataset, config: SeekerConfig, cache=None, log: Callable[[str], None] = print,
                         device="cpu") -> AnchorSeeker:
    """The dataset's anchor seeker for `config`: from `cache` when stored, else built (the reverse model
    from its own cache entry, the roll-outs, the fit) and stored. The reverse model is looked up first
    either way, so a run says which stages it reused."""
    reverse = load_or_fit(dataset, config.reverse, cache=cache, log=log, device=device)
    spec = dataset.spec

    def build() -> dict:
        t0 = time.perf_counter()
        data = reverse_rollouts(dataset, reverse, config)
        log(f"reverse roll-outs: {data['observations'].shape[1]} x {config.rollout_length} steps in "
            f"{time.perf_counter() - t0:.1f}s")
        d, a = spec.obs_dim, spec.act_dim
        seeker, report = fit_seeker(data["observations"].reshape(-1, d), data["actions"].reshape(-1, a), config,
                                    spec.action_low, spec.action_high, log=log)
        return {"kind": "offrl.anchors.AnchorSeeker", "format": 1, "obs_dim": d, "act_dim": a,
                "hidden": list(config.hidden), "state_dict": {k: v.detach().cpu() for k, v in
                                                               seeker.state_dict().items()},
                "report": {k: v for k, v in report.items()}}

    artifact = build() if cache is None else cache.get_or_build(dataset, SEEKER_STAGE, config, config.seed, build,
                                                                log=log)
    seeker = AnchorSeeker(artifact["obs_dim"], artifact["act_dim"], artifact["hidden"], spec.action_low,
                          spec.action_high)
    seeker.load_state_dict(artifact["state_dict"])
    return seeker.to(device).eval().requires_grad_(False)


# ---- stage C: the encoder ------------------------------------------------------------------------------
class AnchorEncoder(nn.Module):
    """s -> [Δ, s̃] = [s - s̃_H, s̃_H] on raw states [..., B, d] (output [..., B, 2d]), with s̃_0 = s and
    s̃_k+1 = the forward model's elite-mean step from (s̃_k, π̃(s̃_k)). Frozen: no gradient reaches the seeker
    or the model. Both belong to the dataset (no seed axis); their weights are module state, so a checkpoint
    holds them and acting needs no cache."""

    def __init__(self, obs_dim: int, act_dim: int, dynamics_config: DynamicsConfig, seeker_hidden, low, high,
                 horizon: int):
        super().__init__()
        if horizon < 1:
            raise OfflineRLError(f"anchor horizon must be >= 1, got {horizon}")
        self.obs_dim, self.horizon = obs_dim, horizon
        self.dynamics = EnsembleDynamics(obs_dim, act_dim, dynamics_config).requires_grad_(False)
        self.seeker = AnchorSeeker(obs_dim, act_dim, seeker_hidden, low, high).requires_grad_(False)

    def load(self, dynamics: EnsembleDynamics, seeker: AnchorSeeker) -> None:
        """Take the fitted model's and seeker's weights."""
        self.dynamics.load_state_dict(dynamics.state_dict())
        self.seeker.load_state_dict(seeker.state_dict())

    @torch.no_grad()
    def anchors(self, obs: torch.Tensor) -> torch.Tensor:
        anchor = obs
        for _ in range(self.horizon):
            anchor = self.dynamics.elite_mean_state(anchor, self.seeker(anchor))
        return anchor

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        anchor = self.anchors(obs)
        return torch.cat([obs - anchor, anchor], dim=-1)


__all__ = ["SEEKER_STAGE", "SeekerConfig", "AnchorSeeker", "AnchorEncoder", "divergent_policy", "reverse_rollouts",
           "fit_seeker", "load_or_build_seeker"]
