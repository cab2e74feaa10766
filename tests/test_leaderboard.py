"""Leaderboards: what `publish` writes, what it refuses, and that a refused or replaced board loses nothing."""
import yaml
import pytest
from click.testing import CliRunner

from offrl import config as cfg, leaderboard as lb, registry
from offrl.cli import main
from offrl.errors import OfflineRLError
from offrl.results import aggregate, append_rows, format_table, read_rows

from test_results import make_row


def trained_rows(tmp_path, agent="td3bc", dataset="hopper-medium", seeds=(0, 1, 2), scores=(20.0, 30.0, 40.0),
                 overrides=None, write_run_yaml=True):
    """Rows as a run writes them, with a run.yaml holding the real resolved config beside them."""
    info = registry.get(agent)
    config = cfg.resolve_config(info, dataset.split("-")[0], overrides=overrides)
    run_dir = tmp_path / "runs" / f"{agent}_{dataset}_{cfg.config_hash(config)}"
    if write_run_yaml:
        run_dir.mkdir(parents=True)
        (run_dir / "run.yaml").write_text(yaml.safe_dump({"agent": agent, "agent_config": cfg.to_dict(config)},
                                                         sort_keys=False))
    return [make_row(agent=agent, dataset=dataset, seed=s, final_score=f, best_score=f + 5.0,
                     config_hash=cfg.config_hash(config), run_dir=str(run_dir)) for s, f in zip(seeds, scores)]


def test_a_published_board_holds_the_rows_their_summary_and_the_configs_that_reproduce_them(tmp_path):
    rows = (trained_rows(tmp_path, "td3bc", "hopper-medium")
            + trained_rows(tmp_path, "iql", "hopper-medium", scores=(50.0, 55.0, 60.0))
            + trained_rows(tmp_path, "td3bc", "walker2d-medium", scores=(70.0, 71.0, 72.0)))
    table = tmp_path / "results.csv"
    append_rows(table, rows[::-1])  # order in the table does not matter

    board = lb.publish(read_rows(table), "hopper-100k", root=tmp_path / "results", title="Hopper at 100k")

    published = read_rows(board / "runs.csv")
    assert published == sorted(rows, key=lambda r: (r["agent"], r["dataset"], r["seed"]))
    assert (board / "summary.csv").read_text() == format_table(aggregate(rows), fmt="csv")
    readme = (board / "README.md").read_text()
    assert readme.startswith("# Hopper at 100k\n")
    assert "| td3bc | hopper-medium | 3 | 30.00 ± 10.00 |" in readme
    assert "| iql | hopper-medium | 3 | 55.00 ± 5.00 |" in readme
    assert ("offrl run --agent iql --env hopper-medium --seeds 0,1,2 --steps 100000 --eval-every 5000 "
            "--eval-episodes 10 --config results/hopper-100k/configs/iql__hopper-medium.yaml") in readme
    # The recorded config resolves to the very configuration the rows were trained with.
    for agent, dataset in [("td3bc", "hopper-medium"), ("iql", "hopper-medium"), ("td3bc", "walker2d-medium")]:
        file = board / "configs" / f"{agent}__{dataset}.yaml"
        resolved = cfg.resolve_config(registry.get(agent), dataset.split("-")[0], file=str(file))
        assert cfg.config_hash(resolved) == next(r["config_hash"] for r in rows
                                                 if (r["agent"], r["dataset"]) == (agent, dataset))
    assert lb.boards(tmp_path / "results") == [{"name": "hopper-100k", "agents": "iql, td3bc",
                                                "datasets": "hopper-medium, walker2d-medium", "rows": 9,
                                                "steps": "100000"}]
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["hopper-100k"]  # no staging left
    assert "resumed under" not in readme  # no run changed code midway


def test_a_run_resumed_under_newer_code_shows_both_revisions(tmp_path):
    rows = [dict(r, agent_version="1111111..2222222") for r in trained_rows(tmp_path)]
    readme = (lb.publish(rows, "b", root=tmp_path) / "README.md").read_text()
    assert "| 1111111..2222222 |" in readme
    assert "code A..B: the run started at revision A and was resumed under B." in readme


