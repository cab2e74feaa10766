"""The probabilistic dynamics ensemble on PointMass (p' = clip(p + 0.1 a, -2, 2), goal fixed, r = -|p' - g|),
and the termination functions against the real Gymnasium v5 environments.

The networks here are 2 x 64 instead of 4 x 200 and the fits are capped in epochs so that the file runs in
well under a minute on one CPU thread; the training rule is the production one.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from offrl.cache import Cache
from offrl.dynamics import DynamicsConfig, EnsembleDynamics, fit, load_or_fit
from offrl.envs import pointmass as pm
from offrl.errors import OfflineRLError
from offrl.gymenv import make_env
from offrl.rng import SeedStreams
from offrl.termination import termination_fn


def small(**kw) -> DynamicsConfig:
    return DynamicsConfig(**{**dict(hidden=(64, 64), weight_decays=(2.5e-5, 5e-5, 1e-4)), **kw})


def holdout(dataset, report):
    idx = np.asarray(report["holdout_index"])
    return tuple(torch.as_tensor(a[idx]) for a in (dataset.observations, dataset.actions,
                                                  dataset.next_observations, dataset.rewards))


@pytest.fixture(scope="module")
def random_data(pointmass):
    return pointmass("random", 5_000)


@pytest.fixture(scope="module")
def forward(random_data):
    return fit(random_data, small(max_epochs=60), log=lambda m: None)


def test_forward_model_fits_pointmass(random_data, forward):
    model, report = forward
    obs, act, nxt, rew = holdout(random_data, report)
    out = model.step(obs, act, deterministic=True)
    state_mse = (out.next_obs - nxt).pow(2).mean().item()
    reward_mse = (out.reward - rew).pow(2).mean().item()
    # Bounds: the position moves by 0.1 a with a ~ U(-1, 1), so Var(dp) = 0.01 / 3 = 3.3e-3 per coordinate
    # (the goal does not move). A model no better than predicting the mean move would score ~1.7e-3 on the
    # average over the 4 dims; we ask for 1 % of Var(dp). Seen: ~1.4e-6. The reward -|p' - g| has a kink
    # and variance ~0.30 here; we ask for 10 % of its variance. Seen after 60 epochs: ~0.015 (5 %).
    var_dp = float(np.var(random_data.next_observations[:, :2] - random_data.observations[:, :2], 0).mean())
    assert state_mse < 0.01 * var_dp, (state_mse, var_dp)
    assert reward_mse < 0.1 * float(np.var(random_data.rewards)), reward_mse
    assert report["holdout_size"] == 1000 and report["train_size"] == 4000  # min(20 %, 1000)
    errors = model.rollout_error(random_data, horizons=(1, 5))
    # Open-loop errors grow with the horizon but stay far below the spread of 5-step moves (5 * 3.3e-3).
    assert errors[1] < errors[5] < 0.01 * 5 * var_dp, errors
    print(f"\nforward hold-out state MSE {state_mse:.3g}, reward MSE {reward_mse:.3g}, rollout errors {errors}, "
          f"elite hold-out MSE {report['holdout_mse_elites']:.3g}, {report['epochs']} epochs, "
          f"{report['wall_s']:.1f}s")


def test_forward_model_fits_medium_data(pointmass):
    data = pointmass("medium", 5_000)
    model, report = fit(data, small(max_epochs=25, seed=1), log=lambda m: None)
    obs, act, nxt, rew = holdout(data, report)
    state_mse = (model.step(obs, act, deterministic=True).next_obs - nxt).pow(2).mean().item()
    var_dp = float(np.var(data.next_observations[:, :2] - data.observations[:, :2], 0).mean())
    assert state_mse < 0.01 * var_dp, (state_mse, var_dp)  # same bound as above; seen ~2e-6
    print(f"\nmedium hold-out state MSE {state_mse:.3g}, rollout errors {model.rollout_error(data)}")


def test_elites_are_the_best_members_and_best_weights_are_kept(random_data, forward):
    model, report = forward
    mse = torch.tensor(report["holdout_mse"])
    assert sorted(report["elites"]) == sorted(mse.argsort()[:5].tolist())
    assert model.elite_index.tolist() == report["elites"]
    obs, act, nxt, rew = holdout(random_data, report)
    x = torch.cat([obs, act], -1)
    y = torch.cat([nxt - obs, rew[:, None]], -1)
    # The restored weights are the ones whose hold-out MSE was recorded.
    torch.testing.assert_close(model.member_mse(x, y), mse, rtol=1e-5, atol=0)


def test_early_stopping_keeps_each_members_best_weights(pointmass):
    # No member can improve by more than 100 %, so training stops after epoch 1 + patience and every
    # member must be rolled back to its epoch-1 weights, although epochs 2..6 trained it further.
    data = pointmass("random", 1_000)
    cfg = small(hidden=(32, 32), min_improvement=1.0, patience=3)
    model, report = fit(data, cfg, log=lambda m: None)
    assert report["epochs"] == 4 and report["stopped"] == "patience"
    one, _ = fit(data, small(hidden=(32, 32), max_epochs=1), log=lambda m: None)
    for a, b in zip(model.state_dict().items(), one.state_dict().items()):
        if a[0].startswith("layers."):
            torch.testing.assert_close(a[1], b[1], rtol=0, atol=0)


def test_reverse_model_recovers_previous_state(random_data):
    cfg = DynamicsConfig.cocoa_reverse(hidden=(64, 64), weight_decays=(2.5e-5, 5e-5, 1e-4), max_epochs=30)
    model, report = fit(random_data, cfg, log=lambda m: None)
    assert report["holdout_size"] == 500  # COCOA's reverse model holds out 10 %
    obs, act, nxt, _ = holdout(random_data, report)
    out = model.step(nxt, act, deterministic=True)
    assert out.reward is None and not out.terminal.any()  # no reward head, never terminates
    err = (out.next_obs - obs).pow(2).mean().item()
    # Same scale argument as the forward test: 1 % of Var(dp). Seen: ~5e-7.
    var_dp = float(np.var(random_data.next_observations[:, :2] - random_data.observations[:, :2], 0).mean())
    assert err < 0.01 * var_dp, err
    errors = model.rollout_error(random_data, horizons=(1, 3))
    assert errors[1] < errors[3] < 0.01 * 3 * var_dp, errors
    print(f"\nreverse hold-out MSE of s {err:.3g}, backward rollout errors {errors}")


def test_deterministic_step_is_the_mean_of_the_elites(forward):
    model, _ = forward
    obs = torch.as_tensor(pm.reset_batch(np.random.default_rng(0), 32))
    act = torch.rand(32, 2) * 2 - 1
    out = model.step(obs, act, deterministic=True)
    assert out.member_mean.shape == (7, 32, 5) and out.member_std.shape == (7, 32, 5)
    elite_mean = out.member_mean[model.elite_index].mean(0)
    torch.testing.assert_close(out.next_obs, elite_mean[:, :4])
    torch.testing.assert_close(out.reward, elite_mean[:, 4])
    # Stochastic samples scatter around the elites' means: their average over many draws is close.
    many = model.step(obs.repeat(400, 1), act.repeat(400, 1)).next_obs.view(400, 32, 4).mean(0)
    spread = out.member_std[model.elite_index, :, :4].max() + (out.member_mean[:, :, :4].std(0)).max()
    assert (many - out.next_obs).abs().max() < 4 * spread / 20 + 1e-6


def test_batched_leading_dims_and_per_seed_streams(forward):
    model, _ = forward
    rng = np.random.default_rng(1)
    obs = torch.as_tensor(pm.reset_batch(rng, 6)).view(2, 3, 4)  # [S, B, d]
    act = torch.as_tensor(rng.uniform(-1, 1, (2, 3, 2)), dtype=torch.float32)
    det = model.step(obs, act, deterministic=True)
    flat = model.step(obs.view(6, 4), act.view(6, 2), deterministic=True)
    assert det.next_obs.shape == (2, 3, 4) and det.reward.shape == (2, 3) and det.terminal.shape == (2, 3)
    assert det.member_mean.shape == (2, 7, 3, 5)  # [S, E, B, out], like the critics' [S, E, B]
    torch.testing.assert_close(det.next_obs.view(6, 4), flat.next_obs)
    torch.testing.assert_close(det.member_mean.transpose(0, 1).reshape(7, 6, 5), flat.member_mean)
    # Stochastic steps with the agent's streams: seed 0's sample does not depend on seed 1 being there.
    both = model.step(obs, act, streams=SeedStreams([0, 1], "rollout"))
    alone = model.step(obs[:1], act[:1], streams=SeedStreams([0], "rollout"))
    torch.testing.assert_close(both.next_obs[:1], alone.next_obs)
    assert not torch.equal(both.next_obs, det.next_obs)
    with pytest.raises(OfflineRLError, match="streams of 3 seeds"):
        model.step(obs, act, streams=SeedStreams([0, 1, 2], "rollout"))


def test_picked_member_step_equals_the_all_member_step(forward):
    """all_members=False (CSVE) runs each row through the member it drew only: the same samples, the same
    gradient with respect to the action, and a seed's rows do not depend on the other seeds'."""
    model, _ = forward
    rng = np.random.default_rng(2)
    obs = torch.as_tensor(pm.reset_batch(rng, 3 * 64)).view(3, 64, 4)
    act = torch.as_tensor(rng.uniform(-1, 1, (3, 64, 2)), dtype=torch.float32)
    out = {}
    for flag in (True, False):
        a = act.clone().requires_grad_(True)
        step = model.step(obs, a, streams=SeedStreams([0, 1, 2], "csve"), all_members=flag)
        (step.next_obs.square().sum() + step.reward.sum()).backward()
        out[flag] = (step, a.grad)
    (full, full_grad), (picked, picked_grad) = out[True], out[False]
    assert picked.member_mean is None and picked.member_std is None
    torch.testing.assert_close(picked.next_obs, full.next_obs, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(picked.reward, full.reward, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(picked.terminal, full.terminal)
    torch.testing.assert_close(picked_grad, full_grad, rtol=1e-4, atol=1e-6)
    alone = model.step(obs[1:2], act[1:2], streams=SeedStreams([1], "csve"), all_members=False)
    assert torch.equal(alone.next_obs, picked.next_obs[1:2])  # bitwise: the same groups, the same matmuls


def test_rollout_respects_termination(forward):
    model, _ = forward
    rng = np.random.default_rng(2)
    start = pm.reset_batch(rng, 64)
    start[:32, 2:] = start[:32, :2] + rng.uniform(-0.05, 0.05, (32, 2))  # seed 0's rows: one step from the goal
    start[32:, 2:] = start[32:, :2] - 0.4 * np.sign(start[32:, :2])      # seed 1's: >= 0.57 away, 4+ steps
    start = torch.as_tensor(start).view(2, 32, 4)                           # [S, B, d]
    policy = lambda o: torch.as_tensor(pm.optimal_action(o.reshape(-1, 4).numpy())).view(*o.shape[:-1], 2)
    out = model.rollout(policy, start, horizon=5, deterministic=True)
    assert out["observations"].shape == (2, 5, 32, 4) and out["mask"].shape == (2, 5, 32)
    term, mask = out["terminals"], out["mask"]
    assert mask[:, 0].all()
    ended_before = torch.cumsum(term.int(), dim=1) - term.int() > 0
    assert torch.equal(mask, ~ended_before)  # valid until (and including) the step that terminates
    assert term[0, 0].float().mean() > 0.9 and not term[1, 0].any()  # near-goal rows end at once
    assert term[1].any(dim=0).float().mean() > 0.5 and not mask[1].all()  # far rows end later, masked after
    torch.testing.assert_close(out["observations"][:, 1:], out["next_observations"][:, :-1])
    again = termination_fn("pointmass")(out["observations"], out["actions"], out["next_observations"])
    assert torch.equal(again, term)
    stochastic = model.rollout(policy, start, horizon=3, streams=SeedStreams([0, 1], "rollout"))
    assert stochastic["rewards"].shape == (2, 3, 32)


def test_artifact_round_trip_and_cached_fit(random_data, forward, tmp_path):
    model, report = forward
    again = EnsembleDynamics.from_artifact(model.to_artifact(report))
    obs = torch.as_tensor(random_data.observations[:50])
    act = torch.as_tensor(random_data.actions[:50])
    torch.testing.assert_close(again.step(obs, act, deterministic=True).next_obs,
                               model.step(obs, act, deterministic=True).next_obs, rtol=0, atol=0)
    assert again.report["elites"] == report["elites"] and again.family == "pointmass"
    cache, logs = Cache(tmp_path), []
    first = load_or_fit(random_data, small(max_epochs=2), cache=cache, log=logs.append)
    second = load_or_fit(random_data, small(max_epochs=2), cache=cache, log=logs.append)
    assert logs[-1].startswith("reused dynamics from ")
    torch.testing.assert_close(second.step(obs, act, deterministic=True).next_obs,
                               first.step(obs, act, deterministic=True).next_obs, rtol=0, atol=0)


def test_agents_share_a_cached_model_exactly_when_their_model_configs_match(random_data, tmp_path):
    """The cache key is the model config: an agent that names no model setting (COCOA) reuses the fit of one whose
    `dynamics_*` fields equal the defaults (MOPO); a different cap (OfflineRL-Kit's MOBILE: 30 epochs) is another
    entry. Numbers from YAML or --set (30.0, 1) name the same entry as their typed defaults."""
    from dataclasses import dataclass

    from offrl.config import config_hash

    @dataclass
    class MopoLike:  # names its model settings as dynamics_<field>
        dynamics_max_epochs: int | None = 2
        dynamics_seed: int = 0

    @dataclass
    class CocoaLike:  # names none
        actor_lr: float = 1e-4

    base = small(hidden=(32, 32), max_epochs=2)
    mopo = DynamicsConfig.from_agent_config(MopoLike(), base)
    cocoa = DynamicsConfig.from_agent_config(CocoaLike(), base)
    capped = DynamicsConfig.from_agent_config(MopoLike(dynamics_max_epochs=1), base)
    assert mopo == cocoa == base and capped.max_epochs == 1
    cache, logs = Cache(tmp_path), []
    load_or_fit(random_data, mopo, cache=cache, log=logs.append)
    load_or_fit(random_data, cocoa, cache=cache, log=logs.append)
    assert logs[-1].startswith("reused dynamics from ")
    load_or_fit(random_data, capped, cache=cache, log=logs.append)
    assert logs[-1].startswith("built dynamics in ") and len(cache.list_entries()) == 2

    mobile = DynamicsConfig.offlinerlkit_mobile()
    assert mobile.max_epochs == 30 and dataclasses.replace(mobile, max_epochs=None) == DynamicsConfig()
    assert config_hash(mobile) != config_hash(DynamicsConfig())
    assert config_hash(DynamicsConfig(lr=1, max_epochs=30.0)) == config_hash(DynamicsConfig(lr=1.0, max_epochs=30))
    assert isinstance(DynamicsConfig(max_holdout=1000.0).max_holdout, int)
    # Every cached fit on every machine is found by this hash: a new field or default renames them all, and each
    # dataset's model would be fitted again (hours on a CPU). Change the pin only on purpose.
    assert config_hash(DynamicsConfig(), digits=64) == "0d1ea0fe5aa2afb0c61b73aa2cc7bcc51b760520276b16c49be1a90ed7f8db3a"


class Killed(Exception):
    pass


def test_update_budget_ends_the_last_epoch_early(random_data, monkeypatch):
    """max_updates counts minibatch steps: 4,000 training rows in batches of 256 are 16 steps an epoch, so a
    budget of 40 is two whole epochs and half of a third (CSVE's official model: a fixed 300 k steps)."""
    steps = []
    adam_step = torch.optim.Adam.step
    monkeypatch.setattr(torch.optim.Adam, "step", lambda self, *a, **k: (steps.append(1), adam_step(self, *a, **k))[1])
    cut, report = fit(random_data, small(hidden=(32, 32), max_updates=40), log=lambda m: None)
    assert len(steps) == report["updates"] == 40 and report["epochs"] == 3 and report["stopped"] == "max_updates"
    two, two_report = fit(random_data, small(hidden=(32, 32), max_updates=32), log=lambda m: None)
    epochs, _ = fit(random_data, small(hidden=(32, 32), max_epochs=2), log=lambda m: None)
    assert two_report["epochs"] == 2 and two_report["updates"] == 32
    for key, value in epochs.state_dict().items():  # a budget of whole epochs is exactly max_epochs
        torch.testing.assert_close(two.state_dict()[key], value, rtol=0, atol=0, msg=key)
    assert not torch.equal(cut.layers[0].weight, two.layers[0].weight)
    with pytest.raises(OfflineRLError, match="max_updates"):
        small(max_updates=0)


def test_killed_fit_resumes_to_the_same_model(random_data, tmp_path):
    """A fit killed after epoch 3 and restarted from its checkpoint ends with exactly the uninterrupted fit's
    weights, elites and hold-out MSEs (same bootstrap order, Adam state, patience and generator state)."""
    cfg = small(hidden=(32, 32), max_epochs=6)
    whole, whole_report = fit(random_data, cfg, log=lambda m: None)

    def kill_at_epoch_4(msg):
        if "epoch 4:" in msg:
            raise Killed
    ckpt = tmp_path / "progress.pt"
    with pytest.raises(Killed):
        fit(random_data, cfg, log=kill_at_epoch_4, log_every=1, checkpoint=ckpt, checkpoint_every_s=0)
    assert torch.load(ckpt, weights_only=True)["epoch"] == 3
    logs = []
    resumed, report = fit(random_data, cfg, log=logs.append, checkpoint=ckpt, checkpoint_every_s=0)
    assert any("resumed after epoch 3" in m for m in logs)
    assert report["epochs"] == whole_report["epochs"] == 6
    assert report["holdout_mse"] == whole_report["holdout_mse"] and report["elites"] == whole_report["elites"]
    for key, value in whole.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, rtol=0, atol=0, msg=key)

    # A checkpoint of other settings, or a damaged one, is ignored with a line: the fit starts over.
    logs = []
    fit(random_data, small(hidden=(32, 32), max_epochs=1, seed=5), log=logs.append, checkpoint=ckpt)
    assert any("made for other data or settings" in m for m in logs)
    ckpt.write_bytes(b"not a checkpoint")
    logs = []
    fit(random_data, small(hidden=(32, 32), max_epochs=1), log=logs.append, checkpoint=ckpt)
    assert any("unreadable fit checkpoint" in m for m in logs)


def test_cached_fit_resumes_inside_its_cache_entry(random_data, tmp_path, monkeypatch):
    """load_or_fit keeps the fit's checkpoint (and the key, for `cache list`) in the cache entry while it runs
    and deletes both once the artefact is stored."""
    cache, cfg = Cache(tmp_path), small(hidden=(32, 32), max_epochs=3)

    def kill_at_epoch_2(msg):
        if "epoch 2:" in msg:
            raise Killed
    import offrl.dynamics as dyn
    monkeypatch.setattr(dyn, "fit", lambda *a, fit=dyn.fit, **k: fit(*a, **k, log_every=1, checkpoint_every_s=0))
    with pytest.raises(Killed):
        load_or_fit(random_data, cfg, cache=cache, log=kill_at_epoch_2)
    entry = cache.entry_dir(random_data, "dynamics", cfg, cfg.seed)
    assert sorted(p.name for p in entry.iterdir()) == ["pending.json", "progress.pt"]
    assert [(e.complete, e.dataset) for e in cache.list_entries()] == [(False, random_data.name)]
    logs = []
    load_or_fit(random_data, cfg, cache=cache, log=logs.append)
    assert any("resumed after epoch 1" in m for m in logs) and logs[-1].startswith("built dynamics in ")
    assert sorted(p.name for p in entry.iterdir()) == ["artifact.pt", "artifact.pt.sha256", "meta.json"]


# ---- termination functions against the environments themselves


@pytest.mark.parametrize("env_id,family", [("Hopper-v5", "hopper"), ("Walker2d-v5", "walker2d"),
                                           ("Ant-v5", "ant"), ("HalfCheetah-v5", "half_cheetah")])
def test_termination_matches_gymnasium(env_id, family):
    env = make_env(env_id)
    env.action_space.seed(0)
    obs, _ = env.reset(seed=0)
    prev, acts, nexts, flags = [], [], [], []
    for _ in range(400):
        a = env.action_space.sample()
        nxt, _, terminated, truncated, _ = env.step(a)
        prev.append(obs), acts.append(a), nexts.append(nxt), flags.append(terminated)
        obs = nxt
        if terminated or truncated:
            obs, _ = env.reset()
    env.close()
    fn = termination_fn(family)
    prev, acts, nexts, flags = map(np.asarray, (prev, acts, nexts, flags))
    done = fn(prev, acts, nexts)
    assert done.dtype == bool and done.shape == (400,)
    np.testing.assert_array_equal(done, flags)
    done_t = fn(*(torch.as_tensor(x) for x in (prev, acts, nexts)))
    np.testing.assert_array_equal(done_t.numpy(), flags)
    if family in ("hopper", "walker2d"):
        assert flags.any()  # random actions make them fall: the check was exercised


def test_termination_edge_cases():
    hop = termination_fn("hopper")
    healthy = np.array([[1.25, 0.0, 0.0]])
    assert not hop(None, None, healthy)[0]
    assert hop(None, None, np.array([[0.7, 0.0, 0.0]]))[0]      # z > 0.7 strictly
    assert hop(None, None, np.array([[1.2, 0.2, 0.0]]))[0]      # |angle| < 0.2 strictly
    assert hop(None, None, np.array([[1.2, 0.0, 100.0]]))[0]    # |s[1:]| < 100
    assert hop(None, None, np.array([[1.2, 0.0, np.nan]]))[0]   # a diverged model state ends
    cheetah = termination_fn("HalfCheetah")
    assert not cheetah(None, None, np.zeros((1, 17)))[0] and cheetah(None, None, np.full((1, 17), 100.0))[0]
    ant = termination_fn("ant")
    assert not ant(None, None, np.array([[0.2, 0.0]]))[0] and not ant(None, None, np.array([[1.0, 0.0]]))[0]
    assert ant(None, None, np.array([[1.01, 0.0]]))[0]          # Ant-v5: z in [0.2, 1.0], inclusive
    pmf = termination_fn("pointmass")
    batch = torch.tensor([[[0.0, 0.0, 0.04, 0.0], [0.0, 0.0, 0.06, 0.0]]])  # leading dims [1, 2, 4]
    assert pmf(None, None, batch).tolist() == [[True, False]]
    with pytest.raises(OfflineRLError, match="no termination function for environment family 'door'"):
        termination_fn("door")


def test_model_report_command_prints_members_and_rollout_errors(pointmass):
    from click.testing import CliRunner

    from offrl.cli import main

    pointmass("medium", 20_000)
    args = ["dynamics", "report", "pointmass-medium", "--dataset-size", "20000", "--set", "hidden=[32,32]",
            "--set", "weight_decays=[2.5e-5,5e-5,1e-4]", "--set", "max_epochs=2", "--set", "members=4",
            "--set", "elites=2", "--horizons", "1,5"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    member_rows = [line.split() for line in first.output.splitlines() if line.strip()[:1].isdigit()]
    assert [int(r[0]) for r in member_rows] == [0, 1, 2, 3]
    assert sum(r[-1] == "*" for r in member_rows) == 2  # the two elites are marked
    errors = {int(line.split("H=")[1].split(":")[0]): float(line.split(": ")[1].split()[0])
              for line in first.output.splitlines() if line.startswith("rollout error")}
    assert set(errors) == {1, 5} and 0 <= errors[1] < errors[5]  # open-loop errors compound with H
    assert "built dynamics" in first.output

    second = CliRunner().invoke(main, args)
    assert second.exit_code == 0 and "reused dynamics" in second.output
    # Same model, same numbers: everything from the member table on is identical.
    assert second.output.split("member ")[-1] == first.output.split("member ")[-1]

    bad = CliRunner().invoke(main, ["dynamics", "report", "pointmass-medium", "--agent", "td3bc"])
    assert bad.exit_code == 2 and "no dynamics model" in bad.output
