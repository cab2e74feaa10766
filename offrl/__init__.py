"""offrl: an offline-RL benchmark suite. A registry of agents over one data layer, replay buffer, critics and
seed-batched training loop; `offrl run --agent td3bc --env pointmass-medium` trains one."""
__version__ = "0.1.0"
