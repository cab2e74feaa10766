"""FB, VC-FB and MC-FB (agents/fb.py, vcfb.py, mcfb.py) on the reward-free PointGoals toy: B's orthonormality
term drives B(s)ᵀB(s') toward 0 off the diagonal. Seed-axis equivalence: tests/test_seed_axis.py (every
agent); task inference and per-task evaluation: tests/test_tasks.py."""
import torch

from conftest import train_agent
from test_tasks import TINY_FB, pointgoals  # noqa: F401  (the fixture)


def offdiag_square(agent, obs):
    b = agent.backward_net(obs.expand(agent.num_seeds, -1, -1))
    cov = b @ b.transpose(-1, -2)
    off = ~torch.eye(obs.shape[1], dtype=torch.bool)
    return (cov.pow(2) * off).sum((-1, -2)) / off.sum()


def test_orthonormality_drives_b_off_diagonal_toward_zero(pointgoals):
    ds = pointgoals("random")
    obs = torch.as_tensor(ds.next_observations[:256]).unsqueeze(0)
    untrained, trained = train_agent("fb", ds, 0, **TINY_FB), train_agent("fb", ds, 300, **TINY_FB)
    with torch.no_grad():
        before, after = offdiag_square(untrained, obs), offdiag_square(trained, obs)
    # At initialisation B of different states are nearly parallel ((BᵀB)² near d² = 64).
    assert (after < 0.75 * before).all(), (before, after)  # observed: 37.8 -> 22.1
