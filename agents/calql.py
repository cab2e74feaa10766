"""Cal-QL — Nakamoto, Zhai, Singh, Sobol Mark, Ma, Finn, Kumar & Levine, "Cal-QL: Calibrated Offline RL
Pre-Training for Efficient Online Fine-Tuning", NeurIPS 2023, arXiv 2303.05479.

CQL pushes Q down on policy actions until it under-estimates them, often far below what the data's own
behaviour earned; fine-tuning online then first spends its steps un-learning that pessimism. Cal-QL bounds
the push: a policy action's Q in the conservative term is never taken below the Monte-Carlo return-to-go G of
the dataset trajectory through s, so the learned Q stays conservative but calibrated (≥ the data's value).

    critic: L_Q = Σ_i mean (Q_i(s, a) - y)² + Σ_{i ∈ I} w · gap_i      (SAC's backup, offrl/sac.py)
            gap_i = mean_s [T logsumexp_j (c_ij / T)] - mean Q_i(s, a),  over 3n candidates per state:
                    Q_i(s, u) - log U(u),                u uniform in the action box
                    max(Q_i(s, ã), G) - log π(ã|s),      ã ~ π(s)
                    max(Q_i(s, ã'), G) - log π(ã'|s'),   ã' ~ π(s')      (the max is Cal-QL's; CQL has none)
            Lagrange (lagrange=True): w·gap_i → α'(w·gap_i - κ), L_α' = -½ Σ_i α'(w·gap_i - κ), α' = e^{log α'}
    actor, temperature: SAC's (min over all critics; α toward -|A|).
    I: all critics, or `cql_members` drawn per seed and update (WSRL trains 2 of its 10 critics this way).

Online it fine-tunes with the same loss on batches of half dataset rows and half online rows; an online
episode's rows enter the buffer when it ends, with their return-to-go (offrl/online.py).

Defaults (`nakamotoo/Cal-QL` JaxCQL/conservative_sac.py and scripts/run_antmaze.sh): CQL weight 5.0 with
importance sampling, n = 10 candidates per proposal, T = 1, max-target backup over 10 next actions without the
entropy term, 2 critics of 4×256 and an actor of 2×256, policy and α lr 1e-4, critic lr 3e-4, batch 256, γ 0.99,
τ 5e-3, H̄ = -|A|, online 50/50 mixing with one update per env step. The AntMaze script adds the Lagrange form
(`--set lagrange=true --set target_action_gap=0.8`) and rewards ×10 − 5 (`reward_scale`, `reward_shift`,
which also set the units of G). Deviations: offrl's initialisation (nn.Linear's, per seed) instead of the
orthogonal one; one actor output layer for mean and log σ; the losses step one after another (temperature,
actor, then critics: offrl's SAC order) rather than from one set of parameters; Cal-QL's online loop collects
one trajectory per epoch, offrl one env step per update; noise from offrl's per-seed streams.

On the pointmass toy, `family_defaults` (TOY) use 32×32 networks and 4 candidate and backup actions, so a toy
run takes minutes on a CPU instead of about an hour.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from offrl.config import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, UnitFloat, Widths
from offrl.online import OnlineConfig
from offrl.optim import adam, gradient_step
from offrl.registry import register_agent
from offrl.sac import SACAgent, SACConfig, cql_candidates


@dataclass
class Config(SACConfig, OnlineConfig):
    actor_lr: PositiveFloat = 1e-4  # Adam learning rate of the actor (Cal-QL policy_lr)
    critic_lr: PositiveFloat = 3e-4  # Adam learning rate of the critics (Cal-QL qf_lr)
    alpha_lr: PositiveFloat = 1e-4  # Adam learning rate of log α (Cal-QL: the policy lr)
    hidden: Widths = (256, 256, 256, 256)  # critic widths (Cal-QL AntMaze: 4×256)
    actor_hidden: Widths | None = (256, 256)  # actor widths (2×256)
    deterministic_backup: bool = True  # no entropy term in the backup (backup_entropy False)
    max_target_backup: bool = True  # the max over 10 sampled next actions (cql_max_target_backup)
    n_actions: PositiveInt = 10  # candidate actions per state and proposal (cql_n_actions)
    temperature: PositiveFloat = 1.0  # T of the logsumexp (cql_temp)
    cql_weight: NonNegativeFloat = 5.0  # w (cql_min_q_weight)
    lagrange: bool = False  # learn a per-seed α' holding w·gap near target_action_gap (the AntMaze recipe)
    target_action_gap: float = 0.8  # κ (cql_target_action_gap of the AntMaze script)
    alpha_prime_lr: PositiveFloat = 3e-4  # Adam learning rate of log α' (the critic lr)
    calql_bound: bool = True  # clip the policy candidates below at G; False is plain CQL
    cql_members: PositiveInt | None = None  # critics that get the conservative term, drawn per update; None: all
    reward_scale: float = 1.0  # r' = reward_scale·r + reward_shift, for the backup and for G
    reward_shift: float = 0.0
    offline_ratio: UnitFloat = 0.5  # online batches: half dataset rows, half online rows (Cal-QL's mixing)
    online_batch_size: PositiveInt = 256  # rows per online update
    warmup_steps: NonNegativeInt = 0  # Cal-QL starts updating as soon as its buffer holds whole episodes


# The toy task's sizes: with the recipe's networks and 10 candidate actions a pointmass run of 5,000 updates
# and 10,000 env steps takes close to an hour on a shared CPU; these keep it within minutes.
TOY = {"hidden": (32, 32), "actor_hidden": (32, 32), "n_actions": 4, "max_target_actions": 4}


class CalQL(SACAgent):
    extras = ("mc_return",)

    def __init__(self, spec, config: Config, seeds, device="cpu"):
        super().__init__(spec, config, seeds, device)
        self.conservative = True  # WSRL switches it off for its online phase
        if config.lagrange:
            self.log_alpha_prime = nn.Parameter(torch.zeros(self.num_seeds))
            self.alpha_prime_opt = adam([self.log_alpha_prime], config.alpha_prime_lr)

    def normalize(self, batch: dict) -> dict:
        c = self.config
        batch = super().normalize(batch)
        return dict(batch, rewards=c.reward_scale * batch["rewards"] + c.reward_shift)

    def member_q(self, picks: torch.Tensor | None, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Q of the critics `picks` [S, m] (all if None) at (obs, action) [S, N, ·]: [S, m, N]. Only the picked
        members are computed, on the many candidate rows."""
        if picks is None:
            return self.critic(obs, action)
        net = self.critic.online.net
        params = {k: torch.gather(v, 1, picks.view(*picks.shape, *([1] * (v.dim() - 2))).expand(-1, -1, *v.shape[2:]))
                  for k, v in net.named_parameters()}
        x = torch.cat([obs, action], dim=-1).unsqueeze(1)
        return torch.func.functional_call(net, params, (x,)).squeeze(-1)

    def critic_loss(self, batch: dict):
        loss, metrics = super().critic_loss(batch)
        if not self.conservative:
            return loss, metrics
        c = self.config
        obs, next_obs, actions = batch["observations"], batch["next_observations"], batch["actions"]
        S, B, n = obs.shape[0], obs.shape[1], c.n_actions
        picks = None
        if c.cql_members is not None:
            picks = self.noise.randint(c.num_critics, c.cql_members)  # [S, m], with replacement (WSRL)
        k = cql_candidates(self, obs, next_obs, n)
        q_data = self.member_q(picks, obs, actions)  # [S, m, B]
        q_cur = self.member_q(picks, k.obs, k.current)  # [S, m, B·n]
        q_nxt = self.member_q(picks, k.obs, k.following)
        if c.calql_bound:
            bound = batch["mc_return"].repeat_interleave(n, dim=1)[:, None]  # G of the state's data row
            metrics["calql_bound_rate"] = ((q_cur < bound).float().mean((1, 2)) + (q_nxt < bound).float().mean((1, 2))) / 2
            q_cur, q_nxt = torch.maximum(q_cur, bound), torch.maximum(q_nxt, bound)
        cand = torch.stack([self.member_q(picks, k.obs, k.uniform) - k.uniform_log_density,
                            q_cur - k.current_log_pi[:, None], q_nxt - k.following_log_pi[:, None]], dim=-1)  # [S, m, B·n, 3]
        m = cand.shape[1]
        lse = torch.logsumexp(cand.view(S, m, B, n * 3) / c.temperature, dim=-1)  # [S, m, B]
        gap = c.temperature * lse.mean(-1) - q_data.mean(-1)  # [S, m]
        if c.lagrange:
            alpha_prime = self.log_alpha_prime.exp().clamp(0.0, 1e6)  # [S]
            excess = c.cql_weight * gap - c.target_action_gap
            gradient_step(self.alpha_prime_opt, -0.5 * (alpha_prime[:, None] * excess.detach()).sum(1))
            conservative = (alpha_prime.detach()[:, None] * excess).sum(1)
            metrics["alpha_prime"] = alpha_prime.detach()
        else:
            conservative = c.cql_weight * gap.sum(1)
        metrics["cql_gap"] = gap.detach().mean(1)
        return loss + conservative, metrics


register_agent("calql", CalQL, Config, paper="Nakamoto et al., NeurIPS 2023 (arXiv 2303.05479)",
               family="model-free, value regularisation, offline-to-online", base="cql",
               phases=("offline", "online"),
               family_defaults={"pointmass": TOY})
