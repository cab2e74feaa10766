"""The run folder as untrusted input and a run that always finishes: finishing is idempotent, checkpoints load
as data only, a run.yaml's plugins run only when allowed, leftovers are cleaned, older folders still resume."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from test_trainer import SMALL, _start

from offrl import results
from offrl.cli import main
from offrl.errors import DivergedError, OfflineRLError
from offrl.run_spec import read_run_spec
from offrl.runs import run_status
from offrl.trainer import Trainer

FIXTURE = Path(__file__).parent / "fixtures" / "run_folder_v0"  # written by the trainer before the split
QUIET = dict(log=lambda m: None)


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_a_run_killed_after_its_last_checkpoint_finishes_on_resume_once(tmp_path, data_dir):
    args = ["run", "--agent", "td3bc", "--env", "pointmass-medium", "--steps", "300", "--eval-every", "300",
            "--eval-episodes", "2", "--dataset-size", "20000", "--set", "hidden=[32,32]", "--threads", "1",
            "--seeds", "0,1", "--out", tmp_path, "--name", "w"]
    assert _cli(*args).exit_code == 0
    run_dir, table = tmp_path / "w", tmp_path / "results.csv"
    first = results.read_rows(table)
    # killed after the rows were appended and before result.json: the rows are there once
    (run_dir / "result.json").unlink()
    assert run_status(run_dir).state == "trained"
    out = _cli("run", "--resume", run_dir)
    assert out.exit_code == 0, out.output
    assert "2 already there, not appended again" in out.output
    assert len(results.read_rows(table)) == 2
    # killed before the rows were appended: they are appended, once, with the recorded throughput
    table.unlink()
    (run_dir / "result.json").unlink()
    out = _cli("runs", "--finish", tmp_path)
    assert out.exit_code == 0, out.output
    rows = results.read_rows(table)
    assert [r["seed"] for r in rows] == [0, 1]
    assert [r["final_score"] for r in rows] == [r["final_score"] for r in first]
    assert rows[0]["updates_per_s"] == first[0]["updates_per_s"] > 0  # from what the run recorded, never NaN
    assert json.loads((run_dir / "result.json").read_text())[0]["final_score"] == rows[0]["final_score"]
    assert "finished" in out.output.splitlines()[-1]
    assert _cli("run", "--resume", run_dir).exit_code == 2  # already finished


def test_an_unwritable_results_table_is_refused_before_training(tmp_path, data_dir):
    (tmp_path / "table").mkdir()
    with pytest.raises(OfflineRLError, match="results table .* is a folder"):
        Trainer.start("td3bc", "pointmass-medium", [0], out_dir=tmp_path / "runs", overrides=SMALL,
                      dataset_size=20_000, results=str(tmp_path / "table"), threads=1, **QUIET)
    assert not (tmp_path / "runs").exists()


def test_a_run_folder_written_before_the_split_resumes_to_the_same_result(tmp_path, data_dir):
    old = tmp_path / "runs" / "legacy"
    shutil.copytree(FIXTURE, old)
    spec = old / "run.yaml"
    spec.write_text(spec.read_text().replace("results: /tmp/trfix/runs/results.csv",
                                             f"results: {tmp_path / 'legacy.csv'}"))
    resumed = Trainer.resume(old, **QUIET)
    assert resumed.step == 100
    rows = resumed.fit()
    full = _start(tmp_path, "full", steps=200).fit()
    assert [r["final_score"] for r in rows] == [r["final_score"] for r in full]
    assert [r["best_score"] for r in rows] == [r["best_score"] for r in full]


class _Payload:
    """Unpickling this creates a marker file: the proof that loading ran code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_payload_in_a_checkpoint_never_runs(tmp_path, data_dir):
    trainer = _start(tmp_path, "evil", steps=300)
    trainer.fit(stop_at=150)
    marker = tmp_path / "ran"
    state = torch.load(trainer.checkpoint_path, weights_only=True)
    state["history"] = [_Payload(marker)]
    torch.save(state, trainer.checkpoint_path)
    resume = _cli("run", "--resume", trainer.run_dir)
    assert resume.exit_code == 2 and "not a plain checkpoint" in resume.output
    bench = _cli("bench", "--from", trainer.run_dir, "--steps", "2")
    assert bench.exit_code == 2 and "cannot bench from" in bench.output
    listing = _cli("runs", tmp_path / "runs")
    assert listing.exit_code == 0 and "evil" in listing.output
    assert not marker.exists()


