"""offrl: an offline-RL benchmark suite. A registry of agents over one data layer, replay buffer, critics and
seed-batched training loop; `offrl run --agent td3bc --env pointmass-medium` trains one."""
import os

# OpenMP threads that spin while waiting for a peer thread descheduled by another process make torch's
# small matmuls 10-20x slower on a busy machine (measured on 2 cores with one other job: TD3+BC at 2 threads
# fell from ~42 to ~4 updates/s). Passive waiting costs little when the machine is idle. Set before torch
# loads; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
