"""offrl against d3rlpy on the same shapes, side by side: updates per second on this machine's CPU.

    python scripts/bench_peers.py            # one full sitting (about 10 minutes on 2 cores)
    python scripts/bench_peers.py --quick    # a rehearsal: TD3+BC and IQL, one short round

Run it with offrl's own Python (the one `offrl` is installed in). d3rlpy gets a virtual environment of its own
under the cache folder (~/.offrl/cache/bench_peers, or --cache), made on first use with torch pinned first so
that d3rlpy does not pull a CUDA build. Both libraries train on hopper-medium's transitions (offrl's dataset,
handed to d3rlpy as an MDPDataset), batch 256, each agent's paper networks, and are timed as a user runs
them: whole steps (batch sampling + update), offrl through its training step and d3rlpy through
`sample_transition_batch` + `update`, as its `fit` loop does. Every (library, thread count) is a fresh
process, so each picks its own OpenMP set-up the way a user's run would; the processes alternate within a
round and the rounds repeat, and the table gives each cell's median over the rounds with the load average.
offrl is also timed at S = 4 seeds per process (seed-updates/s). Speed is measured here and by `offrl bench`,
never in tests.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

TORCH = "torch==2.13.0"
D3RLPY = "d3rlpy==2.8.1"
# offrl agent -> its name in the table; d3rlpy's worker times those it has a config for (all but EDAC).
AGENTS = {"td3bc": "TD3+BC", "iql": "IQL", "bc": "BC", "cql": "CQL", "sacn": "SAC-N", "edac": "EDAC", "calql": "Cal-QL"}
QUICK_AGENTS = ("td3bc", "iql")
# SAC-N's and EDAC's hopper defaults (500 and 50 critics) would make one sitting hours long: both libraries
# run 10 critics (SAC-N's and EDAC's halfcheetah value).
OVERRIDES = {"sacn": {"num_critics": 10}, "edac": {"num_critics": 10}}


def d3rlpy_python(cache: Path, log=print) -> Path:
    """The d3rlpy environment's python, made on first use."""
    venv = cache / "d3rlpy-venv"
    python = venv / "bin" / "python"
    if python.is_file() and subprocess.run([str(python), "-c", "import d3rlpy"], capture_output=True).returncode == 0:
        return python
    log(f"making d3rlpy's environment in {venv} (once)")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, TORCH], check=True)  # first, so d3rlpy finds it and pulls no CUDA torch
    subprocess.run([*pip, D3RLPY, TORCH], check=True)
    return python


# ----------------------------------------------------------------------------------------------- workers

def time_steps(step, seconds: float, warmup_s: float) -> float:
    """Steps per second of `step()` over at least `seconds`, after `warmup_s` seconds (at least 2 steps)."""
    t0, n = time.perf_counter(), 0
    while n < 2 or time.perf_counter() - t0 < warmup_s:
        step()
        n += 1
    t0, n = time.perf_counter(), 0
    while n < 2 or time.perf_counter() - t0 < seconds:
        step()
        n += 1
    return n / (time.perf_counter() - t0)


def offrl_worker(args) -> None:
    import offrl  # noqa: F401 - first: it sets OpenMP's wait policy before torch loads, as in a user's run
    import torch

    from offrl.build import agent_config, build_run
    from offrl.cache import Cache
    from offrl.cpu_load import wait_policy
    from offrl.data import resolve
    from offrl.machine import set_threads

    dataset = resolve(args.env, log=lambda m: None)
    for agent in args.agents:
        for seeds in args.seeds:
            threads = set_threads(args.threads, seeds)
            config = agent_config(agent, dataset, overrides=OVERRIDES.get(agent))
            parts = build_run(agent, dataset, config, list(range(seeds)), torch.device("cpu"),
                              "eager", total_steps=1_000_000, cache=Cache(log=lambda m: None), log=lambda m: None)
            counter = iter(range(1, 10**9))
            rate = time_steps(lambda: parts.train_step(next(counter)), args.seconds, args.warmup)
            print(json.dumps({"lib": "offrl", "agent": agent, "S": seeds, "threads": threads, "updates_per_s": rate,
                              "wait": wait_policy()}), flush=True)


