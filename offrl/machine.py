"""The machine a run uses: which device, how many cores this process may use, torch's thread count, and a
one-line description for results rows and benchmark output."""
from __future__ import annotations

import os
import platform
import re

import torch

from offrl.errors import OfflineRLError


def pick_device(name: str = "auto") -> torch.device:
    """`auto` (CUDA if there is a GPU, else the CPU), `cpu`, `cuda` or `cuda:N`; a device this machine lacks is
    an error now rather than at the first tensor."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    found = re.fullmatch(r"cuda(?::(\d+))?", str(name))
    if found is None:
        raise OfflineRLError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise OfflineRLError(f"device {name} was asked for, but this machine has no CUDA device "
                             f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'}); use cpu")
    index = int(found.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise OfflineRLError(f"device {name} was asked for, but this machine has {torch.cuda.device_count()} CUDA "
                             f"device(s) (cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    return torch.device(name)


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, which a container or taskset may narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def set_threads(threads: int | None, num_seeds: int) -> int:
    """CPU threads for torch: `threads`, or (0 or None = auto) one per seed up to the usable cores.

    One seed's matmuls (batch 256, width 256) are too small to split across threads, and when another
    process holds a core, a second OpenMP thread makes one seed up to 10x slower (measured on the 2-core
    machine: 70 -> 5 updates/s). Several seeds are stacked into bigger matmuls that do use more cores.
    """
    threads = threads or 0
    if threads < 0:
        raise OfflineRLError(f"--threads must be at least 1 (or 0: one per seed, up to the cores), got {threads}")
    if threads > usable_cores():  # more threads than cores only makes OpenMP threads wait for each other
        raise OfflineRLError(f"--threads {threads} is more than the {usable_cores()} cores this process may use")
    if threads == 0:
        threads = max(1, min(usable_cores(), num_seeds))
    torch.set_num_threads(threads)
    return threads


def hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} ({usable_cores()} cores, {torch.get_num_threads()} threads)"
