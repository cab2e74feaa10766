"""Building a run's working parts from a dataset: the agent, the transition buffer and the step runner.

The trainer, `offrl bench` and the tests build runs here, so the wiring exists once: the agent's config is
resolved with the dataset's family (`Dataset.family`), the agent is made for the seeds (an agent class with
`seed_axis = False` trains its seeds one after another: offrl.agent.SeedsOneByOne), told the run's budget,
prepared on the dataset, optionally given a checkpoint's state, and paired with a buffer and an UpdateRunner.
Plugin files are imported here, once per file and process.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from offrl import config as cfg
from offrl import registry
from offrl.agent import Agent, SeedsOneByOne, check_action_space
from offrl import compile as compiling
from offrl.replay import TransitionBuffer

_loaded_plugins: set[Path] = set()


def load_plugins(paths) -> None:
    """Import each plugin file once (it calls register_agent); a file already imported is not run again."""
    for path in paths:
        resolved = Path(path).resolve()
        if resolved not in _loaded_plugins:
            registry.load_plugin(path)
            _loaded_plugins.add(resolved)


def agent_config(agent: str, dataset, file: str | None = None, overrides: dict | None = None):
    """The agent's Config for `dataset`: paper defaults, its family's defaults, a YAML file, overrides."""
    return cfg.resolve_config(registry.get(agent), dataset.family, file, overrides)


def make_agent(agent: str, dataset, config, seeds, device) -> Agent:
    """Agent `agent` for `dataset`'s spec and `seeds`, on `device`."""
    info = registry.get(agent)
    check_action_space(agent, info.agent_cls, dataset)
    if info.agent_cls.seed_axis:
        made = registry.make(agent, dataset.spec, config, list(seeds), device)
    else:
        made = SeedsOneByOne(info.agent_cls, dataset.spec, config, list(seeds), device)
    return made.to(device)


@dataclass
class RunParts:
    agent: Agent
    buffer: TransitionBuffer
    train_step: compiling.UpdateRunner  # train_step(step): sample a batch and update, in the chosen compile mode
    config: object  # the agent's resolved Config


def build_run(agent: str, dataset, config, seeds, device="cpu", compile_mode: str = "eager",
              total_steps: int | None = None, cache=None, agent_state: dict | None = None, log=print) -> RunParts:
    """The parts of a run of `agent` (with its resolved `config`) on `dataset`. `total_steps`: the run's
    budget (for learning-rate schedules); `cache`: pre-training artefacts for prepare(); `agent_state`: a
    checkpoint's "agent" entry to start from."""
    device = torch.device(device)
    # The per-transition extras the agent reads, found (or refused) before any pre-training stage runs.
    extras = dataset.extras_for(registry.get(agent).agent_cls.extras, config)
    made = make_agent(agent, dataset, config, seeds, device)
    if total_steps is not None:
        made.total_steps = total_steps
    made.prepare(dataset, cache=cache)
    if agent_state is not None:
        made.load_checkpoint_state(agent_state)
    buffer = TransitionBuffer(dataset, list(seeds), config.batch_size, device, extras=extras)
    return RunParts(made, buffer, compiling.UpdateRunner(made, buffer, compile_mode, device, log=log), config)
