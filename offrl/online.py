"""The online phase's parts: the per-seed ring buffer, the batches an agent learns from, and the environments.

After (or instead of) its offline updates an agent with an online phase (`register_agent(..., phases=...)`)
steps S × n environments, one group of n per seed, in one gymnasium vector env. Each step it samples actions
from its policy (its own per-seed acting stream), the transitions go to seed s's own ring buffer on the
device, and once the warm-up is over every environment step is one `update(batch, step)`. The batch is
`offline_ratio` dataset rows and the rest online rows, both drawn from per-seed streams, so a seed's data,
draws and parameters never depend on which other seeds share the process.

Episode k of seed s's environment j is reset with an env seed hashed from (s, j, k). The simulator's state is
not checkpointed: a resumed online phase restarts the episodes that were in flight (with the next episode
seeds); rows already in the buffer stay, and an agent that inserts whole episodes (one that reads Monte-Carlo
returns) loses the unfinished ones. A resumed online phase therefore matches an uninterrupted one in its
buffer and parameters at the checkpoint, not in what it collects afterwards.

`OnlineConfig` holds the fields the trainer reads from an online agent's Config; an agent inherits it.
"""
from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from offrl.compile import UpdateRunner
from offrl.config import NonNegativeInt, PositiveInt, UnitFloat
from offrl.data.returns import return_to_go
from offrl.errors import OfflineRLError
from offrl.rng import SeedStreams, _mix32_int, stream_key


@dataclass
class OnlineConfig:
    """The online phase's settings, inherited by the Config of an agent that has one."""
    warmup_steps: NonNegativeInt = 5_000  # env steps collected by the policy before the first update
    offline_ratio: UnitFloat = 0.0  # share of each online-phase batch drawn from the dataset (WSRL 0, Cal-QL 0.5)
    online_batch_size: PositiveInt = 256  # rows per online-phase update and seed
    online_envs: PositiveInt = 1  # environments per seed
    online_capacity: PositiveInt = 2_000_000  # ring-buffer rows per seed (capped at the online budget)


class OnlineBuffer(nn.Module):
    """A ring buffer per seed on the device: fields [S, capacity, ...], write position and size per seed.

    `insert` writes rows [S, n, ...] for every seed (or [n, ...] for one seed); `sample(n)` draws n rows per
    seed uniformly with replacement from that seed's filled rows, from its own stream. The tensors are
    buffers, so a checkpoint holds the rows, positions and the stream's counter."""

    def __init__(self, seeds, obs_dim: int, act_dim: int, capacity: int, device="cpu", extras=()):
        super().__init__()
        S = len(seeds)
        self.capacity = capacity
        shapes = {"observations": (obs_dim,), "actions": (act_dim,), "rewards": (), "next_observations": (obs_dim,),
                  "dones": ()}
        shapes.update({name: () for name in extras})
        self.keys = tuple(shapes)
        for key, shape in shapes.items():
            self.register_buffer(key, torch.zeros(S, capacity, *shape, device=device))
        self.register_buffer("position", torch.zeros(S, dtype=torch.int64, device=device))
        self.register_buffer("size", torch.zeros(S, dtype=torch.int64, device=device))
        self.streams = SeedStreams(list(seeds), "online-replay").to(device)

    def insert(self, rows: dict, seed_index: int | None = None) -> None:
        """Append rows: {key: [S, n, ...]} for all seeds, or {key: [n, ...]} for the seed at `seed_index`."""
        sel = (torch.arange(self.size.shape[0], device=self.size.device) if seed_index is None
               else torch.tensor([seed_index], device=self.size.device))
        n = next(iter(rows.values())).shape[0 if seed_index is not None else 1]
        idx = (self.position[sel, None] + torch.arange(n, device=sel.device)) % self.capacity  # [S', n]
        for key in self.keys:
            value = torch.as_tensor(rows[key], dtype=torch.float32, device=sel.device)
            getattr(self, key)[sel[:, None], idx] = value if seed_index is None else value.unsqueeze(0)
        self.position[sel] = (self.position[sel] + n) % self.capacity
        self.size[sel] = (self.size[sel] + n).clamp(max=self.capacity)

    def sample(self, n: int) -> dict[str, torch.Tensor]:
        idx = (self.streams.bits(n) * self.size[:, None]) >> 32  # [S, n], uniform over each seed's rows
        seed = torch.arange(idx.shape[0], device=idx.device)[:, None]
        return {key: getattr(self, key)[seed, idx] for key in self.keys}


