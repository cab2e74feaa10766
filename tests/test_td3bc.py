"""TD3+BC learns the toy task: far above the random policy (normalised score 0) in 2,000 updates."""
from conftest import evaluate_policy, train_agent


def test_td3bc_learns_pointmass(pointmass):
    ds = pointmass("medium", 20_000)
    agent = train_agent("td3bc", ds, 2_000, hidden=[64, 64])
    score = evaluate_policy(agent, ds)
    # The medium behaviour policy scores about 45; TD3+BC improves on it.
    assert score.mean() > 60, score
