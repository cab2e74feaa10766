"""The MuJoCo recipes (envs/mujoco.py) on small sizes: hopper datasets from the shipped PPO policies."""
from __future__ import annotations

import hashlib
import json

import gymnasium as gym
import numpy as np
import pytest

from offrl.envs import behaviour, mujoco
from offrl.gymenv import make_env

pytestmark = pytest.mark.skipif(not mujoco.has_policies("hopper"), reason="hopper behaviour policies not shipped")

SIZE = 3_000


@pytest.fixture(scope="module")
def hopper_medium(data_dir):
    from offrl.data import resolve
    return resolve("offrl:hopper-medium", size=SIZE, log=lambda msg: None)


def episode_bounds(ds):
    ends = np.flatnonzero(ds.terminals | ds.timeouts)
    starts = np.r_[0, ends[:-1] + 1]
    return list(zip(starts, ends + 1))


def hopper_healthy(obs: np.ndarray) -> np.ndarray:
    """Hopper-v5's is_healthy, from observations (obs = qpos[1:] + clipped qvel: z = obs[0], angle = obs[1])."""
    env = gym.make("Hopper-v5").unwrapped
    (lo_s, hi_s), (lo_z, hi_z), (lo_a, hi_a) = env._healthy_state_range, env._healthy_z_range, env._healthy_angle_range
    state = obs[:, 1:]
    return (np.all((lo_s < state) & (state < hi_s), axis=1) & (lo_z < obs[:, 0]) & (obs[:, 0] < hi_z)
            & (lo_a < obs[:, 1]) & (obs[:, 1] < hi_a))


def test_hopper_registered_with_d4rl_sizes():
    from offrl.data import recipes
    recipes.load_builtin()
    r = recipes.RECIPES["hopper"]
    assert r.env_id == "Hopper-v5"
    assert r.levels == ("random", "medium", "expert", "medium-replay", "medium-expert")
    assert r.default_size == {"random": 1_000_000, "medium": 1_000_000, "expert": 1_000_000,
                              "medium-replay": 402_000, "medium-expert": 2_000_000}
    assert set(r.provenance["behaviour_policies"]) >= {"expert.pt", "medium.pt", "replay_00.pt"}


def test_a_size_below_one_transition_is_refused_before_any_work():
    from offrl.data import resolve
    from offrl.errors import OfflineRLError
    with pytest.raises(OfflineRLError, match="positive number of transitions, got 0"):
        resolve("offrl:hopper-medium", size=0, log=lambda msg: None)


def test_hopper_medium_shape_and_size(hopper_medium):
    ds = hopper_medium
    assert ds.observations.shape == (SIZE, 11) and ds.actions.shape == (SIZE, 3)
    assert len(ds) == SIZE
    assert ds.source == "offrl" and ds.has_reference_scores
    assert np.all(np.abs(ds.actions) <= 1.0)


def test_t_plus_one_alignment(hopper_medium):
    ds = hopper_medium
    within = ~(ds.terminals | ds.timeouts)[:-1]
    np.testing.assert_array_equal(ds.next_observations[:-1][within], ds.observations[1:][within])


def test_terminals_only_where_hopper_falls_and_timeouts_at_cuts(hopper_medium):
    ds = hopper_medium
    assert not np.any(ds.terminals & ds.timeouts)
    healthy = hopper_healthy(ds.next_observations.astype(np.float64))
    np.testing.assert_array_equal(ds.terminals, ~healthy)
    bounds = episode_bounds(ds)
    assert bounds[-1][1] == SIZE and ds.timeouts[-1]  # the last episode is cut and marked a timeout
    for start, end in bounds[:-1]:
        if ds.timeouts[end - 1]:
            assert end - start == 1000  # the only other timeout: the 1000-step limit
        else:
            assert ds.terminals[end - 1]