class OnlineBatches(nn.Module):
    """The batches of the online phase: `n_offline` dataset rows then the online rows, per seed [S, B, ...].
    With n_offline = 0 no dataset row is drawn (WSRL keeps no offline data); the dataset buffer's stream
    then stays where the offline phase left it."""

    def __init__(self, online: OnlineBuffer, offline, batch_size: int, offline_ratio: float):
        super().__init__()
        self.online, self.offline = online, offline
        self.n_offline = int(round(offline_ratio * batch_size))
        self.n_online = batch_size - self.n_offline

    def sample(self) -> dict[str, torch.Tensor]:
        parts = []
        if self.n_offline:
            rows = self.offline.sample(self.n_offline)
            parts.append({k: rows[k] for k in self.online.keys})
        if self.n_online:
            parts.append(self.online.sample(self.n_online))
        if len(parts) == 1:
            return parts[0]
        return {k: torch.cat([p[k] for p in parts], dim=1) for k in self.online.keys}


def episode_seed(seed: int, env: int, episode: int) -> int:
    """The env seed of episode `episode` of seed `seed`'s environment `env` (a 32-bit hash, per seed)."""
    return _mix32_int(stream_key(seed, f"online-env/{env}") ^ _mix32_int(episode))


class OnlineEnvs:
    """S × n environments of `dataset` stepped as one vector env; collects transitions into an OnlineBuffer.

    `episodes[s, j]` counts the episodes begun by seed s's environment j: it is saved in checkpoints, so a
    resumed run starts its next episodes with new seeds. With `episode_extras` (mc_return) a seed's rows go
    to the buffer when its episode ends, with their discounted return-to-go; else every step."""

    def __init__(self, dataset, seeds, n_envs: int, device, mc_return: dict | None = None):
        self.seeds, self.n, self.device = list(seeds), n_envs, device
        self.envs = gym.vector.SyncVectorEnv([dataset.make_env for _ in range(len(self.seeds) * n_envs)],
                                             autoreset_mode=gym.vector.AutoresetMode.DISABLED)
        self.episodes = np.zeros((len(self.seeds), n_envs), np.int64)
        self.mc_return = mc_return  # return_to_go's parameters when rows go in as whole episodes
        self.pending = [[] for _ in range(len(self.seeds) * n_envs)]
        self.running_return = np.zeros(len(self.seeds) * n_envs)
        self.obs = None

    def state(self) -> dict:
        return {"episodes": torch.as_tensor(self.episodes)}

    def load_state(self, state: dict) -> None:
        self.episodes = state["episodes"].cpu().numpy().astype(np.int64)

    def _reset(self, mask: np.ndarray) -> None:
        seeds = [episode_seed(s, j, int(self.episodes[i, j])) for i, s in enumerate(self.seeds) for j in range(self.n)]
        self.episodes += mask.reshape(self.episodes.shape)
        obs, _ = self.envs.reset(seed=seeds, options={"reset_mask": mask})
        self.obs = np.array(obs, np.float32)
        self.running_return[mask] = 0.0
        for k in np.flatnonzero(mask):
            self.pending[k] = []

    def step(self, agent, buffer: OnlineBuffer) -> list[tuple[int, float]]:
        """One step of every environment with actions sampled from `agent`; returns the (seed index, return)
        of every episode that ended."""
        S, n = len(self.seeds), self.n
        if self.obs is None:  # a fresh phase, or a resumed one: episodes in flight are restarted
            self._reset(np.ones(S * n, bool))
        obs = torch.as_tensor(self.obs, device=self.device).view(S, n, -1)
        with torch.no_grad():
            action = agent.act(obs, deterministic=False)
        act = action.reshape(S * n, -1).cpu().numpy()
        nxt, reward, terminated, truncated, _ = self.envs.step(act)
        nxt = np.asarray(nxt, np.float32)
        reward = np.asarray(reward, np.float32)
        done = np.asarray(terminated, np.float32)  # a time limit truncates: it does not stop the bootstrap
        rows = {"observations": self.obs, "actions": act, "rewards": reward, "next_observations": nxt, "dones": done}
        if self.mc_return is None:
            buffer.insert({k: torch.as_tensor(v, device=self.device).view(S, n, *v.shape[1:]) for k, v in rows.items()})
        else:
            for k in range(S * n):
                self.pending[k].append({key: v[k] for key, v in rows.items()})
        self.running_return += reward
        ended = np.asarray(terminated) | np.asarray(truncated)
        finished = [(k // n, float(self.running_return[k])) for k in np.flatnonzero(ended)]
        if self.mc_return is not None:
            for k in np.flatnonzero(ended):
                self._insert_episode(buffer, k, bool(terminated[k]))
        self.obs = nxt
        if ended.any():
            self._reset(ended)
        return finished

    def _insert_episode(self, buffer: OnlineBuffer, k: int, terminated: bool) -> None:
        steps = self.pending[k]
        ep = {key: np.stack([row[key] for row in steps]) for key in steps[0]}
        T = len(steps)
        terminals, timeouts = np.zeros(T, bool), np.zeros(T, bool)
        (terminals if terminated else timeouts)[-1] = True
        ep["mc_return"] = return_to_go(ep["rewards"], terminals, timeouts, **self.mc_return)
        buffer.insert({key: torch.as_tensor(v, device=self.device) for key, v in ep.items()}, seed_index=k // self.n)
        self.pending[k] = []

    def close(self) -> None:
        self.envs.close()


class OnlinePhase:
    """What a run holds while it trains online: envs, ring buffer, batches and the step runner.

    Updates begin after `first_update` env steps: the warm-up, at least one online batch's worth of rows
    (WSRL: max(warmup_steps, batch_size)) and, for an agent that reads Monte-Carlo returns, one episode
    limit, so that every environment has put a whole episode into its seed's buffer."""

    def __init__(self, agent, agent_cls, dataset, offline_buffer, config, seeds, device, online_steps: int,
                 compile_mode: str, log=print):
        c = config
        # The extras its online batches carry: `online_extras` where the agent's online loss reads other ones.
        extras = tuple(getattr(agent_cls, "online_extras", agent_cls.extras))
        unsupported = [e for e in extras if e != "mc_return"]
        if unsupported:
            raise OfflineRLError(f"the online phase cannot compute the extra field(s) {', '.join(unsupported)} "
                                 "for the rows it collects")
        mc = None
        if "mc_return" in extras:
            mc = {k: getattr(c, k) for k in ("discount", "reward_scale", "reward_shift", "failure_reward",
                                              "bootstrap_tail") if hasattr(c, k)}
        capacity = min(c.online_capacity, max(online_steps, 1) * c.online_envs)
        self.buffer = OnlineBuffer(seeds, dataset.spec.obs_dim, dataset.spec.act_dim, capacity, device, extras)
        self.envs = OnlineEnvs(dataset, seeds, c.online_envs, device, mc_return=mc)
        self.batches = OnlineBatches(self.buffer, offline_buffer, c.online_batch_size, c.offline_ratio)
        self.runner = UpdateRunner(agent, self.batches, compile_mode, device, log=log)
        first = max(c.warmup_steps, -(-self.batches.n_online // c.online_envs))
        if mc is not None:
            limit = getattr(getattr(self.envs.envs.envs[0], "spec", None), "max_episode_steps", None)
            if limit is None:
                raise OfflineRLError(f"{dataset.name}'s environment has no episode limit, so the online phase "
                                     "cannot tell when every environment has a whole episode for Monte-Carlo returns")
            first = max(first, limit)
        self.first_update = first

    def state_dict(self) -> dict:
        return {"buffer": self.buffer.state_dict(), "envs": self.envs.state()}

    def load_state_dict(self, state: dict) -> None:
        self.buffer.load_state_dict(state["buffer"])
        self.envs.load_state(state["envs"])

    def close(self) -> None:
        self.envs.close()


__all__ = ["OnlineConfig", "OnlineBuffer", "OnlineBatches", "OnlineEnvs", "OnlinePhase", "episode_seed"]
