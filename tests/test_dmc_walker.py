"""dm_control's walker with the URLB tasks (envs/dmc_walker.py): the rewards against dm_control's own walker
tasks and against values pinned by hand, relabelling from stored physics states, the reward-free dataset, an
FB run end to end, and the one-line error without the `dmc` extra."""
from __future__ import annotations

import numpy as np
import pytest

from offrl.envs import dmc_walker
from offrl.errors import OfflineRLError

needs_dmc = pytest.mark.skipif(not dmc_walker.available(),
                               reason="needs the dmc extra: pip install 'offrl[dmc]' (dm_control==1.0.50)")
SIZE = 2500  # transitions of the test dataset: two whole episodes and one cut at 500 steps


@pytest.fixture(scope="module")
def walker_random(data_dir):
    from offrl.data import resolve
    return resolve("offrl:dmc-walker-random", size=SIZE, log=lambda msg: None)


def rollout(task: str, steps: int = 200, seed: int = 3):
    """Env rewards and the physics states after each step of a uniform-random policy."""
    env = dmc_walker.DMCWalkerEnv(task)
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    # dm_control's own walker task of the same speed (flip has none), read on the same physics
    speed = {"stand": 0.0, "walk": 1.0, "run": 8.0}.get(task)
    own = None if speed is None else dmc_walker._walker_module().PlanarWalker(move_speed=speed)
    rewards, qpos, qvel, stock = [], [], [], []
    for _ in range(steps):
        rewards.append(env.step(rng.uniform(-1, 1, 6))[1])
        q, v = env.state()
        qpos.append(q), qvel.append(v)
        if own is not None:
            stock.append(own.get_reward(env.physics))
    return np.array(rewards), np.array(qpos), np.array(qvel), np.array(stock)


@needs_dmc
@pytest.mark.parametrize("task", dmc_walker.TASKS)
def test_rewards_equal_dm_controls_tasks_and_relabel_from_float32_states(task):
    rewards, qpos, qvel, stock = rollout(task)
    if task != "flip":
        np.testing.assert_array_equal(rewards, stock)
    relabelled = dmc_walker.relabel(task, qpos.astype(np.float32), qvel.astype(np.float32))  # as a dataset stores
    np.testing.assert_allclose(relabelled, rewards, atol=1e-6)
    assert rewards.std() > 0  # the random policy's states do differ in reward


@needs_dmc
def test_task_rewards_pinned_by_hand():
    physics = dmc_walker.new_physics()

    def reward(task, vx=0.0, spin=0.0, height=0.0):
        with physics.reset_context():  # qpos 0: upright, torso at 1.3 m (> 1.2), so stand = 1
            physics.named.data.qpos["rootz"] = height
            physics.named.data.qvel["rootx"] = vx  # every body moves at vx: the centre of mass too
            physics.named.data.qvel["rooty"] = spin  # about +y, the flip's direction
        return dmc_walker.task_reward(task, physics)

    assert reward("stand") == pytest.approx(1.0)
    assert reward("walk") == pytest.approx(1 / 6)  # standing still: only the stand term's sixth
    assert reward("walk", vx=1.0) == pytest.approx(1.0)
    assert reward("walk", vx=0.5) == pytest.approx(3.5 / 6)  # at the margin: move = 0.5
    assert reward("run", vx=4.0) == pytest.approx(3.5 / 6)
    assert reward("run", vx=8.0) == pytest.approx(1.0)
    assert reward("flip", spin=20.0) == pytest.approx(1.0)
    assert reward("flip", spin=-20.0) == pytest.approx(1 / 6)  # spinning backwards earns nothing
    # The torso at 0.6 m, the margin (0.6) below 1.2: standing = 0.1, so stand = (0.3 + 1) / 4.
    assert reward("stand", height=-0.7) == pytest.approx(1.3 / 4)


