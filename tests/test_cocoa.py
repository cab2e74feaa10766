"""COCOA (agents/cocoa.py) and its pieces (offrl/anchors.py, offrl/transductive.py): reverse roll-outs walk
away from the data, the seeker walks back toward it, anchors computed once per update equal anchors computed
per call, the transductive layer is the T inner products with LayerNorm where COCOA puts it, `cocoa` resolves
to the base's variant and its rows say so, a trained policy acts without the cache, and COCOA learns the toy
task on two bases.

Models are 2 x 32 (2 x 64 where learning is asserted), fitted for a few epochs; the seeker on a few thousand
roll-outs; so each test takes seconds on one CPU thread.
"""
import numpy as np
import pytest
import torch

from conftest import evaluate_policy, train_agent
from offrl import config as cfg
from offrl import registry
from offrl.anchors import AnchorEncoder, SeekerConfig, load_or_build_seeker, reverse_rollouts
from offrl.dynamics import DynamicsConfig, load_or_fit
from offrl.nets import init_seeded
from offrl.transductive import TransductiveNet

MODEL = dict(dynamics_hidden=[32, 32], dynamics_weight_decays=[2.5e-5, 5e-5, 1e-4], dynamics_max_epochs=10,
             reverse_max_epochs=10, seeker_rollout_starts=4_000, seeker_max_epochs=10)


def agent_config(name, **overrides):
    return cfg.apply(registry.get(name).config_cls(), {**MODEL, **overrides})


@pytest.fixture(scope="module")
def medium(pointmass):
    return pointmass("medium", 20_000)


@pytest.fixture(scope="module")
def stages(medium):
    """(forward model, reverse model, seeker config, seeker) of the tiny settings, fitted once."""
    agent = registry.make("cocoa-iql", medium.spec, agent_config("cocoa-iql"), [0], "cpu")
    forward = load_or_fit(medium, DynamicsConfig.from_agent_config(agent.config), log=lambda m: None)
    seeker_config = agent.seeker_config()
    reverse = load_or_fit(medium, seeker_config.reverse, log=lambda m: None)
    seeker = load_or_build_seeker(medium, seeker_config, log=lambda m: None)
    return forward, reverse, seeker_config, seeker


def distance_to_data(points, dataset) -> float:
    """Mean distance of points [N, d] to their nearest dataset state, per-dimension standardised."""
    scale = dataset.observations.std(0) + 1e-6
    ref = torch.as_tensor(dataset.observations / scale, dtype=torch.float32)
    pts = torch.as_tensor(points, dtype=torch.float32).reshape(-1, ref.shape[1]) / torch.as_tensor(scale)
    return float(torch.cat([torch.cdist(p, ref).min(1).values for p in pts.split(1024)]).mean())


def test_reverse_rollouts_move_away_from_the_data(medium, stages):
    _, reverse, seeker_config, _ = stages
    rollouts = reverse_rollouts(medium, reverse, SeekerConfig(**{**vars(seeker_config), "rollout_starts": 1_000}))
    assert rollouts["observations"].shape == (5, 1_000, medium.spec.obs_dim)
    # Each step's next state is the previous step's state: one chain per start, walking backwards.
    assert torch.equal(rollouts["next_observations"][1:], rollouts["observations"][:-1])
    distances = [distance_to_data(rollouts["observations"][k], medium) for k in range(5)]
    assert all(a < b for a, b in zip(distances, distances[1:])), distances


def test_the_seeker_moves_perturbed_states_toward_the_data(medium, stages):
    forward, _, _, seeker = stages
    rng = np.random.default_rng(0)
    states = medium.observations[rng.choice(len(medium), 2_000, replace=False)]
    perturbed = torch.as_tensor(states + rng.normal(0, 0.3, states.shape) * medium.observations.std(0),
                                dtype=torch.float32)
    before = distance_to_data(perturbed, medium)
    for horizon in (1, 2, 3):
        encoder = AnchorEncoder(medium.spec.obs_dim, medium.spec.act_dim, forward.config, (100, 100),
                                medium.spec.action_low, medium.spec.action_high, horizon)
        encoder.load(forward, seeker)
        after = distance_to_data(encoder.anchors(perturbed[None])[0], medium)
        assert after < before, (horizon, before, after)


def test_the_elite_mean_state_is_the_deterministic_step(medium, stages):
    forward = stages[0]
    obs = torch.as_tensor(medium.observations[:64])[None]
    act = torch.as_tensor(medium.actions[:64])[None]
    torch.testing.assert_close(forward.elite_mean_state(obs, act), forward.step(obs, act, deterministic=True).next_obs,
                               rtol=1e-6, atol=1e-6)


