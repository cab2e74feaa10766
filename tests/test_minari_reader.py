"""offrl.data.minari_reader and resolve("minari:..."): Minari's T+1 observations become aligned transitions.

Fixtures are written with minari's own API (create_dataset_from_buffers, no jax) into tmp_path, with two
episodes of different lengths so that an off-by-one per episode cannot hide.
"""
from types import SimpleNamespace

import numpy as np
import pytest

from offrl.data import resolve
from offrl.data.minari_reader import episodes_to_transitions, flatten_observation, load_minari
from offrl.errors import OfflineRLError

minari = pytest.importorskip("minari")
from minari.data_collector import EpisodeBuffer  # noqa: E402

T0, T1 = 3, 5  # episode 0 ends in a termination, episode 1 in a truncation


def episode_obs(episode, T):
    """T+1 Hopper observations; row t of episode e is 1000 e + 10 t + [0..10], so each row is unique."""
    return (1000 * episode + 10 * np.arange(T + 1)[:, None] + np.arange(11)[None, :]).astype(np.float64)


def buffer(episode, T, terminated, infos=None):
    ends = np.zeros(T, dtype=bool)
    return EpisodeBuffer(
        id=episode, observations=episode_obs(episode, T),
        actions=np.full((T, 3), 0.1 * episode, dtype=np.float32),
        rewards=100.0 * episode + np.arange(T, dtype=np.float64),
        terminations=np.r_[ends[:-1], terminated], truncations=np.r_[ends[:-1], not terminated],
        infos=infos or {})


def recorded_infos(episode, T):
    """Infos as Minari's DataCollector records them: the reset's, then one per step (T+1 entries).
    Entry t of "cost" is 1000 e + t; "state/qpos" row t is 1000 e + t + [0, 0.5]."""
    t = 1000 * episode + np.arange(T + 1, dtype=np.float64)
    return {"cost": t, "state": {"qpos": t[:, None] + np.array([0.0, 0.5])}}