def test_a_plugin_named_by_a_run_yaml_is_imported_only_when_allowed(tmp_path, data_dir):
    marker = tmp_path / "imported"
    plugin = tmp_path / "my_plugin.py"
    plugin.write_text(f"open({str(marker)!r}, 'w').close()\n"
                      + Path("examples/my_agent.py").read_text())
    trainer = _start(tmp_path, "plug", steps=200)
    trainer.fit(stop_at=150)
    spec = trainer.run_dir / "run.yaml"
    spec.write_text(spec.read_text().replace("plugins: []", f"plugins:\n- {plugin}"))
    for args in (["run", "--resume", trainer.run_dir], ["bench", "--from", trainer.run_dir, "--steps", "2"]):
        out = _cli(*args)
        assert out.exit_code == 2 and f"names the plugin file {plugin}" in out.output and "--trust-plugins" in out.output
        assert not marker.exists()
    out = _cli("run", "--resume", trainer.run_dir, "--plugin", plugin)
    assert out.exit_code == 0, out.output
    assert marker.exists()


def test_a_run_yaml_of_the_wrong_shape_is_one_line(tmp_path):
    (tmp_path / "run.yaml").write_text("agent: td3bc\ndataset: x\nseeds: 3\ntrain: {}\nagent_config: {}\nresults: r\n")
    with pytest.raises(OfflineRLError, match="seeds must be a list of integers, got 3"):
        read_run_spec(tmp_path)
    (tmp_path / "run.yaml").write_text("- a\n- b\n")
    out = _cli("run", "--resume", tmp_path)
    assert out.exit_code == 2 and out.output.count("\n") == 1 and "holds no mapping" in out.output


def test_leftovers_and_messages_of_a_resume(tmp_path, data_dir):
    trainer = _start(tmp_path, "left", steps=300)
    trainer.fit(stop_at=150)
    stale = trainer.run_dir / ".checkpoint.pt.abc123.tmp"  # a process killed while writing a checkpoint
    stale.write_bytes(b"half")
    resumed = Trainer.resume(trainer.run_dir, **QUIET)
    assert not stale.exists()
    resumed.folder.unlock()
    # a checkpoint of other network sizes: the message keeps the sizes
    spec = trainer.run_dir / "run.yaml"
    spec.write_text(spec.read_text().replace("  - 32\n  - 32\n", "  - 16\n  - 16\n"))
    with pytest.raises(OfflineRLError, match=r"size mismatch for .*torch.Size\(\[2, 4, 32\]\).*torch.Size\(\[2, 4, 16\]\)"):
        Trainer.resume(trainer.run_dir, **QUIET)


def test_a_diverged_run_is_shown_as_diverged_and_names_no_missing_checkpoint(tmp_path, data_dir):
    trainer = _start(tmp_path, "nan", steps=200, overrides={"hidden": [32, 32], "critic_lr": 1e30, "alpha": 1e30})
    with pytest.raises(DivergedError) as info:
        trainer.fit()
    assert "no checkpoint was written" in str(info.value) and "checkpoint.pt" not in str(info.value)
    status = run_status(trainer.run_dir)
    assert status.state == "diverged" and status.seconds_left is None
    assert _cli("runs", tmp_path / "runs").output.splitlines()[-1].endswith("diverged")


def test_ctrl_c_before_the_run_folder_exists_suggests_no_resume(tmp_path, data_dir, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr("offrl.trainer.resolve", interrupted)
    out = _cli("run", "--agent", "td3bc", "--env", "pointmass-medium", "--out", tmp_path)
    assert out.exit_code == 130 and "nothing to resume" in out.output and "--resume" not in out.output


def test_stale_build_folders_of_a_dataset_are_removed_and_others_kept(tmp_path, monkeypatch):
    from offrl.data import recipes

    monkeypatch.setenv("OFFRL_DATA_DIR", str(tmp_path))
    store = recipes.minari_store()
    ours = store / ".build-offrl_pointmass_medium-v1-k2j3"
    legacy = store / ".build-x8f1" / "offrl" / "pointmass" / "medium-v1"  # named before builds carried the id
    other = store / ".build-offrl_hopper_medium-v1-a1b2"
    for folder in (ours, legacy, other):
        folder.mkdir(parents=True)
    recipes.remove_stale_builds("offrl/pointmass/medium-v1")
    assert not ours.exists() and not (store / ".build-x8f1").exists() and other.exists()


def test_seed_k_of_a_finished_run_acts_as_the_run_s_seed_k(tmp_path, data_dir):
    from offrl.seed_state import load_seed_state, seed_agent

    trainer = _start(tmp_path, "pair", steps=200)
    trainer.fit()
    one = seed_agent(trainer.run_dir, 1, trainer.dataset)
    obs = torch.as_tensor(trainer.dataset.observations[:16])
    with torch.no_grad():
        expected = trainer.agent.act(obs.expand(2, 16, -1))[1]
        assert torch.equal(one.act(obs[None])[0], expected)
    with pytest.raises(OfflineRLError, match="has no seed 5"):
        load_seed_state(trainer.run_dir, 5, one)
    bc = _start(tmp_path, "bc", steps=100, seeds=(0,), agent="bc")
    with pytest.raises(OfflineRLError, match="is a run of td3bc, not of BC"):
        load_seed_state(trainer.run_dir, 0, bc.agent)
    bc.folder.unlock()
