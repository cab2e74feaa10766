"""What agents share about optimisers: fused Adam, one gradient step, and the cosine learning-rate schedule.

`adam` is torch's Adam with the fused kernel: one pass over all parameter tensors instead of a dozen small
kernels per tensor, on CPU and CUDA alike. It is elementwise like the loop, so seeds stacked on a leading
axis still train as they would alone, though not bit for bit: the kernel's vector lanes and scalar tail round
differently, so where an element sits in the stacked tensor can change its last bit.

`gradient_step(optimizer, loss)` is the step every agent takes: loss is [S], each seed's own mean, and its sum
gives each seed's parameters the gradient of that seed's loss alone (docs/design.md, the seed axis).

`cosine_annealing` sets the learning rate of an optimiser's next step from the optimiser's own step counter
(Adam's, which checkpoints carry), so the rate is a function of the step alone and a resumed run continues on
the same curve. The rate is a 0-dim tensor on the parameters' device, changed in place by tensor ops: `update`
writes no Python float into the optimiser, and a compiled or CUDA-graph-captured step needs no recompilation
as the rate changes.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch


def adam(params: Iterable[torch.Tensor], lr: float, **kwargs) -> torch.optim.Adam:
    """torch.optim.Adam(params, lr, fused=True, **kwargs)."""
    return torch.optim.Adam(params, lr=lr, fused=True, **kwargs)


def gradient_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor, clamp: float | None = None) -> None:
    """One step of `optimizer` down the gradient of loss.sum(); loss is [S], one mean per seed. `clamp`: clip
    every gradient element to [-clamp, clamp] first (element-wise, so seeds stay independent)."""
    optimizer.zero_grad(set_to_none=True)
    loss.sum().backward()
    if clamp is not None:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        torch._foreach_clamp_min_(grads, -clamp)
        torch._foreach_clamp_max_(grads, clamp)
    optimizer.step()


def cosine_annealing(optimizer: torch.optim.Optimizer, base_lr: float, horizon: int) -> None:
    """Set the rate of `optimizer`'s next step to base_lr·½(1 + cos(π·min(t, T)/T)), T = horizon.

    t is the number of steps the optimiser has taken (0 before its first), so an optimiser that steps once
    per update gets base_lr at update 1, base_lr/2 at update T/2 + 1, and stays at 0 after update T + 1:
    torch's CosineAnnealingLR and optax's cosine_decay_schedule stepped once per update, held at 0 after T.
    """
    for group in optimizer.param_groups:
        lr = _lr_tensor(group)
        state = optimizer.state.get(group["params"][0])
        t = state["step"] if state else torch.zeros((), device=lr.device)
        lr.copy_((torch.cos(t.clamp(max=horizon) * (math.pi / horizon)) + 1.0) * (0.5 * base_lr))


def _lr_tensor(group: dict) -> torch.Tensor:
    """The group's learning rate as a 0-dim float32 tensor on its parameters' device.

    A fresh optimiser holds a float, and loading an optimiser state may bring a float (a checkpoint written
    before rates were tensors) or a tensor on the loading device; either is replaced once, after which the
    same tensor is changed in place on every step.
    """
    lr, device = group["lr"], group["params"][0].device
    if not isinstance(lr, torch.Tensor) or lr.device != device or lr.dtype != torch.float32:
        lr = group["lr"] = torch.as_tensor(lr, dtype=torch.float32).to(device)
    return lr


__all__ = ["adam", "gradient_step", "cosine_annealing"]
