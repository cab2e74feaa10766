"""How a training step (batch sampling + the agent's `update`) runs: eager, or compiled by torch.compile
(on a GPU with CUDA graphs), with a clean fall-back to eager.

The step compiled is `agent.update(buffer.sample(), step)`: the batch indices come from the buffer's
counter-based streams on the device, so sampling is part of the compiled program (and of the CUDA graph)
rather than a host-side step between graphs.

Modes:
  eager       the agent's own `update`, op by op.
  compile     torch.compile(step) with inductor. Every random number inside `update` comes from
              counter-based streams held in buffers (offrl/rng.py), so the compiled program draws the same
              numbers as the eager one and results agree to float tolerance (tests/test_compile.py).
  cudagraphs  (CUDA only) torch.compile(step, mode="reduce-overhead"): inductor's kernels replayed from
              CUDA graphs, which removes the per-kernel launch cost that bounds small networks on a GPU.
  auto        CUDA -> cudagraphs; CPU -> eager. On a CPU the update is dominated by batched matmuls that
              compiled code hands to the same BLAS, so compiling has not paid there (docs/performance.md).
              `--compile compile` still runs it on a CPU.

Fall-back: the first calls of a compiled step (`TRIAL_CALLS`, which covers the branches of delayed actor
updates and target steps) keep a copy of the agent's and the buffer's state; if compiling raises, both are
put back, one line says why, and the run continues eager from the same step. Later calls are not guarded.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch

from offrl.errors import OfflineRLError

MODES = ("auto", "eager", "compile", "cudagraphs")
TRIAL_CALLS = 8


def resolve_mode(mode: str, device: torch.device) -> str:
    """The mode `auto` stands for on `device`; a mode the device cannot run is an error."""
    if mode not in MODES:
        raise OfflineRLError(f"unknown compile mode {mode!r}: choose one of {', '.join(MODES)}")
    if mode == "auto":
        return "cudagraphs" if device.type == "cuda" else "eager"
    if mode == "cudagraphs" and device.type != "cuda":
        raise OfflineRLError("compile mode cudagraphs needs a CUDA device; use compile or eager on a CPU")
    return mode


class UpdateRunner:
    """`runner(step)` samples a batch from `buffer` and calls `agent.update(batch, step)` in the resolved mode;
    `mode` says which one ran last."""

    def __init__(self, agent, buffer, mode: str, device: torch.device, log: Callable[[str], None] = print):
        self.agent, self.buffer, self.log = agent, buffer, log
        self.requested = mode
        self.mode = resolve_mode(mode, torch.device(device))
        self.trials_left = TRIAL_CALLS
        self._fn = self.eager_step
        if self.mode != "eager":
            # The step is a plain int: dynamo makes it a symbol after seeing a second value instead of
            # recompiling for every value (the `step % policy_freq` branches then give one graph per branch).
            kwargs = {"mode": "reduce-overhead"} if self.mode == "cudagraphs" else {}
            self._fn = torch.compile(self.eager_step, **kwargs)

    def eager_step(self, step: int) -> dict:
        return self.agent.update(self.buffer.sample(), step)

    def _state(self) -> dict:
        return copy.deepcopy({"agent": self.agent.checkpoint_state(), "buffer": self.buffer.state_dict()})

    def __call__(self, step: int) -> dict:
        if self.mode == "eager" or self.trials_left <= 0:
            return self._fn(step)
        self.trials_left -= 1
        saved = self._state()
        try:
            return self._fn(step)
        except Exception as exc:  # noqa: BLE001 - any failure to compile falls back, and says so
            self.agent.load_checkpoint_state(saved["agent"])
            self.buffer.load_state_dict(saved["buffer"])
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            self.log(f"compile mode {self.mode} failed at step {step:,} ({type(exc).__name__}: {first[:200]}); "
                     "continuing eager")
            self.mode, self._fn = "eager", self.eager_step
            return self._fn(step)
