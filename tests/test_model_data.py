"""The model-rollout buffer (offrl/model_data.py): compact insertion with the rollout's mask, the ring, real/model
mixing, rollouts in a small fitted PointMass model, the seed axis, checkpoints, and a rollout inside an update.

The model is 2 x 32 and fitted for a few epochs (tests/test_dynamics.py checks fitting itself); what is checked
here holds for any model.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from offrl.agent import Agent
from offrl.compile import UpdateRunner
from offrl.dynamics import DynamicsConfig, fit
from offrl.envs import pointmass as pm
from offrl.errors import OfflineRLError
from offrl.model_data import MODEL_KEYS, ModelRolloutBuffer
from offrl.replay import TransitionBuffer
from offrl.rng import SeedStreams


@pytest.fixture(scope="module")
def data(pointmass):
    return pointmass("random", 5_000)


@pytest.fixture(scope="module")
def model(data):
    cfg = DynamicsConfig(hidden=(32, 32), weight_decays=(2.5e-5, 5e-5, 1e-4), max_epochs=8)
    return fit(data, cfg, log=lambda m: None)[0]


def seed_policy(seeds, noise: float = 0.0):
    """A per-seed policy: a seed-dependent linear map of the observation, plus noise from per-seed streams, so a
    seed acts the same alone and beside others (as an agent's actor does)."""
    weights = torch.stack([torch.as_tensor(np.random.default_rng(s).uniform(-1, 1, (4, 2)), dtype=torch.float32)
                           for s in seeds])
    streams = SeedStreams(list(seeds), "test-policy")

    def act(obs):
        out = torch.tanh(obs @ weights)
        if noise:
            out = (out + noise * streams.normal(*obs.shape[1:-1], 2)).clamp(-1, 1)
        return out
    return act


def rows_of(buf: ModelRolloutBuffer, seed: int) -> dict:
    """A seed's stored rows in ring order [0, size)."""
    n = int(buf.size[seed])
    return {k: getattr(buf, k)[seed, :n] for k in MODEL_KEYS}


def fake_transitions(S: int, M: int, start: float) -> dict:
    """Rows whose every value is its (seed, row) label: observations[s, m] = start + 1000 s + m."""
    label = start + 1000.0 * torch.arange(S)[:, None] + torch.arange(M)[None, :].float()  # [S, M]
    return {"observations": label[..., None].expand(S, M, 4), "actions": label[..., None].expand(S, M, 2),
            "rewards": label, "next_observations": label[..., None].expand(S, M, 4), "dones": (label % 2 == 0).float()}


def test_insert_keeps_the_masked_rows_in_order_and_wraps_the_ring():
    """Only rows the mask keeps are stored, contiguously and in order; each seed has its own pointer; once full,
    the newest `capacity` rows are kept in ring order (OfflineRL-Kit's add_batch on the valid rows)."""
    buf = ModelRolloutBuffer([0, 1], 4, 2, rollout_batch=3, rollout_length=2, capacity=10)
    expected = {0: [], 1: []}
    rng = np.random.default_rng(0)
    for round_ in range(4):
        rows = fake_transitions(2, 6, start=100.0 * round_)
        mask = torch.as_tensor(rng.random((2, 6)) < 0.8)
        mask[1] = torch.tensor([True, False, False, True, False, False])  # seed 1 keeps 2 rows a round
        buf.insert(rows, mask)
        for s in (0, 1):
            expected[s] += rows["rewards"][s][mask[s]].tolist()
    for s in (0, 1):
        total = len(expected[s])
        assert int(buf.size[s]) == min(total, 10) and int(buf.pointer[s]) == total % 10
        # Row i of the ring holds the transition numbered i (mod 10) among all stored ones.
        ring = [None] * 10
        for number, value in enumerate(expected[s]):
            ring[number % 10] = value
        assert buf.rewards[s, :min(total, 10)].tolist() == ring[:min(total, 10)]
        stored = rows_of(buf, s)
        torch.testing.assert_close(stored["observations"][:, 0], stored["rewards"])  # the rows moved whole
        torch.testing.assert_close(stored["dones"], (stored["rewards"] % 2 == 0).float())
    assert int(buf.size[0]) == 10 and int(buf.size[1]) < 10  # seed 0 has wrapped, seed 1 has not


def test_masked_rows_are_never_sampled():
    buf = ModelRolloutBuffer([0, 1], 4, 2, rollout_batch=4, rollout_length=2, capacity=40)
    rows = fake_transitions(2, 8, start=0.0)
    rows["rewards"] = torch.where(torch.arange(8) % 3 == 1, torch.tensor(1e6), rows["rewards"])
    mask = torch.arange(8).expand(2, 8) % 3 != 1  # the sentinel rows are the masked ones
    buf.insert(rows, mask)
    buf.insert(rows, mask)
    batch = buf.sample(4_000)
    assert batch["rewards"].shape == (2, 4_000) and batch["observations"].shape == (2, 4_000, 4)
    assert (batch["rewards"] < 1e6).all()  # neither a masked row nor the spare row past the end
    for s in (0, 1):
        valid = set(rows["rewards"][s][mask[s]].tolist())
        assert set(batch["rewards"][s].tolist()) == valid  # all of them, and only them
    assert int(buf.size.sum()) == 2 * 2 * int(mask[0].sum())


def test_mixed_batches_have_exact_row_counts(data):
    buf = ModelRolloutBuffer([0, 1, 2], 4, 2, rollout_batch=50, rollout_length=2, real_ratio=0.05)
    rows = fake_transitions(3, 100, start=5_000.0)  # model rows are labelled >= 5000
    buf.insert(rows, torch.ones(3, 100, dtype=torch.bool))
    real = TransitionBuffer(data, [0, 1, 2], 256).sample()
    batch = buf.mix(real)
    assert set(batch) == set(MODEL_KEYS) | {"model_rows"}
    assert all(v.shape[:2] == (3, 256) for v in batch.values())
    # OfflineRL-Kit: int(256 * 0.05) = 12 real rows, then 244 model rows, for every seed.
    assert buf.real_rows(256) == 12
    assert batch["model_rows"].sum(1).tolist() == [244] * 3 and not batch["model_rows"][:, :12].any()
    for k in MODEL_KEYS:
        torch.testing.assert_close(batch[k][:, :12], real[k][:, :12], rtol=0, atol=0)
    assert (batch["rewards"][:, 12:] >= 5_000).all() and (real["rewards"].abs() < 100).all()
    assert (batch["rewards"][:, 12:] // 1000 - 5).tolist() == [[s] * 244 for s in range(3)]  # each its own
    odd = ModelRolloutBuffer([0], 4, 2, rollout_batch=50, rollout_length=2, real_ratio=0.5)
    odd.insert(fake_transitions(1, 100, 5_000.0), torch.ones(1, 100, dtype=torch.bool))
    assert odd.mix({k: v[:1, :7] for k, v in real.items()})["model_rows"].sum().item() == 4  # int(3.5) real
    only_real = ModelRolloutBuffer([0], 4, 2, rollout_batch=5, rollout_length=1, real_ratio=1.0)
    assert not only_real.mix({k: v[:1] for k, v in real.items()})["model_rows"].any()
    with pytest.raises(OfflineRLError, match="lacks"):
        buf.mix({k: v for k, v in real.items() if k != "dones"})


def test_rollout_stores_what_the_model_predicts_for_the_policys_actions(data, model):
    """Deterministic model steps make the expected rows computable: every stored row is (s, π(s), s', r - penalty,
    done) of the model's step, the rows of a seed are its rollout's unmasked steps in step order, and a row
    that terminated stores nothing after its terminating step."""
    rng = np.random.default_rng(3)
    start = pm.reset_batch(rng, 2 * 16)
    start[:8, 2:] = start[:8, :2]  # half of seed 0's rows start at the goal, and small steps keep them there
    start[16:, 2:] = start[16:, :2] - 0.4 * np.sign(start[16:, :2])  # seed 1's are >= 0.57 away: never reach it
    start = torch.as_tensor(start).view(2, 16, 4)
    linear = seed_policy([0, 1])
    policy = lambda obs: 0.2 * linear(obs)  # moves of at most 0.03 a step
    penalty = lambda obs, act, step: 0.1 * act.abs().sum(-1) + step.member_std.norm(dim=-1).amax(-2)
    buf = ModelRolloutBuffer([0, 1], 4, 2, rollout_batch=16, rollout_length=3)
    metrics = buf.rollout(model, policy, penalty, start_obs=start, deterministic=True)
    want = model.rollout(policy, start, 3, deterministic=True, penalty_fn=penalty)
    mask = want["mask"]
    assert not mask[0].all() and mask[1].all()  # seed 0's rows at the goal terminated at their first step
    for s in (0, 1):
        got, m = rows_of(buf, s), mask[s]
        assert len(got["rewards"]) == int(m.sum())
        for key, ref in (("observations", want["observations"]), ("actions", want["actions"]),
                         ("next_observations", want["next_observations"]),
                         ("rewards", want["rewards"] - want["penalties"]), ("dones", want["terminals"].float())):
            torch.testing.assert_close(got[key], ref[s][m], rtol=0, atol=0, msg=key)
        # What those rows are, independently of rollout(): the policy's action and the model's mean step.
        step = model.step(got["observations"], got["actions"], deterministic=True)
        torch.testing.assert_close(got["actions"], policy(got["observations"][None].expand(2, -1, -1))[s])
        torch.testing.assert_close(got["next_observations"], step.next_obs)
        torch.testing.assert_close(got["rewards"], step.reward - penalty(got["observations"], got["actions"], step))
        assert torch.equal(got["dones"].bool(), step.terminal)
    torch.testing.assert_close(metrics["rollout_stored"], mask.float().mean((1, 2)))
    assert (metrics["rollout_penalty"] > 0).all() and metrics["rollout_reward"].shape == (2,)


def test_stochastic_rollout_from_dataset_states(data, model):
    """The default rollout: start states drawn from the dataset per seed, a random elite and Gaussian noise per
    row (MOPO/MOBILE); stored next states are samples of one of the elites."""
    buf = ModelRolloutBuffer([0, 1], 4, 2, rollout_batch=64, rollout_length=1)
    buf.set_start_states(data.observations)
    policy = seed_policy([0, 1], noise=0.3)
    buf.rollout(model, policy)
    dataset_states = {tuple(row) for row in data.observations.tolist()}
    for s in (0, 1):
        got = rows_of(buf, s)
        assert len(got["rewards"]) == 64  # one step: every row is stored
        assert all(tuple(row) in dataset_states for row in got["observations"].tolist())
        step = model.step(got["observations"], got["actions"], deterministic=True)
        mean = step.member_mean[model.elite_index]  # [elites, N, out]
        std = step.member_std[model.elite_index]
        sample = torch.cat([got["next_observations"], got["rewards"][:, None]], -1)
        z = ((sample - mean) / std).abs().amax(-1)  # [elites, N]
        assert (z.amin(0) < 6).all()  # within 6 std of some elite's Gaussian in every coordinate
        assert not torch.allclose(got["next_observations"], step.next_obs)  # and not the mean step
    assert not torch.equal(rows_of(buf, 0)["observations"], rows_of(buf, 1)["observations"])


def run_rounds(seeds, model, data, rounds: int = 3):
    buf = ModelRolloutBuffer(seeds, 4, 2, rollout_batch=40, rollout_length=3, retain_rounds=2, chunk=16)
    buf.set_start_states(data.observations)
    policy = seed_policy(seeds, noise=0.2)
    real = TransitionBuffer(data, seeds, 32)
    batches = []
    for _ in range(rounds):
        buf.rollout(model, policy)
        batches.append(buf.mix(real.sample()))
    return buf, batches


def test_seeds_together_equal_seeds_alone(data, model):
    """Rollouts (start states, elite choices, noise, termination) and mixed batches of seeds {0, 1} trained
    together equal those of seed 0 alone and seed 1 alone: sizes, stored rows, and every batch."""
    together, batches = run_rounds([0, 1], model, data)
    for i, s in enumerate((0, 1)):
        alone, alone_batches = run_rounds([s], model, data)
        assert int(together.size[i]) == int(alone.size[0]) and int(together.pointer[i]) == int(alone.pointer[0])
        for key in MODEL_KEYS:
            torch.testing.assert_close(getattr(together, key)[i, :-1], getattr(alone, key)[0, :-1],
                                       rtol=1e-5, atol=1e-6, msg=key)
        for both, one in zip(batches, alone_batches):
            for key in MODEL_KEYS:
                torch.testing.assert_close(both[key][i], one[key][0], rtol=1e-5, atol=1e-6, msg=key)
    assert not torch.equal(together.rewards[0], together.rewards[1])  # and the two seeds' data differ


class RolloutAgent(Agent):
    """The smallest model-based agent: a rollout every `rollout_freq` updates inside update(), a mixed batch,
    and a linear policy fitted to the batch's actions (so that the policy changes between rollouts)."""

    def __init__(self, spec, model, seeds, rollout_freq=2):
        super().__init__(spec, None, seeds)
        self.dynamics = model
        self.policy = torch.nn.Parameter(torch.zeros(len(seeds), 4, 2))
        self.opt = torch.optim.SGD([self.policy], lr=0.1)
        self.model_data = ModelRolloutBuffer(seeds, 4, 2, rollout_batch=8, rollout_length=2, rollout_freq=rollout_freq)

    def act(self, obs, deterministic=True):
        return torch.tanh(obs @ self.policy)

    def update(self, batch, step):
        metrics = {}
        if self.model_data.due(step):
            noisy = lambda o: self.act(o) + 0.1 * self.noise.normal(*o.shape[1:-1], 2)  # noqa: E731
            metrics = self.model_data.rollout(self.dynamics, noisy)
        batch = self.model_data.mix(batch)
        loss = (self.act(batch["observations"]) - batch["actions"]).pow(2).mean((1, 2)).sum()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return {"loss": loss.detach(), **metrics}


def test_rollouts_inside_the_update_and_a_checkpoint_round_trip(data, model, tmp_path):
    """A rollout at updates 1, 3, 5 (rollout_freq 2) inside update(); the buffer's state travels in the agent's
    checkpoint, so a restored agent continues with the same model data and the same batches."""
    agent = RolloutAgent(data.spec, model, [0, 1])
    agent.model_data.set_start_states(data.observations)
    buffer = TransitionBuffer(data, [0, 1], 20)
    runner = UpdateRunner(agent, buffer, "eager", "cpu")
    sizes = []
    for step in range(1, 5):
        metrics = runner(step)
        sizes.append(agent.model_data.size.tolist())
        assert ("rollout_stored" in metrics) == (step % 2 == 1)
    assert sizes[0] == sizes[1] and sizes[2] == sizes[3] and all(b > a for a, b in zip(sizes[0], sizes[2]))
    assert [agent.model_data.due(s) for s in (1, 2, 1001, 2001, 1000)] == [True, False, True, True, False]

    path = tmp_path / "ckpt.pt"
    torch.save({"agent": agent.checkpoint_state(), "buffer": buffer.state_dict()}, path)
    state = torch.load(path, weights_only=False)
    assert "model_data.start_states" not in state["agent"]["modules"]  # the dataset is not saved with it
    assert state["agent"]["modules"]["model_data.size"].tolist() == sizes[-1]
    restored = RolloutAgent(data.spec, model, [0, 1])
    restored.model_data.set_start_states(data.observations)
    restored.load_checkpoint_state(state["agent"])
    restored_buffer = TransitionBuffer(data, [0, 1], 20)
    restored_buffer.load_state_dict(state["buffer"])
    for key in MODEL_KEYS + ("pointer", "size"):
        assert torch.equal(getattr(restored.model_data, key), getattr(agent.model_data, key)), key
    again = UpdateRunner(restored, restored_buffer, "eager", "cpu")
    for step in (5, 6):  # 5 rolls out again
        torch.testing.assert_close(again(step), runner(step), rtol=0, atol=0)
    for key in MODEL_KEYS:
        assert torch.equal(getattr(restored.model_data, key), getattr(agent.model_data, key)), key


def test_bad_settings_are_one_clear_error(model):
    with pytest.raises(OfflineRLError, match="capacity 10 is smaller than one rollout"):
        ModelRolloutBuffer([0], 4, 2, rollout_batch=8, rollout_length=2, capacity=10)
    with pytest.raises(OfflineRLError, match="real_ratio"):
        ModelRolloutBuffer([0], 4, 2, real_ratio=1.5)
    with pytest.raises(OfflineRLError, match="rollout_length must be a positive integer"):
        ModelRolloutBuffer([0], 4, 2, rollout_length=0)
    buf = ModelRolloutBuffer([0], 4, 2, rollout_batch=8, rollout_length=2)
    with pytest.raises(OfflineRLError, match="no start states"):
        buf.rollout(model, lambda o: o[..., :2])
    with pytest.raises(OfflineRLError, match="start states must be"):
        buf.set_start_states(np.zeros((5, 3), np.float32))
