"""Results table: round trip, concurrent appends, validation, aggregation statistics and export formats."""
import contextlib
import csv
import io
import math
import multiprocessing
import warnings

import numpy as np
import pytest

from offrl.errors import OfflineRLError
from offrl.results import (SAFETY_FIELDS, 
    RESULT_FIELDS, aggregate, append_rows, format_table, iqm, read_rows,
)


def make_row(**overrides):
    row = {
        "date": "2025-01-02T03:04:05+00:00",
        "agent": "td3bc",
        "agent_version": "342b321",
        "dataset": "pointmass-medium",
        "dataset_source": "offrl",
        "dataset_version": "v1",
        "seed": 0,
        "task": "",
        "steps": 100000,
        "eval_every": 5000,
        "eval_episodes": 10,
        "final_score": 71.23456789012345,
        "best_score": 80.1,
        "final_return": -12.5,
        "best_return": 3.0,
        "ref_min_score": -100.0,
        "ref_max_score": 50.25,
        "config_hash": "ab12cd34",
        "device": "cpu",
        "hardware": "Intel Xeon, 2 cores",
        "torch_version": "2.13.0",
        "wall_clock_s": 123.456,
        "updates_per_s": 810.0,
        "run_dir": "runs/td3bc, pointmass \"medium\"/seed0",
        # An offline run's online-phase columns are empty.
        "online_steps": None, "offline_score": None, "online_score_25": None, "online_score_50": None,
        "online_score_75": None,
        "final_var10": 60.5,
        "final_cvar10": 55.25,
        "eval_perturbation": "none",
        # Safety columns: empty outside a tabular env.
        **{name: None for name in SAFETY_FIELDS},
    }
    row.update(overrides)
    return row


# ------------------------------------------------------------------------------------------ the table

def test_appended_rows_read_back_exactly(tmp_path):
    table = tmp_path / "sub" / "results.csv"
    rows = [make_row(seed=0), make_row(seed=1, final_score=0.1 + 0.2, best_score=1e-17, steps=7)]
    append_rows(table, rows[:1])
    append_rows(table, rows[1:])

    back = read_rows(table)
    assert back == rows
    for field in rows[1]:
        assert type(back[1][field]) is type(rows[1][field]), field
    assert table.read_text().count("date,agent,") == 1


def _append_fifty(table, worker, barrier):
    barrier.wait()  # both processes start appending at the same moment
    for i in range(50):
        append_rows(table, [make_row(agent=f"worker{worker}", seed=i)])


