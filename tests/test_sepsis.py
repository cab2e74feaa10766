"""ICU-Sepsis (envs/sepsis.py): the exact numbers of the shipped MDP, the env against the package's own, the
datasets' extras, discrete spaces through the core, and the safety columns in results."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from offrl.envs import sepsis

pytestmark = pytest.mark.skipif(not sepsis.available(),
                                reason="needs the sepsis extra: pip install 'offrl[sepsis]' (icu-sepsis==2.0.1)")

SIZE = 3000  # transitions of the test dataset (about 330 episodes)


@pytest.fixture(scope="module")
def clinician(data_dir):
    from offrl.data import resolve
    return resolve(f"offrl:sepsis-clinician", size=SIZE, log=lambda msg: None)


def test_exact_values_of_the_shipped_mdp():
    mdp = sepsis.load_mdp()
    random, optimal = sepsis.reference_returns()
    assert random == pytest.approx(0.7801, abs=1e-4)
    assert optimal == pytest.approx(0.8751, abs=1e-4)
    values = sepsis.policy_values(mdp.clinician)
    assert float(values["survival"]) == pytest.approx(0.7818, abs=1e-4)
    assert float(values["survival_terminate"]) == pytest.approx(0.416, abs=1e-3)
    assert float(values["inadmissible_rate"]) == pytest.approx(0.121, abs=1e-3)
    assert float(values["episode_length"]) == pytest.approx(9.24, abs=0.01)
    # Uniform over the admissible actions equals uniform over all: an inadmissible row is the admissible mean.
    admissible = mdp.admissible / mdp.admissible.sum(1, keepdims=True)
    assert float(sepsis.policy_values(admissible)["survival"]) == pytest.approx(random, abs=1e-6)
    assert float(sepsis.policy_values(admissible)["inadmissible_rate"]) == 0.0


def test_policy_values_agree_with_sampled_episodes():
    mdp = sepsis.load_mdp()
    episodes = sepsis.simulate(np.random.default_rng(0), sepsis.behaviour_policy("clinician", mdp), 20_000, mdp)
    survived = np.mean([ep["rewards"].sum() for ep in episodes])
    inadmissible = 1 - np.concatenate([ep["infos"]["admissible"] for ep in episodes]).mean()
    exact = sepsis.policy_values(mdp.clinician)
    assert survived == pytest.approx(float(exact["survival"]), abs=0.01)  # 3.4 standard errors
    assert inadmissible == pytest.approx(float(exact["inadmissible_rate"]), abs=0.01)


def test_env_gives_the_packages_episodes_on_the_same_seeds():
    import warnings
    import gymnasium as gym
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import icu_sepsis  # noqa: F401  (registers Sepsis/ICU-Sepsis-v2; needs the legacy gym package)
    for strategy in sepsis.STRATEGIES:
        theirs = gym.make("Sepsis/ICU-Sepsis-v2", inadmissible_action_strategy=strategy)
        ours = gym.make(sepsis.ENV_ID, inadmissible_action_strategy=strategy)
        actions = np.random.default_rng(1)
        for seed in range(30):
            obs = [env.reset(seed=seed)[0] for env in (theirs, ours)]
            assert obs[0] == obs[1]
            done = False
            while not done:
                a = int(actions.integers(25))
                (o1, r1, t1, u1, info), (o2, r2, t2, u2, _) = theirs.step(a), ours.step(a)
                assert (o1, r1, t1, u1) == (o2, r2, t2, u2)
                done = t1 or u1
            assert info["sofa_score"] == sepsis.load_mdp().sofa[o1]


def test_dataset_extras_and_spec(clinician):
    mdp = sepsis.load_mdp()
    spec = clinician.spec
    assert (spec.n_observations, spec.n_actions, spec.obs_dim, spec.act_dim) == (716, 25, 1, 1)
    s = clinician.observations[:, 0].astype(int)
    a = clinician.actions[:, 0].astype(int)
    s2 = clinician.next_observations[:, 0].astype(int)
    ex = clinician.extras
    assert (ex["infos/state"] == s).all()
    assert (ex["infos/admissible"] == mdp.admissible[s, a]).all()
    assert np.allclose(ex["infos/cost"], mdp.state_cost[s2])
    assert np.allclose(ex["infos/sofa"], mdp.sofa[s])
    assert np.allclose(ex["infos/features"], mdp.centroids[s][:, sepsis.OGSRL_COLUMNS])
    assert (clinician.terminals == (s2 >= sepsis.PATIENT_STATES)).all()
    assert clinician.rewards.sum() == (s2 == sepsis.SURVIVAL).sum()
    assert (clinician.ref_min_score, clinician.ref_max_score) == pytest.approx(sepsis.reference_returns())
    assert 0.1 < 1 - ex["infos/admissible"].mean() < 0.15  # the clinicians' ~12% unsupported actions


def test_discrete_bc_imitates_the_clinicians_and_the_safety_columns_reach_the_table(clinician):
    from conftest import train_agent
    from offrl.evaluation import Evaluator
    from offrl.results import SAFETY_FIELDS, aggregate, format_table

    agent = train_agent("bc-discrete", clinician, 300, seeds=(0, 1))
    ev = Evaluator(clinician, 2, 5)
    try:
        returns = ev.run(agent)
        metrics = ev.policy_metrics(agent)
    finally:
        ev.close()
    assert set(returns.reshape(-1)) <= {0.0, 1.0}
    assert metrics.pop("expected_return") == metrics["true_survival"]
    assert set(metrics) == {"true_survival", "survival_terminate", "inadmissible_rate", "mean_cost"}
    # The most likely clinician action is admissible almost everywhere the clinicians go.
    assert max(metrics["inadmissible_rate"]) < 0.1
    assert min(metrics["survival_terminate"]) > 0.5  # the sampling clinicians: 0.416
    rows = [dict(agent="bc-discrete", dataset="sepsis-clinician", final_score=1.0, best_score=1.0,
                 config_hash="x", **{k: metrics[k][i] for k in metrics}) for i in range(2)]
    table = format_table(aggregate(rows, n_boot=10))
    assert "true surv" in table and "inadmissible" in table and "guardian OOD" not in table
    assert f"{np.mean(metrics['true_survival']):.3f}" in table
    assert set(metrics) <= set(SAFETY_FIELDS)


def test_discrete_cql_learns_q_values_of_survival(clinician):
    from conftest import train_agent
    agent = train_agent("cql-discrete", clinician, 200)
    obs = torch.as_tensor(clinician.observations[:64])[None]
    q = agent.q(agent.encode(obs))
    assert q.shape == (1, 64, 25)
    assert torch.isfinite(q).all()


def test_a_continuous_agent_refuses_the_discrete_dataset(clinician, pointmass):
    from offrl.build import make_agent
    from offrl.errors import OfflineRLError
    with pytest.raises(OfflineRLError, match="takes continuous actions.*discrete actions"):
        make_agent("td3bc", clinician, None, [0], "cpu")
    with pytest.raises(OfflineRLError, match="takes discrete actions.*continuous actions"):
        make_agent("bc-discrete", pointmass("medium", 2000), None, [0], "cpu")


def test_the_flat_copy_reads_back_the_same_dataset_and_a_broken_one_is_rewritten(clinician):
    from offrl.data import recipes, resolve
    path = recipes.dataset_path(clinician.version) / "offrl_flat.npz"
    assert path.exists()  # left by the first load (through Minari)
    for attempt in ("flat copy", "broken copy"):
        again = resolve("offrl:sepsis-clinician", size=SIZE, log=lambda msg: None)
        for field in ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts"):
            assert np.array_equal(getattr(again, field), getattr(clinician, field)), (attempt, field)
        assert sorted(again.extras) == sorted(clinician.extras)
        for key, value in clinician.extras.items():
            assert again.extras[key].dtype == value.dtype and np.array_equal(again.extras[key], value), key
        assert (again.ref_min_score, again.ref_max_score) == (clinician.ref_min_score, clinician.ref_max_score)
        path.write_bytes(b"not a zip file")
    resolve("offrl:sepsis-clinician", size=SIZE, log=lambda msg: None)
    with np.load(path) as flat:  # written again
        assert "observations" in flat.files


def test_a_run_scores_the_exact_survival_and_records_the_safety_columns(clinician, tmp_path, monkeypatch):
    from click.testing import CliRunner
    from offrl.cli import main
    from offrl.results import read_rows
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["run", "--agent", "bc-discrete", "--env", "sepsis-clinician", "--dataset-size",
                                       str(SIZE), "--seeds", "0,1", "--steps", "40", "--eval-every", "20",
                                       "--eval-episodes", "2", "--threads", "1", "--out", "runs"])
    assert result.exit_code == 0, result.output
    assert "safety (exact, mean over seeds): true surv" in result.output
    rows = read_rows(tmp_path / "runs" / "results.csv")
    assert len(rows) == 2
    for row in rows:
        assert row["final_return"] == row["true_survival"]  # the score is exact, not 2 sampled episodes
        assert row["final_score"] == pytest.approx(100 * (row["true_survival"] - row["ref_min_score"])
                                                   / (row["ref_max_score"] - row["ref_min_score"]))
        assert 0 <= row["inadmissible_rate"] <= 1 and row["guardian_ood_rate"] is None
