"""MOBILE (agents/mobile.py): the Bellman-inconsistency penalty is what its equation says, near 0 where the
deterministic toy model is sure and larger off the data, 0 on the dataset rows of a batch; the target clamp is
a flag; MOBILE learns the toy task with the clamp off (its rewards are negative).

Networks are 2 x 64 and the model 2 x 64 fitted for 10 epochs; rollouts start from 2,000 states every 250
updates.
"""
import copy

import pytest
import torch

from conftest import evaluate_policy, train_agent
from offrl import config as cfg
from offrl import registry
from offrl.replay import TransitionBuffer
from test_mopo import SMALL, make


@pytest.fixture(scope="module")
def expert(pointmass):
    return pointmass("expert", 20_000)


def test_penalty_is_the_spread_over_elites_of_the_mean_target_value(pointmass):
    ds = pointmass("medium", 20_000)
    agent, buffer = make("mobile", ds, seeds=(0, 1), num_samples=3)
    batch = buffer.sample()
    obs, actions = batch["observations"][:, :16], batch["actions"][:, :16]
    noise = copy.deepcopy(agent.noise)
    got = agent.bellman_penalty(obs, actions)
    # By hand, with the same random numbers: 3 samples from each of the 5 elites (the model's mean and std of
    # s' - s, plus s), a'' ~ π(s''), min over the target critics, mean over samples, std over elites.
    mean, logvar = agent.dynamics(agent.dynamics.normalise_inputs(torch.cat([obs, actions], -1).reshape(32, 6)))
    elite = agent.dynamics.elite_index
    mean = mean[elite, :, :4].view(5, 2, 16, 4).transpose(0, 1)  # [S, K, B, d]
    std = (0.5 * logvar[elite, :, :4]).exp().view(5, 2, 16, 4).transpose(0, 1)
    eps = noise.normal(3, 5, 16, 4)  # [S, n, K, B, d]
    next_obs = obs[:, None, None] + mean[:, None] + std[:, None] * eps
    flat = next_obs.reshape(2, 3 * 5 * 16, 4)
    next_actions, _ = agent.actor(flat, noise.normal(3 * 5 * 16, 2))
    q = agent.critic.target(flat, next_actions).min(dim=1).values.view(2, 3, 5, 16)
    expected = q.mean(1).std(1)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
    assert (got > 0).all()


class DistanceValue(torch.nn.Module):
    """Two identical critics Q(s, a) = -|p - g|: the shape of PointMass's value, so the penalty reads how much the
    elites disagree about where the point goes (an untrained critic is nearly flat and reads nothing)."""

    def forward(self, obs, actions):
        return -(obs[..., :2] - obs[..., 2:]).norm(dim=-1).unsqueeze(1).expand(-1, 2, -1)


def test_penalty_is_near_zero_on_the_data_and_larger_off_it(expert):
    """PointMass is deterministic and linear inside the box, so where the data are the elites agree and the spread
    is near 0 (what is left is the mean over 10 samples of each elite's small σ). States three times farther out
    than any in the data, or actions three times the box, leave the data: the elites disagree there. Uniform
    actions inside the box are not off the data for this model: p' = p + 0.1 a is linear in a."""
    agent, buffer = make("mobile", expert)
    agent.critic.target = DistanceValue()
    batch = buffer.sample()
    obs, actions = batch["observations"], batch["actions"]
    on_data = agent.bellman_penalty(obs, actions).mean()
    # Observed 0.0076 on the data, 0.039 for far states and 0.029 for far actions (distances are about 1).
    assert on_data < 0.02
    assert agent.bellman_penalty(3 * obs, actions).mean() > 3 * on_data
    assert agent.bellman_penalty(obs, 3 * actions).mean() > 3 * on_data


def test_penalty_is_zero_on_dataset_rows_and_lowers_model_targets(pointmass):
    ds = pointmass("medium", 20_000)
    agent, buffer = make("mobile", ds, seeds=(0, 1), clamp_target=False)
    agent.update(buffer.sample(), 1)  # the first rollout
    batch = agent.extend_batch(agent.model_data.mix(buffer.sample()))
    penalty = batch["bellman_penalty"]
    assert (penalty[:, :12] == 0).all() and (penalty[:, 12:] > 0).all()  # int(256 · 0.05) = 12 dataset rows
    free = dict(batch, bellman_penalty=torch.zeros_like(penalty))
    noise = copy.deepcopy(agent.noise)
    y = agent.td_target(batch)
    agent.noise = noise  # the same next actions
    torch.testing.assert_close(agent.td_target(free) - y, agent.config.penalty_coef * penalty)


def test_clamp_pins_negative_targets_at_zero(pointmass):
    """PointMass's rewards are -distance: with the official clamp every target is 0, without it they are negative."""
    ds = pointmass("medium", 20_000)
    clamped, buffer = make("mobile", ds, clamp_target=True)
    free, _ = make("mobile", ds, clamp_target=False)
    batch = buffer.sample()
    batch = dict(batch, model_rows=torch.zeros_like(batch["rewards"], dtype=torch.bool),
                 bellman_penalty=torch.zeros_like(batch["rewards"]))
    assert (clamped.td_target(batch) == 0).float().mean() > 0.9
    assert (free.td_target(batch) < 0).float().mean() > 0.9
    assert cfg.resolve_config(registry.get("mobile"), "pointmass").clamp_target is False
    assert cfg.resolve_config(registry.get("mobile"), "hopper").clamp_target is True


def test_family_defaults_follow_the_run_mobile_table():
    info = registry.get("mobile")
    hopper = cfg.resolve_config(info, "hopper")
    assert (hopper.rollout_length, hopper.penalty_coef, hopper.auto_alpha, hopper.init_alpha) == (5, 1.5, False, 0.2)
    walker = cfg.resolve_config(info, "walker2d")
    assert (walker.rollout_length, walker.penalty_coef, walker.auto_alpha) == (5, 0.5, True)
    assert (hopper.deterministic_backup, hopper.alpha_max, hopper.num_samples) == (True, 1.0, 10)


def test_mobile_learns_pointmass(pointmass):
    ds = pointmass("medium", 20_000)
    agent = train_agent("mobile", ds, 2_000, **SMALL, clamp_target=False, actor_lr=3e-4)
    score = evaluate_policy(agent, ds)
    # Random scores 0, the medium behaviour policy about 45. Observed 50.2 (seeds 0 and 1 at β = 1.5 and the
    # actor lr 1e-4: 40.0 and 39.6).
    assert score.mean() > 35, score
