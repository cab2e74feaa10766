"""BC — behaviour cloning, the baseline every offline-RL table starts from (Pomerleau, "Efficient Training of
Artificial Neural Networks for Autonomous Navigation", Neural Computation 1991; CORL's `any_percent_bc.py`
at frac = 1.0 is the implementation followed here).

Regress the dataset's action on the (normalised) state with a deterministic tanh actor; no critic, no reward.

    actor:   L_π = mean (π(s) - a)²,   π(s) = scale(tanh(MLP(s)))

States are standardised with the dataset's mean and std (+1e-3), as in CORL. Deviations from CORL: none in
the loss; CORL's "BC-10%" (cloning only the best 10 % of trajectories) is not offered here.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from offrl.agent import Agent
from offrl.config import PositiveFloat, PositiveInt, Widths
from offrl.nets import DeterministicActor, ObsNormalizer
from offrl.optim import adam, gradient_step
from offrl.registry import register_agent


@dataclass
class Config:
    actor_lr: PositiveFloat = 3e-4  # Adam learning rate of the actor (CORL)
    hidden: Widths = (256, 256)  # hidden layer widths of the actor (CORL)
    batch_size: PositiveInt = 256  # transitions per update and seed (CORL)
    normalize_obs: bool = True  # standardise states with the dataset's statistics (CORL)


class BC(Agent):
    def __init__(self, spec, config: Config, seeds, device="cpu"):
        super().__init__(spec, config, seeds, device)
        self.obs_norm = ObsNormalizer(spec.obs_dim)
        self.actor = self.build_actor()
        self.actor_opt = adam(self.actor.parameters(), config.actor_lr)

    def build_actor(self) -> DeterministicActor:
        """π(s); an agent that changes what the actor reads overrides this and keeps the interface."""
        s = self.spec
        return DeterministicActor(self.seeds, s.obs_dim, s.act_dim, self.config.hidden, s.action_low, s.action_high)

    def prepare(self, dataset, cache=None):
        if self.config.normalize_obs:
            self.obs_norm.fit(dataset.observations)

    def update(self, batch, step):
        obs = self.obs_norm(batch["observations"])
        pi = self.actor(obs)
        actor_loss = (pi - batch["actions"]).pow(2).mean((-1, -2))  # [S]
        gradient_step(self.actor_opt, actor_loss)
        return {"actor_loss": actor_loss.detach()}

    @torch.no_grad()
    def act(self, obs, deterministic=True):
        return self.actor(self.obs_norm(obs))


register_agent("bc", BC, Config, paper="Pomerleau, Neural Computation 1991; as in CORL (Tarasov et al., "
               "NeurIPS 2023 D&B, arXiv 2210.07105)", family="imitation")
