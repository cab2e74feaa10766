"""FB — forward-backward representations for zero-shot RL: Touati & Ollivier, "Learning One Representation to
Optimize All Rewards", NeurIPS 2021 (arXiv 2103.07945); Touati, Rapin & Ollivier, "Does Zero-Shot
Reinforcement Learning Exist?", ICLR 2023 (arXiv 2209.14935). As trained by Jeen, Bewley & Cullen,
"Zero-Shot Reinforcement Learning from Low Quality Data", NeurIPS 2024 (arXiv 2309.15178).

From reward-free transitions, learn F(s, a, z), B(s) in R^d with F(s, a, z)ᵀB(s⁺) ≈ the successor measure of
the policy π_z, and π_z greedy on Q_z = Fᵀz. Any reward r then gives z_r = √d·normalise(E[r(s) B(s)]) (or
z_g = √d·normalise(B(g)) for a goal), and π_{z_r} acts for r without further training.

    z:        √d·g/‖g‖, g ~ N(0, I_d); with probability `z_mix_ratio` √d·normalise(B(s_perm)) of a batch state
    target:   T_ij = γ_i min_k F̄_k(s'_i, a'_i, z_i)ᵀ B̄(s'_j),  a'_i = π(s'_i, z_i) + clipped noise
    measure:  L_M = Σ_k [½ mean_{i≠j} (F_k(s_i, a_i, z_i)ᵀB(s'_j) − T_ij)² − mean_i F_k(s_i, a_i, z_i)ᵀB(s'_i)]
    ortho:    L_O = λ [mean_{i≠j} (B(s'_i)ᵀB(s'_j))² − 2 mean_i B(s'_i)ᵀB(s'_i)]
    actor:    L_π = −mean_i min_k F_k(s_i, π(s_i, z_i) + clipped noise, z_i)ᵀ z_i
    targets:  Polyak τ on F and B every step; every gradient clamped element-wise to [−1, 1].

The batch's other next states act as samples of the data distribution ρ. B ends in √d·x/‖x‖, so the ortho
diagonal is constant and only its off-diagonal part acts. The conservative variants (agents/vcfb.py,
agents/mcfb.py) add α·P with a CQL-style penalty P over the 12-action sample set `sample_set_forward` builds
(6 uniform and 2 of π(s, z) at s, 2 of π(s', z) at s', 2 copies of the data action), α tuned by dual descent
towards P = `target_penalty`; FB's `conservative_penalty` is None.

Defaults: enjeeneer/zero-shot-rl agents/fb/config.yaml and agents/cfb/config.yaml (d 50, γ 0.98, batch 512,
lr 1e-4, actor lr 1e-4 (3e-5 conservative), τ 0.01, λ 1, mix 0.5, noise 0.2 clipped at 0.3, K 12 with half
uniform, target penalty 50, log α 0 with the F/B lr, α clamped to [0, 1e6]); networks of agents/fb/models.py
(preprocessors 1024-1024-512 ReLU, F heads 1024-1024, B 256×3, actor trunk Linear → LayerNorm → tanh).
Task inference from 10,000 reward-labelled samples (the paper); `task_inference = "goal"` uses B(goal).
Scale: with E_ρ[BBᵀ] ≈ I the measure loss's fixed point is F = B(s') + γF̄(s', π), so Q_z = Fᵀz sums
discounted B(s)ᵀz ≤ d and climbs for tens of thousands of updates towards values up to d/(1-γ) (2,500 at the
defaults); it is not divergence. The pointgoals toy's family defaults (SMALL) shrink the networks and use
γ 0.9 and learning rates 1e-3 so that it is learnt in a thousand updates on CPU.
Deviations: transitions into a terminal state are not bootstrapped (γ_i = γ(1 − done); the official D4RL path
uses γ on every transition; ExORL data has no terminals); PyTorch's default initialisation per seed.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from offrl.agent import Agent
from offrl.config import (Fraction, NonNegativeFloat, PositiveFloat, PositiveInt, UnitFloat, Widths)
from offrl.errors import OfflineRLError
from offrl.nets import MLP, ActionScaler, StackedLayerNorm, StackedLinear, init_seeded, soft_update
from offrl.optim import adam, gradient_step
from offrl.registry import register_agent


@dataclass
class Config:
    z_dim: PositiveInt = 50  # d: dimension of z, F and B
    discount: UnitFloat = 0.98  # γ
    batch_size: PositiveInt = 512  # transitions per update and seed (also the samples of ρ)
    lr: PositiveFloat = 1e-4  # Adam learning rate of F and B
    actor_lr: PositiveFloat = 1e-4  # Adam learning rate of the actor
    tau: Fraction = 0.01  # Polyak coefficient of the F and B targets
    ortho_coef: NonNegativeFloat = 1.0  # λ: weight of B's orthonormality loss
    z_mix_ratio: UnitFloat = 0.5  # share of z taken from B of (permuted) batch states
    actor_noise: NonNegativeFloat = 0.2  # σ of the actor's training noise
    noise_clip: NonNegativeFloat = 0.3  # clip of that noise
    grad_clip: PositiveFloat = 1.0  # every gradient element is clamped to [-grad_clip, grad_clip]
    preprocessor_hidden: Widths = (1024, 1024)  # hidden widths of the (s, a), (s, z) and s preprocessors
    preprocessor_dim: PositiveInt = 512  # their output width
    forward_hidden: Widths = (1024, 1024)  # hidden widths of each F head
    backward_hidden: Widths = (256, 256, 256)  # hidden widths of B
    actor_hidden: PositiveInt = 1024  # width of the actor trunk (Linear → LayerNorm → tanh → Linear → ReLU)
    task_inference: Literal["reward", "goal"] = "reward"  # z from reward-labelled samples, or from B(goal)
    inference_samples: PositiveInt = 10_000  # dataset transitions relabelled for reward-based inference


@dataclass
class ConservativeConfig(Config):
    actor_lr: PositiveFloat = 3e-5  # agents/cfb/config.yaml
    action_samples: PositiveInt = 12  # K: actions per state in the penalty's logsumexp
    ood_action_weight: Fraction = 0.5  # share of the K that are uniform actions
    target_penalty: NonNegativeFloat = 50.0  # τ: α grows while the penalty exceeds it
    lagrange: bool = True  # tune α by dual descent; else a fixed α
    alpha: NonNegativeFloat = 0.01  # the fixed α when lagrange is off


def _preprocessor(seeds, in_dim: int, c: Config, tag: str) -> nn.Module:
    net = nn.Sequential(MLP((len(seeds),), in_dim, c.preprocessor_hidden, c.preprocessor_dim), nn.ReLU())
    return init_seeded(net, seeds, tag)


class ForwardNet(nn.Module):
    """F_1, F_2(s, a, z): shared preprocessors φ(s, a) and φ(s, z), two heads on their concatenation."""

    def __init__(self, seeds, obs_dim: int, act_dim: int, c: Config, tag: str = "forward"):
        super().__init__()
        self.sa = _preprocessor(seeds, obs_dim + act_dim, c, f"{tag}/sa")
        self.sz = _preprocessor(seeds, obs_dim + c.z_dim, c, f"{tag}/sz")
        self.heads = init_seeded(MLP((len(seeds), 2), 2 * c.preprocessor_dim, c.forward_hidden, c.z_dim),
                                 seeds, f"{tag}/heads")

    def forward(self, obs, action, z):
        """[S, B, ·] inputs -> [S, 2, B, d]."""
        h = torch.cat([self.sa(torch.cat([obs, action], -1)), self.sz(torch.cat([obs, z], -1))], -1)
        return self.heads(h.unsqueeze(1))


class BackwardNet(nn.Module):
    """B(s) = √d·x/‖x‖, x = MLP(s)."""

    def __init__(self, seeds, obs_dim: int, c: Config, tag: str = "backward"):
        super().__init__()
        self.net = init_seeded(MLP((len(seeds),), obs_dim, c.backward_hidden, c.z_dim), seeds, tag)
        self.radius = math.sqrt(c.z_dim)

    def forward(self, obs):
        return self.radius * F.normalize(self.net(obs), dim=-1)


class FBActor(nn.Module):
    """μ(s, z) = scale(tanh(trunk(φ(s) ⊕ φ(s, z)))), trunk = Linear → LayerNorm → tanh → Linear → ReLU → Linear."""

    def __init__(self, seeds, obs_dim: int, act_dim: int, c: Config, low, high, tag: str = "actor"):
        super().__init__()
        lead, h = (len(seeds),), c.actor_hidden
        self.s = _preprocessor(seeds, obs_dim, c, f"{tag}/s")
        self.sz = _preprocessor(seeds, obs_dim + c.z_dim, c, f"{tag}/sz")
        self.trunk = init_seeded(nn.Sequential(
            StackedLinear(lead, 2 * c.preprocessor_dim, h), StackedLayerNorm(lead, h), nn.Tanh(),
            StackedLinear(lead, h, h), nn.ReLU(), StackedLinear(lead, h, act_dim)), seeds, f"{tag}/trunk")
        self.scaler = ActionScaler(low, high)

    def forward(self, obs, z):
        return self.scaler(torch.tanh(self.trunk(torch.cat([self.s(obs), self.sz(torch.cat([obs, z], -1))], -1))))


class FB(Agent):
    reward_free = True
    task_conditioned = True

    def __init__(self, spec, config: Config, seeds, device="cpu"):
        super().__init__(spec, config, seeds, device)
        c = config
        self.forward_net = ForwardNet(self.seeds, spec.obs_dim, spec.act_dim, c)
        self.backward_net = BackwardNet(self.seeds, spec.obs_dim, c)
        self.forward_target = copy.deepcopy(self.forward_net).requires_grad_(False)
        self.backward_target = copy.deepcopy(self.backward_net).requires_grad_(False)
        self.actor = FBActor(self.seeds, spec.obs_dim, spec.act_dim, c, spec.action_low, spec.action_high)
        self.fb_opt = adam([*self.forward_net.parameters(), *self.backward_net.parameters()], c.lr)
        self.actor_opt = adam(self.actor.parameters(), c.actor_lr)
        if isinstance(c, ConservativeConfig):  # the penalty's weight: log α per seed, tuned by dual descent
            self.log_alpha = nn.Parameter(torch.zeros(self.num_seeds))
            self.alpha_opt = adam([self.log_alpha], c.lr)

    # ---- pieces of the update -----------------------------------------------------------------
    def sample_z(self, obs):
        """z on the sphere of radius √d; a `z_mix_ratio` share replaced by B of permuted batch states."""
        c = self.config
        S, B, _ = obs.shape
        gaussian = math.sqrt(c.z_dim) * F.normalize(self.noise.normal(B, c.z_dim), dim=-1)
        with torch.no_grad():
            perm = self.noise.uniform(B).argsort(-1)
            from_states = self.backward_net(torch.gather(obs, 1, perm.unsqueeze(-1).expand_as(obs)))
        use_states = self.noise.uniform(B, 1) < c.z_mix_ratio
        return torch.where(use_states, from_states, gaussian)

    def noisy_action(self, obs, z):
        """π(s, z) plus clipped Gaussian noise, inside the box (the clamp passes gradients straight through)."""
        c = self.config
        mean = self.actor(obs, z)
        scale = self.actor.scaler.scale
        noise = (self.noise.normal(*mean.shape[1:]) * c.actor_noise).clamp(-c.noise_clip, c.noise_clip)
        action = mean + noise * scale
        low = self.actor.scaler.center - scale * (1 - 1e-6)
        high = self.actor.scaler.center + scale * (1 - 1e-6)
        return action + (torch.clamp(action, low, high) - action).detach()

    def sample_set_forward(self, obs, actions, next_obs, z, f_data):
        """F over the conservative penalty's K actions per state: [S, 2, K, B, d]. Uniform actions and π(s, z)
        at s, π(s', z) at s' (as the official code evaluates them), and copies of the data action's F."""
        c = self.config
        B, A = actions.shape[1:]
        n_uniform = round(c.action_samples * c.ood_action_weight)
        n_each = (c.action_samples - n_uniform) // 3  # π(s), π(s'), data
        with torch.no_grad():
            uniform = self.actor.scaler(self.noise.uniform(n_uniform * B, A) * 2 - 1)
            z_each = z.repeat(1, n_each, 1)
            at_s = self.noisy_action(obs.repeat(1, n_each, 1), z_each)
            at_next = self.noisy_action(next_obs.repeat(1, n_each, 1), z_each)
        states = torch.cat([obs.repeat(1, n_uniform + n_each, 1), next_obs.repeat(1, n_each, 1)], 1)
        f = self.forward_net(states, torch.cat([uniform, at_s, at_next], 1), z.repeat(1, n_uniform + 2 * n_each, 1))
        f = f.unflatten(2, (-1, B))
        return torch.cat([f, f_data.unsqueeze(2).expand(-1, -1, n_each, -1, -1)], 2)

    def conservative_penalty(self, obs, actions, next_obs, z, f_data, b_next):
        """P [S] added to the F/B loss with weight α; plain FB has none."""
        return None

    def penalty_weight(self, penalty):
        """α [S] for this step: one dual step on log α (α grows while P > target_penalty), then its new value."""
        c = self.config
        if not c.lagrange:
            return torch.full_like(penalty, c.alpha)
        alpha = self.log_alpha.exp().clamp(0.0, 1e6)
        gradient_step(self.alpha_opt, -0.5 * alpha * (penalty.detach() - c.target_penalty))
        return self.log_alpha.detach().exp().clamp(0.0, 1e6)

    def update(self, batch, step):
        c = self.config
        obs, actions, next_obs = batch["observations"], batch["actions"], batch["next_observations"]
        B = obs.shape[1]
        discount = c.discount * (1.0 - batch["dones"])  # [S, B]
        z = self.sample_z(obs)

        with torch.no_grad():
            f_next = self.forward_target(next_obs, self.noisy_action(next_obs, z), z)  # [S, 2, B, d]
            b_target = self.backward_target(next_obs)
            target = (f_next @ b_target.transpose(-1, -2).unsqueeze(1)).min(1).values * discount.unsqueeze(-1)
        f = self.forward_net(obs, actions, z)  # [S, 2, B, d]
        b_next = self.backward_net(next_obs)  # [S, B, d]
        m = f @ b_next.transpose(-1, -2).unsqueeze(1)  # [S, 2, B, B]: M_ij = F(s_i, a_i, z_i)ᵀB(s'_j)
        off = ~torch.eye(B, dtype=torch.bool, device=obs.device)
        pairs = B * (B - 1)
        offdiag = ((m - target.unsqueeze(1)).pow(2) * off).sum((-1, -2)) / pairs  # [S, 2]
        measure_loss = (0.5 * offdiag - m.diagonal(dim1=-2, dim2=-1).mean(-1)).sum(1)  # [S]
        cov = b_next @ b_next.transpose(-1, -2)  # [S, B, B]
        ortho_offdiag = (cov.pow(2) * off).sum((-1, -2)) / pairs
        ortho_loss = c.ortho_coef * (ortho_offdiag - 2 * cov.diagonal(dim1=-2, dim2=-1).mean(-1))
        fb_loss = measure_loss + ortho_loss
        metrics = {"measure_loss": measure_loss.detach(), "ortho_offdiag": ortho_offdiag.detach()}
        penalty = self.conservative_penalty(obs, actions, next_obs, z, f, b_next)
        if penalty is not None:
            alpha = self.penalty_weight(penalty)
            fb_loss = fb_loss + alpha * penalty
            metrics.update(penalty=penalty.detach(), alpha=alpha)
        gradient_step(self.fb_opt, fb_loss, clamp=c.grad_clip)

        q = (self.forward_net(obs, self.noisy_action(obs, z), z) * z.unsqueeze(1)).sum(-1).min(1).values  # [S, B]
        actor_loss = -q.mean(-1)
        gradient_step(self.actor_opt, actor_loss, clamp=c.grad_clip)  # F's gradients are cleared next step
        soft_update(self.forward_target, self.forward_net, c.tau)
        soft_update(self.backward_target, self.backward_net, c.tau)
        metrics.update(fb_loss=fb_loss.detach(), actor_loss=actor_loss.detach(), q_mean=q.detach().mean(-1))
        return metrics

    # ---- zero-shot inference and acting --------------------------------------------------------
    @torch.no_grad()
    def infer_task(self, samples: dict, goal=None) -> torch.Tensor:
        """z [S, d] of one task: √d·normalise(mean r·B(s')) over reward-labelled samples, or of B(goal)."""
        if self.config.task_inference == "goal":
            if goal is None:
                raise OfflineRLError("task_inference=goal needs tasks with a goal state; this task has none: "
                                     "use --set task_inference=reward")
            b = self.backward_net(goal.reshape(1, 1, -1).expand(self.num_seeds, 1, -1))[:, 0]
        else:
            next_obs = samples["next_observations"].unsqueeze(0).expand(self.num_seeds, -1, -1)
            b = (samples["rewards"].reshape(1, -1, 1) * self.backward_net(next_obs)).mean(1)
        return math.sqrt(self.config.z_dim) * F.normalize(b, dim=-1)

    @torch.no_grad()
    def act(self, obs, deterministic=True, task=None):
        if task is None:
            raise OfflineRLError("FB acts on a task vector: call infer_task first")
        return self.actor(obs, task.unsqueeze(1).expand(*obs.shape[:-1], task.shape[-1]))


# The toy (envs/pointgoals.py) is learnt on CPU in thousands of updates, not the paper's million: small networks
# (the readiness review's CPU sizes), γ 0.9 (the goals are 6 steps from the starts; Q_z's fixed point, at most
# d/(1-γ), is then 160, not 800, and is reached in thousands of updates) and learning rates 10× the paper's
# (the conservative variants keep their actor's lr at 0.3× FB's, as agents/cfb/config.yaml).
SMALL = {"z_dim": 16, "batch_size": 256, "preprocessor_hidden": (128,), "preprocessor_dim": 64,
         "forward_hidden": (128,), "backward_hidden": (128, 128), "actor_hidden": 128,
         "discount": 0.9, "lr": 1e-3, "actor_lr": 1e-3}
SMALL_CONSERVATIVE = {**SMALL, "actor_lr": 3e-4}

register_agent("fb", FB, Config, paper="Touati & Ollivier, NeurIPS 2021 (arXiv 2103.07945)",
               family="zero-shot, reward-free", family_defaults={"pointgoals": SMALL})
