"""CSVE learns the toy task; its dynamics model is a cached pre-training stage that a second agent reuses and
that travels in checkpoints; the exploration term reaches the policy through the frozen model.

The networks are 2 x 64 and the dynamics model 2 x 64 with 10 epochs (not the official 4 x 200 and a full
fit), so the file runs in about 70 s on one CPU thread; the training rule is the production one. The other
two tests use a 2 x 32 model fitted for 3 epochs.
"""
import torch

from offrl import registry
from offrl.cache import Cache
from conftest import evaluate_policy, train_agent

MODEL = dict(dynamics_hidden=[64, 64], dynamics_max_epochs=10)


def test_csve_learns_pointmass(pointmass):
    ds = pointmass("medium", 20_000)
    agent = train_agent("csve", ds, 1_500, hidden=[64, 64], **MODEL)
    score = evaluate_policy(agent, ds)
    # Observed about 84 (seeds 0, 1, 2: 84.5, 85.7, 83.3; random is 0, BC about 60).
    assert score.mean() > 60, score


def _agent(ds, **overrides):
    from offrl import config as cfg
    info = registry.get("csve")
    config = cfg.apply(info.config_cls(), dict(hidden=[32, 32], dynamics_hidden=[32, 32], dynamics_max_epochs=3,
                                               **overrides))
    return registry.make("csve", ds.spec, config, [0], "cpu")


def test_dynamics_is_built_once_and_reused(pointmass, tmp_path):
    ds = pointmass("medium", 20_000)
    messages = []
    cache = Cache(root=tmp_path, log=messages.append)
    first = _agent(ds)
    first.prepare(ds, cache)
    assert any(m.startswith("built dynamics") for m in messages), messages
    assert not any(m.startswith("reused dynamics") for m in messages), messages
    entries = cache.list_entries()
    assert [e.stage for e in entries] == ["dynamics"] and entries[0].complete

    messages.clear()
    second = _agent(ds)
    second.prepare(ds, cache)
    assert any(m.startswith("reused dynamics") for m in messages), messages
    assert not any(m.startswith("built dynamics") for m in messages), messages
    assert len(cache.list_entries()) == 1
    for key, value in first.dynamics.state_dict().items():
        torch.testing.assert_close(second.dynamics.state_dict()[key], value, rtol=0, atol=0, msg=key)
    # The fitted model is part of the agent's state: a resumed run gets it from the checkpoint,
    # with or without the cache.
    resumed = _agent(ds)
    resumed.load_checkpoint_state(first.checkpoint_state())
    torch.testing.assert_close(resumed.dynamics.layers[0].weight, first.dynamics.layers[0].weight)
    assert not any(p.requires_grad for p in resumed.dynamics.parameters())


def test_exploration_term_moves_the_policy_through_the_model(pointmass):
    ds = pointmass("medium", 20_000)
    # Without the AWR term only the model-based term can change the actor's mean network.
    small = dict(hidden=[32, 32], dynamics_hidden=[32, 32], dynamics_max_epochs=3, bc_weight=0.0)
    explore = train_agent("csve", ds, 1, explore_weight=1.0, **small)
    still = train_agent("csve", ds, 1, explore_weight=0.0, **small)
    fresh = _agent(ds)
    w0 = fresh.actor.net.net[0].weight
    assert not torch.equal(explore.actor.net.net[0].weight, w0)
    torch.testing.assert_close(still.actor.net.net[0].weight, w0, rtol=0, atol=0)
    # The model took no gradient step.
    assert all(p.grad is None for p in explore.dynamics.parameters())
