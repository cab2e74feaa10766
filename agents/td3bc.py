"""TD3+BC — Fujimoto & Gu, "A Minimalist Approach to Offline Reinforcement Learning", NeurIPS 2021,
arXiv 2106.06860.

TD3 with a behaviour-cloning term in the actor loss and normalised states: the policy maximises Q while
staying close to the dataset's action.

    critic:  y = r + γ (1 - d) min_i Q'_i(s', clip(π'(s') + clip(ε, -c, c), a_low, a_high)),  ε ~ N(0, σ²)
             L_Q = Σ_i mean (Q_i(s, a) - y)²
    actor (every `policy_freq` steps):
             λ = α / mean|Q_1(s, π(s))|   (no gradient)
             L_π = -λ mean Q_1(s, π(s)) + mean (π(s) - a_bc)²,   a_bc = a (the dataset action)
    targets: Polyak averaging with τ, after each actor step.

States are standardised with the dataset's mean and std (+1e-3). `bc_target` is the one hook PRDC
overrides. Deviations from the official code: none in the losses; noise comes from offrl's per-seed
streams instead of torch's global generator.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from offrl.agent import Agent
from offrl.config import Fraction, NonNegativeFloat, PositiveFloat, PositiveInt, UnitFloat, Widths
from offrl.critics import CriticWithTarget, EnsembleCritic
from offrl.nets import DeterministicActor, ObsNormalizer, soft_update
from offrl.optim import adam, gradient_step
from offrl.registry import register_agent


@dataclass
class Config:
    actor_lr: PositiveFloat = 3e-4  # Adam learning rate of the actor
    critic_lr: PositiveFloat = 3e-4  # Adam learning rate of the two critics
    hidden: Widths = (256, 256)  # hidden layer widths of actor and critics
    batch_size: PositiveInt = 256  # transitions per update and seed
    discount: UnitFloat = 0.99  # γ
    tau: Fraction = 0.005  # Polyak coefficient of the target networks
    policy_noise: NonNegativeFloat = 0.2  # σ of target policy smoothing, as a fraction of the action range
    noise_clip: NonNegativeFloat = 0.5  # clip of the smoothing noise, as a fraction of the action range
    policy_freq: PositiveInt = 2  # one actor (and target) update every policy_freq critic updates
    alpha: NonNegativeFloat = 2.5  # α: weight of the Q term against the BC term
    normalize_obs: bool = True  # standardise states with the dataset's statistics


class TD3BC(Agent):
    def __init__(self, spec, config: Config, seeds, device="cpu"):
        super().__init__(spec, config, seeds, device)
        c = config
        self.obs_norm = ObsNormalizer(spec.obs_dim)
        self.actor = self.build_actor()
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic = CriticWithTarget(self.build_critic())
        self.actor_opt = adam(self.actor.parameters(), c.actor_lr)
        self.critic_opt = adam(self.critic.online.parameters(), c.critic_lr)

    # Network construction: an agent that changes what the networks read overrides these and keeps the
    # interfaces (the actor's `scaler`; the critic's (obs, action) -> [S, 2, B] and `frozen`).
    def build_actor(self) -> DeterministicActor:
        """π(s); its target copy is made from it."""
        s = self.spec
        return DeterministicActor(self.seeds, s.obs_dim, s.act_dim, self.config.hidden, s.action_low, s.action_high)

    def build_critic(self) -> EnsembleCritic:
        """Q_1, Q_2(s, a); the target copies are made from it."""
        return EnsembleCritic(self.seeds, self.spec.obs_dim, self.spec.act_dim, self.config.hidden, num_members=2)

    def prepare(self, dataset, cache=None):
        if self.config.normalize_obs:
            self.obs_norm.fit(dataset.observations)

    def bc_target(self, obs: torch.Tensor, actions: torch.Tensor, pi: torch.Tensor) -> torch.Tensor:
        """The action the actor is pulled toward: the dataset action of the same state."""
        return actions

    def update(self, batch, step):
        c = self.config
        obs, next_obs = self.obs_norm(batch["observations"]), self.obs_norm(batch["next_observations"])
        actions, rewards, dones = batch["actions"], batch["rewards"], batch["dones"]
        scale = self.actor.scaler.scale

        with torch.no_grad():
            noise = (self.noise.normal(*actions.shape[1:]) * c.policy_noise).clamp(-c.noise_clip, c.noise_clip)
            low, high = self.actor.scaler.center - scale, self.actor.scaler.center + scale
            next_actions = torch.clamp(self.actor_target(next_obs) + noise * scale, low, high)
            target_q = self.critic.target(next_obs, next_actions).min(dim=1).values  # [S, B]
            y = rewards + c.discount * (1.0 - dones) * target_q
        q = self.critic(obs, actions)  # [S, 2, B]
        critic_loss = (q - y.unsqueeze(1)).pow(2).mean(-1).sum(1)  # [S]: per seed, summed over members
        gradient_step(self.critic_opt, critic_loss)
        metrics = {"critic_loss": critic_loss.detach(), "q_mean": q.detach().mean((1, 2))}

        if step % c.policy_freq == 0:
            pi = self.actor(obs)
            q_pi = self.critic.online.frozen(obs, pi, member=0)[:, 0]  # Q_1 only, [S, B]
            lam = c.alpha / q_pi.abs().mean(-1).detach()  # [S]
            bc = (pi - self.bc_target(obs, actions, pi)).pow(2).mean((-1, -2))  # [S]
            actor_loss = -lam * q_pi.mean(-1) + bc
            gradient_step(self.actor_opt, actor_loss)
            self.critic.update_target(c.tau)
            soft_update(self.actor_target, self.actor, c.tau)
            metrics.update(actor_loss=actor_loss.detach(), bc_loss=bc.detach(), lambda_=lam)
        return metrics

    @torch.no_grad()
    def act(self, obs, deterministic=True):
        return self.actor(self.obs_norm(obs))


register_agent("td3bc", TD3BC, Config, paper="Fujimoto & Gu, NeurIPS 2021 (arXiv 2106.06860)",
               family="model-free, policy constraint")
