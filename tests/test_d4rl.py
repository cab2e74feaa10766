"""offrl.data.d4rl: D4RL names, file names and reference scores, and reading D4RL hdf5 files into Datasets.

Every fixture is a tiny file written here with h5py in D4RL's on-disk layout;
no real D4RL data is needed or downloaded.
"""
import hashlib

import h5py
import numpy as np
import pytest

from offrl.data import d4rl, resolve
from offrl.errors import OfflineRLError

# Hopper fixture: episode 0 = rows 0-3 (ends in a terminal), episode 1 = rows 4-6 (ends in a timeout),
# episode 2 = rows 7-8 (the file stops mid-episode).
N = 9
TERMINALS = np.array([0, 0, 0, 1, 0, 0, 0, 0, 0], dtype=bool)
TIMEOUTS = np.array([0, 0, 0, 0, 0, 0, 1, 0, 0], dtype=bool)


def rows(n, dim):
    """Row i is 100*i + [0, 1, ..., dim-1]: any misalignment shows up as a wrong hundred."""
    return (100 * np.arange(n)[:, None] + np.arange(dim)[None, :]).astype(np.float32)


def hopper_arrays(obs_dim=11):
    obs = rows(N, obs_dim)
    # v2 stores the true s' everywhere; at episode ends it is not the next row, so mark it with +0.5.
    next_obs = np.concatenate([obs[1:], obs[-1:]]).copy()
    for end in (3, 6, 8):
        next_obs[end] = obs[end] + 0.5
    return {
        "observations": obs,
        "next_observations": next_obs,
        "actions": (np.arange(N * 3).reshape(N, 3) / 100).astype(np.float32),
        "rewards": (np.arange(N, dtype=np.float32) + 0.25).reshape(N, 1),  # (N, 1) as some files have
        "terminals": TERMINALS.reshape(N, 1),
        "timeouts": TIMEOUTS,
        "infos/qpos": np.ones((N, 6), dtype=np.float32),
        "metadata/algorithm": np.bytes_("SAC"),
    }


def write_hdf5(path, arrays):
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value)
    return path


@pytest.fixture
def d4rl_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path))
    return tmp_path


def quiet(_line):
    pass


@pytest.mark.parametrize("name, expected", [
    ("hopper-medium-replay-v2", "hopper_medium_replay-v2.hdf5"),
    ("halfcheetah-medium-expert", "halfcheetah_medium_expert-v2.hdf5"),  # no suffix means v2
    ("walker2d-full-replay-v1", "walker2d_full_replay-v1.hdf5"),
    ("walker2d-medium-replay-v0", "walker_mixed.hdf5"),
    ("hopper-medium-expert-v0", "hopper_medium_expert.hdf5"),
    ("antmaze-umaze-v2", "Ant_maze_u-maze_noisy_multistart_False_multigoal_False_sparse_fixed.hdf5"),
    ("antmaze-umaze-diverse-v2", "Ant_maze_u-maze_noisy_multistart_True_multigoal_True_sparse_fixed.hdf5"),
    ("antmaze-medium-play-v2", "Ant_maze_big-maze_noisy_multistart_True_multigoal_False_sparse_fixed.hdf5"),
    ("antmaze-large-diverse-v2", "Ant_maze_hardest-maze_noisy_multistart_True_multigoal_True_sparse_fixed.hdf5"),
    ("antmaze-large-play-v0", "Ant_maze_hardest-maze_noisy_multistart_True_multigoal_False_sparse.hdf5"),
    ("pen-human-v1", "pen-human-v1.hdf5"),
    ("kitchen-complete-v0", "mini_kitchen_microwave_kettle_light_slider-v0.hdf5"),
    ("kitchen-mixed", "kitchen_microwave_kettle_bottomburner_light-v0.hdf5"),
    ("maze2d-medium-v1", "maze2d-medium-sparse-v1.hdf5"),
    ("maze2d-large-dense-v1", "maze2d-large-dense-v1.hdf5"),
])
def test_file_name(name, expected):
    assert d4rl.file_name(name) == expected


@pytest.mark.parametrize("name, expected", [
    ("hopper-medium-replay-v2", (-20.272305, 3234.3)),
    ("ant-expert-v2", (-325.6, 3879.7)),
    ("antmaze-umaze-diverse-v2", (0.0, 1.0)),
    ("pen-human-v1", (96.262799, 3076.8331017826877)),
    ("relocate-cloned-v1", (-6.425911, 4233.877797728884)),
    ("maze2d-umaze-v1", (23.85, 161.86)),
    ("maze2d-medium-dense-v1", (44.264742, 297.4552547777125)),
])
def test_reference_scores(name, expected):
    assert d4rl.reference_scores(name) == expected


