"""Risk metrics: VaR and CVaR at 10% of evaluation episodes, in every run's rows and in `offrl table`."""
import numpy as np
import pytest

from offrl import results
from offrl.results import (RESULT_FIELDS, aggregate, append_rows, conditional_value_at_risk, format_table,
                           read_rows, value_at_risk)
from offrl.trainer import TrainConfig, Trainer


def test_var_and_cvar_are_the_lower_tail_of_the_episodes():
    returns = np.arange(20, 0, -1.0)  # 20 episodes, unsorted: the worst two are 1 and 2
    assert value_at_risk(returns, 0.1) == 2.0
    assert conditional_value_at_risk(returns, 0.1) == 1.5
    assert value_at_risk(np.arange(10.0), 0.1) == 0.0  # ten episodes: the tail is the worst one alone
    assert value_at_risk(np.arange(15.0), 0.1) == 1.0  # ceil(1.5) = 2 episodes
    assert conditional_value_at_risk(np.arange(15.0), 0.1) == 0.5
    assert value_at_risk([3.0], 0.1) == conditional_value_at_risk([3.0], 0.1) == 3.0


def _row(agent, seed, score, var, cvar, perturbation="none"):
    row = {name: "x" for name in RESULT_FIELDS}
    row.update({name: None for name in results.ONLINE_SCORES}, online_steps=None)  # an offline run
    row.update({name: None for name in results.SAFETY_FIELDS})  # not a tabular env
    row.update(agent=agent, dataset="pointmass-medium", seed=seed, task="", steps=10, eval_every=10,
               eval_episodes=100, final_score=score, best_score=score, final_return=score, best_return=score,
               ref_min_score=0.0, ref_max_score=100.0, wall_clock_s=1.0, updates_per_s=1.0, final_var10=var,
               final_cvar10=cvar, eval_perturbation=perturbation)
    return row


def test_table_shows_risk_means_per_agent_and_evaluation(tmp_path):
    table = tmp_path / "results.csv"
    append_rows(table, [_row("a", 0, 80.0, 50.0, 40.0), _row("a", 1, 90.0, 60.0, 30.0),
                        _row("a", 0, 70.0, 20.0, 10.0, "action_noise=0.3")])
    rows = read_rows(table)
    assert rows[0]["final_var10"] == 50.0 and rows[2]["eval_perturbation"] == "action_noise=0.3"
    agg = {r["dataset"]: r for r in aggregate(rows)}
    assert agg["pointmass-medium"]["final_var10_mean"] == 55.0
    assert agg["pointmass-medium"]["final_cvar10_mean"] == 35.0
    assert agg["pointmass-medium [action_noise=0.3]"]["final_var10_mean"] == 20.0
    assert "all datasets" not in agg  # a perturbed evaluation is not pooled as another dataset
    text = format_table(aggregate(rows))
    assert "final VaR10" in text and "final CVaR10" in text
    line = next(l for l in text.splitlines() if "pointmass-medium " in l and "[" not in l.split("  ")[1])
    assert line.rstrip().endswith("55.00         35.00")


def test_a_table_written_before_the_risk_columns_still_reads(tmp_path):
    old = [f for f in RESULT_FIELDS if f not in results.LATER_FIELDS]
    row = _row("a", 0, 80.0, None, None)
    table = tmp_path / "old.csv"
    table.write_text(",".join(old) + "\n" + ",".join(str(row[f]) for f in old) + "\n")
    rows = read_rows(table)
    assert rows[0]["final_var10"] is None and rows[0]["eval_perturbation"] == "none"
    assert format_table(aggregate(rows)).splitlines()[2].rstrip().endswith("-             -")


def test_a_run_records_the_risk_of_its_last_evaluation(tmp_path, data_dir):
    train = TrainConfig(steps=20, eval_every=20, eval_episodes=20, log_every=10, checkpoint_every=20)
    trainer = Trainer.start("td3bc", "pointmass-medium", [0, 1], out_dir=tmp_path / "runs", train=train,
                            overrides={"hidden": [16, 16]}, dataset_size=2_000, results=str(tmp_path / "r.csv"),
                            threads=1, log=lambda m: None)
    rows = trainer.fit()
    record = trainer.history[-1]
    assert len(record["var"]) == len(record["cvar"]) == 2
    for row in rows:
        assert row["final_cvar10"] <= row["final_var10"] <= row["final_score"]
        assert row["eval_perturbation"] == "none"
    # The recorded VaR is the normalised second-worst of the 20 episodes: re-evaluate and compare.
    from offrl.evaluation import Evaluator
    ev = Evaluator(trainer.dataset, 2, 20)
    returns = ev.run(trainer.agent)
    ev.close()
    expected = trainer.dataset.normalized_score(np.sort(returns, 1)[:, 1])
    assert [r["final_var10"] for r in rows] == pytest.approx(list(expected), abs=1e-9)
