"""The machine a run uses: which device, how many cores this process may use, torch's thread count, and a
one-line description for results rows and benchmark output."""
from __future__ import annotations

import os
import platform

import torch


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, which a container or taskset may narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def set_threads(threads: int, num_seeds: int) -> int:
    """CPU threads for torch: `threads`, or (0 = auto) one per seed up to the usable cores.

    One seed's matmuls (batch 256, width 256) are too small to split across threads, and when another
    process holds a core, a second OpenMP thread makes one seed up to 10x slower (measured on the 2-core
    machine: 70 -> 5 updates/s). Several seeds are stacked into bigger matmuls that do use more cores.
    """
    if threads <= 0:
        threads = max(1, min(usable_cores(), num_seeds))
    torch.set_num_threads(threads)
    return threads


def hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} ({usable_cores()} cores, {torch.get_num_threads()} threads)"
