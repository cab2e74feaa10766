"""Discrete BC — behaviour cloning for a discrete action space (Pomerleau, Neural Computation 1991), the
imitation baseline of the tabular sepsis task: a categorical policy fitted by maximum likelihood.

    L_π = -mean log π(a|s),   π(·|s) = softmax(MLP(s))

A discrete observation is read as its one-hot (offrl.nets.encode_observations); the evaluation action is the
most likely one. A separate agent from `bc` (whose deterministic tanh actor regresses a continuous action):
the two share no loss and no network head, so a mode flag would only add branches to both.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from offrl.agent import Agent
from offrl.config import PositiveFloat, PositiveInt, Widths
from offrl.nets import encode_observations, per_action_mlp
from offrl.optim import adam, gradient_step
from offrl.registry import register_agent


@dataclass
class Config:
    actor_lr: PositiveFloat = 1e-3  # Adam learning rate of the policy
    hidden: Widths = (128, 128)  # hidden layer widths (OGSRL's policy size)
    batch_size: PositiveInt = 256  # transitions per update and seed


class DiscreteBC(Agent):
    action_space = "discrete"

    def __init__(self, spec, config: Config, seeds, device="cpu"):
        super().__init__(spec, config, seeds, device)
        self.policy = per_action_mlp(spec, self.seeds, config.hidden, "policy")
        self.policy_opt = adam(self.policy.parameters(), config.actor_lr)

    def logits(self, obs: torch.Tensor) -> torch.Tensor:
        return self.policy(encode_observations(obs, self.spec.n_observations))

    def update(self, batch, step):
        log_probs = torch.log_softmax(self.logits(batch["observations"]), -1)
        taken = log_probs.gather(-1, batch["actions"].long()).squeeze(-1)  # [S, B]
        loss = -taken.mean(-1)
        gradient_step(self.policy_opt, loss)
        return {"actor_loss": loss.detach()}

    @torch.no_grad()
    def act(self, obs, deterministic=True):
        logits = self.logits(obs)
        if deterministic:
            return logits.argmax(-1, keepdim=True).float()
        return torch.distributions.Categorical(logits=logits).sample().unsqueeze(-1).float()


register_agent("bc-discrete", DiscreteBC, Config, paper="Pomerleau, Neural Computation 1991 (categorical policy)",
               family="imitation", base="bc")
