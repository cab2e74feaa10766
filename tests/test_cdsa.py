"""CDSA-reconstruction and the policy wrapper: the score model, the inverse model, κ = 0, and which seed's
policy a wrapper loads."""
import torch

from offrl import config as cfg
from offrl import registry
from offrl.build import build_run
from offrl.optim import adam, gradient_step
from offrl.rng import SeedStreams
from offrl.trainer import TrainConfig, Trainer
from offrl.agents.cdsa import ScoreModel

from conftest import train_agent

CENTRES = torch.tensor([[-1.0, 0.0], [1.0, 0.0]])
SPREAD = 0.3  # std of each mixture component


def _mixture_score(x, sigma):
    """∇ log of the equal mixture of N(c, SPREAD²) convolved with N(0, σ²), at points x [n, 2]."""
    var = SPREAD ** 2 + sigma ** 2
    diff = CENTRES[None] - x[:, None]  # [n, 2, 2]
    w = torch.softmax(-(diff ** 2).sum(-1) / (2 * var), dim=1)  # responsibilities [n, 2]
    return (w[..., None] * diff).sum(1) / var


def test_denoising_score_matching_recovers_a_gaussian_mixtures_score():
    torch.manual_seed(0)
    model = ScoreModel([0], 2, (128, 128), sigma_min=0.05, sigma_max=1.0, num_sigmas=10)
    opt, noise = adam(model.parameters(), 1e-3), SeedStreams([0], "test")
    gen = torch.Generator().manual_seed(0)
    for _ in range(1500):
        which = torch.randint(0, 2, (512,), generator=gen)
        x = CENTRES[which] + SPREAD * torch.randn(512, 2, generator=gen)
        gradient_step(opt, model.loss(x[None], noise))
    # A grid over where the data is (within two spreads of a centre), read at the smallest σ.
    g = torch.linspace(-1.6, 1.6, 17)
    grid = torch.cartesian_prod(g, torch.linspace(-0.6, 0.6, 7))
    with torch.no_grad():
        learned = model.score(grid[None], 0.05)[0]
    cosine = torch.nn.functional.cosine_similarity(learned, _mixture_score(grid, 0.05), dim=-1)
    assert cosine.mean() >= 0.9, cosine


def _tiny_run(tmp_path, agent, seeds, steps=20, **overrides):
    train = TrainConfig(steps=steps, eval_every=steps, eval_episodes=2, log_every=steps, checkpoint_every=steps)
    trainer = Trainer.start(agent, "pointmass-medium", seeds, out_dir=tmp_path / "runs", train=train,
                            overrides=overrides, dataset_size=2_000, results=str(tmp_path / "results.csv"),
                            threads=1, log=lambda m: None)
    trainer.fit()
    return trainer


def _cdsa(dataset, seeds, **overrides):
    config = cfg.apply(registry.get("cdsa").config_cls(), dict(hidden=[32, 32], **overrides))
    return build_run("cdsa", dataset, config, seeds, "cpu", "eager", total_steps=1).agent


def test_the_wrapper_loads_each_seeds_own_policy_from_a_multi_seed_run(tmp_path, pointmass):
    base = _tiny_run(tmp_path, "td3bc", [0, 1, 2], hidden=[16, 16])
    wrapper = _cdsa(pointmass("medium", 2_000), [2, 0], base_run=str(base.run_dir), kappa=0.0)
    obs = torch.as_tensor(pointmass("medium", 2_000).observations[:50])
    run_actions = base.agent.act(obs.expand(3, -1, -1))  # seeds 0, 1, 2 of the run
    wrapped = wrapper.base_act(obs.expand(2, -1, -1))
    assert torch.equal(wrapped[0], run_actions[2]) and torch.equal(wrapped[1], run_actions[0])
    assert not torch.equal(run_actions[0], run_actions[2])
    # κ = 0: the wrapper acts exactly as the base policy, whatever its own networks say.
    assert torch.equal(wrapper.act(obs.expand(2, -1, -1)), wrapped)


def test_kappa_changes_the_action_and_stays_in_the_box(tmp_path, pointmass):
    agent = _cdsa(pointmass("medium", 2_000), [0], base_steps=5, kappa=5.0, max_correction=1.0)
    obs = torch.as_tensor(pointmass("medium", 2_000).observations[:200])[None]
    corrected, base = agent.act(obs), agent.base_act(obs)
    assert corrected.abs().max() <= 1.0 and not torch.equal(corrected, base)


def test_a_base_trained_in_place_is_the_policy_a_run_of_the_base_agent_trains(pointmass):
    data = pointmass("medium", 2_000)
    agent = _cdsa(data, [0, 1], base_steps=6)
    alone = train_agent("td3bc", data, 6, seeds=(0, 1))
    obs = torch.as_tensor(data.observations[:20]).expand(2, -1, -1)
    assert torch.equal(agent.base_act(obs), alone.act(obs))


def test_the_inverse_model_recovers_pointmass_inverse_dynamics(pointmass):
    data = pointmass("medium", 20_000)
    agent = train_agent("cdsa", data, 1500, base_steps=1, hidden=[64, 64], batch_size=256, lr=1e-3)
    obs, nxt, act = (torch.as_tensor(a) for a in (data.observations, data.next_observations, data.actions))
    # Rows where the known inverse a = (p' - p) / 0.1 holds: the action inside the box, the point inside the arena.
    inside = (act.abs() < 0.95).all(-1) & (nxt[:, :2].abs() < 1.99).all(-1)
    with torch.no_grad():
        predicted = agent.inverse_action(agent.obs_norm(obs[inside])[None], agent.obs_norm(nxt[inside])[None])[0]
    assert ((predicted - act[inside]) ** 2).mean() < 1e-3


def test_a_cdsa_run_is_a_normal_run_and_resumes_to_the_same_result(tmp_path):
    base = _tiny_run(tmp_path, "td3bc", [0, 1], hidden=[16, 16])
    full = _tiny_run(tmp_path, "cdsa", [0, 1], steps=40, base_run=str(base.run_dir), hidden=[16, 16])
    train = TrainConfig(steps=40, eval_every=40, eval_episodes=2, log_every=20, checkpoint_every=20)
    killed = Trainer.start("cdsa", "pointmass-medium", [0, 1], out_dir=tmp_path / "runs", train=train,
                           overrides=dict(base_run=str(base.run_dir), hidden=[16, 16]), dataset_size=2_000,
                           results=str(tmp_path / "killed.csv"), threads=1, log=lambda m: None)
    assert killed.fit(stop_at=30) is None
    resumed = Trainer.resume(killed.run_dir, log=lambda m: None).fit()
    assert [r["final_score"] for r in resumed] == full.history[-1]["scores"]
    assert all(r["agent"] == "cdsa" and r["final_cvar10"] <= r["final_var10"] for r in resumed)


def test_the_policy_density_trains_on_states_the_base_policy_reaches(pointmass):
    data = pointmass("medium", 2_000)
    agent = _cdsa(data, [0], base_steps=5, density="policy", policy_horizon=2)
    obs = agent.obs_norm(torch.as_tensor(data.observations[:64]))[None]
    reached = agent.policy_states(obs)
    assert reached.shape == obs.shape and not torch.equal(reached, obs)
    trained = train_agent("cdsa", data, 5, base_steps=5, density="policy", hidden=[32, 32])
    assert all(torch.isfinite(p).all() for p in trained.score_model.parameters())
