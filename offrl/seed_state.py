"""One seed's trained agent out of a run folder: for an agent that starts from another run's policy.

A run trains S seeds in one process, so its checkpoint holds seed-stacked tensors ([S, ...]) beside shared
ones (normalisers, counters). Which is which needs no per-agent code: the run's agent is built for its S seeds
and for one seed, and a tensor whose leading size is S in the first and 1 in the second is seed-stacked;
seed k's slice of it is taken, and shared tensors are copied. Modules only: optimiser state stays behind.
Call it from an agent's prepare() (or after building a one-seed agent) with the run folder; the checkpoint
loads as data only, and a run of another agent, another dataset shape, or without that seed is one line.
"""
from __future__ import annotations

from pathlib import Path

from offrl import config as cfg
from offrl import registry
from offrl.errors import OfflineRLError
from offrl.run_folder import RunFolder


def load_seed_state(run_dir, seed: int, agent) -> None:
    """Load seed `seed`'s modules from the run in `run_dir` into `agent`, a one-seed agent of the run's type."""
    folder = RunFolder(run_dir)
    spec = folder.read_spec()
    info = registry.get(spec.agent)
    if type(agent) is not info.agent_cls:
        raise OfflineRLError(f"{run_dir} is a run of {spec.agent}, not of {type(agent).__name__}")
    if seed not in spec.seeds:
        raise OfflineRLError(f"{run_dir} has no seed {seed} (its seeds: {', '.join(map(str, spec.seeds))})")
    if agent.num_seeds != 1 or not info.agent_cls.seed_axis:
        raise OfflineRLError("load_seed_state loads into a one-seed agent with a seed axis")
    state = folder.load_checkpoint(map_location="cpu")
    if state is None:
        raise OfflineRLError(f"{run_dir} has no checkpoint.pt to load seed {seed} from")
    saved = state["agent"]["modules"]
    config = cfg.apply(info.config_cls(), spec.agent_config)
    stacked = registry.make(spec.agent, agent.spec, config, spec.seeds, "cpu").state_dict()
    mismatched = [k for k, v in stacked.items() if k not in saved or saved[k].shape != v.shape]
    if mismatched:
        raise OfflineRLError(f"{run_dir} was trained on another dataset shape or config than this agent's "
                             f"({mismatched[0]}: {tuple(saved[mismatched[0]].shape) if mismatched[0] in saved else 'absent'}"
                             f" in the run, {tuple(stacked[mismatched[0]].shape)} for its data shape)")
    i, num = spec.seeds.index(seed), len(spec.seeds)
    own = agent.state_dict()
    one = {}
    for key, value in own.items():
        run_value = saved[key]
        if num > 1 and value.dim() and value.shape[0] == 1 and run_value.shape[0] == num:
            run_value = run_value[i:i + 1]  # seed-stacked: seed k's slice
        if run_value.shape != value.shape:
            raise OfflineRLError(f"{run_dir}: {key} has shape {tuple(run_value.shape)}, this agent's "
                                 f"{tuple(value.shape)}: another dataset shape or config")
        one[key] = run_value.to(value.device)
    agent.load_state_dict(one)


def seed_agent(run_dir, seed: int, dataset, device="cpu", prepare: bool = False):
    """A new one-seed agent of the run in `run_dir` for `dataset`'s shapes, holding seed `seed`'s modules.

    Acting needs no prepare(): what it computes for acting (normalisers, a dynamics model) is module state the
    checkpoint holds. `prepare=True` runs it first (to train further: a dynamics fit may then run, or come
    from the cache)."""
    spec = RunFolder(Path(run_dir)).read_spec()
    info = registry.get(spec.agent)
    agent = registry.make(spec.agent, dataset.spec, cfg.apply(info.config_cls(), spec.agent_config), [seed], device)
    agent.to(device)
    if prepare:
        agent.prepare(dataset)
    load_seed_state(run_dir, seed, agent)
    return agent
