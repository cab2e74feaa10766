"""Plots: each kind drawn from small fixture runs and tables, checked by what it draws (lines, bands, bars,
their values and labels) and by the files written (PNG and SVG), plus the inputs it refuses."""
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from matplotlib.collections import PolyCollection
from matplotlib.image import imread
from matplotlib.patches import Rectangle

from offrl import plots, results
from offrl.cli import main
from offrl.errors import OfflineRLError

from test_results import make_row

STEPS = [100, 200, 300]
# agent -> dataset -> seed -> score at each of STEPS
SCORES = {
    "td3bc": {"hopper-medium": {0: [10, 30, 50], 1: [20, 40, 60], 2: [30, 50, 70]},
              "walker2d-medium": {0: [5, 15, 25], 1: [5, 15, 35]}},
    "iql": {"hopper-medium": {0: [0, 10, 20], 1: [0, 20, 30]}},
}


def write_run(folder, agent, dataset, per_seed):
    folder.mkdir(parents=True)
    (folder / "run.yaml").write_text(yaml.safe_dump({"agent": agent, "dataset": dataset, "seeds": sorted(per_seed),
                                                     "train": {"steps": STEPS[-1]}}))
    lines = ["step,seed,mean_return,normalized_score"]  # the trainer's format
    for i, step in enumerate(STEPS):
        lines += [f"{step},{seed},{-1.5 * s[i]:.6g},{s[i]:.6g}" for seed, s in sorted(per_seed.items())]
    (folder / "eval.csv").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture
def runs(tmp_path):
    return [write_run(tmp_path / "runs" / f"{a}_{d}", a, d, seeds)
            for a, by_dataset in SCORES.items() for d, seeds in by_dataset.items()]


def lines_by_label(ax):
    return {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}


