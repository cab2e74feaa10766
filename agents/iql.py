"""IQL — Kostrikov, Nair & Levine, "Offline Reinforcement Learning with Implicit Q-Learning", ICLR 2022,
arXiv 2110.06169.

Never query the critic at actions outside the dataset: fit V(s) as an upper expectile of Q(s, a) over the
dataset's actions, back Q up through V(s'), and extract the policy by advantage-weighted regression.

    value:   L_V = mean |τ - 1(u < 0)| u²,   u = min_i Q'_i(s, a) - V(s)         (Q' = target critics)
    critic:  L_Q = Σ_i mean (Q_i(s, a) - y)²,   y = r̃ + γ (1 - d) V(s')
    actor:   L_π = -mean min(exp(β (min_i Q'_i(s, a) - V(s))), 100) · log π(a|s)   (weights without gradient)
    targets: Polyak averaging with `tau` after every step.

Update order as in the official code: V first, then the actor and Q with the new V, then the targets.
r̃ = k·r with k = 1000 / (max episode return - min episode return) over the dataset's episodes (the
official MuJoCo recipe; `reward_scale_by_return_range`), k kept as a buffer so a checkpoint carries it.
The policy is N(scale(tanh(MLP(s))), exp(log_std)) with a state-independent log_std; the actor's learning
rate at update t + 1 is lr·½(1 + cos(π t / T)) over the run's T = `total_steps` updates (the official code's
optax cosine_decay_schedule over its `max_steps`, the run's length). The deterministic action is the
Gaussian's mean.

Defaults are the official MuJoCo config (`ikostrikov/implicit_q_learning`, configs/mujoco_config.py and
learner.py: log-std floor -5, cosine actor schedule; the same values in OfflineRL-Kit's run_iql.py).
Deviations from the official code: the reward scale is applied to every dataset when the flag is on (the
official code does it for the MuJoCo locomotion tasks only and subtracts 1 on AntMaze: turn the flag off
there); weights are initialised like nn.Linear instead of flax's default; no actor dropout (the official
MuJoCo config has none).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from offrl.agent import Agent
from offrl.config import Fraction, NonNegativeFloat, OpenUnitFloat, PositiveFloat, PositiveInt, UnitFloat, Widths
from offrl.critics import CriticWithTarget, EnsembleCritic
from offrl.nets import GaussianActor
from offrl.optim import adam, cosine_annealing, gradient_step
from offrl.registry import register_agent
from offrl.rng import SeedStreams


@dataclass
class Config:
    actor_lr: PositiveFloat = 3e-4  # Adam learning rate of the actor, decayed to 0 by a cosine over the run
    critic_lr: PositiveFloat = 3e-4  # Adam learning rate of the two Q critics
    value_lr: PositiveFloat = 3e-4  # Adam learning rate of V
    hidden: Widths = (256, 256)  # hidden layer widths of actor, critics and V
    batch_size: PositiveInt = 256  # transitions per update and seed
    discount: UnitFloat = 0.99  # γ
    tau: Fraction = 0.005  # Polyak coefficient of the target critics
    expectile: OpenUnitFloat = 0.7  # τ of the expectile loss: 0.5 is the mean, → 1 the max over dataset actions
    beta: NonNegativeFloat = 3.0  # β: inverse temperature of the advantage weights
    max_weight: PositiveFloat = 100.0  # clip of exp(β A), for numerical stability
    cosine_lr: bool = True  # cosine decay of the actor's learning rate over `total_steps`
    reward_scale_by_return_range: bool = True  # r *= 1000 / (max - min episode return) (MuJoCo recipe)
    normalize_obs: bool = False  # standardise states (the official code does not; CORL does)


class IQL(Agent):
    def __init__(self, spec, config: Config, seeds, device="cpu"):
        super().__init__(spec, config, seeds, device)
        c = config
        self.obs_norm = self.build_obs_encoder()  # before the networks, which read what it makes
        self.actor = self.build_actor()
        self.critic = CriticWithTarget(self.build_critic())
        self.value = self.build_value()
        self.register_buffer("reward_scale", torch.ones(()))
        # Stochastic acting draws from its own stream, so acting never shifts the numbers training draws.
        self.act_noise = SeedStreams(seeds, "act")
        self.actor_opt = adam(self.actor.parameters(), c.actor_lr)
        self.critic_opt = adam(self.critic.online.parameters(), c.critic_lr)
        self.value_opt = adam(self.value.parameters(), c.value_lr)

    # Network construction: an agent that changes what the networks read overrides these and keeps the
    # interfaces (GaussianActor's; the critics' (obs[, action]) -> [S, E, B]).
    def build_actor(self) -> GaussianActor:
        """π(a|s)."""
        s = self.spec
        return GaussianActor(self.seeds, s.obs_dim, s.act_dim, self.config.hidden, s.action_low, s.action_high)

    def build_critic(self) -> EnsembleCritic:
        """Q_1, Q_2(s, a); the target copies are made from it."""
        return EnsembleCritic(self.seeds, self.spec.obs_dim, self.spec.act_dim, self.config.hidden, num_members=2)

    def build_value(self) -> EnsembleCritic:
        """V(s): one member, no action."""
        return EnsembleCritic(self.seeds, self.spec.obs_dim, 0, self.config.hidden, num_members=1, tag="value")

    def prepare(self, dataset, cache=None):
        if self.config.normalize_obs:
            self.obs_norm.fit(dataset.observations)
        if self.config.reward_scale_by_return_range:
            returns = dataset.episode_returns()
            spread = float(returns.max() - returns.min())
            self.reward_scale.fill_(1000.0 / spread if spread > 0 else 1.0)

    def update(self, batch, step):
        c = self.config
        obs, next_obs = self.obs_norm(batch["observations"]), self.obs_norm(batch["next_observations"])
        actions, dones = batch["actions"], batch["dones"]
        rewards = batch["rewards"] * self.reward_scale

        with torch.no_grad():
            target_q = self.critic.target(obs, actions).min(dim=1).values  # [S, B]
        v = self.value(obs)[:, 0]  # [S, B]
        u = target_q - v
        weight = torch.where(u < 0, 1.0 - c.expectile, c.expectile)
        value_loss = (weight * u.pow(2)).mean(-1)  # [S]
        gradient_step(self.value_opt, value_loss)

        with torch.no_grad():
            v = self.value(obs)[:, 0]
            adv = target_q - v
            adv_weight = torch.exp(c.beta * adv).clamp(max=c.max_weight)  # [S, B]
            y = rewards + c.discount * (1.0 - dones) * self.value(next_obs)[:, 0]
        actor_loss = -(adv_weight * self.actor.log_prob(obs, actions)).mean(-1)  # [S]
        if c.cosine_lr:
            cosine_annealing(self.actor_opt, c.actor_lr, self.total_steps)
        gradient_step(self.actor_opt, actor_loss)

        q = self.critic(obs, actions)  # [S, 2, B]
        critic_loss = (q - y.unsqueeze(1)).pow(2).mean(-1).sum(1)  # [S]: per seed, summed over members
        gradient_step(self.critic_opt, critic_loss)
        self.critic.update_target(c.tau)

        return {"value_loss": value_loss.detach(), "critic_loss": critic_loss.detach(),
                "actor_loss": actor_loss.detach(), "q_mean": q.detach().mean((1, 2)), "v_mean": v.mean(-1),
                "adv_mean": adv.mean(-1), "weight_mean": adv_weight.mean(-1)}

    @torch.no_grad()
    def act(self, obs, deterministic=True):
        mean = self.actor.mean(self.obs_norm(obs))
        if deterministic:
            return mean
        std = self.actor.log_std.clamp(self.actor.log_std_min, self.actor.log_std_max).exp()
        scaler = self.actor.scaler
        sample = mean + std * self.act_noise.normal(*mean.shape[1:])
        return torch.clamp(sample, scaler.center - scaler.scale, scaler.center + scaler.scale)


register_agent("iql", IQL, Config, paper="Kostrikov, Nair & Levine, ICLR 2022 (arXiv 2110.06169)",
               family="model-free, implicit policy constraint")
