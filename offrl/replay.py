"""The transition buffer: the dataset on the device once, sampled with independent indices per seed.

`sample()` returns a dict of [S, B, ...] tensors. Indices come from the buffer's own per-seed random stream
(offrl.rng), so sampling is a device-side tensor op (no host round trip, capturable) and seed s draws the
same batches whether it trains alone or beside other seeds.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from offrl.rng import SeedStreams

BATCH_KEYS = ("observations", "actions", "rewards", "next_observations", "dones")


class TransitionBuffer(nn.Module):
    def __init__(self, dataset, seeds, batch_size: int, device="cpu"):
        super().__init__()
        self.batch_size = batch_size
        self.size = len(dataset)
        arrays = {
            "observations": dataset.observations,
            "actions": dataset.actions,
            "rewards": dataset.rewards,
            "next_observations": dataset.next_observations,
            # Only true terminals stop bootstrapping; timeouts do not.
            "dones": dataset.terminals.astype(np.float32),
        }
        self.data = {k: torch.as_tensor(np.ascontiguousarray(v), dtype=torch.float32, device=device)
                     for k, v in arrays.items()}
        self.streams = SeedStreams(list(seeds), "replay").to(device)

    def sample(self) -> dict[str, torch.Tensor]:
        idx = self.streams.randint(self.size, self.batch_size)  # [S, B]
        return {k: v[idx] for k, v in self.data.items()}
