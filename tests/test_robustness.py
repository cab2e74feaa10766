"""Robustness evaluation: action noise and shifted starts, for any agent, chosen with a flag, kept in the row."""
import gymnasium as gym
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from offrl import results
from offrl.cli import main
from offrl.errors import OfflineRLError
from offrl.evaluation import Evaluator, Perturbation


class OptimalPointMass(nn.Module):
    """Every seed acts with pointmass's known optimal policy, so seeds differ only in what the evaluation does."""

    def __init__(self, num_seeds):
        super().__init__()
        self.num_seeds = num_seeds

    def act(self, obs, deterministic=True):
        return ((obs[..., 2:] - obs[..., :2]) / 0.1).clamp(-1, 1)


def _returns(dataset, perturbation, seeds=2, episodes=8):
    ev = Evaluator(dataset, seeds, episodes, perturbation=perturbation)
    try:
        return ev.run(OptimalPointMass(seeds))
    finally:
        ev.close()


def test_labels_name_what_was_perturbed():
    assert Perturbation().label() == "none"
    assert Perturbation(action_noise=0.3).label() == "action_noise=0.3"
    assert Perturbation(action_noise=0.3, start_shift=1.0).label() == "start_shift=1,action_noise=0.3"


def test_action_noise_is_the_same_for_every_seed_and_every_evaluation(pointmass):
    data = pointmass("medium", 2_000)
    clean = _returns(data, Perturbation())
    noisy = _returns(data, Perturbation(action_noise=0.5))
    assert np.array_equal(noisy[0], noisy[1])  # the same policy under the same noise
    assert np.array_equal(noisy, _returns(data, Perturbation(action_noise=0.5)))  # fixed draws
    assert noisy.mean() < clean.mean()  # the optimal policy can only lose under noise
    assert np.array_equal(clean, _returns(data, Perturbation(action_noise=0.0)))


def test_shifted_starts_leave_the_data_box_and_keep_the_goals(pointmass):
    env = pointmass("medium", 2_000).make_env()
    plain, _ = env.reset(seed=3)
    shifted, _ = env.reset(seed=3, options={"start_shift": 1.0})
    assert np.all(np.abs(shifted[:2]) >= 1.0) and np.array_equal(shifted[2:], plain[2:])
    assert np.allclose(shifted[:2], np.clip(plain[:2] + np.sign(plain[:2]), -2, 2))
    data = pointmass("medium", 2_000)
    assert _returns(data, Perturbation(start_shift=1.0)).mean() < _returns(data, Perturbation()).mean()


def test_an_env_without_shifted_starts_is_refused():
    with pytest.raises(OfflineRLError, match="start-shift"):
        Perturbation(start_shift=1.0).check(gym.make("Pendulum-v1"))
    Perturbation(action_noise=0.2).check(gym.make("Pendulum-v1"))  # action noise applies to any box


def test_the_flag_is_recorded_in_the_rows_and_groups_the_table(tmp_path, data_dir):
    runner = CliRunner()
    for extra in ([], ["--eval-action-noise", "0.3"]):
        out = runner.invoke(main, ["run", "--agent", "bc", "--env", "pointmass-medium", "--seeds", "0",
                                   "--steps", "10", "--eval-every", "10", "--eval-episodes", "10",
                                   "--dataset-size", "2000", "--set", "hidden=[16,16]", "--threads", "1",
                                   "--out", str(tmp_path), *extra])
        assert out.exit_code == 0, out.output
    rows = results.read_rows(tmp_path / "results.csv")
    assert [r["eval_perturbation"] for r in rows] == ["none", "action_noise=0.3"]
    assert rows[0]["final_score"] != rows[1]["final_score"]
    table = runner.invoke(main, ["table", str(tmp_path / "results.csv")]).output
    assert "pointmass-medium [action_noise=0.3]" in table and "\nbc     pointmass-medium  " in table