def test_build_is_deterministic(hopper_medium):
    a = mujoco.build_episodes("hopper", "medium", SIZE, 0, progress=False)
    b = mujoco.build_episodes("hopper", "medium", SIZE, 0, progress=False)
    assert len(a) == len(b)
    for ea, eb in zip(a, b):
        for key in ea:
            np.testing.assert_array_equal(ea[key], eb[key])
    # and the stored dataset holds exactly these episodes
    np.testing.assert_array_equal(np.concatenate([e["actions"] for e in a]), hopper_medium.actions)
    np.testing.assert_array_equal(np.concatenate([e["observations"][:-1] for e in a]), hopper_medium.observations)
    c = mujoco.build_episodes("hopper", "medium", SIZE, 1, progress=False)
    assert not np.array_equal(np.concatenate([e["actions"] for e in c]), hopper_medium.actions)


# hopper-medium at SIZE transitions (dataset seed 0) from the shipped policies. Pinned because the recipes promise
# the same bits on every machine: a run moved to another one rebuilds its dataset and resumes only on identical
# data. Before the policies acted with CPU-independent arithmetic, this build gave a different fingerprint with
# MKL's default, AVX2 and SSE4.2 code paths on one machine.
HOPPER_MEDIUM_FINGERPRINT = "9b0e105f1393cbc30a38c2e6c29b092a53e0116ccfcb04e7da7d037eeafcf346"

