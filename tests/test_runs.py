"""`offrl runs`: where each run folder stands (finished, running, stopped), read without writing anything."""
from __future__ import annotations

import os

import pytest
from click.testing import CliRunner
from test_trainer import _start

from offrl.cli import main
from offrl.lock import FileLock, held_by
from offrl.runs import list_runs


def test_runs_lists_finished_running_and_stopped(tmp_path, data_dir):
    done = _start(tmp_path, "done", steps=200)
    done.fit()
    stopped = _start(tmp_path, "stopped", steps=300)
    stopped.fit(stop_at=150)  # checkpoint and evaluation at 100
    busy = _start(tmp_path, "busy", steps=300)
    busy.fit(stop_at=250)
    (tmp_path / "runs" / "not-a-run").mkdir()
    for name, run_yaml, eval_csv in [("broken", "agent: [unclosed\n", ""),
                                     ("odd-eval", (stopped.run_dir / "run.yaml").read_text(), "step,seed\nten,0\n")]:
        (tmp_path / "runs" / name).mkdir()
        (tmp_path / "runs" / name / "run.yaml").write_text(run_yaml)
        (tmp_path / "runs" / name / "eval.csv").write_text(eval_csv)
    with FileLock(busy.run_dir / ".lock"):  # another process trains it
        before = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("*") if p.is_file()}
        found = {r.path.name: r for r in list_runs(tmp_path / "runs")}
        out = CliRunner().invoke(main, ["runs", str(tmp_path / "runs")])
        after = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("*") if p.is_file()}
    assert before == after, "offrl runs must not write in run folders"
    assert sorted(found) == ["broken", "busy", "done", "odd-eval", "stopped"]
    assert found["broken"].state == "unreadable"
    assert (found["odd-eval"].state, found["odd-eval"].last_score, found["odd-eval"].step) == ("stopped", None, 0)
    assert (found["done"].state, found["done"].step, found["done"].last_eval_step) == ("finished", 200, 200)
    assert (found["stopped"].state, found["stopped"].step, found["stopped"].last_eval_step) == ("stopped", 100, 100)
    assert found["busy"].state == "running" and found["busy"].holder.startswith(f"pid {os.getpid()} on ")
    # time left at the pace so far: 200 more steps at the 100 done, so twice the wall-clock spent
    assert found["stopped"].seconds_left == pytest.approx(2 * found["stopped"].wall_clock) and \
        found["stopped"].wall_clock > 0
    assert found["done"].seconds_left is None
    assert found["busy"].step == 200 and found["busy"].seeds == [0, 1] and found["busy"].agent == "td3bc"
    assert out.exit_code == 0, out.output
    lines = {line.split()[0]: line for line in out.output.splitlines()[1:]}
    assert "100/300" in lines["stopped"] and lines["stopped"].endswith(" h  stopped")
    assert lines["broken"].endswith("unreadable")
    assert f"running (pid {os.getpid()} on " in lines["busy"] and "200/300" in lines["busy"]
    assert f"{found['done'].last_score:.1f} at 200" in lines["done"] and lines["done"].endswith("finished")
    assert held_by(busy.run_dir / ".lock") is None  # let go


def test_runs_in_a_folder_without_runs_is_one_line(tmp_path):
    out = CliRunner().invoke(main, ["runs", str(tmp_path)])
    assert out.exit_code == 2 and out.output.count("\n") == 1 and "no run folders" in out.output
