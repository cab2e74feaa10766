"""The online phase: the ring buffer, the exact phase switch, resume in the online phase, seed isolation."""
import numpy as np
import pytest
import torch

from offrl.online import OnlineBatches, OnlineBuffer
from offrl.trainer import TrainConfig, Trainer

TINY = {"hidden": [16, 16], "actor_hidden": [16, 16], "num_critics": 3, "n_actions": 2, "batch_size": 16,
        "online_batch_size": 16, "online_utd": 2, "max_target_actions": 2}


def _rows(S, n, start):
    v = torch.arange(start, start + n, dtype=torch.float32).expand(S, n).clone()
    v = v + 1000 * torch.arange(S)[:, None]  # seed s's rows carry 1000·s
    return {"observations": v[..., None].expand(S, n, 2), "actions": v[..., None], "rewards": v,
            "next_observations": v[..., None].expand(S, n, 2), "dones": torch.zeros(S, n)}


def test_ring_buffer_wraps_and_keeps_seeds_apart():
    buf = OnlineBuffer([0, 1], obs_dim=2, act_dim=1, capacity=5)
    buf.insert(_rows(2, 3, 0))
    buf.insert(_rows(2, 4, 3))  # rows 0..6: 5 and 6 overwrite 0 and 1
    assert buf.size.tolist() == [5, 5] and buf.position.tolist() == [2, 2]
    assert buf.rewards[0].tolist() == [5, 6, 2, 3, 4] and buf.rewards[1].tolist() == [1005, 1006, 1002, 1003, 1004]
    batch = buf.sample(200)
    assert set(batch["rewards"][0].tolist()) == {2, 3, 4, 5, 6}  # every row of seed 0, and only seed 0's
    assert set(batch["rewards"][1].tolist()) == {1002, 1003, 1004, 1005, 1006}
    one = {k: v[0] for k, v in _rows(1, 2, 50).items()}
    buf.insert(one, seed_index=1)  # a whole episode of one seed: the other seed's rows stay
    assert buf.rewards[1].tolist()[2:4] == [50, 51] and buf.rewards[0].tolist() == [5, 6, 2, 3, 4]


def test_online_batches_hold_no_dataset_row_when_the_ratio_is_zero(pointmass):
    from offrl.replay import TransitionBuffer
    ds = pointmass("medium", 20_000)
    offline = TransitionBuffer(ds, [0, 1], 8)
    online = OnlineBuffer([0, 1], 4, 2, capacity=10)
    online.insert({"observations": torch.full((2, 3, 4), 7.0), "actions": torch.zeros(2, 3, 2),
                   "rewards": torch.full((2, 3), 7.0), "next_observations": torch.zeros(2, 3, 4),
                   "dones": torch.zeros(2, 3)})
    counter = offline.streams.counter.clone()
    batch = OnlineBatches(online, offline, 32, 0.0).sample()
    assert (batch["rewards"] == 7.0).all() and batch["rewards"].shape == (2, 32)
    assert torch.equal(offline.streams.counter, counter)  # the dataset was not even sampled
    mixed = OnlineBatches(online, offline, 32, 0.5).sample()
    assert (mixed["rewards"][:, :16] != 7.0).all() and (mixed["rewards"][:, 16:] == 7.0).all()


def _trainer(tmp_path, name, steps, online_steps, seeds=(0, 1), agent="wsrl", checkpoint_every=1000, base=TINY,
             **over):
    train = TrainConfig(steps=steps, online_steps=online_steps, eval_every=1000, eval_episodes=2, log_every=10,
                        checkpoint_every=checkpoint_every)
    return Trainer.start(agent, "pointmass-medium", list(seeds), out_dir=tmp_path, train=train,
                         overrides={**base, **over}, device="cpu", dataset_size=20_000, run_name=name,
                         compile="eager", log=lambda m: None)


def _without_act_noise(state):
    return {k: v for k, v in state.items() if "act_noise" not in k}


def test_the_switch_keeps_modules_targets_temperature_and_adam_state_exactly(tmp_path, pointmass):
    offline = _trainer(tmp_path, "offline", 20, 0)  # wsrl without an online phase
    offline.fit()
    switched = _trainer(tmp_path, "switched", 20, 12, warmup_steps=100)  # 12 warm-up steps: no update
    rows = switched.fit()
    assert switched.online_updates == 0 and switched.online.buffer.size.tolist() == [12, 12]
    a, b = offline.agent.checkpoint_state(), switched.agent.checkpoint_state()
    for key, value in _without_act_noise(a["modules"]).items():
        assert torch.equal(value, b["modules"][key]), key
    for name, opt in a["optimizers"].items():
        for pid, moments in opt["state"].items():
            for k, v in moments.items():
                assert torch.equal(v, b["optimizers"][name]["state"][pid][k]), (name, pid, k)
    assert switched.agent.config.utd == 2 and not switched.agent.conservative  # now SAC at its online UTD
    assert rows[0]["offline_score"] == offline.history[-1]["scores"][0]


def test_a_resumed_online_phase_continues_from_its_checkpoint(tmp_path, pointmass):
    first = _trainer(tmp_path, "run", 10, 40, checkpoint_every=10, warmup_steps=5)
    assert first.fit(stop_online_at=25) is None  # as if killed after the checkpoint at env step 20
    first.folder.unlock()
    saved = torch.load(first.checkpoint_path, weights_only=True)
    assert saved["online"]["env_step"] == 20
    resumed = Trainer.resume(tmp_path / "run", log=lambda m: None)
    assert resumed.env_step == 20 and resumed.online_updates == saved["online"]["updates"] == 20 - 16
    for key, value in saved["online"]["buffer"].items():
        assert torch.equal(resumed.online.buffer.state_dict()[key], value), key
    for key, value in _without_act_noise(saved["agent"]["modules"]).items():
        assert torch.equal(resumed.agent.state_dict()[key], value), key
    assert resumed.online.envs.episodes.tolist() == saved["online"]["envs"]["episodes"].tolist()
    rows = resumed.fit()
    assert resumed.env_step == 40 and len(rows) == 2 and rows[0]["online_steps"] == 40


def test_online_seeds_trained_together_match_seeds_trained_alone(tmp_path, pointmass, monkeypatch):
    monkeypatch.setattr(torch.optim, "Adam", lambda params, lr, fused=None, **kw: _ADAM(params, lr=lr, foreach=False, **kw))
    both = _trainer(tmp_path, "both", 5, 30, warmup_steps=10)
    both.fit()
    for i, seed in enumerate((0, 1)):
        alone = _trainer(tmp_path, f"alone{seed}", 5, 30, seeds=(seed,), warmup_steps=10)
        alone.fit()
        for key, value in alone.online.buffer.state_dict().items():
            if key != "streams.keys":
                torch.testing.assert_close(both.online.buffer.state_dict()[key][i:i + 1] if value.dim() else
                                           both.online.buffer.state_dict()[key], value, msg=key)
        for key, value in alone.agent.state_dict().items():
            if key.endswith("keys") or value.dim() == 0 or value.shape[0] != 1:
                continue
            torch.testing.assert_close(both.agent.state_dict()[key][i:i + 1], value, rtol=1e-5, atol=1e-6, msg=key)


_ADAM = torch.optim.Adam


def test_an_agent_without_an_online_phase_refuses_online_steps(tmp_path, pointmass):
    from offrl.errors import OfflineRLError
    with pytest.raises(OfflineRLError, match="no online phase"):
        _trainer(tmp_path, "x", 5, 10, agent="td3bc", base={"hidden": [16, 16]})
