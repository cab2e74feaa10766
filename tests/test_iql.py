"""IQL learns the toy task, its reward scale is the dataset's and travels in checkpoints, and the actor's
learning rate follows the cosine schedule.

pointmass-medium (0.2·a* + 0.8·uniform + noise) is the apt dataset: it holds enough good actions for the
expectile value and the advantage weights to pick out, and enough bad ones that cloning alone (BC, about 60)
stays well below the optimum; IQL should beat the clone.
"""
import math

import numpy as np

from conftest import evaluate_policy, train_agent


def test_iql_learns_pointmass(pointmass):
    ds = pointmass("medium", 20_000)
    agent = train_agent("iql", ds, 2_000, hidden=[64, 64])
    score = evaluate_policy(agent, ds)
    # Observed about 95 (BC on the same data: about 60).
    assert score.mean() > 70, score


def test_reward_scale_is_the_return_range_and_is_a_buffer(pointmass):
    ds = pointmass("medium", 20_000)
    returns = ds.episode_returns()
    agent = train_agent("iql", ds, 1, hidden=[32, 32])
    expected = 1000.0 / (returns.max() - returns.min())
    np.testing.assert_allclose(float(agent.reward_scale), expected, rtol=1e-6)
    assert "reward_scale" in agent.state_dict()
    off = train_agent("iql", ds, 1, hidden=[32, 32], reward_scale_by_return_range=False)
    assert float(off.reward_scale) == 1.0


def test_actor_lr_decays_by_cosine_over_the_run(pointmass):
    ds = pointmass("medium", 20_000)
    agent = train_agent("iql", ds, 10, hidden=[32, 32])
    assert agent.total_steps == 10
    # The optimiser ran its last step (update 10 of T = 10) at lr·½(1 + cos(π·9/10)); the others keep theirs.
    lr = agent.config.actor_lr
    assert math.isclose(float(agent.actor_opt.param_groups[0]["lr"]), lr * 0.5 * (1 + math.cos(math.pi * 0.9)),
                        rel_tol=1e-6, abs_tol=1e-7 * lr)
    assert agent.critic_opt.param_groups[0]["lr"] == agent.config.critic_lr
    constant = train_agent("iql", ds, 10, hidden=[32, 32], cosine_lr=False)
    assert constant.actor_opt.param_groups[0]["lr"] == lr
