"""FB, VC-FB and MC-FB (agents/fb.py, vcfb.py, mcfb.py) on the reward-free PointGoals toy: B's orthonormality
term drives B(s)ᵀB(s') toward 0 off the diagonal; on the narrow data VC-FB values uniform actions lower than FB
and its policy leaves the data's action range less. Seed-axis equivalence: tests/test_seed_axis.py (every
agent); task inference and per-task evaluation: tests/test_tasks.py."""
import numpy as np
import torch

from conftest import train_agent
from test_tasks import TINY_FB, pointgoals  # noqa: F401  (the fixture)


def offdiag_square(agent, obs):
    b = agent.backward_net(obs.expand(agent.num_seeds, -1, -1))
    cov = b @ b.transpose(-1, -2)
    off = ~torch.eye(obs.shape[1], dtype=torch.bool)
    return (cov.pow(2) * off).sum((-1, -2)) / off.sum()


def test_orthonormality_drives_b_off_diagonal_toward_zero(pointgoals):
    ds = pointgoals("random")
    obs = torch.as_tensor(ds.next_observations[:256]).unsqueeze(0)
    untrained, trained = train_agent("fb", ds, 0, **TINY_FB), train_agent("fb", ds, 300, **TINY_FB)
    with torch.no_grad():
        before, after = offdiag_square(untrained, obs), offdiag_square(trained, obs)
    # At initialisation B of different states are nearly parallel ((BᵀB)² near d² = 64).
    assert (after < 0.75 * before).all(), (before, after)  # observed: 37.8 -> 22.1


def test_fb_solves_the_goal_tasks_zero_shot_well_above_random(pointgoals):
    # The pointgoals family's defaults (agents/fb.py SMALL), 1,000 updates, task vectors from 10,000
    # reward-labelled samples. Random scores 0; a policy that runs into the goal's corner and stays scores about 6.
    # Per (seed, task) the score is bimodal (about 100 when the policy comes and stays, about 6 when it overshoots
    # into the corner), so the test asserts the mean over two seeds and the four tasks. Observed: 48.8 (per task and
    # seed 6.9, 7.3 / 87.9, 100.1 / 4.9, 4.9 / 77.1, 100.9); with 50 other starts, seeds 2,3 and 4,5: 56.6 and 32.7.
    from offrl.build import agent_config, build_run
    from offrl.evaluation import TaskEvaluator

    ds = pointgoals("random")
    config = agent_config("fb", ds)
    assert (config.discount, config.lr, config.z_dim) == (0.9, 1e-3, 16)  # the family's defaults apply
    parts = build_run("fb", ds, config, [0, 1], "cpu", "eager", total_steps=1000)
    for step in range(1, 1001):
        parts.train_step(step)
    evaluator = TaskEvaluator(ds, num_seeds=2, episodes=10, inference_samples=config.inference_samples)
    try:
        returns = evaluator.run(parts.agent)
    finally:
        evaluator.close()
    scores = np.array([task.normalized_score(returns[task.name].mean(1)) for task in ds.tasks])  # [tasks, seeds]
    assert scores.mean() > 25, scores.round(1)


def q_over_updates(name, ds, steps, seeds=(0,), **overrides):
    """The actor's mean Q_z (metric q_mean) at every update: [steps, S]."""
    from offrl import config as cfg
    from offrl import registry
    from offrl.build import build_run

    config = cfg.apply(registry.get(name).config_cls(), overrides)
    parts = build_run(name, ds, config, list(seeds), "cpu", "eager", total_steps=steps)
    return torch.stack([parts.train_step(step)["q_mean"] for step in range(1, steps + 1)])


def test_q_levels_off_below_the_bound_of_its_fixed_point(pointgoals):
    # With ‖B‖ = ‖z‖ = √d and E_ρ[BBᵀ] ≈ I, the measure loss's fixed point is F = B(s') + γF̄(s', π): Q_z =
    # Fᵀz is the discounted sum of B(s_t)ᵀz ≤ d, so |Q| ≤ d/(1-γ) = 16 here. It climbs at Adam's pace toward
    # its fixed point and levels off; a target that is not one (gradients through it, Polyak the wrong way)
    # or an unnormalised B is what this would catch. Observed (seed 0 of a two-seed curve): about 2.0 over
    # updates 1,000-1,300, 2.1 over 1,300-1,600 (γ 0.98 only moves the plateau to hundreds, reached in tens of
    # thousands of updates).
    q = q_over_updates("fb", pointgoals("random"), 1600, **{**TINY_FB, "discount": 0.5, "lr": 1e-3})
    earlier, last = q[1000:1300].mean(0), q[1300:].mean(0)
    assert (0 < last).all() and (last < 16).all(), last
    assert (last < 1.2 * earlier).all(), (earlier, last)


def random_action_q_and_out_of_data_share(agent, ds):
    """Mean min_k Q_z of uniform actions at 1,000 dataset states (z drawn as in training), and the share of the
    policy's actions there with some |a_i| > 0.6, beyond the narrow behaviour's actions."""
    with torch.no_grad():
        obs = torch.as_tensor(ds.observations[:1000]).expand(agent.num_seeds, -1, -1)
        z = agent.sample_z(obs)
        uniform = torch.rand(1000, 2, generator=torch.Generator().manual_seed(0)) * 2 - 1
        q = (agent.forward_net(obs, uniform.expand_as(obs), z) * z.unsqueeze(1)).sum(-1).min(1).values.mean(-1)
        out_of_data = (agent.actor(obs, z).abs() > 0.6).any(-1).float().mean(-1)
    return q, out_of_data


def test_vcfb_values_unseen_actions_lower_and_leaves_the_narrow_data_less_than_fb(pointgoals):
    ds = pointgoals("narrow")
    assert (np.abs(ds.actions) > 0.6).any(-1).mean() < 0.01  # the data barely holds such actions
    fb_q, fb_out = random_action_q_and_out_of_data_share(train_agent("fb", ds, 500, seeds=(0, 1), **TINY_FB), ds)
    vc_q, vc_out = random_action_q_and_out_of_data_share(train_agent("vcfb", ds, 500, seeds=(0, 1), **TINY_FB), ds)
    # observed: Q 1.22 / 1.29 (fb) against 1.00 / 0.98 (vcfb); out-of-data share 0.89 / 0.82 against 0.0 / 0.0
    assert (vc_q < fb_q).all(), (fb_q, vc_q)
    assert (fb_out > 0.5).all() and (vc_out < 0.5 * fb_out).all(), (fb_out, vc_out)