D3RLPY_WORKER = r'''
import json, sys, time
import numpy as np
import torch
import d3rlpy
from d3rlpy.models.encoders import VectorEncoderFactory

args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
data = np.load(args["data"])
dataset = d3rlpy.dataset.MDPDataset(data["observations"], data["actions"], data["rewards"], data["terminals"],
                                    timeouts=data["timeouts"])
enc = lambda widths: VectorEncoderFactory(hidden_units=list(widths))
configs = {
    "td3bc": lambda: d3rlpy.algos.TD3PlusBCConfig(batch_size=256, actor_encoder_factory=enc([256] * 2),
                                                  critic_encoder_factory=enc([256] * 2)),
    "iql": lambda: d3rlpy.algos.IQLConfig(batch_size=256, actor_encoder_factory=enc([256] * 2),
                                          critic_encoder_factory=enc([256] * 2), value_encoder_factory=enc([256] * 2)),
    "bc": lambda: d3rlpy.algos.BCConfig(batch_size=256, encoder_factory=enc([256] * 2)),
    "cql": lambda: d3rlpy.algos.CQLConfig(batch_size=256, actor_encoder_factory=enc([256] * 3),
                                          critic_encoder_factory=enc([256] * 3), n_action_samples=10,
                                          conservative_weight=5.0, alpha_learning_rate=0.0),
    "sacn": lambda: d3rlpy.algos.SACConfig(batch_size=256, actor_encoder_factory=enc([256] * 3),
                                           critic_encoder_factory=enc([256] * 3), n_critics=10),
    "calql": lambda: d3rlpy.algos.CalQLConfig(batch_size=256, actor_encoder_factory=enc([256] * 2),
                                              critic_encoder_factory=enc([256] * 4), n_action_samples=10),
}
def timed(step, seconds, warmup_s):
    t0, n = time.perf_counter(), 0
    while n < 2 or time.perf_counter() - t0 < warmup_s:
        step(); n += 1
    t0, n = time.perf_counter(), 0
    while n < 2 or time.perf_counter() - t0 < seconds:
        step(); n += 1
    return n / (time.perf_counter() - t0)
for agent in args["agents"]:
    if agent not in configs:
        continue
    algo = configs[agent]().create(device="cpu:0")
    algo.build_with_dataset(dataset)
    step = lambda: algo.update(dataset.sample_transition_batch(256))
    rate = timed(step, args["seconds"], args["warmup"])
    print(json.dumps({"lib": "d3rlpy", "agent": agent, "S": 1, "threads": args["threads"], "updates_per_s": rate,
                      "wait": "libgomp default"}), flush=True)
'''


def export_dataset(env: str, path: Path) -> None:
    """offrl's transitions of `env` as an npz that d3rlpy's worker reads (no offrl there)."""
    import numpy as np

    from offrl.data import resolve

    ds = resolve(env, log=lambda m: None)
    timeouts = np.asarray(ds.timeouts, dtype=bool) & ~np.asarray(ds.terminals, dtype=bool)
    timeouts[-1] = not bool(ds.terminals[-1])  # d3rlpy wants the last episode closed
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, observations=ds.observations, actions=ds.actions, rewards=ds.rewards,
             terminals=np.asarray(ds.terminals, dtype=np.float32), timeouts=timeouts.astype(np.float32))
    tmp.replace(path)


# ----------------------------------------------------------------------------------------------- the sitting

def run_worker(cmd: list[str], log) -> list[dict]:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0:
        log(f"worker failed ({proc.returncode}): {' '.join(cmd[:3])} ...\n{textwrap.indent(proc.stderr[-2000:], '  ')}")
    return rows


