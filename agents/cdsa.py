"""CDSA — Liu, Yang & Li, "Conservative Denoising Score-based Algorithm for Offline Reinforcement Learning",
arXiv 2406.07541 (2024). offrl's version is a reconstruction ("CDSA-reconstruction"): no official code is
public and only the paper's abstract and introduction were available, so every choice below that they do not
pin down is a Config field marked [ours].

Idea: leave a trained offline policy π₀ as it is and correct its actions at test time. A score model learns
the gradient of the log-density of states by denoising score matching; an inverse dynamics model turns a
step along that gradient, a change of the next state, into a change of the action, which pushes the agent
toward well-supported states. The base policy is wrapped, not retrained (offrl/wrapper.py).

    score model (over normalised states x, noise σ from a geometric ladder σ_1 > ... > σ_L):
        x̃ = x + σ ε,  ε ~ N(0, I);   ε_θ(x̃, log σ) ≈ ε;   s_θ(x̃, σ) = -ε_θ(x̃, log σ) / σ ≈ ∇ log p_σ(x̃)
        L_score = mean ‖ε_θ(x̃, log σ) - ε‖²          (σ²-weighted DSM, written as noise prediction)
    inverse dynamics:  I_φ(s, s' - s) ≈ a,   L_inv = mean ‖I_φ - a‖²   (tanh into the action box)
    forward model:     f_ψ(s, a) ≈ s' - s,   L_fwd = mean ‖f_ψ - (s' - s)‖²
    acting:  a₀ = π₀(s);  ŝ' = s + f_ψ(s, a₀) (or s);  s* = ŝ' + η σ_c² s_θ(ŝ', σ_c)
             Δa = I_φ(s, s* - s) - I_φ(s, ŝ' - s),   a = clip(a₀ + κ·clip(Δa, ±m·half-range), box)

With η = 1, s* is Tweedie's estimate of the clean state behind ŝ' at noise level σ_c: the expected state of
the data near ŝ'. `density` picks which density is meant: the dataset's states, or the states the base
policy reaches from them (the abstract's "dataset density generated from a pre-trained offline RL
algorithm"; here: `policy_horizon` steps of π₀ through the forward model, so it stays offline). κ = 0
returns the base policy's actions exactly. All three networks train together in update(), on the
run's batches, for the run's steps.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from offrl.config import NonNegativeFloat, PositiveFloat, PositiveInt, Widths
from offrl.errors import OfflineRLError
from offrl.nets import MLP, ActionScaler, ObsNormalizer, init_seeded
from offrl.optim import adam, gradient_step
from offrl.registry import register_agent
from offrl.wrapper import PolicyWrapper


@dataclass
class Config:
    base_run: str = ""  # finished run folder whose seeds' policies are wrapped; empty: train base_agent here
    base_agent: str = "td3bc"  # the agent trained as the base when base_run is empty (the paper wraps TD3+BC, IQL)
    base_steps: PositiveInt = 5_000  # [ours] updates of that base; a real study trains it fully or gives base_run
    density: Literal["dataset", "policy"] = "dataset"  # [ours] states of the data, or states π₀ reaches from them
    policy_horizon: PositiveInt = 1  # [ours] model steps of π₀ from a data state, for density="policy"
    sigma_min: PositiveFloat = 0.01  # [ours] smallest σ of the ladder, in normalised state units
    sigma_max: PositiveFloat = 1.0  # [ours] largest σ
    num_sigmas: PositiveInt = 15  # [ours] rungs of the geometric ladder
    correction_sigma: PositiveFloat = 0.1  # [ours] σ_c at which the score is read when acting
    step_size: NonNegativeFloat = 1.0  # [ours] η: 1 is Tweedie's denoising step at σ_c
    kappa: NonNegativeFloat = 1.0  # [ours] κ: weight of the auxiliary action; 0 acts as the base policy
    max_correction: PositiveFloat = 0.5  # [ours] m: |Δa| clipped to m times the action box's half-width
    next_state: Literal["model", "current"] = "model"  # [ours] ŝ' from the forward model, or s itself
    hidden: Widths = (256, 256, 256)  # [ours] widths of the score, inverse and forward networks
    lr: PositiveFloat = 3e-4  # [ours] Adam rate of all three networks
    batch_size: PositiveInt = 256  # transitions per update and seed


class ScoreModel(nn.Module):
    """A noise-conditional score model over d-dimensional points, one per seed: ε_θ(x̃, log σ)."""

    def __init__(self, seeds, dim: int, hidden, sigma_min: float, sigma_max: float, num_sigmas: int):
        super().__init__()
        if sigma_min > sigma_max:
            raise OfflineRLError(f"sigma_min ({sigma_min}) must not exceed sigma_max ({sigma_max})")
        self.net = init_seeded(MLP((len(seeds),), dim + 1, hidden, dim, activation="silu"), seeds, "score")
        ladder = torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_min), num_sigmas))
        self.register_buffer("sigmas", ladder)

    def score(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """∇ log p_σ(x) for x [S, B, d] and σ broadcastable to [S, B, 1]."""
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(*x.shape[:-1], 1)
        return -self.net(torch.cat([x, sigma.log()], -1)) / sigma

    def loss(self, x: torch.Tensor, noise) -> torch.Tensor:
        """Denoising score matching on points x [S, B, d], σ drawn uniformly from the ladder: [S]."""
        S, B, d = x.shape
        sigma = self.sigmas[noise.randint(self.sigmas.numel(), B)].unsqueeze(-1)  # [S, B, 1]
        eps = noise.normal(B, d)
        predicted = self.net(torch.cat([x + sigma * eps, sigma.log()], -1))
        return (predicted - eps).pow(2).sum(-1).mean(-1)


class CDSA(PolicyWrapper):
    def __init__(self, spec, config: Config, seeds, device="cpu"):
        super().__init__(spec, config, seeds, device)
        c, S, d, a = config, len(seeds), spec.obs_dim, spec.act_dim
        self.obs_norm = ObsNormalizer(d)
        # [ours] The RMS of one step's change of the normalised state: the inverse model reads, and the forward
        # model predicts, changes in this unit, so both see inputs and targets of order one.
        self.register_buffer("delta_scale", torch.ones(()))
        self.scaler = ActionScaler(spec.action_low, spec.action_high)
        self.score_model = ScoreModel(seeds, d, c.hidden, c.sigma_min, c.sigma_max, c.num_sigmas)
        self.inverse = init_seeded(MLP((S,), 2 * d, c.hidden, a), seeds, "inverse")
        self.forward_model = init_seeded(MLP((S,), d + a, c.hidden, d), seeds, "forward")
        self.opt = adam([*self.score_model.parameters(), *self.inverse.parameters(),
                         *self.forward_model.parameters()], c.lr)

    def prepare(self, dataset, cache=None):
        self.obs_norm.fit(dataset.observations)
        delta = self.obs_norm(torch.as_tensor(dataset.next_observations)) - self.obs_norm(
            torch.as_tensor(dataset.observations))
        self.delta_scale.copy_(delta.pow(2).mean().sqrt().clamp(min=1e-6))
        super().prepare(dataset, cache)

    def inverse_action(self, s: torch.Tensor, s_next: torch.Tensor) -> torch.Tensor:
        """I_φ: the action that takes normalised state s to s_next, in the action box."""
        return self.scaler(torch.tanh(self.inverse(torch.cat([s, (s_next - s) / self.delta_scale], -1))))

    def model_step(self, s: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """The forward model's next normalised state."""
        return s + self.delta_scale * self.forward_model(torch.cat([s, self.scaler.to_unit(action)], -1))

    def predicted_next(self, s: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """ŝ' in normalised units: the forward model's, or s itself (next_state="current")."""
        return s if self.config.next_state == "current" else self.model_step(s, action)

    def policy_states(self, s: torch.Tensor) -> torch.Tensor:
        """States the base policy reaches in `policy_horizon` forward-model steps from data states s."""
        for _ in range(self.config.policy_horizon):
            raw = s * self.obs_norm.std + self.obs_norm.mean
            s = self.model_step(s, self.base_act(raw))
        return s.detach()

    def update(self, batch, step):
        obs, next_obs = self.obs_norm(batch["observations"]), self.obs_norm(batch["next_observations"])
        actions = batch["actions"]
        forward_loss = (self.forward_model(torch.cat([obs, self.scaler.to_unit(actions)], -1))
                        - (next_obs - obs) / self.delta_scale).pow(2).sum(-1).mean(-1)
        inverse_loss = (self.scaler.to_unit(self.inverse_action(obs, next_obs))
                        - self.scaler.to_unit(actions)).pow(2).sum(-1).mean(-1)
        states = obs if self.config.density == "dataset" else self.policy_states(obs)
        score_loss = self.score_model.loss(states, self.noise)
        gradient_step(self.opt, score_loss + inverse_loss + forward_loss)
        return {"score_loss": score_loss.detach(), "inverse_loss": inverse_loss.detach(),
                "forward_loss": forward_loss.detach()}

    def correct(self, obs, action):
        c = self.config
        s = self.obs_norm(obs)
        s_hat = self.predicted_next(s, action)
        s_star = s_hat + c.step_size * c.correction_sigma ** 2 * self.score_model.score(s_hat, c.correction_sigma)
        delta = self.inverse_action(s, s_star) - self.inverse_action(s, s_hat)
        bound = c.max_correction * self.scaler.scale
        delta = torch.maximum(torch.minimum(delta, bound), -bound)
        low, high = self.scaler.center - self.scaler.scale, self.scaler.center + self.scaler.scale
        return torch.maximum(torch.minimum(action + c.kappa * delta, high), low)


register_agent("cdsa", CDSA, Config,
               paper="Liu, Yang & Li 2024 (arXiv 2406.07541), CDSA-reconstruction: no official code",
               family="policy wrapper, test-time correction", base="td3bc",
               stages=("base policy (base_run or trained)",))