def test_a_config_that_cannot_be_recovered_is_said_so(tmp_path):
    rows = trained_rows(tmp_path, write_run_yaml=False)
    board = lb.publish(rows, "b", root=tmp_path)
    readme = (board / "README.md").read_text()
    assert "--config" not in readme
    assert "No run.yaml was left for td3bc on hopper-medium" in readme
    assert not (board / "configs").exists()


@pytest.mark.parametrize("change, message", [
    (dict(steps=50000), "rows differ in steps"),
    (dict(eval_episodes=5), "rows differ in eval_episodes"),
    (dict(config_hash="0123456789ab"), "mixes agent configurations"),
    (dict(seed=1), "has seed 1 2 times"),
])
def test_rows_that_are_not_one_comparison_are_refused_and_the_old_board_is_kept(tmp_path, change, message):
    rows = trained_rows(tmp_path)
    board = lb.publish(rows, "b", root=tmp_path / "results")
    before = {p.name: p.read_bytes() for p in board.iterdir() if p.is_file()}

    bad = rows[:2] + [dict(rows[2], **change)]
    with pytest.raises(OfflineRLError, match=message):
        lb.publish(bad, "b", root=tmp_path / "results", force=True)
    assert {p.name: p.read_bytes() for p in board.iterdir() if p.is_file()} == before
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["b"]


def test_an_existing_board_is_replaced_only_when_asked(tmp_path):
    lb.publish(trained_rows(tmp_path), "b", root=tmp_path)
    with pytest.raises(OfflineRLError, match="exists: pass --force"):
        lb.publish(trained_rows(tmp_path / "x", scores=(1.0, 2.0, 3.0)), "b", root=tmp_path)
    lb.publish(trained_rows(tmp_path / "y", scores=(1.0, 2.0, 3.0)), "b", root=tmp_path, force=True)
    assert [r["final_score"] for r in read_rows(tmp_path / "b" / "runs.csv")] == [1.0, 2.0, 3.0]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_a_group_that_finishes_later_is_added_and_the_board_keeps_what_it_held(tmp_path):
    import shutil
    root = str(tmp_path / "results")
    first = trained_rows(tmp_path / "a")
    lb.publish(first, "b", root=root, title="Board B", notes="Why this board exists.")
    shutil.rmtree(tmp_path / "a")  # the first group's run folders are gone (trained on another machine)
    board = tmp_path / "results" / "b"
    (board / "train.sh").write_text("offrl run ...\n")  # the authors' own files beside the board
    (board / "notes").mkdir(parents=True)
    (board / "notes" / "plot.txt").write_bytes(b"state")
    later = trained_rows(tmp_path / "c", "iql", scores=(50.0, 55.0, 60.0))
    table = tmp_path / "later.csv"
    append_rows(table, later)

    out = CliRunner().invoke(main, ["leaderboard", "--root", root, "publish", str(table), "b", "--add"])
    assert out.exit_code == 0, out.output
    assert "added 3 rows" in out.output
    assert read_rows(board / "runs.csv") == sorted(first + later, key=lambda r: (r["agent"], r["seed"]))
    readme = (board / "README.md").read_text()
    assert readme.startswith("# Board B\n\nWhy this board exists.\n\nNormalised scores")
    assert "| td3bc | hopper-medium | 3 | 30.00 ± 10.00 |" in readme and "| iql | hopper-medium | 3 |" in readme
    assert "No run.yaml was left" not in readme  # the first group's config was kept from the board
    assert (board / "train.sh").read_text() == "offrl run ...\n"
    assert (board / "notes" / "plot.txt").read_bytes() == b"state"
    assert sorted(p.name for p in (board / "configs").iterdir()) == ["iql__hopper-medium.yaml",
                                                                      "td3bc__hopper-medium.yaml"]
    again = CliRunner().invoke(main, ["leaderboard", "--root", root, "publish", str(table), "b", "--add"])
    assert again.exit_code == 2 and "iql on hopper-medium: seeds already on" in again.output
    assert len(read_rows(board / "runs.csv")) == 6
    with pytest.raises(OfflineRLError, match="no leaderboard .* to add to"):
        lb.publish(later, "nothing-here", root=root, add=True)


