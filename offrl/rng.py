"""Per-seed random streams that live on the device.

Several seeds train in one process (docs/design.md §4). For seeds {0, 1} trained together to equal seed 0 alone
and seed 1 alone, every random number a seed uses must depend on that seed only, never on how many seeds
share the process. One `torch.Generator` cannot give that: the numbers seed 1 draws would depend on how
many seed 0 drew first. So offrl uses a counter-based generator: the bits for seed s, draw c, element i
are a hash of (key_s, c, i). It is a pure tensor program (integer multiply, xor, shift), so it runs inside
a compiled or CUDA-graph-captured update with no host round trip, and its whole state is one counter.

The hash is Chris Wellons' "lowbias32" integer finaliser, computed in int64 with 16-bit split multiplies
so that no intermediate overflows (signed overflow would be undefined in compiled kernels).
A seed is hashed as 32 bits, so seeds are refused outside [0, 2**32): s and s + 2**32 (or -1 and 2**32 - 1)
would share every stream.
"""
from __future__ import annotations

import math
import numbers
import zlib

import torch

from offrl.errors import OfflineRLError

MASK32 = 0xFFFFFFFF
SEED_LIMIT = 2**32  # seeds are keys in [0, SEED_LIMIT): one 32-bit word each


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2**32 for x in [0, 2**32), without int64 overflow."""
    lo, hi = c & 0xFFFF, c >> 16
    return (x * lo + (((x * hi) & 0xFFFF) << 16)) & MASK32


def mix32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32: a bijective 32-bit integer hash with good avalanche."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def _mix32_int(x: int) -> int:
    x &= MASK32
    x ^= x >> 16
    x = (x * 0x7FEB352D) & MASK32
    x ^= x >> 15
    x = (x * 0x846CA68B) & MASK32
    return x ^ (x >> 16)


def stream_key(seed: int, stream: str) -> int:
    """A 32-bit key for (seed, stream name); stable across processes and Python versions."""
    check_seed(seed)
    return _mix32_int(_mix32_int(seed) ^ zlib.crc32(stream.encode()))


def check_seed(seed) -> None:
    """Refuse a seed whose key would collide with another seed's (or is not an integer at all)."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < SEED_LIMIT:
        raise OfflineRLError(f"seed {seed!r} is outside the random streams' range: seeds are integers from 0 to "
                             f"{SEED_LIMIT - 1} (the streams hash a seed as 32 bits)")


class SeedStreams(torch.nn.Module):
    """Independent random streams, one per seed, drawn as tensors with a leading seed axis [S, ...].

    The counter is a buffer, so it is saved in checkpoints with the module that owns the stream and a
    resumed run draws exactly the numbers an uninterrupted run would have drawn.
    """

    def __init__(self, seeds: list[int], stream: str):
        super().__init__()
        self.register_buffer("keys", torch.tensor([stream_key(s, stream) for s in seeds], dtype=torch.int64))
        self.register_buffer("counter", torch.zeros((), dtype=torch.int64))

    @property
    def num_seeds(self) -> int:
        return self.keys.shape[0]

    def bits(self, *shape: int) -> torch.Tensor:
        """Uniform 32-bit integers (as int64) of shape [S, *shape]; advances the counter by one."""
        n = math.prod(shape)
        draw = mix32(mix32(self.counter * 0x9E3779B1 & MASK32) ^ self.keys)  # [S]
        self.counter.add_(1)
        idx = torch.arange(n, device=self.keys.device, dtype=torch.int64)
        x = mix32((draw[:, None] + idx * 0x632BE5AB) & MASK32)
        return x.view(self.num_seeds, *shape)

    def uniform(self, *shape: int, dtype=torch.float32) -> torch.Tensor:
        """Uniform floats in the open interval (0, 1), shape [S, *shape]."""
        x = self.bits(*shape) >> 8  # 24 bits: exactly representable in float32
        return (x.to(dtype) + 0.5) * (1.0 / 16777216.0)

    def normal(self, *shape: int, dtype=torch.float32) -> torch.Tensor:
        """Standard normal floats, shape [S, *shape] (Box-Muller)."""
        u = self.uniform(2, *shape, dtype=dtype)
        return torch.sqrt(-2.0 * torch.log(u[:, 0])) * torch.cos(2.0 * math.pi * u[:, 1])

    def randint(self, high: int, *shape: int) -> torch.Tensor:
        """Integers in [0, high), shape [S, *shape]: (bits * high) >> 32, unbiased to within high / 2**32."""
        if not 0 < high < 2**31:
            raise ValueError(f"randint needs 0 < high < 2**31, got {high}")
        return (self.bits(*shape) * high) >> 32