def test_every_family_has_reference_scores():
    tasks = {d4rl.parse_name(f"{env}-{ds}").task for spec in d4rl.DOMAINS.values()
             for env in spec.envs for ds in spec.datasets}
    assert tasks == set(d4rl.REF_SCORES)
    assert d4rl.REF_SCORES["antmaze-umaze"].max_episode_steps == 700
    assert d4rl.REF_SCORES["antmaze-large-play"].max_episode_steps == 1000


@pytest.mark.parametrize("name", ["hopper-simple-v2", "hopper-medium-v3", "antmaze-umaze-v1",
                                  "mujoco/hopper/medium-v0"])
def test_names_d4rl_lacks_raise(name):
    with pytest.raises(OfflineRLError):
        d4rl.file_name(name)


def test_d4rl_dir_default(monkeypatch, tmp_path):
    monkeypatch.delenv("D4RL_DATASET_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert d4rl.d4rl_dir() == tmp_path / ".d4rl" / "datasets"


def test_read_hdf5_flat_keys(tmp_path):
    data = d4rl.read_hdf5(write_hdf5(tmp_path / "x.hdf5", hopper_arrays()))
    assert data["metadata/algorithm"] == b"SAC"  # a scalar, read through [()]
    assert data["infos/qpos"].shape == (N, 6)
    assert data["rewards"].shape == (N,) and data["terminals"].shape == (N,)


def test_gym_mujoco_v2_file(d4rl_dir):
    path = write_hdf5(d4rl_dir / "hopper_medium_replay-v2.hdf5", hopper_arrays())
    lines = []
    ds = d4rl.resolve_d4rl("hopper-medium-replay-v2", log=lines.append)

    assert lines == [f"dataset hopper-medium-replay-v2: D4RL file {path}"]
    assert (ds.name, ds.family, ds.source, ds.version) == ("hopper-medium-replay-v2", "hopper", "d4rl", "v2")
    assert (ds.ref_min_score, ds.ref_max_score) == (-20.272305, 3234.3)
    assert len(ds) == N  # the file's own next_observations: no row is dropped
    np.testing.assert_array_equal(ds.observations[5], 500 + np.arange(11, dtype=np.float32))
    np.testing.assert_array_equal(ds.next_observations[2], ds.observations[3])  # within an episode
    np.testing.assert_array_equal(ds.next_observations[3], 300.5 + np.arange(11))  # the file's s' at a terminal
    np.testing.assert_array_equal(ds.next_observations[6], 600.5 + np.arange(11))  # ... and at a timeout
    np.testing.assert_array_equal(ds.terminals, TERMINALS)  # the timeout did not become a terminal
    np.testing.assert_array_equal(ds.timeouts, TIMEOUTS)
    assert ds.rewards.shape == (N,) and ds.rewards.dtype == np.float32
    np.testing.assert_array_equal(ds.rewards, np.arange(N) + 0.25)
    assert ds.provenance["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert ds.spec.action_low == (-1.0, -1.0, -1.0) and ds.spec.action_high == (1.0, 1.0, 1.0)
    env = ds.make_env()
    assert env.observation_space.shape == (11,)
    env.close()


def test_infos_become_extra_fields(d4rl_dir):
    arrays = hopper_arrays()
    arrays.update({"infos/qpos": rows(N, 6) + 0.25, "infos/qvel": rows(N, 6) - 0.25,
                   "infos/action_log_probs": np.arange(N, dtype=np.float64),
                   "infos/summary": np.zeros(3, np.float32)})  # not one row per transition: left out
    write_hdf5(d4rl_dir / "hopper_medium-v2.hdf5", arrays)
    ds = d4rl.resolve_d4rl("hopper-medium-v2", log=quiet)
    assert sorted(ds.extras) == ["infos/action_log_probs", "infos/qpos", "infos/qvel"]
    np.testing.assert_array_equal(ds.extra("infos/qpos")[5], 500.25 + np.arange(6))
    np.testing.assert_array_equal(ds.extra("infos/qvel")[:, 0], 100 * np.arange(N) - 0.25)
    assert ds.extra("infos/action_log_probs").dtype == np.float32
    assert ds.provenance["infos_not_per_row"] == ["infos/summary"]
    with pytest.raises(OfflineRLError, match=r"dataset hopper-medium-v2 has no extra field 'infos/goal' "
                                             r"\(it has infos/action_log_probs, infos/qpos, infos/qvel, mc_return\)"):
        ds.extra("infos/goal")


def test_bare_name_means_v2_and_resolve_finds_it(d4rl_dir):
    write_hdf5(d4rl_dir / "hopper_medium_replay-v2.hdf5", hopper_arrays())
    assert d4rl.resolve_d4rl("hopper-medium-replay", log=quiet).version == "v2"
    assert resolve("d4rl:hopper-medium-replay-v2", log=quiet).source == "d4rl"


def test_normalised_score_uses_d4rl_constants(d4rl_dir):
    write_hdf5(d4rl_dir / "hopper_medium_replay-v2.hdf5", hopper_arrays())
    ds = d4rl.resolve_d4rl("hopper-medium-replay-v2", log=quiet)
    assert round(float(ds.normalized_score(1000.0)), 6) == 31.34889  # 100 (1000 + 20.272305) / 3254.572305
    assert float(ds.normalized_score(3234.3)) == pytest.approx(100.0)


def antmaze_arrays():
    # Trajectory 0 = rows 0-3 (timeout at 3; rows 1-2 are a cluster of "near the goal" terminals: the
    # trajectory goes on after them), trajectory 1 = rows 4-6 (timeout at 6), trajectory 2 = rows 7-8 (cut off).
    n = 9
    return {
        "observations": rows(n, 29),
        "actions": np.zeros((n, 8), dtype=np.float32),
        "rewards": np.array([0, 1, 1, 0, 0, 0, 0, 0, 0], dtype=np.float32),
        "terminals": np.array([0, 1, 1, 0, 0, 0, 0, 0, 0], dtype=bool),
        "timeouts": np.array([0, 0, 0, 1, 0, 0, 1, 0, 0], dtype=bool),
        "infos/goal": rows(n, 2) + 0.5,
    }


def test_antmaze_file_without_next_observations(d4rl_dir):
    name = "Ant_maze_u-maze_noisy_multistart_False_multigoal_False_sparse_fixed.hdf5"
    write_hdf5(d4rl_dir / name, antmaze_arrays())
    ds = d4rl.resolve_d4rl("antmaze-umaze-v2", log=quiet)

    # The last row of each trajectory (3, 6, 8) has no successor and is dropped; the terminals are kept.
    kept = np.array([0, 1, 2, 4, 5, 7])
    assert len(ds) == 6 and ds.provenance["dropped_rows"] == 3
    np.testing.assert_array_equal(ds.observations[:, 0], 100 * kept)
    np.testing.assert_array_equal(ds.next_observations[:, 0], 100 * (kept + 1))
    np.testing.assert_array_equal(ds.terminals, [False, True, True, False, False, False])
    np.testing.assert_array_equal(ds.rewards, [0, 1, 1, 0, 0, 0])
    # The last kept row of each trajectory ends its episode: returns and return-to-go keep episodes apart.
    np.testing.assert_array_equal(ds.timeouts, [False, False, True, False, True, True])
    np.testing.assert_array_equal(ds.extra("infos/goal")[:, 0], 100 * kept + 0.5)  # the same rows kept
    np.testing.assert_array_equal(ds.mc_return(0.5), [0.5, 1.0, 1.0, 0.0, 0.0, 0.0])  # terminals stop the sum
    assert (ds.family, ds.version, ds.ref_min_score, ds.ref_max_score) == ("antmaze", "v2", 0.0, 1.0)
    with pytest.raises(OfflineRLError, match="antmaze-umaze-v2.*AntMaze"):
        ds.make_env()


def test_terminal_ends_the_trajectory_outside_antmaze(d4rl_dir):
    # An adroit-layout file (no next_observations): a terminal ends its trajectory, so the next row is not
    # its successor; the terminal row stays (never bootstrapped), the timeout row and the last row go.
    arrays = {"observations": rows(6, 45), "actions": np.zeros((6, 24), dtype=np.float32),
              "rewards": np.arange(6, dtype=np.float32), "terminals": np.array([0, 1, 0, 0, 0, 0], dtype=bool),
              "timeouts": np.array([0, 0, 0, 1, 0, 0], dtype=bool)}
    write_hdf5(d4rl_dir / "pen-human-v1.hdf5", arrays)
    ds = d4rl.resolve_d4rl("pen-human-v1", log=quiet)
    np.testing.assert_array_equal(ds.rewards, [0, 1, 2, 4])
    np.testing.assert_array_equal(ds.next_observations[:, 0], [100, 100, 300, 500])  # row 1: its own copy
    np.testing.assert_array_equal(ds.terminals, [False, True, False, False])
    np.testing.assert_array_equal(ds.timeouts, [False, False, True, True])  # rows 2 and 4 lost their successor
    np.testing.assert_array_equal(ds.episode_returns(), [1, 2, 4])


def test_timeouts_derived_from_max_episode_steps():
    ends = np.array([0, 0, 0, 0, 1, 0, 0, 0, 0, 0], dtype=bool)  # a terminal at row 4 restarts the count
    np.testing.assert_array_equal(d4rl.derive_timeouts(ends, 3), [0, 0, 1, 0, 0, 0, 0, 1, 0, 0])
    assert not d4rl.derive_timeouts(ends, None).any()


def test_kitchen_file_without_timeouts(d4rl_dir):
    n = 281  # kitchen episodes last 280 steps: the 280th row becomes a timeout
    arrays = {"observations": rows(n, 60), "actions": np.zeros((n, 9), dtype=np.float32),
              "rewards": np.zeros(n, dtype=np.float32), "terminals": np.zeros(n, dtype=np.float32)}
    write_hdf5(d4rl_dir / "kitchen_microwave_kettle_light_slider-v0.hdf5", arrays)
    ds = d4rl.resolve_d4rl("kitchen-partial-v0", log=quiet)
    assert len(ds) == 279  # row 279 (timeout) and row 280 (the file's last) have no successor


def test_ant_evaluates_in_a_111_dim_env(d4rl_dir):
    n = 4
    obs = rows(n, 111)
    obs[:, d4rl.ANT_CONTACT_START:] = 0.0  # as mujoco-py 2.x recorded them
    write_hdf5(d4rl_dir / "ant_medium-v2.hdf5", {"observations": obs, "next_observations": obs,
                                                 "actions": np.zeros((n, 8), np.float32),
                                                 "rewards": np.zeros(n, np.float32),
                                                 "terminals": np.zeros(n, bool), "timeouts": np.zeros(n, bool)})
    ds = d4rl.resolve_d4rl("ant-medium-v2", log=quiet)
    assert ds.provenance["zeroed_contact_forces"] is True
    env = ds.make_env()
    first, _ = env.reset(seed=0)
    assert first.shape == (111,) and not first[d4rl.ANT_CONTACT_START:].any()
    env.close()


def test_obs_dim_that_the_env_does_not_have(d4rl_dir):
    write_hdf5(d4rl_dir / "hopper_medium-v2.hdf5", hopper_arrays(obs_dim=12))
    with pytest.raises(OfflineRLError, match=r"hopper_medium-v2\.hdf5.*12.*Hopper-v5"):
        d4rl.resolve_d4rl("hopper-medium-v2", log=quiet)


def test_corrupt_file(d4rl_dir):
    (d4rl_dir / "hopper_medium-v2.hdf5").write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(OfflineRLError, match=r"hopper_medium-v2\.hdf5.*corrupt"):
        d4rl.resolve_d4rl("hopper-medium-v2", log=quiet)


def test_file_without_actions(d4rl_dir):
    arrays = hopper_arrays()
    del arrays["actions"]
    write_hdf5(d4rl_dir / "hopper_medium-v2.hdf5", arrays)
    with pytest.raises(OfflineRLError, match=r"hopper_medium-v2\.hdf5 has no actions"):
        d4rl.resolve_d4rl("hopper-medium-v2", log=quiet)


def test_row_counts_that_disagree(d4rl_dir):
    arrays = hopper_arrays()
    arrays["actions"] = arrays["actions"][:-1]
    write_hdf5(d4rl_dir / "hopper_medium-v2.hdf5", arrays)
    with pytest.raises(OfflineRLError, match=r"hopper_medium-v2\.hdf5: actions has shape \(8, 3\)"):
        d4rl.resolve_d4rl("hopper-medium-v2", log=quiet)


def test_missing_file(d4rl_dir):
    with pytest.raises(OfflineRLError, match=r"hopper_medium_replay-v2\.hdf5 not found.*never downloads"):
        d4rl.resolve_d4rl("hopper-medium-replay-v2", log=quiet)
    assert d4rl.resolve_d4rl("hopper-medium-replay-v2", log=quiet, missing_ok=True) is None
    # A name that is not D4RL's is no error when the caller is only asking whether D4RL has it.
    assert d4rl.resolve_d4rl("pointmass-medium", log=quiet, missing_ok=True) is None
