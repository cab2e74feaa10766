"""Time PRDC's neighbour query per way on a dataset's (beta * s, a) points (docs/performance.md, "PRDC's
nearest-neighbour search").

    python scripts/time_neighbours.py hopper-medium --from RUN      # keys of RUN's trained actor (its seeds x 256)
    python scripts/time_neighbours.py halfcheetah-medium --corners  # actions at random corners of the action box

Keys are [beta * s, pi(s)] of one replay batch (256 states per seed), on one torch thread; each way answers the
same keys `--repeats` times and the median is printed, then whether every way returned the same indices.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from offrl.bench import build, run_checkpoint
from offrl.data import resolve
from offrl.neighbours import NearestNeighbours

WAYS = {"default": {}, "tree alone": {"near_radius": float("inf")}, "block scan alone": {"near_radius": 0.0}}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("dataset")
    p.add_argument("--from", dest="run", help="a run folder whose checkpoint's actor makes the keys")
    p.add_argument("--corners", action="store_true", help="actions at random corners of the action box")
    p.add_argument("--seeds", type=int, default=3, help="seeds (x 256 keys) when not --from a run")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(1)
    state, seeds = None, args.seeds
    if args.run:
        spec, checkpoint = run_checkpoint(args.run)
        state, seeds = checkpoint["agent"], len(spec["seeds"])
    dataset = resolve(args.dataset)
    agent, buffer = build("prdc", dataset, seeds, "cpu", log=lambda *a: None, agent_state=state)
    with torch.no_grad():
        obs = agent.obs_norm(buffer.sample()["observations"])
        pi = agent.actor(obs)
        if args.corners:
            sign = torch.randint(0, 2, pi.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
            pi = agent.actor.scaler.center + sign * agent.actor.scaler.scale
        keys = torch.cat([agent.config.beta * obs, pi], -1).flatten(0, -2)
        points = torch.cat([agent.config.beta * agent.obs_norm(torch.as_tensor(dataset.observations)),
                            torch.as_tensor(dataset.actions)], -1).float()
    answers, radius = {}, None
    for name, options in WAYS.items():
        nn = NearestNeighbours(points, "kdtree", **options)
        radius = nn._search.near_radius if not options else radius
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            answers[name] = nn.query(keys)
            times.append(time.perf_counter() - t0)
        print(f"{name:<22} median {statistics.median(times):.3f} s per {len(keys)} keys "
              f"(min {min(times):.3f}, max {max(times):.3f})", flush=True)
    first = next(iter(answers.values()))
    dist = (keys - points[first]).norm(dim=-1)
    print(f"identical indices across ways: {all(torch.equal(first, a) for a in answers.values())}; nearest "
          f"distance median {dist.median():.2f}, q90 {dist.quantile(0.9):.2f}; near_radius {radius:.2f}, "
          f"{(dist > radius).float().mean():.1%} of the keys beyond it")


if __name__ == "__main__":
    main()