def table(rows: list[dict], loads: list[float], agents, threads, many: int) -> str:
    def cell(lib, agent, s, t):
        v = [r["updates_per_s"] * r["S"] for r in rows
             if r["lib"] == lib and r["agent"] == agent and r["S"] == s and r["threads"] == t]
        return (statistics.median(v), min(v), max(v)) if v else None

    fmt = lambda c: f"{c[0]:.1f} ({c[1]:.1f}-{c[2]:.1f})" if c else "-"
    head = ["agent", "threads", "offrl S=1", "d3rlpy", "offrl / d3rlpy", f"offrl S={many} (seed-upd/s)",
            f"S={many} / S=1"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for agent in agents:
        for t in threads:
            o1, d, om = cell("offrl", agent, 1, t), cell("d3rlpy", agent, 1, t), cell("offrl", agent, many, t)
            ratio = f"{o1[0] / d[0]:.2f}x" if o1 and d else "-"
            scale = f"{om[0] / o1[0]:.2f}x" if o1 and om else "-"
            lines.append(f"| {AGENTS[agent]} | {t} | {fmt(o1)} | {fmt(d)} | {ratio} | {fmt(om)} | {scale} |")
    load = (f"load average (1 min) during the sitting: {min(loads):.2f}-{max(loads):.2f}, "
            f"median {statistics.median(loads):.2f}")
    return "\n".join(lines) + "\n\nupdates/s per seed-process (median, min-max over rounds); " + load


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="rehearsal: TD3+BC and IQL, one round, short windows")
    p.add_argument("--agents", help=f"comma-separated offrl names (default: {','.join(AGENTS)})")
    p.add_argument("--env", default="hopper-medium")
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 2; --quick 1)")
    p.add_argument("--threads", default="1,2", help="thread counts to time")
    p.add_argument("--many", type=int, default=4, help="offrl's multi-seed count S")
    p.add_argument("--seconds", type=float, help="timed window per cell (default 3; --quick 1)")
    p.add_argument("--cache", type=Path, default=Path.home() / ".offrl" / "cache" / "bench_peers")
    p.add_argument("--worker", choices=["offrl"], help=argparse.SUPPRESS)
    p.add_argument("--seeds", help=argparse.SUPPRESS)
    p.add_argument("--warmup", type=float, default=1.0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    agents = args.agents.split(",") if args.agents else list(QUICK_AGENTS if args.quick else AGENTS)
    unknown = [a for a in agents if a not in AGENTS]
    if unknown:
        p.error(f"unknown agent(s) {', '.join(unknown)}: choose from {', '.join(AGENTS)}")
    seconds = args.seconds or (1.0 if args.quick else 3.0)
    if args.worker == "offrl":
        args.agents, args.seeds, args.threads = agents, [int(s) for s in args.seeds.split(",")], int(args.threads)
        args.seconds = seconds
        offrl_worker(args)
        return 0

    rounds = args.rounds or (1 if args.quick else 2)
    thread_counts = [int(t) for t in args.threads.split(",")]
    args.cache.mkdir(parents=True, exist_ok=True)
    d3 = d3rlpy_python(args.cache)
    data = args.cache / f"{args.env}.npz"
    if not data.is_file():
        print(f"exporting {args.env} for d3rlpy to {data}")
        export_dataset(args.env, data)
    rows, loads, t0 = [], [], time.time()
    for r in range(rounds):
        for i, t in enumerate(thread_counts):
            offrl_cmd = [sys.executable, __file__, "--worker", "offrl", "--agents", ",".join(agents), "--env", args.env,
                         "--threads", str(t), "--seeds", f"1,{args.many}", "--seconds", str(seconds)]
            d3_cmd = [str(d3), "-c", D3RLPY_WORKER, json.dumps({"agents": agents, "threads": t, "data": str(data),
                                                               "seconds": seconds, "warmup": args.warmup})]
            order = [offrl_cmd, d3_cmd] if (r + i) % 2 == 0 else [d3_cmd, offrl_cmd]
            for cmd in order:
                loads.append(os.getloadavg()[0])
                got = run_worker(cmd, print)
                for row in got:
                    print(f"round {r + 1}: {row['lib']:<6} {row['agent']:<6} S={row['S']} threads={row['threads']} "
                          f"{row['updates_per_s'] * row['S']:8.1f} (seed-)updates/s, OpenMP wait: {row['wait']}",
                          flush=True)
                rows.extend(got)
    import torch

    print(f"\n{os.cpu_count()}-core {os.uname().machine}, torch {torch.__version__}, {D3RLPY}, {args.env}, batch 256, "
          f"{rounds} round(s), {seconds:g} s windows, {time.time() - t0:.0f} s in all\n")
    print(table(rows, loads, agents, thread_counts, args.many))
    return 0


if __name__ == "__main__":
    sys.exit(main())
