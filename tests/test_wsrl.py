"""WSRL: fine-tuned online (warm-up, then SAC on its own buffer only), it improves on its pre-trained policy."""
from offrl.trainer import TrainConfig, Trainer


def test_wsrl_learns_the_toy_task_online(tmp_path, pointmass):
    # A barely pre-trained WSRL (100 CQL updates), then 1,500 env steps online: the first 300 are its warm-up,
    # the rest one update each on online rows only. Small networks and batches, higher learning rates, so
    # that the toy's online phase fits in seconds; WSRL's structure (ensemble, subset with replacement,
    # warm-up, UTD, no offline rows) is as its defaults.
    pointmass("medium", 20_000)
    train = TrainConfig(steps=100, online_steps=1_500, eval_every=100_000, eval_episodes=20, log_every=500,
                        checkpoint_every=100_000)
    trainer = Trainer.start("wsrl", "pointmass-medium", [0], out_dir=tmp_path, train=train, device="cpu",
                            overrides={"warmup_steps": 300, "online_batch_size": 64, "online_utd": 2,
                                       "batch_size": 64, "actor_lr": 1e-3, "critic_lr": 1e-3, "alpha_lr": 1e-3},
                            dataset_size=20_000, run_name="wsrl", compile="eager", log=lambda m: None)
    rows = trainer.fit()
    offline, online = rows[0]["offline_score"], rows[0]["final_score"]
    assert trainer.online_updates == 1_500 - 300
    assert online > offline + 20, (offline, online)  # observed: 27 -> 84
