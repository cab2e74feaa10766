"""Per-seed random streams: a seed's numbers never depend on its neighbours, and the distributions are right."""
import math

import pytest
import torch

from offrl.errors import OfflineRLError
from offrl.rng import SEED_LIMIT, SeedStreams, stream_key


def test_a_seed_draws_the_same_numbers_alone_or_beside_others():
    together = SeedStreams([3, 7], "s")
    alone = SeedStreams([7], "s")
    for _ in range(3):
        assert torch.equal(together.normal(5, 4)[1], alone.normal(5, 4)[0])
        assert torch.equal(together.randint(1000, 9)[1], alone.randint(1000, 9)[0])


def test_streams_differ_by_seed_and_by_name():
    a = SeedStreams([0, 1], "x").uniform(64)
    assert not torch.equal(a[0], a[1])
    assert not torch.equal(SeedStreams([0], "y").uniform(64)[0], a[0])


def test_counter_makes_successive_draws_differ_and_is_restorable():
    s = SeedStreams([0], "x")
    first = s.uniform(8)
    state = {k: v.clone() for k, v in s.state_dict().items()}
    second = s.uniform(8)
    assert not torch.equal(first, second)
    t = SeedStreams([0], "x")
    t.load_state_dict(state)
    assert torch.equal(t.uniform(8), second)


def test_distributions():
    s = SeedStreams([0], "d")
    u = s.uniform(200_000)[0]
    assert 0.0 < u.min() and u.max() < 1.0 and abs(u.mean() - 0.5) < 0.005
    n = s.normal(200_000)[0]
    assert abs(n.mean()) < 0.01 and abs(n.std() - 1.0) < 0.01
    assert abs((n.abs() < 1).float().mean() - math.erf(1 / math.sqrt(2))) < 0.005
    k = s.randint(10, 100_000)[0]
    counts = torch.bincount(k, minlength=10)
    assert k.min() == 0 and k.max() == 9 and counts.min() > 9_500


def test_seeds_outside_the_32_bit_key_range_are_refused():
    # -1 and 2**32 - 1 (or 0 and 2**32) would hash to the same key: the same random streams
    assert stream_key(SEED_LIMIT - 1, "replay") != stream_key(0, "replay")
    for seed in (-1, SEED_LIMIT, 2**63):
        with pytest.raises(OfflineRLError, match="outside the random streams' range"):
            stream_key(seed, "replay")