@needs_dmc
def test_dataset_is_reward_free_with_physics_states_that_replay_the_rewards(walker_random):
    ds = walker_random
    assert ds.reward_free and ds.tasks.names == ["stand", "walk", "run", "flip"]
    assert len(ds) == SIZE and not ds.rewards.any() and ds.observations.shape[1] == 24
    for key in ("infos/qpos", "infos/qvel", "next_infos/qpos", "next_infos/qvel"):
        assert ds.extras[key].shape == (SIZE, 9)
    assert int(ds.timeouts.sum()) == 3  # 1000, 1000 and the cut 500
    # Replay: set the stored state of s_t, step with a_t, read every task's reward; the relabelled rewards from
    # the stored s_{t+1} agree (rows from all three episodes).
    rows = np.r_[0:3, 998:1003, 2497:2500]
    physics = dmc_walker.new_physics()
    batch = {key: value[rows] for key, value in ds.extras.items()}
    for task in ds.tasks:
        relabelled = task.reward(batch)
        replayed = []
        for row in rows:
            with physics.reset_context():
                physics.data.qpos[:] = ds.extras["infos/qpos"][row]
                physics.data.qvel[:] = ds.extras["infos/qvel"][row]
            physics.set_control(ds.actions[row])
            physics.step(round(dmc_walker.CONTROL_TIMESTEP / physics.model.opt.timestep))
            replayed.append(dmc_walker.task_reward(task.name, physics))
        np.testing.assert_allclose(relabelled, replayed, atol=1e-4)


@needs_dmc
def test_datasets_list_and_info_show_the_task_set_and_the_stored_states(walker_random):
    from click.testing import CliRunner

    from offrl.cli import main
    listed = CliRunner().invoke(main, ["datasets", "list"])
    assert listed.exit_code == 0 and "dmc-walker-*: reward-free, tasks stand, walk, run, flip" in listed.output
    info = CliRunner().invoke(main, ["datasets", "info", "dmc-walker-random", "--size", str(SIZE)])
    assert info.exit_code == 0, info.output
    assert "returns      none: reward-free" in info.output
    assert "per task: stand 0 to 1000, walk 0 to 1000, run 0 to 1000, flip 0 to 1000" in info.output
    assert "next_infos/qpos [9]" in info.output and "infos/qvel [9]" in info.output


@needs_dmc
def test_fb_runs_on_the_walker_and_reports_every_task(walker_random, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from offrl.cli import main
    from offrl.results import read_rows
    from offrl.tasks import AGGREGATE
    monkeypatch.chdir(tmp_path)
    small = ["z_dim=8", "preprocessor_hidden=[32]", "preprocessor_dim=16", "forward_hidden=[32]",
             "backward_hidden=[32]", "actor_hidden=32", "batch_size=64"]
    result = CliRunner().invoke(main, ["run", "--agent", "fb", "--env", "dmc-walker-random", "--dataset-size",
                                       str(SIZE), "--steps", "4", "--eval-every", "4", "--eval-episodes", "1",
                                       "--threads", "1", "--out", "runs", *[a for s in small for a in ("--set", s)]])
    assert result.exit_code == 0, result.output
    rows = read_rows(tmp_path / "runs" / "results.csv")
    assert [r["task"] for r in rows] == [AGGREGATE, "stand", "walk", "run", "flip"]
    for row in rows:
        assert 0 <= row["final_score"] <= 100 and row["dataset"] == "dmc-walker-random"
    stand = next(r for r in rows if r["task"] == "stand")
    assert stand["final_score"] == pytest.approx(stand["final_return"] / 10)  # returns out of 1000


@needs_dmc
def test_using_the_walker_leaves_mujocos_warnings_and_rendering_as_they_were():
    import subprocess
    import sys
    code = ("import os, mujoco; from offrl.envs import dmc_walker; before = mujoco.get_mju_user_warning(); "
            "dmc_walker.DMCWalkerEnv('walk').reset(seed=0); "
            "assert mujoco.get_mju_user_warning() is before, 'dm_control kept its MuJoCo warning handler'; "
            "assert 'MUJOCO_GL' not in os.environ; print('ok')")
    env = {k: v for k, v in __import__("os").environ.items() if k != "MUJOCO_GL"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
    assert "GLFW" not in out.stderr and "DISPLAY" not in out.stderr  # no OpenGL backend was tried


def test_without_the_extra_building_the_walker_data_says_what_to_install(monkeypatch, tmp_path):
    from importlib import metadata

    from click.testing import CliRunner

    from offrl.cli import main

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(dmc_walker.metadata, "distribution", missing)
    dmc_walker._walker_module.cache_clear()
    try:
        with pytest.raises(OfflineRLError, match=r"pip install 'offrl\[dmc\]'"):
            dmc_walker.DMCWalkerEnv()
        monkeypatch.setenv("OFFRL_DATA_DIR", str(tmp_path))
        result = CliRunner().invoke(main, ["datasets", "build", "dmc-walker-random", "--size", "100"])
        assert result.exit_code == 2 and "pip install 'offrl[dmc]'" in result.output
        assert len(result.output.strip().splitlines()) <= 2  # the build line, then one error line
    finally:
        dmc_walker._walker_module.cache_clear()