def test_two_processes_appending_at_once_give_one_header_and_every_row(tmp_path):
    table = str(tmp_path / "results.csv")
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(2)
    workers = [context.Process(target=_append_fifty, args=(table, w, barrier)) for w in range(2)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(timeout=60)
    assert [p.exitcode for p in workers] == [0, 0]

    lines = open(table).read().splitlines()
    assert lines.count(",".join(RESULT_FIELDS)) == 1 and lines[0] == ",".join(RESULT_FIELDS)
    records = list(csv.reader(lines))
    assert len(records) == 101
    assert all(len(r) == len(RESULT_FIELDS) for r in records)
    rows = read_rows(table)
    assert sorted((r["agent"], r["seed"]) for r in rows) == [
        (f"worker{w}", s) for w in range(2) for s in range(50)]


def _append_one(table):
    append_rows(table, [make_row()])


def test_append_waits_for_the_lock_another_process_holds(tmp_path):
    # On Linux small O_APPEND writes rarely interleave even without a lock, so the test above can pass
    # by luck; this one checks directly that a writer waits while the sidecar lock is held.
    import fcntl
    table = str(tmp_path / "results.csv")
    context = multiprocessing.get_context("fork")
    with open(table + ".lock", "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        writer = context.Process(target=_append_one, args=(table,))
        writer.start()
        writer.join(timeout=0.5)
        assert writer.is_alive(), "append_rows wrote while another process held the lock"
        assert not (tmp_path / "results.csv").exists() or (tmp_path / "results.csv").stat().st_size == 0
        fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
    writer.join(timeout=30)
    assert writer.exitcode == 0
    assert len(read_rows(table)) == 1


@pytest.mark.parametrize("field", ["final_score", "best_score"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, "nan"])
def test_non_finite_score_is_rejected_and_nothing_written(tmp_path, field, bad):
    table = tmp_path / "results.csv"
    with pytest.raises(ValueError, match=field):
        append_rows(table, [make_row(seed=0), make_row(seed=1, **{field: bad})])
    assert not table.exists() or table.stat().st_size == 0


def test_unknown_field_is_rejected(tmp_path):
    table = tmp_path / "results.csv"
    with pytest.raises(ValueError, match="unknown field.*learning_rate"):
        append_rows(table, [make_row(learning_rate=3e-4)])
    assert not table.exists() or table.stat().st_size == 0


def test_missing_field_is_rejected(tmp_path):
    table = tmp_path / "results.csv"
    row = make_row()
    del row["config_hash"]
    with pytest.raises(ValueError, match="missing field.*config_hash"):
        append_rows(table, [row])
    assert not table.exists() or table.stat().st_size == 0


def test_non_integer_seed_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="seed"):
        append_rows(tmp_path / "results.csv", [make_row(seed=1.5)])


def test_read_missing_table_names_the_path(tmp_path):
    missing = tmp_path / "nowhere" / "results.csv"
    with pytest.raises(OfflineRLError, match="not found") as error:
        read_rows(missing)
    assert str(missing) in str(error.value) and "\n" not in str(error.value)


def test_read_table_lacking_columns_names_them(tmp_path):
    table = tmp_path / "results.csv"
    kept = [f for f in RESULT_FIELDS if f not in ("best_score", "wall_clock_s")]
    table.write_text(",".join(kept) + "\n")
    with pytest.raises(OfflineRLError, match="best_score, wall_clock_s"):
        read_rows(table)


def test_read_rejects_a_nan_score_in_the_file(tmp_path):
    table = tmp_path / "results.csv"
    append_rows(table, [make_row(final_score=71.25)])
    text = table.read_text()
    assert text.count(",71.25,") == 1
    table.write_text(text.replace(",71.25,", ",nan,"))
    with pytest.raises(OfflineRLError, match="line 2.*final_score"):
        read_rows(table)


def test_append_refuses_a_table_with_another_header(tmp_path):
    table = tmp_path / "results.csv"
    table.write_text("agent,dataset,score\ntd3bc,x,1.0\n")
    with pytest.raises(OfflineRLError, match="different header"):
        append_rows(table, [make_row()])
    assert table.read_text() == "agent,dataset,score\ntd3bc,x,1.0\n"


# ----------------------------------------------------------------------------------------- statistics

@contextlib.contextmanager
def _no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def score_rows(agent, dataset, finals, bests=None):
    bests = finals if bests is None else bests
    return [make_row(agent=agent, dataset=dataset, seed=i, final_score=f, best_score=b)
            for i, (f, b) in enumerate(zip(finals, bests))]


def by_dataset(aggregated, agent="td3bc"):
    return {r["dataset"]: r for r in aggregated if r["agent"] == agent}


def test_iqm_by_hand():
    # 4 values: trim 1 from each end -> mean(20, 30).
    assert iqm([40, 10, 30, 20]) == 25.0
    # 5 values: int(0.25 * 5) = 1 trimmed from each end -> mean(10, 20, 30).
    assert iqm([100, 0, 30, 10, 20]) == 20.0


def test_aggregate_pinned_on_hand_computed_example():
    rows = (score_rows("td3bc", "a", [10, 20, 30, 40], bests=[12, 22, 32, 42])
            + score_rows("td3bc", "b", [0, 10, 20, 30, 100]))
    stats = by_dataset(aggregate(rows, n_boot=500))
    assert list(stats) == ["a", "b", "all datasets"]

    a = stats["a"]
    assert a["n"] == 4
    assert a["final_mean"] == 25.0
    assert a["final_std"] == pytest.approx(12.909944, abs=1e-6)  # sqrt((225+25+25+225)/3)
    assert a["final_iqm"] == 25.0
    assert (a["best_mean"], a["best_iqm"]) == (27.0, 27.0)

    b = stats["b"]
    assert b["n"] == 5
    assert b["final_mean"] == 32.0
    # deviations from 32: -32, -22, -12, -2, 68 -> squares sum to 6280; / (5 - 1) = 1570.
    assert b["final_std"] == pytest.approx(math.sqrt(1570), rel=1e-12)
    assert b["final_iqm"] == 20.0

    pooled = stats["all datasets"]
    assert (pooled["n"], pooled["n_datasets"]) == (9, 2)
    # pooled sorted: 0 10 10 20 20 30 30 40 100; int(0.25 * 9) = 2 trimmed each end -> mean(10,20,20,30,30).
    assert pooled["final_iqm"] == 22.0
    assert pooled["final_mean"] == pytest.approx(260 / 9)


def test_ci_contains_the_iqm_and_is_reproducible():
    rng = np.random.default_rng(1)
    rows = score_rows("td3bc", "a", list(rng.normal(50, 10, size=10))) + score_rows(
        "td3bc", "b", list(rng.normal(30, 5, size=8)))
    first = aggregate(rows, n_boot=500, seed=3)
    assert aggregate(rows, n_boot=500, seed=3) == first
    other_seed = aggregate(rows, n_boot=500, seed=4)
    assert [r["final_ci_lo"] for r in other_seed] != [r["final_ci_lo"] for r in first]
    for row in first:
        for kind in ("final", "best"):
            assert row[f"{kind}_ci_lo"] < row[f"{kind}_iqm"] < row[f"{kind}_ci_hi"], (row["dataset"], kind)


def test_group_ci_does_not_depend_on_other_groups():
    alone = aggregate(score_rows("td3bc", "a", [1.0, 5.0, 2.0, 8.0, 3.0]), n_boot=300)
    with_more = aggregate(score_rows("td3bc", "a", [1.0, 5.0, 2.0, 8.0, 3.0])
                          + score_rows("aaa", "z", [4.0, 9.0, 1.0]), n_boot=300)
    assert by_dataset(with_more)["a"] == alone[0]


def test_single_seed_ci_collapses_to_the_value():
    with _no_warnings():
        stats = aggregate(score_rows("td3bc", "a", [42.5], bests=[50.0]), n_boot=200)
    (row,) = stats
    assert row["n"] == 1
    assert (row["final_mean"], row["final_std"], row["final_iqm"]) == (42.5, 0.0, 42.5)
    assert (row["final_ci_lo"], row["final_ci_hi"]) == (42.5, 42.5)
    assert (row["best_ci_lo"], row["best_ci_hi"]) == (50.0, 50.0)


def test_identical_seeds_ci_collapses_without_warnings():
    with _no_warnings():
        (row,) = aggregate(score_rows("td3bc", "a", [7.0, 7.0, 7.0]), n_boot=200)
    assert (row["final_ci_lo"], row["final_iqm"], row["final_ci_hi"]) == (7.0, 7.0, 7.0)


def test_pooled_ci_resamples_within_each_dataset():
    # Every stratified resample keeps four seeds from each dataset: pooled 0,0,0,0,100,100,100,100 always,
    # whose IQM is mean(0, 0, 100, 100) = 50. Resampling the pooled scores instead would scatter it.
    rows = score_rows("td3bc", "a", [0.0] * 4) + score_rows("td3bc", "b", [100.0] * 4)
    pooled = by_dataset(aggregate(rows, n_boot=500))["all datasets"]
    assert (pooled["final_ci_lo"], pooled["final_iqm"], pooled["final_ci_hi"]) == (50.0, 50.0, 50.0)


def test_aggregate_rejects_a_nan_score():
    rows = score_rows("td3bc", "a", [1.0, 2.0]) + [make_row(dataset="a", seed=2, final_score=math.nan)]
    with pytest.raises(ValueError, match="final_score"):
        aggregate(rows)


# --------------------------------------------------------------------------------------------- export

def export_example():
    rows = (score_rows("td3bc", "a", [10, 20, 30, 40], bests=[12, 22, 32, 42])
            + score_rows("td3bc", "b", [0, 10, 20, 30, 100]))
    return aggregate(rows, n_boot=500)


def test_format_text_shows_the_statistics_aligned():
    aggregated = export_example()
    a = by_dataset(aggregated)["a"]
    text = format_table(aggregated, "text")
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["agent", "dataset", "n"]
    assert "final mean ± std" in lines[0] and "best IQM 95% CI" in lines[0]
    assert set(lines[1]) <= {"-", " "}
    line_a = next(line for line in lines if line.startswith("td3bc  a "))
    assert "25.00 ± 12.91" in line_a and "27.00 ± 12.91" in line_a
    assert f"[{a['final_ci_lo']:.2f}, {a['final_ci_hi']:.2f}]" in line_a
    assert "32.00 ± 39.62" in text and "22.00" in text and "all datasets" in text
    # Aligned: every column ends at the same offset in every line.
    assert len({len(line) for line in lines}) == 1


def test_format_markdown_is_a_github_table():
    aggregated = export_example()
    lines = format_table(aggregated, "markdown", which=("final",)).splitlines()
    assert lines[0] == ("| agent | dataset | n | final mean ± std | final IQM | final IQM 95% CI | final VaR10 | "
                        "final CVaR10 |")
    assert lines[1] == "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    assert lines[2].startswith("| td3bc | a | 4 | 25.00 ± 12.91 | 25.00 | [")
    assert len(lines) == 2 + len(aggregated)
    assert "best" not in "\n".join(lines)


def test_format_csv_has_numeric_columns_at_full_precision():
    aggregated = export_example()
    records = list(csv.DictReader(io.StringIO(format_table(aggregated, "csv"))))
    assert [r["dataset"] for r in records] == ["a", "b", "all datasets"]
    b = records[1]
    assert int(b["n"]) == 5
    assert float(b["final_std"]) == math.sqrt(1570)
    assert float(b["final_iqm"]) == 20.0
    for record, row in zip(records, aggregated):
        assert float(record["best_ci_hi"]) == row["best_ci_hi"]


def test_format_rejects_unknown_format_and_kind():
    with pytest.raises(ValueError, match="fmt"):
        format_table(export_example(), "html")
    with pytest.raises(ValueError, match="which"):
        format_table(export_example(), "text", which=("median",))


def test_two_configurations_of_one_agent_are_not_pooled_in_the_table():
    """WSRL with and without warm-up on one dataset: two groups, each labelled by its config hash."""
    rows = [make_row(agent="wsrl", seed=s, config_hash="aaaaaa11", final_score=90.0 + s) for s in (0, 1)]
    rows += [make_row(agent="wsrl", seed=s, config_hash="bbbbbb22", final_score=10.0 + s) for s in (0, 1)]
    rows += [make_row(agent="sac", seed=0, config_hash="cccccc33", final_score=50.0)]
    agg = {r["agent"]: r for r in aggregate(rows)}
    assert set(agg) == {"wsrl [aaaaaa]", "wsrl [bbbbbb]", "sac"}
    assert agg["wsrl [aaaaaa]"]["n"] == 2 and agg["wsrl [aaaaaa]"]["final_mean"] == 90.5
    assert agg["wsrl [bbbbbb]"]["final_mean"] == 10.5
    assert "wsrl [aaaaaa]" in format_table(aggregate(rows))
