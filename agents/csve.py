"""CSVE — Chen, Zhang, Xu, Wang & Zheng, "Conservative State Value Estimation for Offline Reinforcement
Learning", NeurIPS 2023, arXiv 2302.06884.

Penalise the state value V on out-of-distribution *states* (states a learned model reaches from dataset
states under the policy) instead of Q on OOD actions, regress Q on r + γV(s'), and extract the policy by
advantage-weighted regression plus a model-based term that moves actions toward states of high V.

What the official code optimises, in update order:

    OOD gap: Δ = mean V(ŝ) - mean V(s'),  ŝ = clip(P̂(s, μ(s)), -c, c)      (P̂: a random member, sampled;
             μ(s) the policy's mean action; s' the batch's next states, not its states; no gradient to P̂)
    α:       L_α = -α (w Δ - τ_α),  α = clip(exp(log α), 0, 1e6) per seed [S]   (Δ without gradient)
    value:   L_V = mean (min_i Q'_i(s, ã) - V(s))² + α (w Δ - τ_α),  ã ~ π(s)   (fresh model draw for Δ,
             the just-updated α held constant)
    critic:  L_Q = Σ_i mean (Q_i(s, a) - y)²,  y = r + γ (1 - d) V(s')    (the just-updated V; no target V)
    actor:   L_π = -bc · mean min(exp(β (min_i Q'_i(s, a) - V(s))), w_max) · log π(a|s)
                   - λ · mean clip(V(P̂(s, â)), -1500, 1500),  â ~ π(s) reparameterised
             (the second term back-propagates through the frozen model into â; the paper's r̂ and γ in it
             are commented out in the official code, so they are left out here too)
    targets: Polyak averaging of the two Q critics with `tau` after every step.

π is d3rlpy v1's non-squashed Gaussian: mean scale(tanh(MLP(s))), a state-independent log-std
-5 + 7·sigmoid(p) (p starts at 0: log-std -1.5), samples clipped to the action box, log π of the
unsquashed Gaussian; the deterministic action is the mean. The actor's lr at update t + 1 is
lr·½(1 + cos(π min(t, T)/T)) with the official script's fixed T = 1e6 updates (`cosine_steps`; its
per-step CosineAnnealingLR). No state normalisation, no reward scaling.

Pre-training stage "dynamics": the suite's shared probabilistic ensemble (offrl/dynamics.py), fitted once
per dataset and cached (`prepare`); its parameters are frozen and live in this agent's state so that a
resumed run needs no cache. It belongs to the data, so all seeds share it; each seed draws its own member
choices and Gaussian noise from its own stream. CSVE reads only the sampled next state, so its model
steps run each row through the member it drew and no other (`all_members=False`: on a CPU, 1/5 of the
model's matmuls; docs/agents.md has the speed-up).

Hyper-parameters: only the official Adroit script exists; the MuJoCo values are in the paper's
appendix, which we have not read. Taken from that script because they are not tied to Adroit: w = 1,
α lr 1e-4, initial α 10, bc 1, batch 256, γ 0.99, τ 0.005, and the dynamics model (5 members, 4 × 200
Swish, Adam lr 1e-3, weight decay 2.5e-5, batch 100). CHOSEN BY US: lr 3e-4 for actor and critics (the
class default; the script's 3e-3 goes with its 100 k-step Adroit runs), β = 3 and w_max = 100 (the class
defaults, IQL's MuJoCo values; the script's 30 and 1000 are Adroit's), λ = 0.1 and τ_α = 0, from a small
sweep on the generated hopper-medium (docs/agents.md): τ_α = 0 led on the mean and keeps α small (the
script's -10 drives α up until V on model states sits below V on the data); λ did not separate, and 0.1 keeps
the method's second term on (the script turns it off with 0, the class default is 1) at a weight that does
not swamp the AWR term where V is large.

Deliberate deviations from the official code:
- the dynamics model is the suite's shared ensemble, not d3rlpy v1's: no spectral normalisation; inputs
  standardised; log-variance soft bounds [-10, 0.5] (OfflineRL-Kit's) instead of log-std bounds [-10, 2];
  the L2 penalty (2.5e-5, the same gradient as Adam's weight_decay) on weights only; each member on its own
  bootstrap resample; a hold-out of min(20 %, 1000) transitions and each member's best weights. The budget
  is the official 300 k minibatch steps (about 30 epochs of a 1 M dataset), which the shared ensemble's
  patience (5 epochs without a 1 % hold-out gain) can end earlier; the official model trains the 300 k
  steps on all the data with no early stop. With elites = members = 5, a step picks a uniformly random
  member, as the official model does;
- the policy's mean is scaled to the dataset's action box (the official code assumes [-1, 1]; the same on
  MuJoCo); the cosine schedule stays at 0 after T_max instead of rising again;
- random numbers come from offrl's per-seed streams; the official code also lets L_V's gradient reach
  log α (then discards it) and L_π's reach V (likewise): here each optimiser sees only its own loss;
- offrl's evaluation protocol, not d3rlpy's (10 episodes with env seeds 0..9 every epoch).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from offrl.agent import Agent
from offrl.config import (Fraction, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, Seed, UnitFloat,
                          Widths)
from offrl.critics import CriticWithTarget, EnsembleCritic
from offrl.dynamics import DynamicsConfig, EnsembleDynamics, load_or_fit
from offrl.nets import GaussianActor
from offrl.optim import adam, cosine_annealing, gradient_step
from offrl.registry import register_agent
from offrl.rng import SeedStreams
from offrl.termination import never


@dataclass
class Config:
    actor_lr: PositiveFloat = 3e-4  # Adam lr of the actor, cosine-annealed over cosine_steps (ours; script: 3e-3)
    critic_lr: PositiveFloat = 3e-4  # Adam lr of the two Q critics and of V (ours; script: 3e-3)
    alpha_lr: NonNegativeFloat = 1e-4  # Adam lr of log α; 0 keeps α at initial_alpha (official code: skips it)
    hidden: Widths = (256, 256)  # hidden widths of actor, Q critics and V (d3rlpy's default encoder)
    batch_size: PositiveInt = 256  # transitions per update and seed
    discount: UnitFloat = 0.99  # γ
    tau: Fraction = 0.005  # Polyak coefficient of the target Q critics
    beta: NonNegativeFloat = 3.0  # β (`weight_temp`): inverse temperature of the advantage weights (ours; script: 30)
    max_weight: PositiveFloat = 100.0  # w_max: clip of exp(β A) (ours; script: 1000)
    bc_weight: NonNegativeFloat = 1.0  # weight of the advantage-weighted log-likelihood (`bc`)
    explore_weight: NonNegativeFloat = 0.1  # λ (`expectile` in the official code): model-based term; 0 = off (ours)
    conservative_weight: NonNegativeFloat = 1.0  # w: scale of the OOD gap Δ (script: 1; class default 5)
    alpha_threshold: float = 0.0  # τ_α: α grows while w Δ > τ_α (ours, swept; script: -10; class default 10)
    initial_alpha: PositiveFloat = 10.0  # α at the start, per seed
    ood_clip: PositiveFloat = 10.0  # model states are clipped to [-c, c] (raw units) before V sees them in Δ
    value_clip: PositiveFloat = 1500.0  # clip of V(model state) in the actor's exploration term
    cosine_steps: NonNegativeInt = 1_000_000  # T_max of the actor's cosine annealing (official: 1e6); 0 = constant lr
    dynamics_members: PositiveInt = 5  # ensemble size (official: 5)
    dynamics_elites: PositiveInt = 5  # members a step picks from (official: all of them)
    dynamics_hidden: Widths | None = None  # model widths; None = (200,) * 4, Swish (official)
    dynamics_weight_decay: NonNegativeFloat = 2.5e-5  # L2 coefficient of every model layer (official Adam weight decay)
    dynamics_lr: PositiveFloat = 1e-3  # Adam lr of the model (official)
    dynamics_batch: PositiveInt = 100  # minibatch per member (d3rlpy's default, which the official script keeps)
    dynamics_max_epochs: PositiveInt | None = None  # cap on model epochs; None = no cap on epochs
    dynamics_max_updates: PositiveInt | None = 300_000  # cap on model minibatch steps (official: a fixed 300 k steps)
    dynamics_seed: Seed = 0  # the model's own seed (it is shared by the agent's seeds and cached by it)


class CSVEPolicy(GaussianActor):
    """d3rlpy v1's NonSquashedNormalPolicy with a std parameter: log-std = min + (max - min)·sigmoid(p)."""

    def std(self) -> torch.Tensor:
        span = self.log_std_max - self.log_std_min
        return (self.log_std_min + span * torch.sigmoid(self.log_std)).exp()  # [S, 1, A]

    def log_prob(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        std = self.std()
        z = (action - self.mean(obs)) / std
        return (-0.5 * z.pow(2) - std.log() - 0.5 * math.log(2 * math.pi)).sum(-1)

    def sample(self, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Reparameterised sample, clipped to the action box; noise is standard normal [S, B, A]."""
        scaler = self.scaler
        return torch.clamp(self.mean(obs) + self.std() * noise, scaler.center - scaler.scale,
                           scaler.center + scaler.scale)


class CSVE(Agent):
    def __init__(self, spec, config: Config, seeds, device="cpu"):
        super().__init__(spec, config, seeds, device)
        c = config
        self.actor = self.build_actor()
        self.critic = CriticWithTarget(self.build_critic())
        self.value = self.build_value()
        self.log_alpha = nn.Parameter(torch.full((self.num_seeds,), math.log(c.initial_alpha)))
        # The model's shape is fixed by the config; prepare() loads the fitted weights (termination unused).
        self.dynamics = EnsembleDynamics(spec.obs_dim, spec.act_dim, self.dynamics_config(),
                                         termination=never).requires_grad_(False)
        self.act_noise = SeedStreams(seeds, "act")
        self.actor_opt = adam(self.actor.parameters(), c.actor_lr)
        self.critic_opt = adam(self.critic.online.parameters(), c.critic_lr)
        self.value_opt = adam(self.value.parameters(), c.critic_lr)
        self.alpha_opt = adam([self.log_alpha], c.alpha_lr)

    # Network construction: an agent that changes what the networks read overrides these and keeps the
    # interfaces (CSVEPolicy's; the critics' (obs[, action]) -> [S, E, B]).
    def build_actor(self) -> CSVEPolicy:
        """π(a|s)."""
        s = self.spec
        return CSVEPolicy(self.seeds, s.obs_dim, s.act_dim, self.config.hidden, s.action_low, s.action_high)

    def build_critic(self) -> EnsembleCritic:
        """Q_1, Q_2(s, a); the target copies are made from it."""
        return EnsembleCritic(self.seeds, self.spec.obs_dim, self.spec.act_dim, self.config.hidden, num_members=2)

    def build_value(self) -> EnsembleCritic:
        """V(s): one member, no action."""
        return EnsembleCritic(self.seeds, self.spec.obs_dim, 0, self.config.hidden, num_members=1, tag="value")

    def dynamics_config(self) -> DynamicsConfig:
        c = self.config
        hidden = c.dynamics_hidden or (200, 200, 200, 200)
        return DynamicsConfig(members=c.dynamics_members, elites=c.dynamics_elites, hidden=hidden,
                              weight_decays=(c.dynamics_weight_decay,) * (len(hidden) + 1), lr=c.dynamics_lr,
                              batch=c.dynamics_batch, max_epochs=c.dynamics_max_epochs,
                              max_updates=c.dynamics_max_updates, seed=c.dynamics_seed)

    def prepare(self, dataset, cache=None):
        log = cache.log if cache is not None else (lambda msg: None)
        device = self.log_alpha.device
        model = load_or_fit(dataset, self.dynamics_config(), cache=cache, log=log, device=device)
        self.dynamics.load_state_dict(model.state_dict())

    def ood_gap(self, obs, mean_action, next_obs) -> torch.Tensor:
        """Δ = mean V(clip(P̂(s, μ(s)))) - mean V(s') per seed [S]; a fresh model draw on every call."""
        with torch.no_grad():
            model_obs = self.dynamics.step(obs, mean_action, streams=self.noise, all_members=False).next_obs
            model_obs = model_obs.clamp(-self.config.ood_clip, self.config.ood_clip)
        return self.value(model_obs)[:, 0].mean(-1) - self.value(next_obs)[:, 0].mean(-1)

    def update(self, batch, step):
        c = self.config
        obs, actions, rewards = batch["observations"], batch["actions"], batch["rewards"]
        next_obs, dones = batch["next_observations"], batch["dones"]
        with torch.no_grad():
            mean_action = self.actor.mean(obs)

        metrics = {}
        if c.alpha_lr > 0:
            with torch.no_grad():
                gap = self.ood_gap(obs, mean_action, next_obs)
            alpha = self.log_alpha.exp().clamp(0.0, 1e6)  # [S]
            alpha_loss = -alpha * (c.conservative_weight * gap - c.alpha_threshold)
            gradient_step(self.alpha_opt, alpha_loss)
            metrics["alpha_loss"] = alpha_loss.detach()

        alpha = self.log_alpha.detach().exp().clamp(0.0, 1e6)
        with torch.no_grad():
            sampled = self.actor.sample(obs, self.noise.normal(*actions.shape[1:]))
            q_sampled = self.critic.target(obs, sampled).min(dim=1).values  # [S, B]
        v = self.value(obs)[:, 0]  # [S, B]
        gap = self.ood_gap(obs, mean_action, next_obs)  # [S], with gradient into V
        value_loss = (q_sampled - v).pow(2).mean(-1) + alpha * (c.conservative_weight * gap - c.alpha_threshold)
        gradient_step(self.value_opt, value_loss)

        with torch.no_grad():
            y = rewards + c.discount * (1.0 - dones) * self.value(next_obs)[:, 0]
        q = self.critic(obs, actions)  # [S, 2, B]
        critic_loss = (q - y.unsqueeze(1)).pow(2).mean(-1).sum(1)  # [S]: per seed, summed over members
        gradient_step(self.critic_opt, critic_loss)

        with torch.no_grad():
            adv = self.critic.target(obs, actions).min(dim=1).values - self.value(obs)[:, 0]
            adv_weight = torch.exp(c.beta * adv).clamp(max=c.max_weight)  # [S, B]
        awr_loss = -c.bc_weight * (adv_weight * self.actor.log_prob(obs, actions)).mean(-1)  # [S]
        actor_loss = awr_loss
        if c.explore_weight != 0:
            explored = self.actor.sample(obs, self.noise.normal(*actions.shape[1:]))
            # The gradient flows through the frozen model into the action.
            model_obs = self.dynamics.step(obs, explored, streams=self.noise, all_members=False).next_obs
            v_model = self.value(model_obs)[:, 0].clamp(-c.value_clip, c.value_clip)
            explore_loss = -c.explore_weight * v_model.mean(-1)  # [S]
            actor_loss = actor_loss + explore_loss
            metrics["explore_loss"] = explore_loss.detach()
        if c.cosine_steps > 0:
            cosine_annealing(self.actor_opt, c.actor_lr, c.cosine_steps)
        gradient_step(self.actor_opt, actor_loss)
        self.critic.update_target(c.tau)

        metrics.update(value_loss=value_loss.detach(), critic_loss=critic_loss.detach(),
                       actor_loss=actor_loss.detach(), awr_loss=awr_loss.detach(), alpha=alpha,
                       ood_gap=gap.detach(), q_mean=q.detach().mean((1, 2)), v_mean=v.detach().mean(-1),
                       adv_mean=adv.mean(-1), weight_mean=adv_weight.mean(-1))
        return metrics

    @torch.no_grad()
    def act(self, obs, deterministic=True):
        if deterministic:
            return self.actor.mean(obs)
        return self.actor.sample(obs, self.act_noise.normal(*obs.shape[1:-1], self.spec.act_dim))


register_agent("csve", CSVE, Config, paper="Chen et al., NeurIPS 2023 (arXiv 2302.06884)",
               family="model-based, conservative state value", stages=("dynamics",))
