"""The run path as a user drives it: `offrl run`, the results rows, `offrl table`, resume, and bad input."""
import json
import os
import signal

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from offrl import results
from offrl.cli import main
from offrl.errors import DivergedError, OfflineRLError, RunInterrupted
from offrl.stop import StopSignals
from offrl.trainer import TrainConfig, Trainer

SMALL = {"hidden": [32, 32]}


def _start(tmp_path, name, steps=400, seeds=(0, 1), agent="td3bc", overrides=SMALL, **kw):
    train = TrainConfig(steps=steps, eval_every=100, eval_episodes=3, log_every=50, checkpoint_every=100)
    return Trainer.start(agent, "pointmass-medium", seeds, out_dir=tmp_path / "runs", train=train,
                         overrides=overrides, dataset_size=20_000, results=str(tmp_path / name), run_name=name,
                         threads=1, log=lambda m: None, **kw)


def test_cli_run_writes_one_row_per_seed_and_table_aggregates(tmp_path, data_dir):
    runner = CliRunner()
    out = runner.invoke(main, ["run", "--agent", "td3bc", "--env", "pointmass-medium", "--seeds", "0,1,2",
                               "--steps", "300", "--eval-every", "100", "--eval-episodes", "3",
                               "--dataset-size", "20000", "--set", "hidden=[32,32]", "--threads", "1",
                               "--out", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert "normalised score" in out.output
    assert "update mode eager" in out.output
    # no terminal here, so each evaluation is a log line instead of a progress bar
    assert [line.split(":")[0] for line in out.output.splitlines() if line.startswith("step ")] == \
        ["step 100/300", "step 200/300", "step 300/300"]
    rows = results.read_rows(tmp_path / "results.csv")
    assert [r["seed"] for r in rows] == [0, 1, 2]
    assert all(r["steps"] == 300 and r["agent"] == "td3bc" and r["dataset_source"] == "offrl" for r in rows)
    run_dir = rows[0]["run_dir"]
    saved = json.loads(open(f"{run_dir}/result.json").read())
    assert [r["final_score"] for r in saved] == [r["final_score"] for r in rows]
    table = runner.invoke(main, ["table", str(tmp_path / "results.csv")])
    assert table.exit_code == 0 and "td3bc" in table.output and "pointmass-medium" in table.output
    mean = np.mean([r["final_score"] for r in rows])
    assert f"{mean:.2f}" in table.output


def test_killed_run_resumes_to_the_same_result(tmp_path, data_dir):
    full = _start(tmp_path, "full")
    full_rows = full.fit()
    killed = _start(tmp_path, "killed")
    assert killed.fit(stop_at=250) is None  # dies between the checkpoints at 200 and 300
    resumed = Trainer.resume(killed.run_dir, log=lambda m: None)
    assert resumed.step == 200
    resumed_rows = resumed.fit()
    for a, b in zip(full_rows, resumed_rows):
        assert a["final_score"] == b["final_score"] and a["best_score"] == b["best_score"]
    for (k, v), (k2, v2) in zip(full.agent.state_dict().items(), resumed.agent.state_dict().items()):
        assert torch.equal(v, v2), k
    assert len(results.read_rows(tmp_path / "killed")) == 2


def test_resume_refuses_a_dataset_that_differs_from_the_one_the_run_started_on(tmp_path, data_dir):
    # A run moved to another machine resumes on a dataset rebuilt there: it must be the same data.
    killed = _start(tmp_path, "moved", steps=200)
    killed.fit(stop_at=150)
    spec = killed.run_dir / "run.yaml"
    spec.write_text(spec.read_text().replace("dataset_size: 20000", "dataset_size: 20100"))
    with pytest.raises(OfflineRLError, match=r"was trained on other data than pointmass-medium holds now "
                                             r"\(fingerprint [0-9a-f]{12}, now [0-9a-f]{12}\)"):
        Trainer.resume(killed.run_dir, log=lambda m: None)
    spec.write_text(spec.read_text().replace("dataset_size: 20100", "dataset_size: 20000"))
    assert Trainer.resume(killed.run_dir, log=lambda m: None).step == 100


def test_cli_resume_continues_a_run(tmp_path, data_dir):
    killed = _start(tmp_path, "cli", steps=300)
    killed.fit(stop_at=150)
    out = CliRunner().invoke(main, ["run", "--resume", str(killed.run_dir)])
    assert out.exit_code == 0, out.output
    assert len(results.read_rows(tmp_path / "cli")) == 2
    again = CliRunner().invoke(main, ["run", "--resume", str(killed.run_dir)])
    assert again.exit_code == 2 and "already finished" in again.output


def test_diverging_loss_stops_the_run_and_writes_no_score(tmp_path, data_dir):
    trainer = _start(tmp_path, "nan", steps=200, overrides={"hidden": [32, 32], "critic_lr": 1e30, "alpha": 1e30})
    with pytest.raises(DivergedError, match="became"):
        trainer.fit()
    assert not (tmp_path / "nan").exists()
    assert not (trainer.run_dir / "result.json").exists()


@pytest.mark.parametrize("args, message", [
    (["--agent", "nope", "--env", "pointmass-medium"], "unknown agent 'nope'"),
    (["--agent", "td3bc", "--env", "nowhere-medium"], "unknown dataset 'nowhere-medium'"),
    (["--agent", "td3bc", "--env", "pointmass-medium", "--set", "actor_lrr=1"], "unknown config key 'actor_lrr'"),
    (["--agent", "td3bc", "--env", "pointmass-medium", "--set", "actor_lr=fast"], "expected a number"),
    (["--agent", "td3bc", "--env", "pointmass-medium", "--seeds", "0,0"], "distinct"),
    (["--agent", "td3bc", "--env", "pointmass-medium", "--steps", "0"], "must be positive"),
    (["--agent", "td3bc", "--env", "pointmass-medium", "--set", "batch_size=0"], "batch_size: 0 is not allowed"),
    (["--agent", "prdc", "--env", "pointmass-medium", "--set", "nn_method=ball"], "expected one of auto, kdtree"),
])
def test_bad_input_is_one_clear_line_and_nonzero_exit(tmp_path, data_dir, args, message):
    out = CliRunner().invoke(main, ["run", *args, "--dataset-size", "20000", "--out", str(tmp_path)])
    assert out.exit_code == 2
    assert message in out.output
    assert out.output.strip().count("\n") == 0 or "building" in out.output
    assert not (tmp_path / "results.csv").exists()


def test_nan_in_data_and_shape_mismatch_are_refused(pointmass):
    from offrl.data import from_arrays

    ds = pointmass("medium", 20_000)
    arrays = {k: getattr(ds, k).copy() for k in ("observations", "actions", "rewards", "next_observations",
                                                 "terminals", "timeouts")}
    arrays["rewards"][7] = np.nan
    with pytest.raises(OfflineRLError, match="rewards has NaN or inf values in 1 rows"):
        from_arrays("bad", arrays, family="pointmass", source="test", version="0")
    other = from_arrays("wide", {**arrays, "rewards": ds.rewards,
                                 "observations": np.zeros((len(ds), 9)), "next_observations": np.zeros((len(ds), 9))},
                        family="pointmass", source="test", version="0")
    with pytest.raises(OfflineRLError, match="shape mismatch: agent expects observations of 4"):
        other.check_spec(ds.spec)


def test_plugin_agent_from_the_readme_trains(tmp_path, data_dir):
    out = CliRunner().invoke(main, ["run", "--plugin", "examples/my_agent.py", "--agent", "my-bc", "--env",
                                    "pointmass-expert", "--steps", "200", "--eval-every", "200", "--eval-episodes",
                                    "2", "--dataset-size", "20000", "--threads", "1", "--out", str(tmp_path)])
    assert out.exit_code == 0, out.output
    listing = CliRunner().invoke(main, ["agents", "--plugin", "examples/my_agent.py"])
    assert "my-bc" in listing.output and "td3bc" in listing.output


def test_a_dataset_without_reference_scores_is_refused_before_training(tmp_path, monkeypatch):
    import minari
    from minari.data_collector import EpisodeBuffer

    import offrl.envs  # noqa: F401  (registers offrl/PointMass-v0)

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    rng = np.random.default_rng(0)
    episodes = [EpisodeBuffer(id=i, observations=rng.normal(size=(6, 4)).astype(np.float32),
                              actions=rng.uniform(-1, 1, (5, 2)).astype(np.float32), rewards=rng.normal(size=5),
                              terminations=np.r_[np.zeros(4, bool), True], truncations=np.zeros(5, bool), infos={})
                for i in range(2)]
    minari.create_dataset_from_buffers("test/pointmass/norefs-v0", episodes, env="offrl/PointMass-v0",
                                       algorithm_name="x", author="t", author_email="t@example.com",
                                       code_permalink="https://example.com")
    out = CliRunner().invoke(main, ["run", "--agent", "bc", "--env", "minari:test/pointmass/norefs-v0",
                                    "--out", str(tmp_path / "runs")])
    assert out.exit_code == 2
    assert "test/pointmass/norefs-v0 has no reference scores" in out.output
    assert not (tmp_path / "runs").exists()


def test_resume_with_another_thread_count_keeps_the_run_yaml(tmp_path, data_dir):
    killed = _start(tmp_path, "threads", steps=200)
    killed.fit(stop_at=150)
    try:
        resumed = Trainer.resume(killed.run_dir, log=lambda m: None, threads=2)
        assert resumed.threads == 2 and torch.get_num_threads() == 2 and resumed.step == 100
        assert "threads: 1" in (killed.run_dir / "run.yaml").read_text()
        rows = resumed.fit()
        assert [r["steps"] for r in rows] == [200, 200] and "2 threads" in rows[0]["hardware"]
    finally:
        torch.set_num_threads(1)  # the suite's one thread per test process (conftest)


def test_run_resumed_under_newer_code_records_both_revisions(tmp_path, data_dir, monkeypatch):
    changed, same = _start(tmp_path, "revs", steps=200), _start(tmp_path, "same", steps=200)
    started_at = changed.spec.git_revision
    changed.fit(stop_at=150)
    same.fit(stop_at=150)
    monkeypatch.setattr("offrl.trainer.git_revision", lambda: "f00dcafe")
    messages = []
    rows = Trainer.resume(changed.run_dir, log=messages.append).fit()
    assert {r["agent_version"] for r in rows} == {f"{started_at}..f00dcafe"}
    assert any("the code is now at f00dcafe" in m for m in messages)
    # resumed under the code it started with: one revision
    monkeypatch.setattr("offrl.trainer.git_revision", lambda: started_at)
    assert {r["agent_version"] for r in Trainer.resume(same.run_dir, log=lambda m: None).fit()} == {started_at}


def _signal_at(monkeypatch, step, signum):
    """Every run's update loop sends `signum` to this process right after update `step`."""
    from offrl.compile import UpdateRunner
    update = UpdateRunner.__call__

    def signalling(self, n):
        out = update(self, n)
        if n == step:
            os.kill(os.getpid(), signum)
        return out
    monkeypatch.setattr(UpdateRunner, "__call__", signalling)


def test_sigterm_stops_a_run_after_the_update_with_a_checkpoint_and_it_resumes_to_the_same_result(
        tmp_path, data_dir, monkeypatch):
    full_rows = _start(tmp_path, "full", steps=300).fit()
    stopped = _start(tmp_path, "stopped", steps=300)
    before = signal.getsignal(signal.SIGTERM)
    _signal_at(monkeypatch, 170, signal.SIGTERM)
    with pytest.raises(RunInterrupted, match="SIGTERM: stopped at step 170 .* --resume") as info:
        stopped.fit()
    assert info.value.exit_code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before  # the handlers are put back
    assert torch.load(stopped.checkpoint_path, weights_only=True)["step"] == 170  # no update lost
    assert not (tmp_path / "stopped").exists()  # no score written
    monkeypatch.undo()
    resumed = Trainer.resume(stopped.run_dir, log=lambda m: None)
    assert resumed.step == 170
    rows = resumed.fit()
    assert [r["final_score"] for r in rows] == [r["final_score"] for r in full_rows]
    assert [r["best_score"] for r in rows] == [r["best_score"] for r in full_rows]


def test_ctrl_c_stops_a_cli_run_with_exit_130_and_the_run_resumes(tmp_path, data_dir, monkeypatch):
    _signal_at(monkeypatch, 120, signal.SIGINT)
    args = ["run", "--agent", "td3bc", "--env", "pointmass-medium", "--seeds", "0", "--steps", "200",
            "--eval-every", "100", "--eval-episodes", "2", "--dataset-size", "20000", "--set", "hidden=[32,32]",
            "--threads", "1", "--out", str(tmp_path), "--name", "ctrl-c"]
    out = CliRunner().invoke(main, args)
    assert out.exit_code == 130, out.output
    assert "SIGINT: stopped at step 120" in out.output
    monkeypatch.undo()
    again = CliRunner().invoke(main, ["run", "--resume", str(tmp_path / "ctrl-c")])
    assert again.exit_code == 0, again.output
    assert "resumed" in again.output and "at step 120" in again.output
    assert len(results.read_rows(tmp_path / "results.csv")) == 1


def test_a_second_ctrl_c_interrupts_at_once():
    with StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested and stop.name == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)


def test_resume_with_another_checkpoint_interval_for_this_session_only(tmp_path, data_dir):
    killed = _start(tmp_path, "interval", steps=300)  # checkpoints every 100
    killed.fit(stop_at=150)
    again = Trainer.resume(killed.run_dir, log=lambda m: None, checkpoint_every=30)
    assert again.fit(stop_at=170) is None
    assert torch.load(again.checkpoint_path, weights_only=True)["step"] == 150
    assert "checkpoint_every: 100" in (killed.run_dir / "run.yaml").read_text()


def test_resume_refuses_options_that_would_change_the_run(tmp_path, data_dir):
    killed = _start(tmp_path, "fixed", steps=200)
    killed.fit(stop_at=150)
    out = CliRunner().invoke(main, ["run", "--resume", str(killed.run_dir), "--steps", "500", "--env", "x"])
    assert out.exit_code == 2
    assert "--env, --steps cannot change a run: with --resume only --threads and --checkpoint-every apply" \
        in out.output
    bad = CliRunner().invoke(main, ["run", "--resume", str(killed.run_dir), "--checkpoint-every", "0"])
    assert bad.exit_code == 2 and "--checkpoint-every must be positive" in bad.output
    ok = CliRunner().invoke(main, ["run", "--resume", str(killed.run_dir), "--checkpoint-every", "10"])
    assert ok.exit_code == 0, ok.output


def test_two_runs_started_in_the_same_second_get_their_own_folders(tmp_path, monkeypatch):
    import datetime as dt

    from offrl import trainer as trainer_module

    class Frozen(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return cls(2026, 1, 2, 3, 4, 5)
    monkeypatch.setattr(trainer_module.dt, "datetime", Frozen)
    first = trainer_module.default_run_name("td3bc", "offrl:pointmass-medium", tmp_path)
    assert first == "td3bc_offrl_pointmass-medium_20260102-030405"
    (tmp_path / first).mkdir()
    assert trainer_module.default_run_name("td3bc", "offrl:pointmass-medium", tmp_path) == first + "-2"
