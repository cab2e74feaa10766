"""BC learns the toy task: far above the random policy (normalised score 0) in 2,000 updates.

On pointmass-medium the behaviour policy is 0.2·a* + 0.8·uniform + Gaussian noise (envs/pointmass.py); the noise
has mean zero, so the regression E[a | s] is a slowed-down optimal action and BC scores above the behaviour
policy's own ~40 without any reward.
"""
import torch

from conftest import evaluate_policy, train_agent


def test_bc_learns_pointmass(pointmass):
    ds = pointmass("medium", 20_000)
    agent = train_agent("bc", ds, 2_000, hidden=[64, 64])
    score = evaluate_policy(agent, ds)
    # Observed about 60.
    assert score.mean() > 40, score


def test_bc_regresses_onto_the_dataset_actions(pointmass):
    ds = pointmass("medium", 20_000)
    agent = train_agent("bc", ds, 1, hidden=[32, 32])
    obs = torch.as_tensor(ds.observations[:512])[None]
    acts = torch.as_tensor(ds.actions[:512])[None]
    before = (agent.act(obs) - acts).pow(2).mean()
    agent = train_agent("bc", ds, 300, hidden=[32, 32])
    after = (agent.act(obs) - acts).pow(2).mean()
    assert after < before, (before, after)
