"""Sweeps: a sweep file expands into `offrl run` jobs; a sweep on local Ray that is killed halfway and run again
finishes every job with each result row exactly once; bad sweep files are one line."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from offrl import results, sweep
from offrl.cli import main
from offrl.config import parse_set
from offrl.errors import OfflineRLError

OFFRL = str(Path(sys.executable).parent / "offrl")
TOY = {"name": "toy", "agents": ["td3bc", "bc"], "datasets": ["pointmass-medium"], "seed_groups": ["0", "1"],
       "steps": 3000, "eval_every": 1000, "eval_episodes": 2, "log_every": 100, "checkpoint_every": 100,
       "dataset_size": 2000, "device": "cpu", "set": {"hidden": [32, 32]}, "resources": {"cpus": 1, "gpus": 0}}


def write_spec(tmp_path, **changes):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({**TOY, **changes}, sort_keys=False))
    return path


def test_a_sweep_file_expands_into_one_run_per_agent_dataset_and_seed_group(tmp_path):
    spec = sweep.load_spec(write_spec(tmp_path, seed_groups=["0-2", [3, 4], 5], agent_set={"bc": {"hidden": [8]}}))
    found = sweep.jobs(spec)
    assert [(j.name, j.seeds) for j in found] == [
        ("td3bc_pointmass-medium_s0_1_2", [0, 1, 2]), ("td3bc_pointmass-medium_s3_4", [3, 4]),
        ("td3bc_pointmass-medium_s5", [5]), ("bc_pointmass-medium_s0_1_2", [0, 1, 2]),
        ("bc_pointmass-medium_s3_4", [3, 4]), ("bc_pointmass-medium_s5", [5])]
    args = sweep.run_arguments(spec, found[3], tmp_path / "toy")
    assert args[:9] == ["run", "--agent", "bc", "--env", "pointmass-medium", "--seeds", "0,1,2", "--out",
                        str(tmp_path / "toy")]
    for flag, value in [("--name", "bc_pointmass-medium_s0_1_2"), ("--results", str(tmp_path / "toy/results.csv")),
                        ("--steps", "3000"), ("--eval-every", "1000"), ("--dataset-size", "2000"), ("--threads", "1"),
                        ("--device", "cpu")]:
        assert args[args.index(flag) + 1] == value
    sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    assert parse_set(sets) == {"hidden": [8]}  # the agent's own override wins over the sweep's
    # A stopped job (run.yaml, no result.json) is resumed in its folder; a finished one is not run again.
    folder = tmp_path / "toy" / found[3].name
    folder.mkdir(parents=True)
    (folder / "run.yaml").write_text("agent: bc\n")
    assert sweep.run_arguments(spec, found[3], tmp_path / "toy") == ["run", "--resume", str(folder), "--threads", "1"]
    assert sweep.job_state(folder) == "stopped"
    (folder / "result.json").write_text("[]")
    assert sweep.job_state(folder) == "finished" and sweep.job_state(tmp_path / "toy" / "other") == "new"


def test_dry_run_lists_jobs_with_their_state_and_command(tmp_path):
    path = write_spec(tmp_path)
    (tmp_path / "out" / "toy" / "bc_pointmass-medium_s1").mkdir(parents=True)
    (tmp_path / "out" / "toy" / "bc_pointmass-medium_s1" / "result.json").write_text("[]")
    out = CliRunner().invoke(main, ["sweep", str(path), "--out", str(tmp_path / "out"), "--dry-run"])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[0].split() == ["job", "state", "command"]
    assert [line.split()[:2] for line in lines[1:5]] == [["td3bc_pointmass-medium_s0", "new"],
                                                         ["td3bc_pointmass-medium_s1", "new"],
                                                         ["bc_pointmass-medium_s0", "new"],
                                                         ["bc_pointmass-medium_s1", "finished"]]
    assert "offrl run --agent td3bc --env pointmass-medium --seeds 0" in lines[1] and "'--set' " not in lines[1]
    assert "--set 'hidden=[32,32]'" in lines[1]
    assert lines[5].endswith("4 jobs in " + str(tmp_path / "out" / "toy") + ": 3 new, 0 stopped, 0 running, 1 finished")
    assert not (tmp_path / "out" / "toy" / "results.csv").exists()


@pytest.mark.parametrize("changes, message", [
    (dict(agents=[]), "agents must list at least one entry"),
    (dict(seed_groups=["0,0"]), "give distinct seeds"),
    (dict(seed_groups=["a"]), "give distinct seeds"),
    (dict(steps=0), "steps must be a positive integer"),
    (dict(resources={"cpus": 0}), "resources.cpus must be a whole number"),
    (dict(resources={"cpus": 1, "gpus": 1.5}), "resources.gpus must be a fraction"),
    (dict(resources={"memory": 1}), "resources takes cpus and gpus"),
    (dict(seeds="0,1"), "unknown key(s) seeds"),
    (dict(agent_set={"iql": {"tau": 0.7}}), "agent_set names agent(s) the sweep does not run: iql"),
    (dict(name="a b"), "sweep name 'a b'"),
    (dict(seed_groups=["0", "0"]), "would share a run folder"),
])
def test_a_bad_sweep_file_is_one_line(tmp_path, changes, message):
    out = CliRunner().invoke(main, ["sweep", str(write_spec(tmp_path, **changes)), "--out", str(tmp_path / "o"),
                                    "--dry-run"])
    assert out.exit_code == 2 and message in out.output and len(out.output.strip().splitlines()) == 1, out.output
    assert not (tmp_path / "o").exists()


def test_a_missing_sweep_file_is_named(tmp_path):
    with pytest.raises(OfflineRLError, match="cannot read sweep file"):
        sweep.load_spec(tmp_path / "nope.yaml")


def wait_for(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def training(run_dir):
    """Started (its run.yaml is written) and not finished: a kill now stops it mid-run. (A kill between its
    last checkpoint and its result rows is fine too: finishing is idempotent, offrl/trainer.py.)"""
    return (run_dir / "run.yaml").exists() and not (run_dir / "result.json").exists()


def test_a_sweep_killed_halfway_and_run_again_has_every_row_exactly_once(tmp_path):
    pytest.importorskip("ray")
    # Two jobs run at a time and four are queued: when the first finishes, another has started or starts at once.
    path = write_spec(tmp_path, agents=["td3bc", "iql"], seed_groups=["0", "1,2"])
    folder = tmp_path / "out" / "toy"
    command = [OFFRL, "sweep", str(path), "--out", str(tmp_path / "out"), "--cpus", "2"]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: first.poll() is not None or list(folder.glob("*/result.json")) and any(
            training(d) for d in folder.glob("*_s*")), 600, "a job finished and another one training")
        first.send_signal(signal.SIGTERM)
        output, _ = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 128 + signal.SIGTERM, output
    assert "run it again to resume them" in output
    # Stopping the sweep stopped its runs: none trains on, orphaned, beside the next sweep.
    from offrl.lock import held_by
    wait_for(lambda: all(held_by(d / ".lock") is None for d in folder.iterdir()), 120, "the runs to stop")
    finished_before = {p.parent.name for p in folder.glob("*/result.json")}
    assert 1 <= len(finished_before) < 4
    stopped = [d.name for d in folder.iterdir() if (d / "run.yaml").exists() and not (d / "result.json").exists()]
    assert stopped

    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    for name in finished_before:
        assert f"skip {name} (finished)" in again.stdout
    assert "sweep toy: 4 of 4 jobs finished, 0 failed" in again.stdout
    rows = results.read_rows(folder / "results.csv")
    assert sorted((r["agent"], r["seed"]) for r in rows) == [("iql", 0), ("iql", 1), ("iql", 2), ("td3bc", 0),
                                                             ("td3bc", 1), ("td3bc", 2)]
    for name in stopped:
        assert f"resume {name}" in again.stdout
    assert all(r["steps"] == 3000 for r in rows)
    assert all((folder / j.name / "result.json").exists() for j in sweep.jobs(sweep.load_spec(path)))
    # The sweep folder is a folder of run folders: its learning curves draw straight from it.
    out = CliRunner().invoke(main, ["plot", str(folder), "-o", str(tmp_path / "curves.png")])
    assert out.exit_code == 0, out.output
