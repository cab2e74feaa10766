"""The SAC family (offrl/sac.py) and its two agents: SAC-N and EDAC learn the toy task; EDAC's diversity term
is the pairwise cosine of the members' action gradients; the high-UTD update splits one draw into disjoint
slices; the max-target backup takes the best of n next actions; settings the update cannot run with are
refused with one line."""
import copy

import pytest
import torch

from conftest import evaluate_policy, train_agent
from offrl import config as cfg
from offrl import registry
from offrl.errors import OfflineRLError
from offrl.replay import TransitionBuffer


def make(name, ds, seeds=(0, 1), **overrides):
    config = cfg.apply(registry.get(name).config_cls(), overrides)
    agent = registry.make(name, ds.spec, config, list(seeds), "cpu")
    agent.prepare(ds)
    return agent, TransitionBuffer(ds, list(seeds), config.batch_size)


def test_sacn_learns_pointmass(pointmass):
    ds = pointmass("medium", 20_000)
    agent = train_agent("sacn", ds, 2_000, hidden=[64, 64], num_critics=4)
    score = evaluate_policy(agent, ds)
    # The medium behaviour policy scores about 45, random 0. Observed about 84.
    assert score.mean() > 60, score


def test_edac_learns_pointmass(pointmass):
    ds = pointmass("medium", 20_000)
    # The diversity term makes the min over members more conservative, so EDAC needs more updates than SAC-N
    # here: observed about 47 after 2,000 and about 76 after 3,000.
    agent = train_agent("edac", ds, 3_000, hidden=[64, 64], num_critics=4)
    score = evaluate_policy(agent, ds)
    assert score.mean() > 60, score


def test_gradient_diversity_is_the_pairwise_cosine_of_action_gradients(pointmass):
    ds = pointmass("medium", 20_000)
    agent, buffer = make("edac", ds, hidden=[16, 16], num_critics=4, batch_size=8)
    batch = buffer.sample()
    obs, actions = batch["observations"], batch["actions"]
    got = agent.gradient_diversity(obs, actions)
    # Member by member, pair by pair: 1/(N-1) Σ_{i≠j} cos(∇_a Q_i, ∇_a Q_j), mean over the batch.
    grads = []
    for i in range(4):
        a = actions.clone().requires_grad_(True)
        q_i = agent.critic(obs, a)[:, i]
        grads.append(torch.autograd.grad(q_i.sum(), a)[0])  # [S, B, A]
    expected = torch.zeros(2)
    for i in range(4):
        for j in range(4):
            if i != j:
                expected += torch.nn.functional.cosine_similarity(grads[i], grads[j], dim=-1).mean(-1) / 3
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    # The term is differentiable in the critics' weights (it enters their loss).
    got.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in agent.critic.online.parameters())


def test_edac_diversity_term_lowers_gradient_alignment(pointmass):
    """Same seeds, same batches: with η > 0 the members' action gradients end up less aligned than with η = 0."""
    ds = pointmass("medium", 20_000)
    div = {}
    for eta in (0.0, 5.0):
        agent = train_agent("edac", ds, 150, hidden=[32, 32], num_critics=4, batch_size=64, eta=eta)
        batch = TransitionBuffer(ds, [0], 256).sample()
        div[eta] = agent.gradient_diversity(batch["observations"], batch["actions"]).detach()
    assert (div[5.0] < div[0.0] - 0.1).all(), div


def test_high_utd_critic_steps_take_disjoint_slices_of_one_draw(pointmass):
    ds = pointmass("medium", 20_000)
    agent, buffer = make("sacn", ds, hidden=[16], num_critics=2, batch_size=64, utd=4)
    seen = []
    critic_step = agent.critic_step
    agent.critic_step = lambda part: seen.append(part["observations"]) or critic_step(part)
    batch = buffer.sample()
    metrics = agent.update(batch, 1)
    assert len(seen) == 4 and all(p.shape == (2, 16, ds.spec.obs_dim) for p in seen)
    torch.testing.assert_close(torch.cat(seen, dim=1), batch["observations"])
    assert all(v.shape == (2,) and torch.isfinite(v).all() for v in metrics.values())


def test_max_target_backup_takes_the_best_of_n_actions(pointmass):
    ds = pointmass("medium", 20_000)
    agent, buffer = make("sacn", ds, hidden=[16], num_critics=3, deterministic_backup=True, max_target_backup=True)
    batch = agent.normalize(buffer.sample())
    one, many = copy.deepcopy(agent), copy.deepcopy(agent)
    one.config = cfg.apply(agent.config, {"max_target_actions": 1})
    many.config = cfg.apply(agent.config, {"max_target_actions": 20})
    plain = copy.deepcopy(agent)
    plain.config = cfg.apply(agent.config, {"max_target_backup": False})
    # One action: exactly the ordinary backup (same stream, same draw).
    torch.testing.assert_close(one.td_target(batch), plain.td_target(batch))
    # Twenty: the max of twenty samples' min over members, so above the one-sample backup on average.
    y1, y20 = one.td_target(batch), many.td_target(batch)
    assert (y20.mean(-1) > y1.mean(-1)).all()


@pytest.mark.parametrize("bad", [{"target_reduction": "max"}, {"actor_reduction": "subset_min"},
                                 {"target_reduction": "subset_min", "target_subset": 11},
                                 {"utd": 3}, {"num_critics": 0}, {"init_alpha": 0.0}])
def test_settings_the_update_cannot_run_are_refused(pointmass, bad):
    with pytest.raises(OfflineRLError):
        make("sacn", pointmass("medium", 20_000), hidden=[8], **bad)


def test_fixed_temperature_and_alpha_clamp(pointmass):
    ds = pointmass("medium", 20_000)
    agent, buffer = make("sacn", ds, hidden=[16], num_critics=2, auto_alpha=False, init_alpha=0.2)
    for step in range(1, 4):
        metrics = agent.update(buffer.sample(), step)
    torch.testing.assert_close(metrics["alpha"], torch.full((2,), 0.2))
    assert "alpha_opt" not in agent.optimizers() and "alpha_loss" not in metrics
    agent, buffer = make("sacn", ds, hidden=[16], num_critics=2, init_alpha=3.0, alpha_max=1.0)
    assert (agent.update(buffer.sample(), 1)["alpha"] <= 1.0).all()
