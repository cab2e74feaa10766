"""The SAC family's shared machinery: a tanh-Gaussian actor, a per-seed learned temperature and E critics.

SAC-N, EDAC, MOPO, MOBILE, Cal-QL and WSRL are all soft actor-critic with an ensemble of critics; they
differ in how the ensemble is reduced, in the backup, and in one extra loss term or reward penalty. This
module holds what they share, so that an agent file is its paper's change and little else: it subclasses
`SACAgent` once and overrides one or two of the methods below.

    temperature: L_α = -mean log α · (log π(ã|s) + H̄),  H̄ = -|A|,  α per seed [S]
    actor:       L_π = mean α log π(ã|s) - R_actor_i Q_i(s, ã),  ã ~ π(s)
    critics:     y = r + γ (1 - d) (R_target_i Q'_i(s', a') [- α log π(a'|s')]),  a' ~ π(s')
                 L_Q = Σ_i mean (Q_i(s, a) - y)²

R_target is the min over all E members, the min over a random subset (drawn per seed and update, without
replacement as REDQ or with it as WSRL), or the mean; R_actor is the min or the mean. The max-target backup
samples n actions at s', reduces the members for each, and keeps the action of the largest (Cal-QL's
order). With `utd` > 1 the critics take `utd` steps on disjoint slices of one drawn batch and the actor and
temperature one step on all of it (WSRL's high-UTD update); each critic step moves the targets.

Overridable pieces: `build_actor`, `build_critic` (what the networks read), `td_target` (reward penalties,
clamps), `critic_loss` (extra critic terms), `actor_loss`, `temperature_loss`, and `normalize` (the batch
an update sees). All randomness comes from the per-seed streams (`self.noise`; acting from `act_noise`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from offrl.agent import Agent
from offrl.config import Fraction, PositiveFloat, PositiveInt, UnitFloat, Widths
from offrl.critics import CriticWithTarget, EnsembleCritic, reduce_members
from offrl.errors import OfflineRLError
from offrl.nets import TanhGaussianActor
from offrl.optim import adam, gradient_step
from offrl.rng import SeedStreams



@dataclass
class SACConfig:
    """Soft actor-critic's defaults (Haarnoja et al. 2018, arXiv 1812.05905): agents override them."""
    actor_lr: PositiveFloat = 3e-4  # Adam learning rate of the actor
    critic_lr: PositiveFloat = 3e-4  # Adam learning rate of the critic ensemble
    alpha_lr: PositiveFloat = 3e-4  # Adam learning rate of log α
    hidden: Widths = (256, 256)  # hidden layer widths of the critics
    actor_hidden: Widths | None = None  # hidden layer widths of the actor; None: the same as hidden
    critic_layer_norm: bool = False  # LayerNorm after each hidden layer of the critics (per seed and member)
    actor_layer_norm: bool = False  # LayerNorm after each hidden layer of the actor (per seed)
    batch_size: PositiveInt = 256  # rows drawn per update and seed (with utd > 1: utd slices of batch_size / utd)
    discount: UnitFloat = 0.99  # γ
    tau: Fraction = 0.005  # Polyak coefficient of the target critics (after every critic step)
    num_critics: PositiveInt = 2  # E: critics per seed
    target_reduction: Literal["min", "subset_min", "mean"] = "min"  # how the backup reduces the target critics: min, subset_min or mean
    target_subset: PositiveInt = 2  # members in subset_min's draw
    subset_with_replacement: bool = False  # subset_min draws with replacement (WSRL) or without (REDQ)
    actor_reduction: Literal["min", "mean"] = "min"  # how the actor's loss reduces the critics: min or mean
    deterministic_backup: bool = False  # leave the entropy term -α log π(a'|s') out of the backup
    max_target_backup: bool = False  # back up the best of max_target_actions sampled next actions
    max_target_actions: PositiveInt = 10  # n of the max-target backup
    utd: PositiveInt = 1  # critic steps per update, on disjoint slices of the drawn batch
    actor_first: bool = True  # temperature and actor step before the critics (EDAC/CORL); False: after (WSRL)
    auto_alpha: bool = True  # learn α toward the entropy target; False keeps it at init_alpha
    init_alpha: PositiveFloat = 1.0  # α at the start (log α = 0)
    alpha_max: PositiveFloat | None = None  # clamp α to at most this in every loss (MOBILE: 1.0); None: no clamp
    target_entropy: float | None = None  # H̄; None means -|A|
    log_std_min: float = -20.0  # lower clamp of the actor's log σ
    log_std_max: float = 2.0  # upper clamp of the actor's log σ
    normalize_obs: bool = False  # standardise states with the dataset's statistics


