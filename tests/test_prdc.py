"""PRDC: the BC target is the action of the exact nearest dataset point, and the agent learns the toy task."""
import numpy as np
import torch
from scipy.spatial import cKDTree

from offrl import config as cfg
from offrl import registry
from conftest import evaluate_policy, train_agent


def test_bc_target_is_the_nearest_dataset_action(pointmass):
    ds = pointmass("medium", 20_000)
    agent = train_agent("prdc", ds, 1, seeds=(0, 1), hidden=[32, 32])
    obs = agent.obs_norm(torch.as_tensor(ds.observations[:64]))
    pi = torch.rand(2, 64, 2) * 2 - 1
    target = agent.bc_target(obs.expand(2, -1, -1), None, pi)
    norm = (ds.observations - agent.obs_norm.mean.numpy()) / agent.obs_norm.std.numpy()
    tree = cKDTree(np.concatenate([2.0 * norm, ds.actions], 1))
    _, idx = tree.query(np.concatenate([2.0 * obs.numpy()[None].repeat(2, 0), pi.numpy()], -1))
    np.testing.assert_array_equal(target.numpy(), ds.actions[idx])


def test_family_defaults_follow_the_paper():
    info = registry.get("prdc")
    assert cfg.resolve_config(info, "halfcheetah").alpha == 40.0
    assert cfg.resolve_config(info, "hopper").alpha == 2.5
    anty = cfg.resolve_config(info, "antmaze")
    assert (anty.alpha, anty.beta, anty.reward_scale, anty.reward_shift) == (7.5, 7.5, 10000.0, -1.0)
    assert cfg.resolve_config(info, "hopper", overrides={"beta": 1.0}).beta == 1.0


def test_prdc_learns_pointmass(pointmass):
    ds = pointmass("medium", 20_000)
    agent = train_agent("prdc", ds, 2_000, hidden=[64, 64])
    score = evaluate_policy(agent, ds)
    assert score.mean() > 60, score
