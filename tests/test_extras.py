"""Extra per-transition fields: the discounted return-to-go (values pinned by hand), recorded extras, how an
agent's declared extras reach the batch (same rows as the fixed keys, same draws per seed), and the errors."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from offrl.data import from_arrays
from offrl.data.returns import return_to_go
from offrl.errors import OfflineRLError
from offrl.replay import TransitionBuffer

# Episode 0 = rows 0-2 (ends in a terminal), episode 1 = rows 3-4 (ends in a timeout), episode 2 = rows 5-6
# (the dataset stops mid-episode). Rewards are the row number + 1; γ = 0.5 keeps the sums exact.
REWARDS = np.arange(1.0, 8.0)
TERMINALS = np.array([0, 0, 1, 0, 0, 0, 0], dtype=bool)
TIMEOUTS = np.array([0, 0, 0, 0, 1, 0, 0], dtype=bool)


def episodes_dataset(n_rows=None, **extras):
    """The fixture above (or `n_rows` of a repeated pattern), observations[i] = [i, -i]."""
    rewards, terminals, timeouts = REWARDS, TERMINALS, TIMEOUTS
    if n_rows is not None:
        reps = -(-n_rows // 7)
        rewards, terminals, timeouts = (np.tile(a, reps)[:n_rows] for a in (REWARDS, TERMINALS, TIMEOUTS))
    n = len(rewards)
    obs = np.stack([np.arange(n), -np.arange(n)], 1).astype(np.float32)
    arrays = dict(observations=obs, next_observations=obs + 1, actions=np.zeros((n, 1), np.float32),
                  rewards=rewards, terminals=terminals, timeouts=timeouts, **extras)
    return from_arrays("episodes", arrays, family="toy", source="offrl", version="test")


def test_return_to_go_by_hand():
    # Terminal: G2 = 3, G1 = 2 + 3/2, G0 = 1 + 3.5/2. Timeout and cut end: nothing after the last reward.
    np.testing.assert_array_equal(return_to_go(REWARDS, TERMINALS, TIMEOUTS, 0.5),
                                  [2.75, 3.5, 3.0, 6.5, 5.0, 9.5, 7.0])


def test_return_to_go_bootstrap_tail():
    # A truncated episode goes on with its last reward: G_T = r_T / (1 - γ); the terminal episode is unchanged.
    np.testing.assert_array_equal(return_to_go(REWARDS, TERMINALS, TIMEOUTS, 0.5, bootstrap_tail=True),
                                  [2.75, 3.5, 3.0, 9.0, 10.0, 13.0, 14.0])


def test_return_to_go_reward_transform_and_failure_rule():
    rewards = np.array([1.0, 2.0, 3.0, 0.0, 0.0, 6.0, 7.0])  # episode 1 never succeeds (every reward is 0)
    g = return_to_go(rewards, TERMINALS, TIMEOUTS, 0.5, reward_scale=2.0, reward_shift=-1.0, failure_reward=0.0)
    # r' = 2r - 1: episode 0 -> [1, 3, 5], episode 2 -> [11, 13]; episode 1 -> r'_fail / (1 - γ) = -2.
    np.testing.assert_array_equal(g, [3.75, 5.5, 5.0, -2.0, -2.0, 17.5, 13.0])


def test_terminal_inside_a_trajectory_stops_the_sum():
    # AntMaze keeps rows after a "near the goal" terminal: the return restarts after it.
    g = return_to_go(np.ones(4), np.array([0, 1, 0, 0], bool), np.zeros(4, bool), 0.5)
    np.testing.assert_array_equal(g, [1.5, 1.0, 1.5, 1.0])


def test_return_to_go_matches_a_loop_over_long_episodes():
    rng = np.random.default_rng(0)
    n = 5000
    rewards = rng.normal(size=n)
    terminals, timeouts = rng.random(n) < 1e-3, rng.random(n) < 1e-3
    expected, g = np.zeros(n), 0.0
    for t in reversed(range(n)):
        g = rewards[t] + (0.0 if (terminals[t] or timeouts[t]) else 0.99 * g)
        expected[t] = g
    np.testing.assert_allclose(return_to_go(rewards, terminals, timeouts, 0.99), expected, rtol=1e-5, atol=1e-5)


def test_mc_return_is_computed_once_per_parameters():
    ds = episodes_dataset()
    first = ds.mc_return(0.5)
    assert ds.mc_return(0.5) is first and not first.flags.writeable
    assert ds.mc_return(0.9) is not first
    np.testing.assert_array_equal(ds.extras_for(["mc_return"], SimpleNamespace(discount=0.5))["mc_return"], first)


def test_extras_for_reads_the_agent_config():
    ds = episodes_dataset()
    config = SimpleNamespace(discount=0.5, reward_scale=2.0, reward_shift=-1.0, batch_size=4)
    np.testing.assert_array_equal(ds.extras_for(["mc_return"], config)["mc_return"],
                                  [3.75, 5.5, 5.0, 11.5, 9.0, 17.5, 13.0])  # r' = 2r - 1
    with pytest.raises(OfflineRLError, match="mc_return of dataset episodes needs discount"):
        ds.extras_for(["mc_return"], SimpleNamespace(batch_size=4))


def test_missing_extra_names_dataset_field_and_what_it_has():
    ds = episodes_dataset(**{"infos/qpos": np.zeros((7, 3))})
    with pytest.raises(OfflineRLError) as err:
        ds.extras_for(["infos/cost"], SimpleNamespace(discount=0.99))
    assert str(err.value) == "dataset episodes has no extra field 'infos/cost' (it has infos/qpos, mc_return)"


def test_extra_with_wrong_rows_is_refused():
    with pytest.raises(OfflineRLError, match="episodes: extra field infos/qpos has shape \\(6, 3\\), rewards has 7"):
        episodes_dataset(**{"infos/qpos": np.zeros((6, 3))})


def test_buffer_samples_extras_on_the_same_rows():
    n = 700
    ds = episodes_dataset(n, **{"infos/row": np.arange(n), "infos/pair": np.stack([np.arange(n)] * 2, 1) * 0.5})
    extras = ds.extras_for(["mc_return", "infos/row", "infos/pair"], SimpleNamespace(discount=0.5))
    batch = TransitionBuffer(ds, [0, 1], 64, extras=extras).sample()
    rows = batch["observations"][..., 0].long()  # [S, B]
    assert batch["infos/row"].dtype == torch.int64 and batch["infos/row"].shape == (2, 64)
    torch.testing.assert_close(batch["infos/row"], rows)
    torch.testing.assert_close(batch["infos/pair"], rows[..., None].float().expand(2, 64, 2) * 0.5)
    torch.testing.assert_close(batch["mc_return"], torch.from_numpy(ds.mc_return(0.5).copy())[rows])
    torch.testing.assert_close(batch["rewards"], torch.as_tensor(ds.rewards)[rows])


def test_seeds_sample_the_same_alone_and_together_with_extras():
    n = 700
    ds = episodes_dataset(n)
    extras = ds.extras_for(["mc_return"], SimpleNamespace(discount=0.9))
    plain = TransitionBuffer(ds, [0, 1], 32)
    together = TransitionBuffer(ds, [0, 1], 32, extras=extras)
    alone = [TransitionBuffer(ds, [s], 32, extras=extras) for s in (0, 1)]
    for _ in range(3):
        p, t, a0, a1 = plain.sample(), together.sample(), alone[0].sample(), alone[1].sample()
        torch.testing.assert_close(t["observations"], p["observations"], rtol=0, atol=0)
        for key in ("observations", "mc_return"):
            torch.testing.assert_close(t[key][0], a0[key][0], rtol=0, atol=0)
            torch.testing.assert_close(t[key][1], a1[key][0], rtol=0, atol=0)


def test_agent_declared_extras_reach_update(pointmass, monkeypatch):
    """The shared training helper builds the buffer from the agent's declared extras."""
    from conftest import train_agent
    from offrl import registry

    td3bc = registry.get("td3bc")
    seen = {}

    class Recorder(td3bc.agent_cls):
        extras = ("mc_return",)

        def update(self, batch, step):
            seen.update(batch)
            return super().update({k: v for k, v in batch.items() if k != "mc_return"}, step)

    monkeypatch.setattr(registry, "_AGENTS", dict(registry._AGENTS))  # the registration ends with the test
    registry.register_agent("extras_recorder", Recorder, td3bc.config_cls, paper="test", family="test")
    ds = pointmass("medium", 2_000)
    train_agent("extras_recorder", ds, steps=1, batch_size=8)
    rows = [np.flatnonzero((ds.observations == o).all(1))[0] for o in seen["observations"][0].numpy()]
    np.testing.assert_allclose(seen["mc_return"][0].numpy(), ds.mc_return(0.99)[rows])