# Environment variables that make MKL (torch's matmul), numpy's SIMD functions and OpenBLAS take the code paths of
# older CPUs: a process started with them computes as such a machine would.
OLDER_CPUS = [{"MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "OPENBLAS_CORETYPE": "Prescott"},
              {"MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2",
               "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR AVX512F AVX512CD AVX512_SKX AVX512_CLX "
                                           "AVX512_CNL"},
              {"NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4 AVX512_ICL AVX512_SPR AVX2 FMA3 AVX512F AVX512CD "
                                           "AVX512_SKX AVX512_CLX AVX512_CNL", "ATEN_CPU_CAPABILITY": "default"}]

FINGERPRINT_AND_ACTIONS = f"""
import hashlib, numpy as np
from offrl.cache import dataset_fingerprint
from offrl.data import resolve
from offrl.envs import behaviour, mujoco
print(dataset_fingerprint(resolve("offrl:hopper-medium", size={SIZE}, log=lambda msg: None)))
for family in behaviour.FAMILIES:
    if mujoco.has_policies(family):
        pol = mujoco.load_policy(family, "medium.pt")
        obs = np.random.default_rng(0).normal(size=(64, pol.obs_dim))
        print(family, hashlib.sha256(pol.act(obs, np.random.default_rng(1)).tobytes()).hexdigest())
"""


def fingerprint_and_actions(data_dir, **env_vars) -> list[str]:
    """What FINGERPRINT_AND_ACTIONS prints, in a new process with these environment variables."""
    import os
    import subprocess
    import sys
    env = {**os.environ, "OFFRL_DATA_DIR": str(data_dir), **env_vars}
    out = subprocess.run([sys.executable, "-c", FINGERPRINT_AND_ACTIONS], env=env, capture_output=True, text=True,
                         check=True)
    return out.stdout.splitlines()


@pytest.fixture(scope="module")
def on_this_cpu(tmp_path_factory):
    return fingerprint_and_actions(tmp_path_factory.mktemp("this_cpu"))


def test_generated_data_is_pinned_bit_for_bit(hopper_medium, on_this_cpu):
    from offrl.cache import dataset_fingerprint
    assert dataset_fingerprint(hopper_medium) == on_this_cpu[0] == HOPPER_MEDIUM_FINGERPRINT
    assert len(on_this_cpu) == 1 + sum(mujoco.has_policies(f) for f in behaviour.FAMILIES)


@pytest.mark.parametrize("cpu", OLDER_CPUS, ids=["sse4.2", "avx2", "baseline-numpy"])
def test_policies_and_data_do_not_depend_on_the_cpus_instruction_set(cpu, on_this_cpu, tmp_path):
    assert fingerprint_and_actions(tmp_path, **cpu) == on_this_cpu


@pytest.mark.parametrize("level", ["medium-replay", "medium-expert", "random"])
def test_other_levels_exact_size(level):
    eps = mujoco.build_episodes("hopper", level, 2_001, 0, workers=1, progress=False)
    assert sum(len(e["actions"]) for e in eps) == 2_001
    for e in eps:
        assert len(e["observations"]) == len(e["actions"]) + 1
        assert e["terminations"][-1] or e["truncations"][-1]


def test_shipped_policy_files_match_record():
    d = behaviour.policy_dir("hopper")
    rec = json.loads((d / "behaviour.json").read_text())
    assert rec["env_id"] == "Hopper-v5"
    on_disk = {p.name for p in d.glob("*.pt")}
    assert on_disk == set(rec["files"])
    for name, info in rec["files"].items():
        assert hashlib.sha256((d / name).read_bytes()).hexdigest() == info["sha256"], name
        assert (d / name).stat().st_size < 100_000
    assert rec["picked"]["expert"]["step"] > rec["picked"]["medium"]["step"]
    ref = rec["reference_returns"]
    assert ref["expert"] > ref["random"]


def test_policy_acts_in_box_and_seeded():
    pol = mujoco.load_policy("hopper", "medium.pt")
    obs = np.random.default_rng(0).normal(size=(7, 11))
    a1 = pol.act(obs, np.random.default_rng(5))
    a2 = pol.act(obs, np.random.default_rng(5))
    np.testing.assert_array_equal(a1, a2)
    assert a1.shape == (7, 3) and a1.dtype == np.float32 and np.all(np.abs(a1) <= 1)
    np.testing.assert_allclose(pol.act(obs, deterministic=True), np.clip(pol.mean(obs), -1, 1), atol=1e-6)


def test_pick_rules():
    evals = [10, 200, 900, 1500, 800, 3000, 2500]
    behav = [5, 150, 500, 1100, 700, 2400, 2000]
    snaps = [dict(step=i * 25_000, eval_mean=e, behaviour_mean=b) for i, (e, b) in enumerate(zip(evals, behav))]
    expert, medium, replay = behaviour.pick(snaps, expert_return=2100.0)
    assert expert == 5  # best deterministic return
    assert medium == 4  # behaviour return closest to 2100 / 3 = 700, before the expert
    assert replay == [0, 1, 2, 3, 4]
    many = [dict(step=i, eval_mean=i, behaviour_mean=i) for i in range(40)]
    _, medium, replay = behaviour.pick(many, expert_return=30.0)
    assert medium == 10 and replay == list(range(11))
    _, medium, replay = behaviour.pick(many, expert_return=90.0)
    assert medium == 30 and len(replay) == behaviour.MAX_REPLAY and replay[0] == 0 and replay[-1] == 30


def test_env_without_policies_is_not_offered(monkeypatch, tmp_path):
    monkeypatch.setattr(behaviour, "POLICIES_DIR", tmp_path)
    assert mujoco.available_families() == []
    (tmp_path / "ant").mkdir()
    (tmp_path / "ant" / "expert.pt").write_bytes(b"")
    assert not mujoco.has_policies("ant")


def same_episodes(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for ea, eb in zip(a, b):
        assert set(ea) == set(eb)
        for key in ea:
            np.testing.assert_array_equal(ea[key], eb[key], err_msg=key)


def test_chunks_and_seeds_depend_on_size_and_policy_name_only():
    assert mujoco.chunk_sizes(250_000) == [100_000, 100_000, 50_000]
    assert mujoco.chunk_sizes(200_000) == [100_000, 100_000]
    seeds = lambda *key: [mujoco.chunk_seeds(*key)[0](k) for k in range(3)]  # noqa: E731
    assert seeds(0, "medium", 1) == seeds(0, "medium", 1)
    assert len({tuple(seeds(*key)) for key in [(0, "medium", 0), (0, "medium", 1), (0, "expert", 0),
                                               (1, "medium", 0), (0, "replay_03", 0)]}) == 5
    a, b = mujoco.chunk_seeds(0, "medium", 0)[1], mujoco.chunk_seeds(0, "medium", 1)[1]
    assert a.random() != b.random()


def test_one_worker_and_two_workers_give_the_same_data(monkeypatch):
    monkeypatch.setattr(mujoco, "CHUNK", 1_000)
    one = mujoco.build_episodes("hopper", "medium", 2_000, 0, workers=1, progress=False)
    two = mujoco.build_episodes("hopper", "medium", 2_000, 0, workers=2, progress=False)
    same_episodes(one, two)
    lengths = np.cumsum([len(e["actions"]) for e in one])
    cut = int(np.flatnonzero(lengths == 1_000)[0])  # the first chunk ends in an episode cut to fit it
    assert one[cut]["truncations"][-1] and len(one[cut]["actions"]) < 1_000


def test_medium_expert_is_medium_then_expert_and_read_from_them(monkeypatch):
    from offrl.data import recipes

    monkeypatch.setattr(mujoco, "CHUNK", 500)
    recipes.load_builtin()
    hopper, n = recipes.RECIPES["hopper"], 800
    quiet = lambda msg: None  # noqa: E731
    scratch = recipes.read_episodes(recipes.build(hopper, "medium-expert", size=2 * n, workers=1, log=quiet))
    ids = [recipes.build(hopper, level, size=n, workers=1, log=quiet) for level in ("medium", "expert")]
    same_episodes(scratch, [ep for dataset_id in ids for ep in recipes.read_episodes(dataset_id)])
    lines = []
    me = recipes.build(hopper, "medium-expert", size=2 * n, force=True, log=lines.append)
    assert any("reading the episodes of" in line and ids[0] in line and ids[1] in line for line in lines)
    same_episodes(scratch, recipes.read_episodes(me))
    assert recipes.read_provenance(me)["read_from"] == ids
    assert recipes.built_parts(hopper, "medium-expert", 2 * n, seed=1) is None  # other seed: generate


def test_behaviour_return_counts_complete_episodes():
    from offrl.data.recipes import behaviour_returns

    def episode(T, reward, term=False, trunc=False):
        return dict(rewards=np.full(T, reward), terminations=np.r_[np.zeros(T - 1, bool), term],
                    truncations=np.r_[np.zeros(T - 1, bool), trunc])
    eps = [episode(10, 1.0, term=True), episode(1_000, 0.5, trunc=True), episode(7, 100.0, trunc=True)]  # last cut
    got = behaviour_returns(eps, 1_000, ref_min=0.0, ref_max=1_000.0)
    assert got == dict(behaviour_return=255.0, behaviour_normalized_return=25.5, behaviour_episodes=2)
    assert behaviour_returns(eps[2:], 1_000, 0.0, 1_000.0)["behaviour_return"] == 700.0  # all cut: all count


def test_behaviour_return_recorded(hopper_medium):
    ds, prov = hopper_medium, hopper_medium.provenance
    ends = [end for _, end in episode_bounds(ds)]
    returns = [ds.rewards[start:end].sum() for start, end in episode_bounds(ds)]
    complete = [bool(ds.terminals[end - 1] or end - start == 1_000) for start, end in episode_bounds(ds)]
    assert ends[-1] == SIZE and not complete[-1]
    mean = np.mean(np.asarray(returns)[complete])
    assert prov["behaviour_return"] == pytest.approx(mean, abs=1e-3)
    assert prov["behaviour_normalized_return"] == pytest.approx(float(ds.normalized_score(mean)), abs=0.01)


def test_datasets_list_shows_behaviour_return(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from offrl.cli import main
    from offrl.data import recipes

    monkeypatch.setenv("OFFRL_DATA_DIR", str(tmp_path))
    recipes.load_builtin()
    hopper = recipes.RECIPES["hopper"]
    old = dict(hopper.provenance, recipe="hopper", version=hopper.version, transitions=1_000_000, episodes=4_321,
               build_seconds=406.0)  # built before the behaviour field existed
    retrained = dict(old, behaviour_policies=dict(hopper.provenance["behaviour_policies"], **{"medium.pt": "f00"}))
    for level, prov in [("medium", dict(old, behaviour_normalized_return=27.04)), ("expert", old),
                        ("random", retrained)]:
        path = recipes.dataset_path(recipes.minari_id(hopper, level))
        path.mkdir(parents=True)
        (path / "offrl_recipe.json").write_text(json.dumps(prov))
    out = CliRunner().invoke(main, ["datasets", "list"]).output.splitlines()
    assert out[0].split()[:7] == ["name", "status", "transitions", "episodes", "behaviour", "build", "s"]
    row = {line.split()[0]: line.split() for line in out[1:]}
    assert row["hopper-medium"][:6] == ["hopper-medium", "built", "1,000,000", "4,321", "27.0", "406.0"]
    assert row["hopper-expert"][:6] == ["hopper-expert", "built", "1,000,000", "4,321", "-", "406.0"]
    assert row["hopper-random"][:2] == ["hopper-random", "stale"]  # other behaviour policies: rebuild it
    bad = CliRunner().invoke(main, ["datasets", "build", "hopper-medium", "--workers", "0"])
    assert bad.exit_code == 2 and "--workers must be at least 1" in bad.output


def test_sac_policy_file_acts_as_sb3_does(tmp_path):
    """A SAC snapshot (ant's behaviour policies) acts like SB3's own predict: tanh-squashed, scaled to the box."""
    import gymnasium as gym
    from stable_baselines3 import SAC

    env = gym.make("Pendulum-v1")  # action box [-2, 2]: the scaling to the box matters
    model = SAC("MlpPolicy", env, seed=3, device="cpu",
                policy_kwargs=dict(net_arch=dict(pi=[16, 16], qf=[16, 16])))
    path = tmp_path / "sac.pt"
    behaviour.save_policy(behaviour.extract_policy(model, None, "Pendulum-v1", step=0), path)
    pol = behaviour.BehaviourPolicy.load(path)
    obs = np.random.default_rng(0).uniform(-1, 1, size=(9, 3)).astype(np.float32)
    want, _ = model.predict(obs, deterministic=True)
    np.testing.assert_allclose(pol.act(obs, deterministic=True), want, atol=1e-5)
    a1, a2 = pol.act(obs, np.random.default_rng(5)), pol.act(obs, np.random.default_rng(5))
    np.testing.assert_array_equal(a1, a2)
    assert np.all(np.abs(a1) <= 2.0) and not np.allclose(a1, want, atol=1e-3)


def test_halfcheetah_is_made_without_mujocos_settotalmass_warning(tmp_path, monkeypatch, capfd):
    """gymnasium's half_cheetah.xml makes mujoco warn on every load, to stderr and to MUJOCO_LOG.TXT in the
    working directory; evaluations make dozens of envs, so make_env drops that one warning."""
    monkeypatch.chdir(tmp_path)
    make_env("HalfCheetah-v5").close()
    assert "settotalmass" not in capfd.readouterr().err
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()
    gym.make("HalfCheetah-v5").close()  # what the test guards against: plain gym.make does warn
    assert "settotalmass" in capfd.readouterr().err
    (tmp_path / "MUJOCO_LOG.TXT").unlink()
    from offrl.data import recipes
    recipes.build(*recipes.split_name("halfcheetah-medium"), size=1_000, workers=1)  # minari makes envs too
    assert "settotalmass" not in capfd.readouterr().err
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()