@pytest.fixture
def minari_path(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    return tmp_path


def create(dataset_id, **refs):
    minari.create_dataset_from_buffers(
        dataset_id, [buffer(0, T0, True), buffer(1, T1, False)], env="Hopper-v5", eval_env="Hopper-v5",
        algorithm_name="fixture", author="offrl", author_email="offrl@example.com",
        code_permalink="https://example.com/offrl", description="offrl test fixture", **refs)


def quiet(_line):
    pass


def test_load_minari_aligns_next_observations_across_episodes(minari_path):
    create("offrltest/hopper/aligned-v0")
    arrays, meta, _ = load_minari("offrltest/hopper/aligned-v0")
    ep0, ep1 = episode_obs(0, T0), episode_obs(1, T1)

    assert arrays["observations"].shape == (T0 + T1, 11)
    np.testing.assert_array_equal(arrays["next_observations"][T0 - 1], ep0[T0])  # episode 0's last s'
    np.testing.assert_array_equal(arrays["observations"][T0], ep1[0])  # episode 1 starts at its reset obs
    np.testing.assert_array_equal(arrays["observations"][T0:], ep1[:-1])
    np.testing.assert_array_equal(arrays["next_observations"][T0:], ep1[1:])
    np.testing.assert_array_equal(arrays["rewards"], [0, 1, 2, 100, 101, 102, 103, 104])
    np.testing.assert_array_equal(arrays["terminals"], [0, 0, 1, 0, 0, 0, 0, 0])  # terminations
    np.testing.assert_array_equal(arrays["timeouts"], [0, 0, 0, 0, 0, 0, 0, 1])  # truncations
    assert meta["observation_layout"] == []


def test_resolve_minari_without_reference_scores(minari_path):
    create("offrltest/hopper/noref-v0")
    lines = []
    ds = resolve("minari:offrltest/hopper/noref-v0", log=lines.append)

    assert lines == [f"dataset offrltest/hopper/noref-v0: Minari dataset in {minari_path}/offrltest/hopper/noref-v0"]
    assert (ds.source, ds.family, len(ds)) == ("minari", "hopper", T0 + T1)
    assert ds.observations.dtype == np.float32  # Minari stores MuJoCo observations as float64
    np.testing.assert_array_equal(ds.next_observations[T0 - 1], episode_obs(0, T0)[T0])
    np.testing.assert_array_equal(ds.observations[T0], episode_obs(1, T1)[0])
    np.testing.assert_array_equal(ds.terminals, [0, 0, 1, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(ds.timeouts, [0, 0, 0, 0, 0, 0, 0, 1])
    assert not ds.has_reference_scores
    with pytest.raises(OfflineRLError, match="offrltest/hopper/noref-v0 has no reference scores"):
        ds.normalized_score(1000.0)


def test_resolve_minari_with_reference_scores(minari_path):
    create("offrltest/hopper/ref-v0", ref_min_score=-20.272305, ref_max_score=3234.3)
    ds = resolve("minari:offrltest/hopper/ref-v0", log=quiet)
    assert (ds.ref_min_score, ds.ref_max_score) == (-20.272305, 3234.3)
    assert round(float(ds.normalized_score(1000.0)), 6) == 31.34889  # 100 (1000 + 20.272305) / 3254.572305
    env = ds.make_env()
    assert env.observation_space.shape == (11,)
    env.close()


def test_missing_minari_dataset_names_it(minari_path):
    with pytest.raises(OfflineRLError, match="offrltest/hopper/absent-v0"):
        load_minari("offrltest/hopper/absent-v0")


def test_infos_become_extra_fields_with_the_t_plus_one_rule(minari_path):
    minari.create_dataset_from_buffers(
        "offrltest/hopper/infos-v0", [buffer(0, T0, True, recorded_infos(0, T0)),
                                      buffer(1, T1, False, recorded_infos(1, T1))],
        env="Hopper-v5", eval_env="Hopper-v5", algorithm_name="fixture", author="offrl",
        author_email="offrl@example.com", code_permalink="https://example.com/offrl", description="offrl test fixture")
    ds = resolve("minari:offrltest/hopper/infos-v0", log=quiet)
    steps = np.r_[np.arange(T0), 1000 + np.arange(T1)]  # entry t of each episode, as observations[:-1]
    assert sorted(ds.extras) == ["infos/cost", "infos/state/qpos", "next_infos/cost", "next_infos/state/qpos"]
    np.testing.assert_array_equal(ds.extra("infos/cost"), steps)
    np.testing.assert_array_equal(ds.extra("next_infos/cost"), steps + 1)  # what step t returned
    np.testing.assert_array_equal(ds.extra("infos/state/qpos")[:, 1], steps + 0.5)
    np.testing.assert_array_equal(ds.extra("next_infos/state/qpos")[T0 - 1], [T0, T0 + 0.5])  # episode 0's end


def test_infos_of_t_entries_and_infos_that_do_not_fit():
    def episode(i, T, infos):
        return SimpleNamespace(id=i, observations=np.zeros((T + 1, 2)), actions=np.zeros((T, 1)),
                               rewards=np.zeros(T), terminations=np.zeros(T, bool),
                               truncations=np.r_[np.zeros(T - 1, bool), True], infos=infos)
    episodes = [episode(0, 2, {"cost": np.array([1.0, 2.0]), "label": np.array(["a", "b"]),
                               "only_here": np.array([1, 2])}),
                episode(1, 3, {"cost": np.array([3.0, 4.0, 5.0]), "label": np.array(["c", "d", "e"]),
                               "flag": np.array([True, False, True])})]
    arrays, _, left_out = episodes_to_transitions(episodes)
    np.testing.assert_array_equal(arrays["infos/cost"], [1, 2, 3, 4, 5])  # T entries: taken as they are
    assert "next_infos/cost" not in arrays
    assert left_out == ["infos/flag", "infos/label", "infos/only_here"]  # text, or not in every episode


def test_episode_cut_short_gets_a_timeout():
    ep = SimpleNamespace(id=0, observations=np.zeros((3, 1)), actions=np.zeros((2, 1)), rewards=np.ones(2),
                         terminations=np.zeros(2, bool), truncations=np.zeros(2, bool))
    arrays, _, _ = episodes_to_transitions([ep, ep])
    np.testing.assert_array_equal(arrays["timeouts"], [0, 1, 0, 1])
    np.testing.assert_array_equal(arrays["terminals"], [0, 0, 0, 0])


def test_flatten_dict_observation_in_sorted_key_order():
    T = 2
    obs = {
        "b": np.array([[1.0, 2.0], [3.0, 4.0]]),
        "a": np.array([[5.0], [6.0]]),
        "c": {"y": np.array([7.0, 8.0]), "x": np.arange(T * 4, dtype=float).reshape(T, 2, 2) + 10},
    }
    flat, layout = flatten_observation(obs)
    np.testing.assert_array_equal(flat, [[5, 1, 2, 10, 11, 12, 13, 7],
                                         [6, 3, 4, 14, 15, 16, 17, 8]])
    assert layout == [("a", 1, []), ("b", 2, []), ("c", 5, [("x", 4, []), ("y", 1, [])])]


def test_dict_observation_episodes_keep_t_plus_one_alignment():
    # An antmaze-like episode (observation + goal) of T = 2 steps: T+1 dict rows cut after flattening.
    ep = SimpleNamespace(
        id=0, observations={"observation": np.array([[0.0], [1.0], [2.0]]),
                            "desired_goal": np.array([[9.0], [9.0], [9.0]])},
        actions=np.zeros((2, 1)), rewards=np.zeros(2), terminations=np.zeros(2, bool),
        truncations=np.array([False, True]))
    arrays, layout, _ = episodes_to_transitions([ep])
    np.testing.assert_array_equal(arrays["observations"], [[9, 0], [9, 1]])
    np.testing.assert_array_equal(arrays["next_observations"], [[9, 1], [9, 2]])
    assert layout == [("desired_goal", 1, []), ("observation", 1, [])]
