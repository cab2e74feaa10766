"""The registry of termination functions for model rollouts: done = f(obs, act, next_obs), one per family.

A learned dynamics model predicts the next state but not whether the episode ends there, so model-based
agents decide it from the predicted state with the environment's own check. The environments register
their functions here (offrl's own in envs/termination.py, loaded through the `offrl.envs` entry points),
so the core and the agents look a function up by dataset family without importing envs/.

A function takes batched arrays with any leading dims, [..., obs_dim] (numpy arrays or torch tensors; the
result is of the same kind), and returns a bool mask [...] that is True where the episode has ended at
`next_obs`. It must be a pure tensor program (no host round trip, no branch on values), so that it can run
inside a compiled update.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from offrl import extensions
from offrl.errors import OfflineRLError

TerminationFn = Callable[[object, object, object], object]

TERMINATION_FNS: dict[str, TerminationFn] = {}


def canonical(family: str) -> str:
    """"half_cheetah", "HalfCheetah" and "halfcheetah" name one family."""
    return family.lower().replace("_", "").replace("-", "")


def register_termination(family: str, fn: TerminationFn) -> None:
    TERMINATION_FNS[canonical(family)] = fn


def termination_fn(family: str | None) -> TerminationFn:
    """The termination function of an environment family; OfflineRLError if there is none."""
    extensions.load_envs()
    key = canonical(family) if family else ""
    if key not in TERMINATION_FNS:
        raise OfflineRLError(
            f"no termination function for environment family {family!r}: offrl has one for "
            f"{', '.join(sorted(TERMINATION_FNS))}. Register one with offrl.termination.register_termination, "
            "or pass termination=... to the dynamics model")
    return TERMINATION_FNS[key]


def never(obs, act, next_obs):
    """No termination (reverse rollouts; environments that never end)."""
    if isinstance(next_obs, torch.Tensor):
        return torch.zeros(next_obs.shape[:-1], dtype=torch.bool, device=next_obs.device)
    return np.zeros(np.shape(next_obs)[:-1], dtype=bool)
