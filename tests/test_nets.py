"""Stacked networks, policy heads and critic reducers."""
import math

import torch

from offrl.critics import EnsembleCritic, reduce_members
from offrl.nets import MLP, GaussianActor, StackedLayerNorm, TanhGaussianActor, init_seeded
from offrl.rng import SeedStreams


def test_ensemble_critic_shapes_and_members_differ():
    critic = EnsembleCritic([0, 1, 2], obs_dim=4, act_dim=2, hidden=[16], num_members=5)
    q = critic(torch.randn(3, 7, 4), torch.randn(3, 7, 2))
    assert q.shape == (3, 5, 7)
    assert not torch.allclose(q[:, 0], q[:, 1])
    per_member = critic(torch.randn(3, 5, 7, 4), torch.randn(3, 5, 7, 2))
    assert per_member.shape == (3, 5, 7)


def test_reducers():
    q = torch.tensor([[[1.0, 5.0], [3.0, 2.0], [0.0, 9.0]]])  # [S=1, E=3, B=2]
    assert torch.equal(reduce_members(q, "min"), torch.tensor([[0.0, 2.0]]))
    assert torch.allclose(reduce_members(q, "mean"), torch.tensor([[4.0 / 3, 16.0 / 3]]))
    sub = reduce_members(q, "subset_min", subset=2, streams=SeedStreams([0], "r"))
    mins = {(min(a, b), min(c, d)) for (a, c), (b, d) in
            [((1, 5), (3, 2)), ((1, 5), (0, 9)), ((3, 2), (0, 9))]}
    assert tuple(sub[0].tolist()) in mins


def test_tanh_gaussian_log_prob_agrees_with_sampling_and_integrates_to_one():
    torch.manual_seed(0)
    actor = TanhGaussianActor([0], obs_dim=3, act_dim=1, hidden=[8], low=[-2.0], high=[2.0])
    obs = torch.randn(1, 1, 3)
    action, logp = actor(obs, torch.randn(1, 1, 1))
    torch.testing.assert_close(actor.log_prob(obs, action), logp, rtol=1e-4, atol=1e-4)
    grid = torch.linspace(-2 + 1e-4, 2 - 1e-4, 40001).reshape(1, -1, 1)
    density = actor.log_prob(obs.expand(1, grid.shape[1], 3), grid).exp()
    integral = torch.trapezoid(density[0], grid[0, :, 0])
    # The grid stops 1e-4 short of the bounds, where squashed tails keep a little mass; a wrong Jacobian
    # (say, a missing action-scale term) would be off by a factor of 2, not by percent.
    assert abs(integral.item() - 1.0) < 0.03
    assert (actor(obs, None)[0].abs() <= 2).all()


def test_gaussian_actor_log_prob_is_the_normal_density():
    actor = GaussianActor([0, 1], obs_dim=2, act_dim=2, hidden=[8], low=[-1, -1], high=[1, 1])
    obs = torch.randn(2, 5, 2)
    mean = actor.mean(obs)
    expected = 2 * (-0.5 * math.log(2 * math.pi))  # at the mean with std 1
    torch.testing.assert_close(actor.log_prob(obs, mean), torch.full((2, 5), expected))


def test_reducer_draws_with_and_without_replacement():
    """Min over 2 of 3 members: without replacement the largest member can never be the min; with
    replacement it is whenever it is drawn twice (1/9 of draws)."""
    q = torch.tensor([[[1.0], [2.0], [3.0]]])  # [S=1, E=3, B=1]
    streams = SeedStreams([0], "r")
    without = {reduce_members(q, "subset_min", 2, streams).item() for _ in range(200)}
    with_ = [reduce_members(q, "subset_min", 2, streams, replace=True).item() for _ in range(200)]
    assert without == {1.0, 2.0}
    assert set(with_) == {1.0, 2.0, 3.0}
    assert 5 < with_.count(3.0) < 45  # about 200 / 9


def test_stacked_layer_norm_normalises_rows_and_keeps_seeds_apart():
    ln = StackedLayerNorm((2, 3), 4)  # 2 seeds, 3 members
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    x = torch.randn(2, 3, 5, 4)
    expected = torch.nn.functional.layer_norm(x, (4,)) * ln.weight + ln.bias
    torch.testing.assert_close(ln(x), expected)

    mlp = init_seeded(MLP((2,), 3, [8, 8], 1, layer_norm=True), [0, 1], "t")  # StackedLinear starts empty
    norms = [m for m in mlp.modules() if isinstance(m, StackedLayerNorm)]
    assert len(norms) == 2 and all(m.weight.shape == (2, 1, 8) for m in norms)
    mlp(torch.randn(2, 6, 3))[1].sum().backward()  # seed 1's loss only
    for m in norms:
        assert (m.weight.grad[0] == 0).all() and (m.bias.grad[0] == 0).all()
        assert (m.weight.grad[1] != 0).any() and (m.bias.grad[1] != 0).any()