def test_anchors_are_computed_once_per_update_and_equal_anchors_per_call(medium, monkeypatch):
    """CQL evaluates its critics on every state repeated 10 times: the agent encodes the batch's states and next
    states once (two anchor computations per update) and repeats the encodings, which equals encoding the
    repeated states (to the last bits a product's blocking may change)."""
    computed = []
    anchors = AnchorEncoder.anchors
    monkeypatch.setattr(AnchorEncoder, "anchors", lambda self, obs: computed.append(obs.shape) or anchors(self, obs))
    agent = train_agent("cocoa-cql", medium, 3, seeds=(0, 1), hidden=[32, 32], embed_hidden=[16, 16], embedding=4,
                        **MODEL)
    assert computed == [(2, 256, medium.spec.obs_dim)] * 6  # 3 updates x (observations, next observations)
    encoder = agent.obs_norm
    obs = torch.as_tensor(medium.observations[:256]).expand(2, 256, -1)
    once = encoder(obs).repeat_interleave(10, dim=1)
    per_call = encoder(obs.repeat_interleave(10, dim=1))
    # Equal up to float rounding: a matrix product of 2,560 rows is blocked differently from one of 256.
    torch.testing.assert_close(once, per_call, rtol=1e-6, atol=1e-6)
    # The encoding is [Δ, s̃] with s = Δ + s̃, and it takes no gradient.
    d = medium.spec.obs_dim
    torch.testing.assert_close(once[..., :d] + once[..., d:], obs.repeat_interleave(10, dim=1))
    assert not once.requires_grad and not any(p.requires_grad for p in encoder.parameters())


def test_transductive_net_is_t_inner_products_with_layer_norm_after_each_activation_and_the_output():
    net = init_seeded(TransductiveNet((2, 3), obs_dim=5, extra_dim=2, embed_hidden=[8, 6], embedding=4, hidden=[16],
                                      out_dim=1), [0, 1], "critic")
    x = torch.randn(2, 1, 7, 12)  # [S, (members broadcast), B, 2·5 + 2]
    assert net(x).shape == (2, 3, 7, 1)
    kinds = [type(m).__name__ for m in net.f.net]
    assert kinds == ["StackedLinear", "ReLU", "StackedLayerNorm", "StackedLinear", "ReLU", "StackedLayerNorm",
                     "StackedLinear", "StackedLayerNorm"]
    assert "StackedLayerNorm" not in [type(m).__name__ for m in net.backbone.net]
    delta_a = torch.cat([x[..., :5], x[..., 10:]], dim=-1)
    anchor_a = x[..., 5:]
    f, g = net.f(delta_a), net.g(anchor_a)
    assert f.shape[-1] == 6 * 4
    # The output LayerNorm (weight 1, bias 0 at init) leaves each row with mean 0 and variance 1.
    torch.testing.assert_close(f.mean(-1), torch.zeros(f.shape[:-1]), atol=1e-5, rtol=0)
    loop = torch.stack([(f[..., 4 * t:4 * t + 4] * g[..., 4 * t:4 * t + 4]).sum(-1) for t in range(6)], dim=-1)
    torch.testing.assert_close(net.features(x), loop)


def test_cocoa_names_its_base_and_acts_without_the_cache(medium, tmp_path, data_dir):
    """`--agent cocoa --set base=mopo` trains cocoa-mopo and its rows say so; after the cache is cleared, the
    run's policy still acts with the seeker and model it trained with (they are in the checkpoint)."""
    import offrl
    from offrl.cache import Cache

    assert registry.resolve_variant("cocoa") == "cocoa-iql"
    assert registry.resolve_variant("cocoa", {"base": "mopo"}) == "cocoa-mopo"
    assert registry.resolve_variant("cocoa", {}, lambda: {"base": "cql"}) == "cocoa-cql"  # from a config file
    tiny = dict(hidden=[32, 32], rollout_batch=200, rollout_freq=10, **MODEL)
    run = offrl.train("cocoa", "pointmass-medium", seeds=[0], steps=20, eval_every=20, eval_episodes=1,
                      out=tmp_path, dataset_size=20_000, base="mopo", **tiny)
    assert [row["agent"] for row in run.rows] == ["cocoa-mopo"]
    agent = registry.make("cocoa-mopo", medium.spec, agent_config("cocoa-mopo", **tiny), [0], "cpu")
    agent.prepare(medium, cache=Cache(log=lambda m: None))  # the stages the run stored
    obs = torch.as_tensor(medium.observations[:32])[None]
    expected = agent.obs_norm(obs)
    Cache().clear()
    policy = offrl.load_policy(run.run_dir)
    assert torch.equal(policy.agent.obs_norm(obs), expected)
    assert policy.predict(medium.observations[:4]).shape == (4, medium.spec.act_dim)


@pytest.mark.parametrize("name, overrides, threshold", [
    ("cocoa-iql", dict(hidden=[64, 64]), 70),
    ("cocoa-mopo", dict(hidden=[64, 64], rollout_batch=2_000, rollout_freq=250, rollout_length=5, penalty_coef=1.0,
                        actor_lr=3e-4), 35),
])
def test_cocoa_learns_pointmass(medium, name, overrides, threshold):
    agent = train_agent(name, medium, 1_000, **{**MODEL, "dynamics_hidden": [64, 64], **overrides})
    score = evaluate_policy(agent, medium)
    # Random scores 0, the medium behaviour policy about 45. Observed after 1,000 updates: cocoa-iql 94.0,
    # cocoa-mopo 43.9 (plain MOPO at 2,000 updates: 51.5; its actor lr decays to 0 over the run).
    assert score.mean() > threshold, score


def test_offrl_agents_lists_cocoa_with_its_stages():
    from click.testing import CliRunner
    from offrl.cli import main

    out = CliRunner().invoke(main, ["agents"]).output
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("cocoa")}
    assert set(rows) == {"cocoa", "cocoa-cql", "cocoa-iql", "cocoa-mopo", "cocoa-mobile"}
    assert all("dynamics, reverse_dynamics, anchor_seeker" in line for line in rows.values())
    assert "cocoa-iql unless --set base=" in rows["cocoa"]
