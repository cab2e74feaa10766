"""`offrl bench` as a user drives it: the table it prints, and timing a run's trained agent with --from.
(Speed itself is measured by the command, never asserted in tests.)"""
from __future__ import annotations

import torch
from click.testing import CliRunner
from test_trainer import _start

from offrl.bench import run_checkpoint
from offrl.build import agent_config, build_run
from offrl.cli import main


def test_bench_from_a_run_times_its_trained_agent(tmp_path, data_dir):
    trainer = _start(tmp_path, "trained", steps=300, seeds=(0, 1))
    trainer.fit(stop_at=150)  # checkpoint at step 100
    spec, checkpoint = run_checkpoint(trainer.run_dir)
    assert checkpoint["step"] == 100 and spec.agent == "td3bc"

    config = agent_config("td3bc", trainer.dataset, overrides=spec.agent_config)
    agent = build_run("td3bc", trainer.dataset, config, [0, 1], agent_state=checkpoint["agent"], log=lambda m: None).agent
    saved = checkpoint["agent"]["modules"]
    assert all(torch.equal(v, saved[k]) for k, v in agent.state_dict().items())
    fresh = build_run("td3bc", trainer.dataset, config, [0, 1], log=lambda m: None).agent
    assert not torch.equal(next(fresh.actor.parameters()), next(agent.actor.parameters()))  # trained != initial

    other = _start(tmp_path, "bc", steps=300, seeds=(0,), agent="bc", overrides={"hidden": [32, 32]})
    other.fit(stop_at=250)  # checkpoint at step 200
    out = CliRunner().invoke(main, ["bench", "--from", str(trainer.run_dir), "--from", str(other.run_dir),
                                    "--steps", "5", "--threads", "1", "--agent", "cql", "--seeds", "7"])
    assert out.exit_code == 0, out.output  # each run's agent and seed count, not --agent / --seeds
    rows = {line.split()[0]: line for line in out.output.splitlines() if line.startswith(("td3bc ", "bc "))}
    assert rows["td3bc"].split()[1:3] == ["2", "1"] and float(rows["td3bc"].split()[4]) > 0
    assert rows["td3bc"].endswith(f"{trainer.run_dir} at step 100")
    assert rows["bc"].split()[1:3] == ["1", "1"] and rows["bc"].endswith(f"{other.run_dir} at step 200")


def test_bench_from_a_folder_without_checkpoint_is_one_line(tmp_path):
    (tmp_path / "run.yaml").write_text("agent: td3bc\n")
    out = CliRunner().invoke(main, ["bench", "--from", str(tmp_path)])
    assert out.exit_code == 2 and out.output.count("\n") == 1
    assert "cannot bench from" in out.output and "checkpoint.pt" in out.output


def test_flops_are_counted_for_an_update_that_calls_autograd_grad(pointmass):
    """EDAC's diversity term differentiates through autograd.grad; the FLOP count must not break it, and must
    count the matmuls: a 2-layer critic ensemble's forward alone is at least 2·B·(in·h + h·h) per member."""
    from offrl.bench import benchmark

    result = benchmark("edac", pointmass("medium"), 1, steps=2, warmup=1, threads=1, peak=1.0, log=lambda m: None,
                       overrides={"num_critics": 3, "hidden": [32, 32], "batch_size": 16})
    spec = pointmass("medium").spec
    assert result.gflop_per_update * 1e9 > 3 * 2 * 16 * ((spec.obs_dim + spec.act_dim) * 32 + 32 * 32)
    assert result.updates_per_s > 0