def test_cli_run_of_an_agent_needing_a_missing_extra_is_one_line(tmp_path, data_dir, monkeypatch):
    from click.testing import CliRunner

    from offrl import registry
    from offrl.cli import main

    td3bc = registry.get("td3bc")

    class NeedsCost(td3bc.agent_cls):
        extras = ("infos/cost",)

    monkeypatch.setattr(registry, "_AGENTS", dict(registry._AGENTS))
    registry.register_agent("needs_cost", NeedsCost, td3bc.config_cls, paper="test", family="test")
    out = CliRunner().invoke(main, ["run", "--agent", "needs_cost", "--env", "pointmass-medium", "--steps", "10",
                                    "--dataset-size", "20000", "--out", str(tmp_path / "runs")])
    assert out.exit_code == 2, out.output
    assert "dataset pointmass-medium has no extra field 'infos/cost' (it has mc_return)" in out.output
    assert not (tmp_path / "runs").exists()  # nothing written


def test_buffer_refuses_an_extra_that_shadows_a_batch_key_or_has_other_rows():
    ds = episodes_dataset()
    with pytest.raises(OfflineRLError, match="episodes: extra field 'dones' shadows a batch key"):
        TransitionBuffer(ds, [0], 4, extras={"dones": np.zeros(7)})
    with pytest.raises(OfflineRLError, match=r"episodes: extra field 'x' has shape \(5,\) for 7 transitions"):
        TransitionBuffer(ds, [0], 4, extras={"x": np.zeros(5)})
