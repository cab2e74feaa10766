"""Model data: the per-seed ring buffer of model-rollout transitions, the rollout step that fills it, and
batches that mix real and model rows.

Model-based agents (MOPO, MOBILE, COCOA's model-based bases, plugins) train on transitions imagined by the
dataset's dynamics ensemble (offrl/dynamics.py), as OfflineRL-Kit's model-based trainer does: before update
1 and then every `rollout_freq` updates, `rollout_batch` dataset states per seed are rolled out for
`rollout_length` steps with the current policy in the stochastic model, and the transitions are appended to
a ring buffer of `retain_rounds` rounds; every update trains on int(B * real_ratio) dataset rows followed by
B - int(B * real_ratio) rows drawn from that buffer (OfflineRL-Kit: 5 % real).

The rollout runs inside the agent's update, so a training step stays one tensor program: every row is
stepped every step (fixed shapes) and the rollout's mask says which transitions happened, those of a row up
to and including the one that terminates it. Only those are stored. Insertion writes them contiguously at
each seed's ring pointer (positions from a cumulative sum of the mask; the other rows go to one spare row
past the end, never read), so rows [0, size) of a seed are always valid, sampling draws uniformly from them,
and the ring keeps the newest `capacity` transitions, as OfflineRL-Kit's buffer does. Pointers and sizes are
per-seed tensors: no count goes to the host.

Seed axis: storage is [S, capacity + 1, ...]; start states, the model's noise and the model rows of a batch
come from this buffer's per-seed stream, the policy's noise from the caller's, so a seed's data do not
depend on the other seeds. Storage, pointers, sizes and the stream's counter are buffers, so an agent's
checkpoint carries them; the dataset's start states are not saved (the agent's `prepare` sets them again).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from offrl.dynamics import EnsembleDynamics, StepOutput
from offrl.errors import OfflineRLError
from offrl.rng import SeedStreams

# What a model row holds; the same names and meaning as the transition buffer's batches (offrl/replay.py).
MODEL_KEYS = ("observations", "actions", "rewards", "next_observations", "dones")

Policy = Callable[[torch.Tensor], torch.Tensor]  # observations [S, N, obs_dim] -> actions [S, N, act_dim]
# (observations, actions, the model's step) -> [S, N], subtracted from the model's reward when stored.
Penalty = Callable[[torch.Tensor, torch.Tensor, StepOutput], torch.Tensor]


class ModelRolloutBuffer(nn.Module):
    """Per-seed model-rollout transitions on the device; `rollout` fills it, `mix` builds training batches.

    In an agent's update:

        if self.model_data.due(step):
            self.model_data.rollout(self.dynamics, policy, penalty)
        batch = self.model_data.mix(batch)
    """

    def __init__(self, seeds, obs_dim: int, act_dim: int, *, rollout_batch: int = 50_000,
                 rollout_length: int = 5, rollout_freq: int = 1_000, retain_rounds: int = 5,
                 real_ratio: float = 0.05, chunk: int | None = None, capacity: int | None = None):
        """Defaults are OfflineRL-Kit's (run_mopo.py / run_mobile.py): --rollout-batch-size 50000,
        --rollout-freq 1000, --model-retain-epochs 5, --real-ratio 0.05; rollout_length is per dataset.
        capacity defaults to rollout_batch * rollout_length * retain_rounds, as there. `chunk` rolls out that
        many start states per seed at a time: the model's activations are [E, S * chunk, hidden], so it bounds
        a rollout's memory, and on a CPU a few thousand rows are faster than 50,000 (blocks that small are
        reused by the allocator instead of being mapped afresh); other random numbers, the same distribution.
        None = all at once (fewest ops, for a GPU and for compiling)."""
        super().__init__()
        for name, value in dict(rollout_batch=rollout_batch, rollout_length=rollout_length,
                                rollout_freq=rollout_freq, retain_rounds=retain_rounds).items():
            if int(value) != value or value < 1:
                raise OfflineRLError(f"model data: {name} must be a positive integer, got {value}")
        if not 0.0 <= real_ratio <= 1.0:
            raise OfflineRLError(f"model data: real_ratio must lie in [0, 1], got {real_ratio}")
        if chunk is not None and chunk < 1:
            raise OfflineRLError(f"model data: chunk must be positive or None, got {chunk}")
        self.rollout_batch, self.rollout_length = int(rollout_batch), int(rollout_length)
        self.rollout_freq, self.real_ratio, self.chunk = int(rollout_freq), float(real_ratio), chunk
        self.capacity = int(capacity if capacity is not None else rollout_batch * rollout_length * retain_rounds)
        if self.capacity < self.rollout_batch * self.rollout_length:
            raise OfflineRLError(f"model data: capacity {self.capacity} is smaller than one rollout "
                                 f"({self.rollout_batch} x {self.rollout_length} transitions)")
        self.num_seeds, self.obs_dim, self.act_dim = len(seeds), obs_dim, act_dim
        widths = dict(observations=(obs_dim,), actions=(act_dim,), rewards=(), next_observations=(obs_dim,),
                      dones=())
        for key in MODEL_KEYS:  # one spare row past the end takes the rows a rollout did not take
            self.register_buffer(key, torch.zeros(self.num_seeds, self.capacity + 1, *widths[key]))
        self.register_buffer("pointer", torch.zeros(self.num_seeds, dtype=torch.int64))  # next row to write
        self.register_buffer("size", torch.zeros(self.num_seeds, dtype=torch.int64))  # valid rows: [0, size)
        self.register_buffer("start_states", torch.zeros(0, obs_dim), persistent=False)
        self.streams = SeedStreams(list(seeds), "model_data")

    # ---- the schedule
    def due(self, step: int) -> bool:
        """Whether update `step` (counted from 1, as the trainer counts) starts with a rollout: OfflineRL-Kit
        rolls out before its updates 0, rollout_freq, 2 rollout_freq, ... (counted from 0)."""
        return (step - 1) % self.rollout_freq == 0

    def set_start_states(self, observations) -> None:
        """The states rollouts start from (the dataset's observations, [N, obs_dim]); not checkpointed."""
        obs = torch.as_tensor(observations, dtype=torch.float32, device=self.size.device)
        if obs.dim() != 2 or obs.shape[1] != self.obs_dim or len(obs) == 0:
            raise OfflineRLError(f"model data: start states must be [N, {self.obs_dim}] with N > 0, "
                                 f"got {list(obs.shape)}")
        self.start_states = obs

    # ---- filling
    @torch.no_grad()
    def rollout(self, dynamics: EnsembleDynamics, policy: Policy, penalty: Penalty | None = None,
                start_obs: torch.Tensor | None = None, deterministic: bool = False,
                all_members: bool | None = None) -> dict[str, torch.Tensor]:
        """Roll out start states for `rollout_length` model steps with `policy` and store the transitions.

        start_obs: [S, N, obs_dim]; None draws `rollout_batch` start states per seed from `set_start_states`.
        Stored reward = the model's reward - penalty(obs, actions, step) (None: no penalty); dones = the
        model's termination. deterministic: the elites' mean instead of a sampled elite (MOPO and MOBILE
        sample). all_members: compute every member's mean and std (None: only if there is a penalty, which
        may read them). Returns per-seed metrics [S]: the share of steps that were stored, and the mean model
        reward and penalty over stored transitions."""
        if dynamics.config.direction != "forward" or not dynamics.config.predict_reward:
            raise OfflineRLError("model data: rollouts need a forward model with a reward head")
        if start_obs is None:
            if len(self.start_states) == 0:
                raise OfflineRLError("model data: no start states; call set_start_states(dataset.observations) "
                                     "in the agent's prepare()")
            index = self.streams.randint(len(self.start_states), self.rollout_batch)  # [S, N]
            start_obs = self.start_states[index]
        S, N = start_obs.shape[:2]
        if S != self.num_seeds or N * self.rollout_length > self.capacity:
            raise OfflineRLError(f"model data: start states {list(start_obs.shape)} do not fit {self.num_seeds} "
                                 f"seeds and a capacity of {self.capacity} transitions")
        members = penalty is not None if all_members is None else all_members
        chunk = self.chunk or N
        parts = [dynamics.rollout(policy, start_obs[:, i:i + chunk], self.rollout_length, deterministic=deterministic,
                                  streams=self.streams, penalty_fn=penalty, all_members=members)
                 for i in range(0, N, chunk)]
        out = {k: torch.cat([p[k] for p in parts], dim=2) if len(parts) > 1 else parts[0][k] for k in parts[0]}

        def rows(t: torch.Tensor) -> torch.Tensor:  # [S, H, N, ...] -> [S, H * N, ...], step by step
            return t.reshape(S, -1, *t.shape[3:])

        penalties = out.get("penalties", torch.zeros_like(out["rewards"]))
        mask = rows(out["mask"])
        self.insert({"observations": rows(out["observations"]), "actions": rows(out["actions"]),
                     "rewards": rows(out["rewards"] - penalties), "next_observations": rows(out["next_observations"]),
                     "dones": rows(out["terminals"]).float()}, mask)
        valid = mask.float()
        count = valid.sum(1)
        return {"rollout_stored": count / mask.shape[1],
                "rollout_reward": (rows(out["rewards"]) * valid).sum(1) / count,
                "rollout_penalty": (rows(penalties) * valid).sum(1) / count}

    def insert(self, transitions: dict[str, torch.Tensor], mask: torch.Tensor) -> None:
        """Append, per seed, the rows [S, M, ...] of `transitions` whose `mask` [S, M] is True, in order, at
        the ring pointer; the oldest rows are overwritten once the buffer is full."""
        S, M = mask.shape
        if M > self.capacity:
            raise OfflineRLError(f"model data: {M} rows do not fit a capacity of {self.capacity}")
        valid = mask.to(torch.int64)
        before = valid.cumsum(1) - valid  # stored rows ahead of this one in the same insertion
        position = torch.where(mask, (self.pointer[:, None] + before) % self.capacity, self.capacity)
        seed = torch.arange(S, device=mask.device)[:, None].expand(S, M)
        for key in MODEL_KEYS:
            store = getattr(self, key)
            store.index_put_((seed, position), transitions[key].to(store.dtype))
        count = valid.sum(1)
        self.pointer.copy_((self.pointer + count) % self.capacity)
        self.size.copy_((self.size + count).clamp(max=self.capacity))

    # ---- reading
    def sample(self, n: int) -> dict[str, torch.Tensor]:
        """n stored transitions per seed, uniformly with replacement: dict of [S, n, ...] tensors. Before the
        first rollout a seed has none, and its rows are zeros: roll out first (`due(1)` is True)."""
        index = (self.streams.bits(n) * self.size[:, None]) >> 32  # uniform in [0, size), exact to 2**-32
        seed = torch.arange(self.num_seeds, device=index.device)[:, None]
        return {key: getattr(self, key)[seed, index] for key in MODEL_KEYS}

    def real_rows(self, batch_size: int) -> int:
        """Dataset rows in a batch of `batch_size`: int(batch_size * real_ratio), as OfflineRL-Kit rounds."""
        return int(batch_size * self.real_ratio)

    def mix(self, real: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A batch of the size of `real` ([S, B, ...] dataset rows): its first real_rows(B) rows, then
        B - real_rows(B) model rows; `model_rows` [S, B] (bool) marks the model rows (MOBILE's penalty is 0
        on the real ones). Keys of `real` other than MODEL_KEYS are not carried (model rows lack them)."""
        missing = [k for k in MODEL_KEYS if k not in real]
        if missing:
            raise OfflineRLError(f"model data: the real batch lacks {missing}")
        B = real["observations"].shape[1]
        n_real = self.real_rows(B)
        model = self.sample(B - n_real)
        batch = {k: torch.cat([real[k][:, :n_real], model[k]], dim=1) for k in MODEL_KEYS}
        is_model = torch.arange(B, device=batch["rewards"].device) >= n_real
        batch["model_rows"] = is_model.expand(self.num_seeds, B)
        return batch


__all__ = ["MODEL_KEYS", "ModelRolloutBuffer", "Penalty", "Policy"]
