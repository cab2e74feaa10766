"""Speed: updates per second of an agent on a dataset, for several seed counts in one process.

Timing covers whole steps (batch sampling + update, in the compile mode asked for: offrl/compile.py), after
a warm-up that also pays for compiling, with a device synchronisation at the end of the timed window. FLOPs
per update are counted on the eager update with torch's per-operator formulas (torch.utils.flop_counter's
registry, through a dispatch mode without module hooks, which break updates that call autograd.grad, as
EDAC's does), averaged over a few consecutive steps so that delayed actor updates count at their real
rate. An agent whose updates 1, 1 + P, 1 + 2P, ... do extra work (`update_period` P: a model rollout) has
those counted and timed apart, and their extra cost spread over P updates; efficiency is the
achieved GFLOP/s over this machine's measured float32 matmul GFLOP/s at the same thread count.
Speed is measured here, never in tests.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from offrl.build import agent_config, build_run
from offrl.cache import Cache
from offrl.errors import OfflineRLError
from offrl.machine import set_threads
from offrl.run_folder import RunFolder, plugins_to_import
from offrl.run_spec import RunSpec


@dataclass
class BenchResult:
    agent: str
    seeds: int
    threads: int
    device: str
    mode: str  # the update mode that ran (eager, compile, cudagraphs)
    updates_per_s: float  # steps of the whole process per second
    gflop_per_update: float  # for all seeds together
    peak_gflops: float  # measured matmul throughput

    @property
    def seed_updates_per_s(self) -> float:
        return self.updates_per_s * self.seeds

    @property
    def gflops(self) -> float:
        return self.updates_per_s * self.gflop_per_update

    @property
    def efficiency(self) -> float:
        return self.gflops / self.peak_gflops if self.peak_gflops else float("nan")


class FlopCount(TorchDispatchMode):
    """FLOPs of the operators run inside it (matmuls, convolutions, attention: what torch has formulas for)."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(device: torch.device, n: int = 1024, repeats: int = 10) -> float:
    """Measured float32 matmul throughput of this device at the current thread count."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    for _ in range(2):
        a @ b
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * n ** 3 * repeats / (time.perf_counter() - t0) / 1e9


@dataclass
class BenchJob:
    """One timed row: an agent on a dataset with S seeds, fresh or from a run's checkpoint."""
    agent: str
    dataset: str
    dataset_size: int | None
    seeds: int
    overrides: dict
    agent_state: dict | None = None  # a checkpoint's "agent" entry; None = initialisation
    origin: str = ""  # "RUN at step N" for a job from a run
    plugins: tuple[str, ...] = ()  # files registering the run's agent


def jobs_from_runs(run_dirs, plugins=(), trust_plugins: bool = False) -> list[BenchJob]:
    """One job per run folder: its agent, dataset, config and seed count, from its checkpoint. A plugin file a
    run names is taken only if passed again in `plugins` or with `trust_plugins` (run folders are data)."""
    jobs = []
    for run in run_dirs:
        spec, checkpoint = run_checkpoint(run)
        jobs.append(BenchJob(spec.agent, spec.dataset, spec.dataset_size, len(spec.seeds), spec.agent_config,
                             checkpoint["agent"], f"{run} at step {int(checkpoint['step']):,}",
                             tuple(plugins_to_import(spec, run, plugins, trust_plugins))))
    return jobs


def run_checkpoint(run_dir) -> tuple[RunSpec, dict]:
    """(run.yaml's content, the checkpoint) of a run folder, to time an agent as it trains later in a run
    rather than at initialisation: PRDC's neighbour query, for one, costs what the actor's distance from the
    data makes it cost. The checkpoint is loaded as data only."""
    folder = RunFolder(run_dir)
    if not folder.checkpoint_path.is_file():
        raise OfflineRLError(f"cannot bench from {run_dir}: it has no checkpoint.pt (yet)")
    try:
        return folder.read_spec(), folder.load_checkpoint(map_location="cpu")
    except OfflineRLError as exc:
        raise OfflineRLError(f"cannot bench from {run_dir}: {exc}") from None


def benchmark(agent_name: str, dataset, num_seeds: int, steps: int = 200, warmup: int = 20,
              device: torch.device | str = "cpu", overrides: dict | None = None, threads: int = 0,
              peak: float | None = None, compile_mode: str = "eager", log=print,
              agent_state: dict | None = None) -> BenchResult:
    """`agent_state`: start from these networks (a checkpoint's "agent" entry, for num_seeds seeds)."""
    device = torch.device(device)
    threads = set_threads(threads, num_seeds)
    # Pre-training stages (a dynamics model) come from the cache, fitted once for every S timed.
    parts = build_run(agent_name, dataset, agent_config(agent_name, dataset, overrides=overrides),
                      list(range(num_seeds)), device, compile_mode, cache=Cache(log=log), agent_state=agent_state,
                      log=log)
    agent, buffer, train_step = parts.agent, parts.buffer, parts.train_step
    # Updates 1, 1 + P, 1 + 2P, ... of an agent with `update_period` P > 1 do extra work (a model rollout):
    # they are counted and timed apart from the others, and their extra cost is spread over P updates.
    period = max(int(getattr(agent, "update_period", 1)), 1)
    plain = (s for s in itertools.count(2 if period > 1 else 1) if period == 1 or (s - 1) % period)
    counted = 4  # covers the delayed-actor cycle of TD3-style agents

    def flops(step_numbers) -> float:
        with FlopCount() as counter:
            for step in step_numbers:
                agent.update(buffer.sample(), step)
        return counter.total / len(step_numbers) / 1e9

    periodic_gflop = flops([1]) if period > 1 else 0.0
    gflop = flops([next(plain) for _ in range(counted)])
    for _ in range(warmup):
        train_step(next(plain))
    window = [next(plain) for _ in range(steps)]
    seconds = _timed(train_step, window, device) / steps
    if period > 1:
        periodic_s = _timed(train_step, [period + 1, 2 * period + 1], device) / 2
        log(f"{agent_name}: every {period} updates one takes {periodic_s:.3g}s ({periodic_gflop:.3g} GFLOP) instead of "
            f"{seconds:.3g}s; spread over the {period}")
        gflop += (periodic_gflop - gflop) / period
        seconds += (periodic_s - seconds) / period
    return BenchResult(agent_name, num_seeds, threads, str(device), train_step.mode, 1.0 / seconds, gflop,
                       peak if peak is not None else matmul_gflops(device))


def _timed(train_step, step_numbers, device: torch.device) -> float:
    """Wall-clock seconds of the given training steps, waiting for the last one to finish."""
    _sync(device)
    t0 = time.perf_counter()
    for step in step_numbers:
        metrics = train_step(step)
    for v in metrics.values():
        v.cpu()
    _sync(device)
    return time.perf_counter() - t0


def updates_per_second(agent_name: str, dataset, num_seeds: int, steps: int = 200, warmup: int = 20,
                       device: torch.device | str = "cpu", overrides: dict | None = None,
                       threads: int = 0) -> float:
    """Steps per second of one process training `num_seeds` seeds (multiply by num_seeds for the aggregate)."""
    return benchmark(agent_name, dataset, num_seeds, steps, warmup, device, overrides, threads, peak=0.0).updates_per_s
