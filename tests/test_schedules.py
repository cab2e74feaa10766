"""offrl/optim.py's cosine schedule: the rate follows the formula, is changed in place as a tensor, and a
resumed agent (from a checkpoint of either kind: rate as a tensor, or as a float from before) continues on
the same curve as an uninterrupted one."""
import copy
import math

import pytest
import torch

from offrl import config as cfg
from offrl import registry
from offrl.optim import adam, cosine_annealing, gradient_step
from offrl.replay import TransitionBuffer


def expected(base, update, horizon):
    """The rate of update `update` (1-based): base·½(1 + cos(π·min(update - 1, T)/T))."""
    return base * 0.5 * (1.0 + math.cos(math.pi * min(update - 1, horizon) / horizon))


@pytest.mark.parametrize("fused", [True, False])
def test_rate_follows_the_formula_in_one_tensor(fused):
    base, horizon = 0.1, 10
    p = torch.nn.Parameter(torch.ones(3))
    opt = adam([p], base) if fused else torch.optim.Adam([p], lr=base, foreach=False)
    rates, tensors = {}, set()
    for update in range(1, horizon + 3):
        cosine_annealing(opt, base, horizon)
        lr = opt.param_groups[0]["lr"]
        rates[update] = float(lr)
        tensors.add(id(lr))
        gradient_step(opt, p.pow(2).sum()[None])
    for update in (1, horizon // 2, horizon, horizon + 1, horizon + 2):
        assert math.isclose(rates[update], expected(base, update, horizon), rel_tol=1e-6, abs_tol=1e-7 * base), update
    assert rates[1] == pytest.approx(base) and rates[horizon // 2 + 1] == pytest.approx(base / 2)
    assert rates[horizon + 2] == 0.0  # held at 0 after T, not rising again
    assert len(tensors) == 1  # the same 0-dim tensor throughout, changed in place


def _iql(ds, steps):
    info = registry.get("iql")
    config = cfg.apply(info.config_cls(), {"hidden": [32, 32]})
    agent = registry.make("iql", ds.spec, config, [0, 1], "cpu")
    agent.total_steps = steps
    agent.prepare(ds)
    return agent, TransitionBuffer(ds, [0, 1], config.batch_size)


@pytest.mark.parametrize("old_checkpoint", [False, True])
def test_resumed_agent_continues_on_the_same_curve(pointmass, old_checkpoint):
    ds = pointmass("medium", 20_000)
    total, cut = 12, 5
    whole, whole_buffer = _iql(ds, total)
    for step in range(1, total + 1):
        whole.update(whole_buffer.sample(), step)

    first, buffer = _iql(ds, total)
    for step in range(1, cut + 1):
        first.update(buffer.sample(), step)
    state, buffer_state = copy.deepcopy(first.checkpoint_state()), copy.deepcopy(buffer.state_dict())
    assert isinstance(state["optimizers"]["actor_opt"]["param_groups"][0]["lr"], torch.Tensor)
    if old_checkpoint:  # written before rates were tensors: the optimiser saved a float
        for group in state["optimizers"]["actor_opt"]["param_groups"]:
            group["lr"] = float(group["lr"])
    resumed, buffer = _iql(ds, total)
    resumed.load_checkpoint_state(state)
    buffer.load_state_dict(buffer_state)
    for step in range(cut + 1, total + 1):
        resumed.update(buffer.sample(), step)

    lr = resumed.actor_opt.param_groups[0]["lr"]
    base = resumed.config.actor_lr
    assert math.isclose(float(lr), expected(base, total, total), rel_tol=1e-6, abs_tol=1e-7 * base)
    for key, value in whole.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, rtol=1e-6, atol=1e-7, msg=key)
