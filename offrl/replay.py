"""The transition buffer: the dataset on the device once, sampled with independent indices per seed.

`sample()` returns a dict of [S, B, ...] tensors. Indices come from the buffer's own per-seed random stream
(offrl.rng), so sampling is a device-side tensor op (no host round trip, capturable) and seed s draws the
same batches whether it trains alone or beside other seeds.

Extra per-transition arrays (an agent's `extras`, from `Dataset.extras_for`) go to the device beside the
fixed ones and are gathered with the same indices, so batch[name][s, b] belongs to the transition of
batch["observations"][s, b]. Adding extras draws no extra random numbers: a seed's batches do not change.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from offrl.errors import OfflineRLError
from offrl.rng import SeedStreams

BATCH_KEYS = ("observations", "actions", "rewards", "next_observations", "dones")


class TransitionBuffer(nn.Module):
    def __init__(self, dataset, seeds, batch_size: int, device="cpu", extras: dict[str, np.ndarray] | None = None):
        """`extras`: {name: [N, ...] array} sampled beside the fixed keys (floats as float32, integer and
        boolean arrays keep their dtype)."""
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
        for name, value in (extras or {}).items():
            value = np.asarray(value)
            if name in self.data:
                raise OfflineRLError(f"dataset {dataset.name}: extra field {name!r} shadows a batch key")
            if value.ndim == 0 or len(value) != self.size:
                raise OfflineRLError(f"dataset {dataset.name}: extra field {name!r} has shape {value.shape} "
                                     f"for {self.size} transitions")
            if not value.flags.writeable:  # a memoised computed extra: torch refuses to share read-only memory
                value = value.copy()
            dtype = torch.float32 if value.dtype.kind == "f" else None
            self.data[name] = torch.as_tensor(np.ascontiguousarray(value), dtype=dtype, device=device)
        self.streams = SeedStreams(list(seeds), "replay").to(device)

    def sample(self, n: int | None = None) -> dict[str, torch.Tensor]:
        """n rows per seed (default: batch_size) [S, n, ...]."""
        idx = self.streams.randint(self.size, n or self.batch_size)  # [S, n]
        return {k: v[idx] for k, v in self.data.items()}
