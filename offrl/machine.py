"""The machine a run uses: which device, how many cores this process may use, torch's thread count, and a
one-line description for results rows and benchmark output."""
from __future__ import annotations

import platform
import re
import time

import torch

from offrl.cpu_load import OthersWatch, cores_left, free_cores, usable_cpus, wait_policy
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
    return len(usable_cpus())


def auto_threads(num_seeds: int) -> int:
    """The thread count when the user gives none, from the cores other work left free when offrl started
    (measured once per process, so it does not drift within a run):

    - where offrl's bounded spin is in force (the cores were free), every free core: with spinning threads
      a second thread pays even for one seed's small matmuls;
    - otherwise (passive waiting, or the user's own policy) one per seed up to the free cores: a passive
      second thread pays a wake-up per parallel region, which one seed's matmuls do not repay.
    """
    free = free_cores()
    return free if wait_policy() == "spin" else max(1, min(free, num_seeds))


def set_threads(threads: int | None, num_seeds: int) -> int:
    """CPU threads for torch: `threads`, or (0 or None = auto) `auto_threads(num_seeds)`."""
    threads = threads or 0
    if threads < 0:
        raise OfflineRLError(f"--threads must be at least 1 (or 0: chosen from the free cores), got {threads}")
    if threads > usable_cores():  # more threads than cores only makes OpenMP threads wait for each other
        raise OfflineRLError(f"--threads {threads} is more than the {usable_cores()} cores this process may use")
    if threads == 0:
        threads = auto_threads(num_seeds)
    torch.set_num_threads(threads)
    return threads


class ThreadWatch:
    """For a run whose thread count offrl chose with its bounded spin in force: every `every_s` seconds, read
    how many cores other processes used meanwhile and set torch's threads to the cores they leave free (at
    most the count chosen at the start). A job that arrives beside a two-threaded run then costs it its
    second thread, not a spinning one, and gives it back when it leaves. Runs given --threads, or started
    on a busy machine (passive waiting, threads never above the free cores), are left alone. `__call__` is
    a clock read between checks."""

    def __init__(self, threads_given: int | None, threads: int, every_s: float = 30.0):
        self.enabled = not threads_given and wait_policy() == "spin" and threads > 1
        self.most, self.every_s = threads, every_s
        self.watch = OthersWatch() if self.enabled else None
        self.next_check = time.monotonic() + every_s

    def __call__(self) -> None:
        if not self.enabled or time.monotonic() < self.next_check:
            return
        self.next_check = time.monotonic() + self.every_s
        others = self.watch.busy_cores()
        if others is None:
            return
        threads = min(self.most, cores_left(len(self.watch.cpus), others))
        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)


def hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} ({usable_cores()} cores, {torch.get_num_threads()} threads)"
