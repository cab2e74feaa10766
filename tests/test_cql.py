"""CQL learns the toy task; the Lagrange and OfflineRL-Kit variants run, stay finite and move what they learn;
and the quirk's conservative term is the weaker one (logsumexp over 3 values of a row, not 30 of a state).

pointmass-medium (0.2·a* + 0.8·uniform + noise) is the apt dataset: good and bad actions side by side, so the
conservative critic has something to prefer among the dataset's actions.
"""
import torch

from conftest import evaluate_policy, train_agent
from offrl import config as cfg
from offrl import registry
from offrl.replay import TransitionBuffer

SMALL = {"hidden": [32, 32], "batch_size": 64}


def run_updates(ds, steps, **overrides):
    """Like train_agent, but returns the metrics of every update too."""
    config = cfg.apply(registry.get("cql").config_cls(), overrides)
    agent = registry.make("cql", ds.spec, config, [0, 1], "cpu")
    agent.total_steps = steps
    agent.prepare(ds)
    buffer = TransitionBuffer(ds, [0, 1], config.batch_size)
    return agent, [agent.update(buffer.sample(), step) for step in range(1, steps + 1)]


def test_cql_learns_pointmass(pointmass):
    ds = pointmass("medium", 20_000)
    agent = train_agent("cql", ds, 1_500, hidden=[64, 64], batch_size=128)
    score = evaluate_policy(agent, ds)
    # Observed about 63 (and about 93 after 5,000 updates with batch 256).
    assert score.mean() > 40, score


def test_lagrange_variant_runs_and_learns_alpha_prime(pointmass):
    ds = pointmass("medium", 20_000)
    agent, metrics = run_updates(ds, 50, lagrange=True, **SMALL)
    for m in metrics:
        for key, value in m.items():
            assert value.shape == (2,) and torch.isfinite(value).all(), key
    assert agent.log_alpha_prime.shape == (2,)
    assert (agent.log_alpha_prime.detach() != 0).all()  # starts at 0 (α' = 1)
    assert not torch.equal(metrics[0]["alpha_prime"], metrics[-1]["alpha_prime"])


def test_offrlkit_quirk_runs_and_alpha_moves(pointmass):
    ds = pointmass("medium", 20_000)
    agent, metrics = run_updates(ds, 50, offrlkit_quirk=True, **SMALL)
    for m in metrics:
        for key, value in m.items():
            assert value.shape == (2,) and torch.isfinite(value).all(), key
    assert not hasattr(agent, "log_alpha_prime")  # no Lagrange in the quirk's defaults
    assert (metrics[-1]["alpha_prime"] == 1).all()
    assert (agent.log_alpha.detach() != 0).all()  # SAC's temperature is learned per seed


def test_quirk_logsumexp_is_weaker_than_textbook(pointmass):
    """Same weights, same batch, same candidate actions: logsumexp over 30 values per state >= the mean of
    logsumexps over 3 values per row, so the quirk's gap is strictly smaller."""
    ds = pointmass("medium", 20_000)
    _, textbook = run_updates(ds, 1, **SMALL)
    _, quirk = run_updates(ds, 1, offrlkit_quirk=True, **SMALL)
    assert (quirk[0]["cql_gap"] < textbook[0]["cql_gap"]).all(), (quirk[0]["cql_gap"], textbook[0]["cql_gap"])
    torch.testing.assert_close(quirk[0]["td_loss"], textbook[0]["td_loss"])  # nothing else differs
