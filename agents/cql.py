"""CQL — Kumar, Zhou, Tucker & Levine, "Conservative Q-Learning for Offline Reinforcement Learning",
NeurIPS 2020, arXiv 2006.04779. CQL(H) with importance sampling on SAC (the official `min_q_version=3`).

Push Q down on actions the policy and a uniform proposal would pick, and up on the dataset's actions, so
the learned Q lower-bounds the policy's value where the data says nothing.

    actor:   L_π = mean α log π(ã|s) - min_i Q_i(s, ã),  ã ~ π(s)
    α (SAC): L_α = -mean log α · (log π(ã|s) + H̄),  H̄ = -|A|          (α per seed, [S])
    critic:  y = r + γ (1 - d) (min_i Q'_i(s', a') [- α log π(a'|s') unless deterministic_backup]),  a' ~ π(s')
             L_Q = Σ_i mean (Q_i(s, a) - y)² + α' (w · gap_i - κ_lagrange)
             gap_i = mean_s [ T logsumexp_j (c_ij / T) ] - mean Q_i(s, a)
    candidates c_ij, j over 3·n per state (n = n_actions):
             Q_i(s, u_k) - log U(u_k),  u_k uniform in the action box
             Q_i(s, a_k) - log π(a_k|s),   a_k ~ π(s)
             Q_i(s, a'_k) - log π(a'_k|s'), a'_k ~ π(s')   (sampled at s', evaluated at s)
    fixed weight (lagrange=False): α' = 1, w = cql_weight, κ = 0.
    Lagrange (lagrange=True): α' = clamp(exp(log α'), 0, 1e6) per seed, κ = target_action_gap,
             L_α' = -½ Σ_i α' (w · gap_i - κ)   (gap detached; α' detached in L_Q).

`offrlkit_quirk=True` is the variant of OfflineRL-Kit (`yihaosun1124/OfflineRL-Kit`, policy/model_free/cql.py)
that COCOA inherits: a discarded reshape makes its logsumexp run over the 3 candidates of each (state, k)
row instead of over all 3·n candidates of a state, a weaker regulariser. With the other defaults (which are OfflineRL-Kit's), `--set offrlkit_quirk=true` reproduces
COCOA's base-CQL numbers; the flag is saved in the run's config and enters its results row's config hash.

Defaults and where they come from: 3×256 networks, critic lr 3e-4, policy lr 1e-4, α lr = policy lr,
n_actions 10, temperature 1, backup without the entropy term, no Lagrange with a fixed weight of 5.0 — the
official README's Gym-MuJoCo recipe (`aviralkumar2907/CQL`: `--policy_lr=1e-4 --lagrange_thresh=-1.0
--min_q_weight=5.0` [or 10.0], `--deterministic_backup=True`, layer_size 256 × 3 in examples/cql_mujoco_new.py),
the same values as OfflineRL-Kit's run_cql.py. CORL uses policy lr 3e-5 and weight 10. Lagrange: log α' starts
at 0 with lr = critic lr and κ = 5.0 (the official script's defaults; OfflineRL-Kit: κ = 10). The official
script runs the Lagrange variant with min_q_weight 1.0 (its argparse default): for a flat Q the gap is about
log n + |A| log 2 (the log-densities), so with w = 5 and κ = 5 the multiplier mostly grows; use
`--set lagrange=true --set cql_weight=1.0` for the official pairing. Deviations from the official code: its 40 000
initial behaviour-cloning actor steps (`policy_eval_start`; its own comment says they make little
difference; CORL and OfflineRL-Kit use none) are `bc_steps`, default 0; actor, α and critic step in that
order within one update (OfflineRL-Kit's order), so the backup samples a' from the just-updated actor;
noise comes from offrl's per-seed streams.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from offrl.agent import Agent
from offrl.config import Fraction, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, UnitFloat, Widths
from offrl.critics import CriticWithTarget, EnsembleCritic
from offrl.nets import TanhGaussianActor
from offrl.optim import adam, gradient_step
from offrl.registry import register_agent
from offrl.rng import SeedStreams
from offrl.sac import cql_candidates


@dataclass
class Config:
    actor_lr: PositiveFloat = 1e-4  # Adam learning rate of the actor (official README for Gym-MuJoCo)
    critic_lr: PositiveFloat = 3e-4  # Adam learning rate of the two critics
    alpha_lr: PositiveFloat = 1e-4  # Adam learning rate of SAC's log α (the official code uses the policy lr)
    hidden: Widths = (256, 256, 256)  # hidden layer widths of actor and critics
    batch_size: PositiveInt = 256  # transitions per update and seed
    discount: UnitFloat = 0.99  # γ
    tau: Fraction = 0.005  # Polyak coefficient of the target critics
    target_entropy: float | None = None  # SAC's entropy target H̄; None means -|A|
    deterministic_backup: bool = True  # leave the entropy term out of the backup (official MuJoCo setting)
    n_actions: PositiveInt = 10  # candidate actions per state and proposal (uniform, π(s), π(s'))
    temperature: PositiveFloat = 1.0  # T of the logsumexp
    cql_weight: NonNegativeFloat = 5.0  # w: weight of the conservative gap (README: 5.0 or 10.0)
    lagrange: bool = False  # learn a per-seed α' that holds w·gap near target_action_gap
    target_action_gap: float = 5.0  # κ of the Lagrange variant
    alpha_prime_lr: PositiveFloat = 3e-4  # Adam learning rate of log α' (the official code uses the critic lr)
    offrlkit_quirk: bool = False  # logsumexp over 3 values per row, as OfflineRL-Kit/COCOA
    bc_steps: NonNegativeInt = 0  # initial actor steps of behaviour cloning (official script: 40 000)
    normalize_obs: bool = False  # standardise states (the official code does not; CORL does)


class CQL(Agent):
    def __init__(self, spec, config: Config, seeds, device="cpu"):
        super().__init__(spec, config, seeds, device)
        c = config
        self.obs_norm = self.build_obs_encoder()  # before the networks, which read what it makes
        self.actor = self.build_actor()
        self.critic = CriticWithTarget(self.build_critic())
        self.log_alpha = nn.Parameter(torch.zeros(self.num_seeds))
        self.target_entropy = -float(spec.act_dim) if c.target_entropy is None else c.target_entropy
        self.actor_opt = adam(self.actor.parameters(), c.actor_lr)
        self.critic_opt = adam(self.critic.online.parameters(), c.critic_lr)
        self.alpha_opt = adam([self.log_alpha], c.alpha_lr)
        if c.lagrange:
            self.log_alpha_prime = nn.Parameter(torch.zeros(self.num_seeds))
            self.alpha_prime_opt = adam([self.log_alpha_prime], c.alpha_prime_lr)
        # Stochastic acting draws from its own stream, so acting never shifts the numbers training draws.
        self.act_noise = SeedStreams(seeds, "act")

    # Network construction: an agent that changes what the networks read overrides these and keeps the
    # interfaces (TanhGaussianActor's; the critic's (obs, action) -> [S, 2, B] and `frozen`).
    def build_actor(self) -> TanhGaussianActor:
        """π(a|s)."""
        s = self.spec
        return TanhGaussianActor(self.seeds, s.obs_dim, s.act_dim, self.config.hidden, s.action_low, s.action_high)

    def build_critic(self) -> EnsembleCritic:
        """Q_1, Q_2(s, a); the target copies are made from it."""
        return EnsembleCritic(self.seeds, self.spec.obs_dim, self.spec.act_dim, self.config.hidden, num_members=2)

    def prepare(self, dataset, cache=None):
        if self.config.normalize_obs:
            self.obs_norm.fit(dataset.observations)

    def sample(self, obs: torch.Tensor):
        """ã ~ π(s) and log π(ã|s) for obs [S, N, d], with noise from the per-seed training stream."""
        return self.actor(obs, self.noise.normal(obs.shape[1], self.spec.act_dim))

    def update(self, batch, step):
        c = self.config
        obs, next_obs = self.obs_norm(batch["observations"]), self.obs_norm(batch["next_observations"])
        actions, rewards, dones = batch["actions"], batch["rewards"], batch["dones"]
        S, B, n = obs.shape[0], obs.shape[1], c.n_actions

        # Actor, then SAC's temperature.
        alpha = self.log_alpha.exp().detach()  # [S]
        pi, log_pi = self.sample(obs)
        if step <= c.bc_steps:
            actor_loss = (alpha[:, None] * log_pi - self.actor.log_prob(obs, actions)).mean(-1)
        else:
            q_pi = self.critic.online.frozen(obs, pi).min(dim=1).values  # [S, B]; no critic weight gradients
            actor_loss = (alpha[:, None] * log_pi - q_pi).mean(-1)  # [S]
        gradient_step(self.actor_opt, actor_loss)
        alpha_loss = -self.log_alpha * (log_pi.detach() + self.target_entropy).mean(-1)  # [S]
        gradient_step(self.alpha_opt, alpha_loss)

        with torch.no_grad():
            next_pi, next_log_pi = self.sample(next_obs)
            target_q = self.critic.target(next_obs, next_pi).min(dim=1).values  # [S, B]
            if not c.deterministic_backup:
                target_q = target_q - self.log_alpha.exp()[:, None] * next_log_pi
            y = rewards + c.discount * (1.0 - dones) * target_q
        k = cql_candidates(self, obs, next_obs, n)
        q = self.critic(obs, actions)  # [S, 2, B]
        cand = torch.stack([self.critic(k.obs, k.uniform) - k.uniform_log_density,
                            self.critic(k.obs, k.current) - k.current_log_pi[:, None],
                            self.critic(k.obs, k.following) - k.following_log_pi[:, None]], dim=-1)  # [S, 2, B·n, 3]
        if c.offrlkit_quirk:  # OfflineRL-Kit: logsumexp over the 3 proposals of each row, mean over B·n rows
            lse = torch.logsumexp(cand / c.temperature, dim=-1)  # [S, 2, B·n]
        else:  # textbook CQL(H): logsumexp over all 3·n candidates of each state
            lse = torch.logsumexp(cand.view(S, -1, B, n * 3) / c.temperature, dim=-1)  # [S, 2, B]
        gap = c.temperature * lse.mean(-1) - q.mean(-1)  # [S, 2]
        if c.lagrange:
            alpha_prime = self.log_alpha_prime.exp().clamp(0.0, 1e6)  # [S]
            excess = c.cql_weight * gap - c.target_action_gap  # [S, 2]
            alpha_prime_loss = -0.5 * (alpha_prime[:, None] * excess.detach()).sum(1)  # [S]
            gradient_step(self.alpha_prime_opt, alpha_prime_loss)
            conservative = (alpha_prime.detach()[:, None] * excess).sum(1)  # [S]
        else:
            alpha_prime = torch.ones(S, device=q.device)
            conservative = c.cql_weight * gap.sum(1)  # [S]
        td_loss = (q - y.unsqueeze(1)).pow(2).mean(-1).sum(1)  # [S]: per seed, summed over members
        critic_loss = td_loss + conservative
        gradient_step(self.critic_opt, critic_loss)
        self.critic.update_target(c.tau)

        return {"critic_loss": critic_loss.detach(), "td_loss": td_loss.detach(), "cql_gap": gap.detach().mean(1),
                "actor_loss": actor_loss.detach(), "alpha": alpha, "alpha_loss": alpha_loss.detach(),
                "alpha_prime": alpha_prime.detach(), "entropy": -log_pi.detach().mean(-1),
                "q_mean": q.detach().mean((1, 2))}

    @torch.no_grad()
    def act(self, obs, deterministic=True):
        obs = self.obs_norm(obs)
        noise = None if deterministic else self.act_noise.normal(*obs.shape[1:-1], self.spec.act_dim)
        return self.actor(obs, noise)[0]


register_agent("cql", CQL, Config, paper="Kumar, Zhou, Tucker & Levine, NeurIPS 2020 (arXiv 2006.04779)",
               family="model-free, value regularisation")