def test_curves_draw_one_panel_per_dataset_one_line_per_agent_at_the_mean_with_a_band(runs):
    fig = plots.curves_figure([plots.read_run_curve(r) for r in runs])
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["hopper-medium", "walker2d-medium"]
    hopper, walker = axes
    assert sorted(lines_by_label(hopper)) == ["iql", "td3bc"] and sorted(lines_by_label(walker)) == ["td3bc"]
    td3bc = lines_by_label(hopper)["td3bc"]
    assert list(td3bc.get_xdata()) == STEPS
    np.testing.assert_allclose(td3bc.get_ydata(), [20, 40, 60])  # mean over seeds 0, 1, 2
    np.testing.assert_allclose(lines_by_label(hopper)["iql"].get_ydata(), [0, 15, 25])
    bands = [c for c in hopper.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2
    for band in bands:
        line = lines_by_label(hopper)[band.get_gid()]
        lower_upper = band.get_paths()[0].vertices[:, 1]
        assert lower_upper.min() <= min(line.get_ydata()) and lower_upper.max() >= max(line.get_ydata())
    # The band is the bootstrap interval of the mean: it lies within the seeds' range, and is wide where they differ.
    step_300 = plots.mean_band(np.array([50.0, 60.0, 70.0]))
    assert step_300[0] == 60 and 50 <= step_300[1] < 60 < step_300[2] <= 70
    assert plots.mean_band(np.array([15.0, 15.0])) == (15.0, 15.0, 15.0)
    assert hopper.get_xlabel().startswith("updates") and hopper.get_ylabel() == "normalised score"
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["iql", "td3bc"]
    assert "95% bootstrap CI" in fig._suptitle.get_text()


def test_runs_of_one_agent_and_dataset_pool_their_seeds(tmp_path):
    a = write_run(tmp_path / "a", "td3bc", "hopper-medium", {0: [10, 20, 30]})
    b = write_run(tmp_path / "b", "td3bc", "hopper-medium", {1: [30, 40, 50]})
    fig = plots.curves_figure([plots.read_run_curve(a), plots.read_run_curve(b)])
    np.testing.assert_allclose(lines_by_label(fig.axes[0])["td3bc"].get_ydata(), [20, 30, 40])


def test_png_and_svg_files_hold_the_picture(runs, tmp_path):
    fig = plots.curves_figure([plots.read_run_curve(r) for r in runs])
    png = plots.save(fig, tmp_path / "curves.png")
    image = imread(png)
    assert image.shape[0] > 300 and image.shape[1] > 600 and image[..., :3].std() > 0.05  # not blank
    svg = plots.save(fig, tmp_path / "curves.svg")
    tree = ET.parse(svg)
    texts = {"".join(t.itertext()).strip() for t in tree.iter("{http://www.w3.org/2000/svg}text")}
    assert {"hopper-medium", "walker2d-medium", "iql", "td3bc", "normalised score"} <= texts
    drawn = [g for g in tree.iter("{http://www.w3.org/2000/svg}g") if g.get("id", "").startswith("line2d")]
    assert len(drawn) >= 3  # the three curves (plus grid and tick lines)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png", "curves.svg", "runs"]  # no temporary left


def board_rows():
    rows = []
    for agent, by_dataset in {"td3bc": {"hopper-medium": [30, 40, 50, 60], "walker2d-medium": [70, 72, 74, 90]},
                              "iql": {"hopper-medium": [10, 20, 30, 40]}}.items():
        for dataset, scores in by_dataset.items():
            rows += [make_row(agent=agent, dataset=dataset, seed=s, final_score=float(v), best_score=float(v) + 1)
                     for s, v in enumerate(scores)]
    return rows


def bars(ax):
    return [p for p in ax.patches if isinstance(p, Rectangle)]


def test_iqm_plot_draws_the_tables_iqm_and_ci_per_agent_and_dataset():
    rows = board_rows()
    fig = plots.iqm_figure(rows, n_boot=500)
    table = {(e["agent"], e["dataset"]): e for e in results.aggregate(rows, n_boot=500)}
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["hopper-medium", "walker2d-medium", "all datasets (each agent's own)"]
    for ax, dataset in zip(axes, ["hopper-medium", "walker2d-medium", "all datasets"]):
        labels = [t.get_text().split(" (")[0] for t in ax.get_yticklabels()]
        for bar in bars(ax):
            agent = bar.get_gid()
            entry = table.get((agent, dataset)) or table[(agent, "hopper-medium")]  # iql ran one dataset
            assert bar.get_x() == pytest.approx(entry["final_ci_lo"])
            assert bar.get_x() + bar.get_width() == pytest.approx(entry["final_ci_hi"])
            assert labels[round(bar.get_y() + bar.get_height() / 2)] == agent
            tick = next(line for line in ax.get_lines() if line.get_gid() == agent)
            assert tick.get_xdata()[0] == pytest.approx(entry["final_iqm"])
        assert ax.get_xlabel() == "IQM of the final normalised score"
    assert len(bars(axes[0])) == 2 and len(bars(axes[1])) == 1 and len(bars(axes[2])) == 2
    # The pooled panel's td3bc is the table's "all datasets" row: IQM of 30..90 pooled = mean of the middle four.
    td3bc = next(line for line in axes[2].get_lines() if line.get_gid() == "td3bc")
    assert td3bc.get_xdata()[0] == pytest.approx(np.mean([50, 60, 70, 72]))
    assert [t.get_text() for t in axes[2].get_yticklabels()] == ["td3bc (2 datasets)", "iql (1 dataset)"]
    best = plots.iqm_figure(rows, score="best", n_boot=500)
    tick = next(line for line in best.axes[0].get_lines() if line.get_gid() == "iql")
    assert tick.get_xdata()[0] == pytest.approx(26.0)


def test_performance_profile_is_the_fraction_above_each_threshold_averaged_over_datasets():
    groups = [np.array([10.0, 20.0, 30.0]), np.array([50.0, 60.0])]
    taus = np.array([0.0, 25.0, 55.0, 100.0])
    profile, lo, hi = plots.performance_profile(groups, taus, n_boot=500)
    np.testing.assert_allclose(profile, [1.0, (1 / 3 + 1) / 2, (0 + 1 / 2) / 2, 0.0])
    assert np.all(lo <= profile) and np.all(profile <= hi)
    assert lo[0] == hi[0] == 1.0 and lo[-1] == hi[-1] == 0.0

    fig = plots.profile_figure(board_rows(), n_boot=200)
    ax = fig.axes[0]
    assert sorted(line.get_gid() for line in ax.get_lines()) == ["iql", "td3bc"]
    td3bc = next(line for line in ax.get_lines() if line.get_gid() == "td3bc")
    x, y = np.asarray(td3bc.get_xdata()), np.asarray(td3bc.get_ydata())
    assert y[0] == 1.0 and y[-1] == 0.0 and np.all(np.diff(y) <= 0)
    at_65 = y[np.searchsorted(x, 65.0)]  # hopper: none of 4 above ~65; walker2d: all 4
    assert at_65 == pytest.approx(0.5)
    assert len([c for c in ax.collections if isinstance(c, PolyCollection)]) == 2
    assert ax.get_ylabel() == "fraction of runs with score > τ"
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["iql (1 dataset, 4 runs)",
                                                                   "td3bc (2 datasets, 8 runs)"]


def test_probability_of_improvement_counts_ties_half_and_averages_over_shared_datasets():
    value, lo, hi = plots.probability_of_improvement([np.array([3.0, 4.0]), np.array([1.0, 2.0])],
                                                     [np.array([1.0, 3.5]), np.array([2.0, 2.0])], n_boot=500)
    # dataset 1: 3>1, 3<3.5, 4>1, 4>3.5 -> 3/4; dataset 2: 1<2 twice, 2=2 twice -> (0 + 0 + .5 + .5)/4
    assert value == pytest.approx((0.75 + 0.25) / 2)
    assert lo <= value <= hi

    fig = plots.poi_figure(board_rows(), n_boot=300)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["P(iql > td3bc), 1 dataset"]  # the one shared
    (bar,) = bars(ax)
    tick = next(line for line in ax.get_lines() if line.get_gid() == "iql > td3bc")
    # hopper: iql 10..40 vs td3bc 30..60: pairs won 0+0+0.5+1 of 16 for 30, 40 -> (0.5 + 1 + 0.5) / 16
    assert tick.get_xdata()[0] == pytest.approx(2 / 16)
    assert bar.get_x() <= 2 / 16 <= bar.get_x() + bar.get_width()
    reverse = plots.poi_figure(board_rows(), pairs=[("td3bc", "iql")], n_boot=300)
    tick = next(line for line in reverse.axes[0].get_lines() if line.get_gid() == "td3bc > iql")
    assert tick.get_xdata()[0] == pytest.approx(1 - 2 / 16)


def test_cli_draws_curves_of_run_folders_and_aggregates_of_a_table(runs, tmp_path):
    runner = CliRunner()
    out = runner.invoke(main, ["plot", str(runs[0]), str(runs[2]), "-o", str(tmp_path / "c.png")])
    assert out.exit_code == 0, out.output
    assert imread(tmp_path / "c.png").shape[1] > 300
    out = runner.invoke(main, ["plot", str(tmp_path / "runs"), "-o", str(tmp_path / "all.svg"), "--env", "hopper-medium"])
    assert out.exit_code == 0, out.output
    assert "walker2d-medium" not in (tmp_path / "all.svg").read_text()
    table = tmp_path / "results.csv"
    results.append_rows(table, board_rows())
    for kind in ("iqm", "profile", "poi"):
        out = runner.invoke(main, ["plot", str(table), "--kind", kind, "-o", str(tmp_path / f"{kind}.png")])
        assert out.exit_code == 0, out.output
        assert (tmp_path / f"{kind}.png").stat().st_size > 10_000


def test_curves_of_a_table_come_from_the_run_folders_its_rows_name(runs, tmp_path):
    table = tmp_path / "results.csv"
    results.append_rows(table, [make_row(agent="td3bc", dataset="hopper-medium", seed=s, run_dir=str(runs[0]))
                                for s in (0, 1, 2)]
                        + [make_row(agent="iql", dataset="hopper-medium", seed=0, run_dir=str(tmp_path / "gone"))])
    curves, missing = plots.curves_of_rows(results.read_rows(table))
    assert [c.run_dir for c in curves] == [runs[0]] and missing == [("iql", "hopper-medium")]
    out = CliRunner().invoke(main, ["plot", str(table), "--kind", "curves", "-o", str(tmp_path / "c.png")])
    assert out.exit_code == 0 and "no run folder left for iql on hopper-medium" in out.output


@pytest.mark.parametrize("args, message", [
    (["{table}", "-o", "{tmp}/x.pdf"], "must end in .png or .svg"),
    (["{tmp}/nothing", "-o", "{tmp}/x.png"], "neither a run folder nor a folder of run folders"),
    (["{tmp}/empty", "-o", "{tmp}/x.png"], "no run folders"),
    (["{table}", "--kind", "curves", "-o", "{tmp}/x.png"], "none of the rows' run folders"),
    (["{table}", "--kind", "poi", "--pair", "iql", "-o", "{tmp}/x.png"], "--pair takes two agents"),
    (["{table}", "--kind", "poi", "--pair", "iql,sac", "-o", "{tmp}/x.png"], "no result rows for agent sac"),
    (["{table}", "--agent", "cql", "-o", "{tmp}/x.png"], "no result rows for agent cql"),
    (["{table}", "{tmp}/runs", "--kind", "iqm", "-o", "{tmp}/x.png"], "reads results tables or boards"),
])
def test_bad_input_is_one_line_and_writes_nothing(runs, tmp_path, args, message):
    table = tmp_path / "results.csv"
    results.append_rows(table, board_rows())
    (tmp_path / "empty").mkdir()
    out = CliRunner().invoke(main, ["plot"] + [a.format(table=table, tmp=tmp_path) for a in args])
    assert out.exit_code == 2, out.output
    assert message in out.output and len(out.output.strip().splitlines()) == 1
    assert not list(tmp_path.glob("x.*")) and not list(tmp_path.glob(".x.*"))


def test_a_run_folder_without_evaluations_is_named():
    with pytest.raises(OfflineRLError, match="is not a run folder"):
        plots.read_run_curve("/nonexistent/run")


def test_publish_adds_the_iqm_plot_and_the_curves_of_the_run_folders_still_there(runs, tmp_path):
    from offrl import leaderboard

    rows = [make_row(agent="td3bc", dataset="hopper-medium", seed=s, final_score=float(20 + 10 * s),
                     run_dir=str(runs[0])) for s in (0, 1, 2)]
    rows += [make_row(agent="iql", dataset="hopper-medium", seed=s, final_score=float(5 * s),
                      run_dir=str(tmp_path / "gone")) for s in (0, 1)]
    board = leaderboard.publish(rows, "b", root=tmp_path / "results")
    readme = (board / "README.md").read_text()
    assert "## Plots" in readme and "](iqm.png)" in readme and "](curves.png)" in readme
    assert "No learning curve for iql on hopper-medium" in readme
    assert imread(board / "iqm.png").shape[1] > 300 and imread(board / "curves.png").shape[1] > 300
    # The board moved to a machine without the run folders: published again, it drops the curves it cannot draw.
    for r in runs:
        (r / "eval.csv").unlink()
    board = leaderboard.publish(results.read_rows(board / "runs.csv"), "b", root=tmp_path / "results", replace=True)
    readme = (board / "README.md").read_text()
    assert not (board / "curves.png").exists() and "](curves.png)" not in readme
    assert "No learning curve for any group" in readme and (board / "iqm.png").exists()