def test_a_group_trained_again_replaces_its_rows_and_the_board_keeps_the_others(tmp_path):
    root = str(tmp_path / "results")
    kept = trained_rows(tmp_path / "a", "iql", scores=(50.0, 55.0, 60.0))
    old = trained_rows(tmp_path / "a", "td3bc", scores=(20.0, 30.0, 40.0))
    lb.publish(kept + old, "b", root=root, title="Board B", notes="Why this board exists.")
    new = [dict(r, dataset_version="offrl/hopper/medium-v2") for r in trained_rows(tmp_path / "c", "td3bc",
                                                                                   scores=(60.0, 61.0, 62.0))]
    table = tmp_path / "again.csv"
    append_rows(table, new)

    out = CliRunner().invoke(main, ["leaderboard", "--root", root, "publish", str(table), "b", "--replace"])
    assert out.exit_code == 0, out.output
    assert "replaced with 3 rows in" in out.output
    board = tmp_path / "results" / "b"
    assert read_rows(board / "runs.csv") == sorted(kept + new, key=lambda r: (r["agent"], r["seed"]))
    readme = (board / "README.md").read_text()
    assert readme.startswith("# Board B\n\nWhy this board exists.\n\nNormalised scores")
    assert "| td3bc | hopper-medium | 3 | 61.00 ± 1.00 |" in readme and "20.00" not in readme
    both = CliRunner().invoke(main, ["leaderboard", "--root", root, "publish", str(table), "b", "--replace", "--add"])
    assert both.exit_code == 2 and "not both" in both.output
    with pytest.raises(OfflineRLError, match="without --replace"):
        lb.publish(new, "nothing-here", root=root, replace=True)


def test_names_and_selections_that_match_nothing_are_refused(tmp_path):
    rows = trained_rows(tmp_path)
    with pytest.raises(OfflineRLError, match="leaderboard name"):
        lb.publish(rows, "../escape", root=tmp_path)
    with pytest.raises(OfflineRLError, match="no result rows for agent cql"):
        lb.select(rows, agents=["cql"])
    assert lb.select(rows, datasets=["hopper-medium"]) == rows


def test_cli_publishes_lists_and_shows_a_board(tmp_path):
    rows = trained_rows(tmp_path) + trained_rows(tmp_path, "iql", scores=(50.0, 55.0, 60.0))
    table = tmp_path / "results.csv"
    append_rows(table, rows)
    root = str(tmp_path / "results")
    runner = CliRunner()

    out = runner.invoke(main, ["leaderboard", "--root", root, "publish", str(table), "iql-only", "--agent", "iql"])
    assert out.exit_code == 0, out.output
    assert "published 3 rows" in out.output
    listed = runner.invoke(main, ["leaderboard", "--root", root])
    assert listed.output.splitlines()[1].split() == ["iql-only", "iql", "hopper-medium", "3", "100000"]
    shown = runner.invoke(main, ["leaderboard", "--root", root, "show", "iql-only", "--format", "csv"])
    assert shown.output.strip() == format_table(aggregate(rows[3:]), fmt="csv").strip()

    bad = runner.invoke(main, ["leaderboard", "--root", root, "publish", str(table), "x", "--agent", "cql"])
    assert bad.exit_code == 2
    assert bad.output.strip().splitlines() == ["error: no result rows for agent cql (the table has: iql, td3bc)"]
    missing = runner.invoke(main, ["leaderboard", "--root", root, "show", "nope"])
    assert missing.exit_code == 2 and "no leaderboard 'nope'" in missing.output


def test_a_multi_task_group_publishes_one_row_per_seed_and_task_and_refuses_a_repeated_one(tmp_path):
    per_seed = trained_rows(tmp_path, "fb", "pointgoals-random", seeds=(0, 1), scores=(20.0, 40.0))
    rows = [dict(r, task=task, final_score=r["final_score"] + k)
            for r in per_seed for k, task in enumerate(("all tasks", "reach_top_left", "reach_top_right"))]
    board = lb.publish(rows, "zero-shot", root=tmp_path / "results")
    assert len(read_rows(board / "runs.csv")) == 6
    readme = (board / "README.md").read_text()
    assert "| fb | pointgoals-random | reach_top_left | 2 | 31.00 ± 14.14 |" in readme
    assert "--seeds 0,1 " in readme
    with pytest.raises(OfflineRLError, match=r"has seed 1 \(task reach_top_left\) 2 times"):
        lb.publish(rows + [rows[4]], "zero-shot", root=tmp_path / "results", force=True)
