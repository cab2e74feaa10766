"""Network construction is a hook: an agent changes what its networks read by overriding build_actor and
build_critic only, and the base's update trains it unchanged.

ProjectedTD3BC feeds actor and critics P·s, a fixed random projection of the (normalised) state to a wider
space, as COCOA will feed them [s - s̃, s̃] through a transductive layer. It must still learn pointmass.
"""
import torch
from torch import nn

from offrl import config as cfg
from offrl.agents.td3bc import TD3BC, Config
from offrl.critics import EnsembleCritic
from offrl.nets import DeterministicActor
from conftest import evaluate_policy

WIDTH = 3  # P maps a state of d numbers to WIDTH·d


class ReadsProjection(nn.Module):
    """`inner` reads P·s in place of s; every other argument, and the actor's scaler, pass through."""

    def __init__(self, inner: nn.Module, projection: torch.Tensor):
        super().__init__()
        self.inner = inner
        self.register_buffer("projection", projection)

    @property
    def scaler(self):
        return self.inner.scaler

    def forward(self, obs, *args, **kwargs):
        return self.inner(obs @ self.projection, *args, **kwargs)

    def frozen(self, obs, *args, **kwargs):
        return self.inner.frozen(obs @ self.projection, *args, **kwargs)


class ProjectedTD3BC(TD3BC):
    def projection(self) -> torch.Tensor:
        """The same fixed random matrix on every call: [d, WIDTH·d], N(0, 1/d) entries."""
        d = self.spec.obs_dim
        return torch.randn(d, WIDTH * d, generator=torch.Generator().manual_seed(1234)) / d ** 0.5

    def build_actor(self):
        s = self.spec
        return ReadsProjection(DeterministicActor(self.seeds, WIDTH * s.obs_dim, s.act_dim, self.config.hidden,
                                                  s.action_low, s.action_high), self.projection())

    def build_critic(self):
        return ReadsProjection(EnsembleCritic(self.seeds, WIDTH * self.spec.obs_dim, self.spec.act_dim,
                                              self.config.hidden, num_members=2), self.projection())


def test_projected_td3bc_learns_pointmass(pointmass):
    from offrl.replay import TransitionBuffer

    ds = pointmass("medium", 20_000)
    config = cfg.apply(Config(), {"hidden": [64, 64]})
    agent = ProjectedTD3BC(ds.spec, config, [0], "cpu")
    agent.prepare(ds)
    # The networks, their target copies included, read the projection: their first layers are WIDTH·d wide.
    d = ds.spec.obs_dim
    assert agent.actor.inner.net.net[0].weight.shape[-2] == WIDTH * d
    assert agent.critic.target.inner.net.net[0].weight.shape[-2] == WIDTH * d + ds.spec.act_dim
    buffer = TransitionBuffer(ds, [0], config.batch_size)
    for step in range(1, 2_001):
        agent.update(buffer.sample(), step)
    score = evaluate_policy(agent, ds)
    # Random acting scores 0 and the medium behaviour policy about 45; plain TD3+BC over 60 (test_td3bc.py).
    assert score.mean() > 60, score
