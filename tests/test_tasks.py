"""Task sets and task-conditioned evaluation (zero-shot RL): the reward-free PointGoals datasets carry four
goal tasks with known optimal returns; TaskEvaluator plays every task on the same seeds and episodes after
task inference; a run writes one row per (seed, task) plus the IQM over tasks, and `offrl table` groups by
task; a reward-reading agent is refused on reward-free data."""
import numpy as np
import pytest
import torch

from offrl import results
from offrl.errors import OfflineRLError
from offrl.evaluation import TaskEvaluator
from offrl.tasks import AGGREGATE

TINY_FB = {"z_dim": 8, "preprocessor_hidden": [32], "preprocessor_dim": 16, "forward_hidden": [32],
           "backward_hidden": [32], "actor_hidden": 32, "batch_size": 64, "inference_samples": 500}


@pytest.fixture(scope="session")
def pointgoals(data_dir):
    from offrl.data import resolve

    cache = {}

    def get(level: str = "random", size: int = 20_000):
        if (level, size) not in cache:
            cache[(level, size)] = resolve(f"offrl:pointgoals-{level}", size=size, log=lambda msg: None)
        return cache[(level, size)]
    return get


class GoalOracle(torch.nn.Module):
    """A task-conditioned agent that reads the goal from the task vector and plays the optimal policy."""
    task_conditioned = reward_free = True
    num_seeds = 2

    def infer_task(self, samples, goal=None):
        # The reward-labelled samples name the goal too: the mean of the rewarded next states.
        r = samples["rewards"]
        from_rewards = (r[:, None] * samples["next_observations"]).sum(0) / r.sum()
        return torch.stack([goal, from_rewards])  # seed 0 uses the goal, seed 1 the samples

    def act(self, obs, deterministic=True, task=None):
        return ((task[:, None] - obs) / 0.1).clamp(-1, 1)


def test_pointgoals_datasets_are_reward_free_with_four_goal_tasks(pointgoals):
    for level in ("random", "narrow"):
        ds = pointgoals(level)
        assert ds.reward_free and not ds.has_reference_scores and (ds.rewards == 0).all()
        assert ds.tasks.names == ["reach_top_left", "reach_top_right", "reach_bottom_left", "reach_bottom_right"]
    # The narrow behaviour's actions stay small; the random one's fill the box.
    assert np.abs(pointgoals("narrow").actions).max(1).mean() < 0.3 < np.abs(pointgoals("random").actions).max(1).mean()
    for task in pointgoals("random").tasks:
        # 50 steps, about 5 to reach the goal: the optimum is near 45, a random walk's near 0.
        assert 45 < task.ref_max_score < 47 and task.ref_min_score < 2
        # dm_control's Gaussian tolerance: 1 within 0.1 of the goal, 0.1 at 0.4, nearly 0 at the start region.
        x, y = task.goal
        r = task.reward({"next_observations": np.array([[x, y], [x, y - 0.09], [x, y - 0.4], [0.0, 0.0]],
                                                       np.float32)})
        np.testing.assert_allclose(r[:3], [1.0, 1.0, 0.1], rtol=1e-4)
        assert r[3] < 1e-5


def test_task_evaluator_scores_the_optimal_policy_about_100_on_every_task(pointgoals):
    ds = pointgoals("random")
    ev = TaskEvaluator(ds, num_seeds=2, episodes=4, inference_samples=5_000)
    try:
        out = ev.run(GoalOracle())
    finally:
        ev.close()
    assert set(out) == set(ds.tasks.names)
    for task in ds.tasks:
        assert out[task.name].shape == (2, 4)
        # From the goal (seed 0) and from reward-labelled samples (seed 1) alike.
        np.testing.assert_array_less(95, task.normalized_score(out[task.name]))


def test_a_reward_reading_agent_is_refused_on_reward_free_data(pointgoals, pointmass, tmp_path):
    from offrl.trainer import TrainConfig, Trainer

    pointgoals("random")
    with pytest.raises(OfflineRLError, match="reward-free: agent td3bc reads rewards"):
        Trainer.start("td3bc", "offrl:pointgoals-random", [0], out_dir=tmp_path, dataset_size=20_000, log=lambda m: None)
    pointmass("medium")
    with pytest.raises(OfflineRLError, match="has no task set"):
        Trainer.start("fb", "offrl:pointmass-medium", [0], out_dir=tmp_path, dataset_size=20_000, log=lambda m: None)
    assert not any(tmp_path.iterdir())


def test_a_run_writes_rows_per_seed_and_task_and_the_table_groups_by_task(pointgoals, tmp_path):
    from offrl.trainer import TrainConfig, Trainer

    pointgoals("random")
    train = TrainConfig(steps=4, eval_every=2, eval_episodes=2, log_every=2, checkpoint_every=4)
    trainer = Trainer.start("fb", "offrl:pointgoals-random", [0, 1], out_dir=tmp_path, train=train,
                            dataset_size=20_000, overrides=TINY_FB, log=lambda m: None)
    rows = trainer.fit()
    tasks = ["reach_top_left", "reach_top_right", "reach_bottom_left", "reach_bottom_right"]
    assert [(r["seed"], r["task"]) for r in rows] == [(s, t) for s in (0, 1) for t in [AGGREGATE, *tasks]]
    for seed in (0, 1):
        per_task = [r["final_score"] for r in rows if r["seed"] == seed and r["task"] in tasks]
        aggregate, = [r for r in rows if r["seed"] == seed and r["task"] == AGGREGATE]
        assert aggregate["final_score"] == pytest.approx(results.iqm(per_task))
    assert trainer.history[-1]["task_inference"] == "reward"
    table = results.read_rows(tmp_path / "results.csv")
    assert len(table) == 10
    summary = results.aggregate(table)
    assert [(r["task"], r["n"]) for r in summary] == [(t, 2) for t in sorted(tasks)] + [(AGGREGATE, 2)]
    assert results.format_table(summary).splitlines()[0].split()[:3] == ["agent", "dataset", "task"]
    # Finishing again appends nothing: rows are known by run folder, seed and task.
    assert trainer.finish() and len(results.read_rows(tmp_path / "results.csv")) == 10


def test_a_table_written_before_tasks_existed_reads_with_an_empty_task(tmp_path):
    path = tmp_path / "old.csv"
    fields = [f for f in results.RESULT_FIELDS if f != "task"]
    row = {f: "1" for f in fields} | {"agent": "td3bc", "dataset": "hopper-medium", "date": "d", "run_dir": "r"}
    path.write_text(",".join(fields) + "\n" + ",".join(str(row[f]) for f in fields) + "\n")
    rows = results.read_rows(path)
    assert rows[0]["task"] == "" and results.aggregate(rows)[0]["task"] == ""