class SACAgent(Agent):
    """Soft actor-critic with E critics per seed; see the module docstring for the losses and the hooks."""

    def __init__(self, spec, config: SACConfig, seeds, device="cpu"):
        super().__init__(spec, config, seeds, device)
        check_config(config)
        c = config
        self.obs_norm = self.build_obs_encoder()  # before the networks, which read what it makes
        self.actor = self.build_actor()
        self.critic = CriticWithTarget(self.build_critic())
        self.log_alpha = nn.Parameter(torch.full((self.num_seeds,), math.log(c.init_alpha)),
                                      requires_grad=c.auto_alpha)
        self.target_entropy = -float(spec.act_dim) if c.target_entropy is None else c.target_entropy
        self.actor_opt = adam(self.actor.parameters(), c.actor_lr)
        self.critic_opt = adam(self.critic.online.parameters(), c.critic_lr)
        if c.auto_alpha:
            self.alpha_opt = adam([self.log_alpha], c.alpha_lr)
        # Stochastic acting draws from its own stream, so acting never shifts the numbers training draws.
        self.act_noise = SeedStreams(seeds, "act")

    # ---- networks: override to change what they read -------------------------------------------------
    def build_actor(self) -> nn.Module:
        c, spec = self.config, self.spec
        return TanhGaussianActor(self.seeds, spec.obs_dim, spec.act_dim, c.actor_hidden or c.hidden,
                                 spec.action_low, spec.action_high, c.log_std_min, c.log_std_max,
                                 layer_norm=c.actor_layer_norm)

    def build_critic(self) -> EnsembleCritic:
        c, spec = self.config, self.spec
        return EnsembleCritic(self.seeds, spec.obs_dim, spec.act_dim, c.hidden, num_members=c.num_critics,
                              layer_norm=c.critic_layer_norm)

    def prepare(self, dataset, cache=None):
        if self.config.normalize_obs:
            self.obs_norm.fit(dataset.observations)

    # ---- pieces of the update -------------------------------------------------------------------
    def normalize(self, batch: dict) -> dict:
        """The batch the losses see: states standardised (identity unless normalize_obs)."""
        return dict(batch, observations=self.obs_norm(batch["observations"]),
                    next_observations=self.obs_norm(batch["next_observations"]))

    def sample(self, obs: torch.Tensor):
        """ã ~ π(s) and log π(ã|s) for obs [S, N, d], with noise from the per-seed training stream."""
        return self.actor(obs, self.noise.normal(obs.shape[1], self.spec.act_dim))

    def alpha(self) -> torch.Tensor:
        """α per seed [S], without gradient, clamped to alpha_max if set."""
        alpha = self.log_alpha.detach().exp()
        return alpha if self.config.alpha_max is None else alpha.clamp(max=self.config.alpha_max)

    def reduce_target(self, q: torch.Tensor) -> torch.Tensor:
        """The target critics' values [S, E, N] -> [S, N] by target_reduction."""
        c = self.config
        return reduce_members(q, c.target_reduction, c.target_subset, self.noise, c.subset_with_replacement)

    def td_target(self, batch: dict) -> torch.Tensor:
        """y [S, B] of the critics' regression (no gradient)."""
        c = self.config
        next_obs = batch["next_observations"]
        with torch.no_grad():
            if c.max_target_backup:
                S, B, n = next_obs.shape[0], next_obs.shape[1], c.max_target_actions
                rep = next_obs.repeat_interleave(n, dim=1)  # state k in rows k·n ... k·n + n - 1
                next_a, next_log_pi = self.sample(rep)
                target_q, best = self.reduce_target(self.critic.target(rep, next_a)).view(S, B, n).max(-1)
                next_log_pi = next_log_pi.view(S, B, n).gather(-1, best.unsqueeze(-1)).squeeze(-1)
            else:
                next_a, next_log_pi = self.sample(next_obs)
                target_q = self.reduce_target(self.critic.target(next_obs, next_a))
            if not c.deterministic_backup:
                target_q = target_q - self.alpha()[:, None] * next_log_pi
            return batch["rewards"] + c.discount * (1.0 - batch["dones"]) * target_q

    def critic_loss(self, batch: dict) -> tuple[torch.Tensor, dict]:
        """Per-seed loss [S] of one critic step, and its metrics."""
        y = self.td_target(batch)
        q = self.critic(batch["observations"], batch["actions"])  # [S, E, B]
        loss = (q - y.unsqueeze(1)).pow(2).mean(-1).sum(1)  # per seed, summed over members
        metrics = {"critic_loss": loss.detach(), "q_mean": q.detach().mean((1, 2))}
        if q.shape[1] > 1:
            metrics["q_std"] = q.detach().std(1).mean(-1)  # ensemble disagreement on dataset actions
        return loss, metrics

    def actor_loss(self, obs: torch.Tensor, pi: torch.Tensor, log_pi: torch.Tensor,
                   alpha: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Per-seed loss [S] of the actor for actions pi ~ π(obs) with log-probabilities log_pi."""
        q = self.critic.online.frozen(obs, pi)  # [S, E, B]; no critic weight gradients
        q_pi = q.min(dim=1).values if self.config.actor_reduction == "min" else q.mean(dim=1)
        loss = (alpha[:, None] * log_pi - q_pi).mean(-1)
        return loss, {"actor_loss": loss.detach(), "entropy": -log_pi.detach().mean(-1)}

    def temperature_loss(self, log_pi: torch.Tensor) -> torch.Tensor:
        """Per-seed loss [S] of log α, for log-probabilities log_pi [S, B] of fresh policy samples."""
        return -self.log_alpha * (log_pi.detach() + self.target_entropy).mean(-1)

    # ---- the update -----------------------------------------------------------------------------
    def policy_step(self, batch: dict) -> dict:
        """One temperature step, then one actor step under the new α, on the same policy sample."""
        obs = batch["observations"]
        pi, log_pi = self.sample(obs)
        metrics = {}
        if self.config.auto_alpha:
            alpha_loss = self.temperature_loss(log_pi)
            gradient_step(self.alpha_opt, alpha_loss)
            metrics["alpha_loss"] = alpha_loss.detach()
        alpha = self.alpha()
        actor_loss, actor_metrics = self.actor_loss(obs, pi, log_pi, alpha)
        gradient_step(self.actor_opt, actor_loss)
        return {**metrics, **actor_metrics, "alpha": alpha}

    def critic_step(self, batch: dict) -> dict:
        loss, metrics = self.critic_loss(batch)
        gradient_step(self.critic_opt, loss)
        self.critic.update_target(self.config.tau)
        return metrics

    def update(self, batch, step):
        c = self.config
        batch = self.normalize(batch)
        metrics = self.policy_step(batch) if c.actor_first else {}
        critic_metrics: dict = {}
        for i in range(c.utd):  # disjoint slices of the one drawn batch
            part = {k: v.chunk(c.utd, dim=1)[i] for k, v in batch.items()}
            for k, v in self.critic_step(part).items():
                critic_metrics[k] = critic_metrics.get(k, 0.0) + v / c.utd
        metrics.update(critic_metrics)
        if not c.actor_first:
            metrics.update(self.policy_step(batch))
        return metrics

    @torch.no_grad()
    def act(self, obs, deterministic=True):
        obs = self.obs_norm(obs)
        noise = None if deterministic else self.act_noise.normal(*obs.shape[1:-1], self.spec.act_dim)
        return self.actor(obs, noise)[0]


@dataclass
class CQLCandidates:
    """CQL's out-of-data action samples for a batch: n per state and proposal, state k of the batch in rows
    k·n ... k·n + n - 1 of every [S, B·n, ...] tensor."""
    obs: torch.Tensor  # the states repeated: [S, B·n, d]
    uniform: torch.Tensor  # uniform in the action box
    uniform_log_density: torch.Tensor  # their log density (a scalar)
    current: torch.Tensor  # ã ~ π(s)
    current_log_pi: torch.Tensor
    following: torch.Tensor  # ã ~ π(s'), scored at s
    following_log_pi: torch.Tensor


@torch.no_grad()
def cql_candidates(agent, obs: torch.Tensor, next_obs: torch.Tensor, n: int) -> CQLCandidates:
    """The candidates of CQL's logsumexp (CQL and Cal-QL) from `agent.sample` and its actor's action box. The
    draws come in one order (uniform, then π(s), then π(s')) from the agent's training stream."""
    B, A = obs.shape[1], agent.spec.act_dim
    obs_rep, next_obs_rep = obs.repeat_interleave(n, dim=1), next_obs.repeat_interleave(n, dim=1)
    scale, center = agent.actor.scaler.scale, agent.actor.scaler.center
    uniform = center + scale * (2.0 * agent.noise.uniform(B * n, A) - 1.0)
    current, current_log_pi = agent.sample(obs_rep)
    following, following_log_pi = agent.sample(next_obs_rep)
    return CQLCandidates(obs_rep, uniform, -torch.log(2.0 * scale).sum(), current, current_log_pi, following,
                         following_log_pi)


def check_config(c: SACConfig) -> None:
    """One clear line for a combination of settings the update cannot run with (each field checks its own range)."""
    if c.target_reduction == "subset_min":
        most = c.target_subset if c.subset_with_replacement else c.num_critics  # with replacement: any size
        if not 1 <= c.target_subset <= most:
            raise OfflineRLError(f"target_subset must be between 1 and num_critics ({c.num_critics}) when drawn "
                                 f"without replacement, got {c.target_subset}")
    if c.batch_size % c.utd:
        raise OfflineRLError(f"utd must be a positive divisor of batch_size ({c.batch_size}), got {c.utd}")


__all__ = ["SACConfig", "SACAgent", "CQLCandidates", "cql_candidates", "check_config"]
