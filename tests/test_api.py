"""The Python API as a notebook uses it: train, load one seed's policy, act in a gymnasium env."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import offrl
from offrl.errors import OfflineRLError


def test_train_then_load_a_seed_and_act_in_the_env(tmp_path, pointmass):
    pointmass("medium", 20_000)  # built once per session by the fixture; offrl.train finds it by name and size
    run = offrl.train("td3bc", "pointmass-medium", seeds=[0, 1], steps=1500, eval_every=1500, eval_episodes=5,
                      dataset_size=20_000, out=tmp_path, name="nb", threads=1, hidden=[64, 64])
    assert run.run_dir == tmp_path / "nb" and sorted(run.final_scores) == [0, 1]
    assert (tmp_path / "results.csv").read_text().count("\n") == 3  # header + one row per seed

    policy = offrl.load_policy(run.run_dir, seed=1)
    env = gym.make("offrl/PointMass-v0")
    returns = []
    for k in range(5):  # the run's evaluation episodes: env seeds 10_000 + k
        obs, _ = env.reset(seed=10_000 + k)
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(policy.predict(obs))
            total += reward
            done = terminated or truncated
        returns.append(total)
    env.close()
    # Seed 1's policy, loaded alone, acts as it did in the run: the same mean return as its last evaluation.
    assert np.mean(returns) == pytest.approx(run.rows[1]["final_return"], rel=1e-4)
    ds = offrl.datasets.load("pointmass-medium", size=20_000, quiet=True)
    assert ds.normalized_score(np.array([np.mean(returns)]))[0] > 40  # well above the random policy's 0

    batch = policy.predict(np.stack([obs, obs]))
    assert batch.shape == (2, ds.spec.act_dim) and np.allclose(batch[0], batch[1])
    with pytest.raises(OfflineRLError, match="no seed 7"):
        offrl.load_policy(run.run_dir, seed=7)


def test_datasets_load_is_the_resolver(pointmass):
    ds = offrl.datasets.load("pointmass-medium", size=20_000, quiet=True)
    assert len(ds) == 20_000 and ds.family == "pointmass"
