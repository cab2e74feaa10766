"""Discrete CQL — Kumar, Zhou, Tucker & Levine, "Conservative Q-Learning for Offline Reinforcement Learning",
NeurIPS 2020, arXiv 2006.04779: CQL(H) on a DQN-style Q-network for a discrete action space (the paper's
Atari variant), the value-based baseline of the tabular sepsis task.

    y   = r + γ (1 - d) Q'(s', argmax_a' Q(s', a'))                (double-DQN target, Polyak target Q')
    L_Q = mean ½ (Q(s, a) - y)² + α · mean [ logsumexp_a Q(s, a) - Q(s, a_data) ]

The logsumexp over all actions is exact here (no sampled candidates), which is what makes the discrete form
simpler than `cql`'s SAC-based one, hence a separate agent rather than a mode of agents/cql.py. The
evaluation action is argmax Q. Deviations: the paper's Atari runs use QR-DQN heads; this uses a plain Q-head
(the sepsis MDP's reward is a single 0/1 outcome).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from offrl.agent import Agent
from offrl.config import Fraction, NonNegativeFloat, PositiveFloat, PositiveInt, UnitFloat, Widths
from offrl.nets import encode_observations, per_action_mlp, soft_update
from offrl.optim import adam, gradient_step
from offrl.registry import register_agent


@dataclass
class Config:
    critic_lr: PositiveFloat = 3e-4  # Adam learning rate of the Q-network
    hidden: Widths = (128, 128)  # hidden layer widths
    batch_size: PositiveInt = 256  # transitions per update and seed
    discount: UnitFloat = 0.99  # γ of the backup
    tau: Fraction = 0.005  # Polyak rate of the target network
    cql_weight: NonNegativeFloat = 1.0  # α of the CQL(H) gap (the paper's discrete-action default)


class DiscreteCQL(Agent):
    action_space = "discrete"

    def __init__(self, spec, config: Config, seeds, device="cpu"):
        super().__init__(spec, config, seeds, device)
        self.q = per_action_mlp(spec, self.seeds, config.hidden, "critic")
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)
        self.q_opt = adam(self.q.parameters(), config.critic_lr)

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        return encode_observations(obs, self.spec.n_observations)

    def update(self, batch, step):
        c = self.config
        obs, nxt = self.encode(batch["observations"]), self.encode(batch["next_observations"])
        with torch.no_grad():
            best = self.q(nxt).argmax(-1, keepdim=True)
            target = batch["rewards"] + c.discount * (1 - batch["dones"]) * self.q_target(nxt).gather(-1, best)[..., 0]
        q_all = self.q(obs)
        q_data = q_all.gather(-1, batch["actions"].long())[..., 0]
        td = 0.5 * (q_data - target).pow(2).mean(-1)
        gap = (torch.logsumexp(q_all, -1) - q_data).mean(-1)
        loss = td + c.cql_weight * gap
        gradient_step(self.q_opt, loss)
        soft_update(self.q_target, self.q, c.tau)
        return {"critic_loss": td.detach(), "cql_gap": gap.detach(), "q_data": q_data.detach().mean(-1)}

    @torch.no_grad()
    def act(self, obs, deterministic=True):
        return self.q(self.encode(obs)).argmax(-1, keepdim=True).float()


register_agent("cql-discrete", DiscreteCQL, Config, paper="Kumar et al., NeurIPS 2020, arXiv 2006.04779 "
               "(CQL(H), discrete actions)", family="model-free, value regularisation", base="cql")
