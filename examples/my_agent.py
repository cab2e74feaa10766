"""A complete new agent in one file: behaviour cloning with a tanh-Gaussian policy (maximum likelihood).

Run it:  offrl run --plugin examples/my_agent.py --agent my-bc --env pointmass-expert --steps 2000
"""
from dataclasses import dataclass

import torch

from offrl.agent import Agent
from offrl.nets import ObsNormalizer, TanhGaussianActor
from offrl.optim import adam
from offrl.registry import register_agent


@dataclass
class Config:
    lr: float = 3e-4  # Adam learning rate
    hidden: tuple[int, ...] = (256, 256)  # policy hidden widths
    batch_size: int = 256  # transitions per update and seed


class MyBC(Agent):
    def __init__(self, spec, config, seeds, device="cpu"):
        super().__init__(spec, config, seeds, device)
        self.obs_norm = ObsNormalizer(spec.obs_dim)
        self.policy = TanhGaussianActor(seeds, spec.obs_dim, spec.act_dim, config.hidden,
                                        spec.action_low, spec.action_high)
        self.opt = adam(self.policy.parameters(), config.lr)  # torch's fused Adam

    def prepare(self, dataset, cache=None):
        self.obs_norm.fit(dataset.observations)

    def update(self, batch, step):
        log_prob = self.policy.log_prob(self.obs_norm(batch["observations"]), batch["actions"])  # [S, B]
        loss = -log_prob.mean(-1)  # one mean per seed: seeds never mix
        self.opt.zero_grad()
        loss.sum().backward()
        self.opt.step()
        return {"nll": loss.detach()}

    @torch.no_grad()
    def act(self, obs, deterministic=True):
        return self.policy(self.obs_norm(obs), noise=None)[0]


register_agent("my-bc", MyBC, Config, paper="example", family="imitation")
